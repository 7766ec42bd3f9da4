"""The Diffusion Policy baseline (Chi et al. 2023) on EBT-Policy's backbone: epsilon prediction, DDPM
training over T = 100 steps of the ``squaredcos_cap_v2`` schedule, clipped samples.

Inference labels: ``ddpm-K`` (ancestral, K = T = 100 is Diffusion Policy's sampler) and ``ddim-K``
(deterministic DDIM, e.g. 10 steps). K may be traced, so sweeping it does not recompile.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from ebt_jax.models import backbone
from ebt_jax.models.diffusion import NoiseModel, make_noise_model
from ebt_jax.policies.base import Metrics, ModelOwner, Params, Sample
from ebt_jax.samplers import diffusion


@dataclasses.dataclass(frozen=True)
class DiffusionPolicyModel(ModelOwner):
  """Diffusion Policy's pure functions (``ebt_jax.policies.base.PolicyModel``).

  Attributes:
    model: the noise-prediction network eps_theta(x_t, t | obs).
    schedule: the noise schedule (``config.diffusion.num_train_steps``, ``clip_sample``).
    inference: default label (``config.diffusion.inference``, e.g. "ddpm-100").
    sweep: labels also evaluated (``config.diffusion.eval_sweep``).
  """
  model: NoiseModel
  schedule: diffusion.DiffusionSchedule
  inference: str
  sweep: tuple[str, ...]
  name: ClassVar[str] = "diffusion"
  samplers: ClassVar[tuple[str, ...]] = ("ddpm", "ddim")
  log_keys: ClassVar[tuple[str, ...]] = ("mse_by_t_low", "mse_by_t_high")

  @classmethod
  def from_config(cls, config, obs_dim: int, action_dim: int) -> "DiffusionPolicyModel":
    """From ``config.model``, ``config.horizon`` and ``config.diffusion``.

    Raises:
      ValueError: if an inference label of ``config.diffusion`` is malformed or exceeds T.
    """
    d = config.diffusion
    return cls(model=make_noise_model(config, obs_dim, action_dim),
               schedule=diffusion.DiffusionSchedule.cosine(d.num_train_steps, d.clip_sample),
               inference=d.inference, sweep=tuple(d.eval_sweep))

  @property
  def max_inference_steps(self) -> int:
    """K <= T."""
    return self.schedule.num_train_steps

  def loss(self, params: Params, batch: dict[str, jax.Array], rng: jax.Array) -> tuple[jax.Array, Metrics]:
    """DDPM "simple" loss ||eps - eps_theta(x_t, t | obs)||^2, t ~ U{0..T-1} (``samplers.diffusion.diffusion_loss``).

    batch: {"obs": [B, To, obs_dim], "actions": [B, Tp, A]} normalised (+ "images" {camera: [B, To, H, W, 3]
    uint8} for a model with cameras, augmented here). Metrics: mse_by_t_low / mse_by_t_high (the loss on
    samples with t < T/2 and t >= T/2).
    """
    enc_rng, dec_rng, loss_rng = jax.random.split(rng, 3)
    dropout = self.module.attn_dropout > 0
    tokens = self.model.encode(params, batch["obs"], enc_rng if dropout else None, batch.get("images"),
                               backbone.augment_rng(self.module, rng))
    eps_fn = lambda x, t: self.model.predict_noise(params, tokens, x, t, dec_rng if dropout else None)
    return diffusion.diffusion_loss(eps_fn, self.schedule, batch["actions"], loss_rng)

  def sample(self, params: Params, obs: jax.Array, rng: jax.Array, sampler: str, steps: jax.Array,
             images=None) -> Sample:
    """Reverse diffusion from x_T ~ N(0, I): obs [B, To, obs_dim] normalised (images {camera: [B, To, H, W,
    3] uint8} for a model with cameras, centre-cropped) -> ``Sample`` (energy None).

    ``sampler``: "ddpm" or "ddim" (static); ``steps``: K denoising steps (int32, may be traced; clipped
    to [1, T]).
    """
    m = self.module
    tokens = self.model.encode(params, obs, images=images)
    init_rng, noise_rng = jax.random.split(rng)
    x_T = jax.random.normal(init_rng, (obs.shape[0], m.pred_horizon, m.action_dim))
    eps_fn = lambda x, t: self.model.predict_noise(params, tokens, x, t)
    if sampler == "ddpm":
      x0 = diffusion.ddpm_sample(eps_fn, self.schedule, x_T, noise_rng, steps)
    elif sampler == "ddim":
      x0 = diffusion.ddim_sample(eps_fn, self.schedule, x_T, steps)
    else:
      raise ValueError(f"Diffusion Policy samples with 'ddpm' or 'ddim', not {sampler!r}")
    k = diffusion.num_inference_steps_of(self.schedule, steps)
    return Sample(x0, None, jnp.full((obs.shape[0],), k, jnp.int32))
