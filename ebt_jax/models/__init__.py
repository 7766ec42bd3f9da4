"""Energy models: E_theta(obs, action chunk) -> scalar energy per sample."""

from ebt_jax.models.ebt import EBTransformer, EnergyModel, make_energy_model
