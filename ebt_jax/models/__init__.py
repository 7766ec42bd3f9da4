"""Networks on the shared transformer backbone: the energy model E_theta(obs, action chunk) -> energy per
sample (EBT-Policy) and the noise-prediction network eps_theta(x_t, t | obs) (Diffusion Policy baseline)."""

from ebt_jax.models.ebt import EBTransformer, EnergyModel, make_energy_model
