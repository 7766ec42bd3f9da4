"""EBT-Policy: the energy model trained with the Alg. 1 chain and sampled with Alg. 2 (sampler "mcmc").

Inference label ``mcmc-N``: minimise the energy with at most N MCMC steps, stopping early per sample once
||dE/dy|| < tau (``ebt_jax.samplers.minimize_energy``); N may be traced, so sweeping it does not recompile.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from ebt_jax.models import backbone
from ebt_jax.models.ebt import EnergyModel, make_energy_model
from ebt_jax.policies.base import Metrics, ModelOwner, Params, Sample
from ebt_jax.samplers import SamplerConfig, minimize_energy, training_chain


@dataclasses.dataclass(frozen=True)
class EBTPolicyModel(ModelOwner):
  """EBT-Policy's pure functions (``ebt_jax.policies.base.PolicyModel``).

  Attributes:
    model: the energy model E_theta(obs, actions).
    sampler: MCMC settings (``config.sampler``).
    inference: default label, ``mcmc-<sampler.max_steps>``.
    sweep: labels also evaluated (``config.eval.max_steps_sweep`` as ``mcmc-N``).
  """
  model: EnergyModel
  sampler: SamplerConfig
  inference: str
  sweep: tuple[str, ...]
  name: ClassVar[str] = "ebt"
  samplers: ClassVar[tuple[str, ...]] = ("mcmc",)
  log_keys: ClassVar[tuple[str, ...]] = ("mse_last", "energy_first", "energy_last")

  @classmethod
  def from_config(cls, config, obs_dim: int, action_dim: int) -> "EBTPolicyModel":
    """From ``config.model``, ``config.horizon``, ``config.sampler`` and ``config.eval.max_steps_sweep``.

    Raises:
      ValueError: if a cap of the sweep is < 1.
    """
    sweep = config.eval.get("max_steps_sweep", ()) if "eval" in config else ()
    return cls(model=make_energy_model(config, obs_dim, action_dim), sampler=SamplerConfig.from_config(config.sampler),
               inference=f"mcmc-{config.sampler.max_steps}", sweep=tuple(f"mcmc-{n}" for n in sweep))

  def loss(self, params: Params, batch: dict[str, jax.Array], rng: jax.Array) -> tuple[jax.Array, Metrics]:
    """Alg. 1: mean over MCMC steps of the MSE to the demo chunk (``samplers.training_chain``).

    batch: {"obs": [B, To, obs_dim], "actions": [B, Tp, A]} normalised (+ "images" {camera: [B, To, H, W, 3]
    uint8} for a model with cameras, augmented here, once per batch: the chain reuses the obs tokens).
    Metrics (scalars): mse_first / mse_last (first / last MCMC step), energy_first / energy_last,
    mcmc_grad_norm (mean ||dE/dy||), mcmc_steps (mean n_b).
    """
    enc_rng, chain_rng = jax.random.split(rng)
    dropout = self.module.attn_dropout > 0
    tokens = self.model.encode(params, batch["obs"], enc_rng if dropout else None, batch.get("images"),
                               backbone.augment_rng(self.module, rng))
    energy_fn = lambda actions, key: self.model.energy_from_tokens(params, tokens, actions, key if dropout else None)
    out = training_chain(energy_fn, batch["actions"], chain_rng, self.sampler)
    last = out.num_steps - 1
    idx = jnp.arange(out.num_steps.shape[0])
    return out.loss, {
        "mse_first": out.mse[0].mean(),
        "mse_last": out.mse[last, idx].mean(),
        "energy_first": out.energy[0].mean(),
        "energy_last": out.energy[last, idx].mean(),
        "mcmc_grad_norm": out.grad_norm.sum(0).mean() / out.num_steps.mean(),
        "mcmc_steps": out.num_steps.mean(),
    }

  def sample(self, params: Params, obs: jax.Array, rng: jax.Array, sampler: str, steps: jax.Array,
             images=None) -> Sample:
    """Alg. 2 from y_0 ~ N(0, init_std^2 I): obs [B, To, obs_dim] normalised (images {camera: [B, To, H, W,
    3] uint8} for a model with cameras, centre-cropped) -> ``Sample`` with energy.

    ``sampler`` must be "mcmc"; ``steps`` is the cap N (int32, may be traced).
    """
    if sampler != "mcmc":
      raise ValueError(f"EBT-Policy samples with 'mcmc', not {sampler!r}")
    m = self.module
    tokens = self.model.encode(params, obs, images=images)
    init = self.sampler.init_std * jax.random.normal(rng, (obs.shape[0], m.pred_horizon, m.action_dim))
    result = minimize_energy(lambda y: self.model.energy_from_tokens(params, tokens, y), init, self.sampler, steps)
    return Sample(result.actions, result.energy, result.steps)
