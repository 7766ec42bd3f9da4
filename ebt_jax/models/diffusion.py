"""The Diffusion Policy baseline's noise-prediction network on EBT-Policy's backbone.

  obs [B, To, obs_dim] -> Backbone.encode -> obs tokens [B, To, D]   (once per decision, as for EBT)
  t [B] -> sinusoidal embedding -> Dense, Mish, Dense -> timestep token [B, 1, D]
  x_t [B, Tp, A] -> Backbone.decode(cond = [timestep token, obs tokens]) -> RMSNorm -> MLP head
  -> predicted noise eps [B, Tp, A]

As in Diffusion Policy's transformer (Chi et al. 2023, ``TransformerForDiffusion``) the timestep enters
as an extra conditioning token the action tokens cross-attend to. The trunk is the same
``ebt_jax.models.backbone.Backbone`` definition the energy model uses, so the two policies differ only
in this head, the objective (``ebt_jax.samplers.diffusion.diffusion_loss``) and the sampler.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from ebt_jax.models import backbone, layers, vision

Params = Any


class DiffusionTransformer(nn.Module):
  """Flax module; use it through ``NoiseModel``'s pure functions. Fields as ``EBTransformer``'s."""
  action_dim: int
  obs_horizon: int
  pred_horizon: int
  width: int = 256
  num_layers: int = 8
  num_obs_layers: int = 8
  num_heads: int = 4
  mlp_ratio: float = 1.0
  attn_dropout: float = 0.0
  obs_pos_emb: str = "sincos"
  obs_causal_mask: bool = False
  cross_attn_mask: bool = False
  head_bias: bool = False
  vision: vision.VisionSpec | None = None

  def setup(self):
    self.backbone = backbone.trunk_of(self)
    self.time_in = nn.Dense(4 * self.width, kernel_init=layers.dense_init)
    self.time_out = nn.Dense(self.width, kernel_init=layers.dense_init)
    self.head_norm = nn.RMSNorm()
    self.head = layers.Mlp(self.width, out=self.action_dim, use_bias=self.head_bias)

  def encode(self, obs: jax.Array, images=None, deterministic: bool = True, augment: bool = False) -> jax.Array:
    """obs [B, To, obs_dim] normalised (+ images, ``backbone.Backbone.encode``) -> obs tokens [B, To, D]."""
    return self.backbone.encode(obs, images, deterministic, augment)

  def predict_noise(self, obs_tokens: jax.Array, x_t: jax.Array, t: jax.Array,
                    deterministic: bool = True) -> jax.Array:
    """obs tokens [B, To, D], noisy actions x_t [B, Tp, A], timesteps t [B] -> eps [B, Tp, A]."""
    time_token = self.time_out(jax.nn.mish(self.time_in(layers.timestep_embedding(t, self.width))))
    cond = jnp.concatenate([time_token[:, None], obs_tokens], axis=1)
    return self.head(self.head_norm(self.backbone.decode(cond, x_t, deterministic)))

  def __call__(self, obs: jax.Array, x_t: jax.Array, t: jax.Array, images=None,
               deterministic: bool = True) -> jax.Array:
    return self.predict_noise(self.encode(obs, images, deterministic), x_t, t, deterministic)


@dataclasses.dataclass(frozen=True)
class NoiseModel:
  """Pure functions of (params, inputs) around ``DiffusionTransformer``.

  Arrays float32; obs and actions normalised to [-1, 1]. A ``dropout_rng`` turns attention dropout on.
  """
  module: DiffusionTransformer
  obs_dim: int

  def init(self, rng: jax.Array) -> Params:
    """-> parameter pytree (init on a batch of one)."""
    m = self.module
    obs = jnp.zeros((1, m.obs_horizon, self.obs_dim), jnp.float32)
    x_t = jnp.zeros((1, m.pred_horizon, m.action_dim), jnp.float32)
    return m.init(backbone.init_key(m, rng), obs, x_t, jnp.zeros((1,), jnp.int32), backbone.dummy_images(m))["params"]

  def encode(self, params: Params, obs: jax.Array, dropout_rng: jax.Array | None = None, images=None,
             augment_rng: jax.Array | None = None) -> jax.Array:
    """obs [B, To, obs_dim], images {camera: [B, To, H, W, 3] uint8} (a model with cameras) -> obs tokens [B, To, D]."""
    chex.assert_shape(obs, (None, self.module.obs_horizon, self.obs_dim))
    return backbone.apply_method(self.module, params, obs, images, method=DiffusionTransformer.encode,
                                 dropout_rng=dropout_rng, augment_rng=augment_rng)

  def predict_noise(self, params: Params, obs_tokens: jax.Array, x_t: jax.Array, t: jax.Array,
                    dropout_rng: jax.Array | None = None) -> jax.Array:
    """eps_theta(x_t, t | obs): obs tokens [B, To, D], x_t [B, Tp, A], t [B] int32 -> [B, Tp, A]."""
    chex.assert_shape(x_t, (obs_tokens.shape[0], self.module.pred_horizon, self.module.action_dim))
    return backbone.apply_method(self.module, params, obs_tokens, x_t, t, method=DiffusionTransformer.predict_noise,
                                 dropout_rng=dropout_rng)


def make_noise_model(config, obs_dim: int, action_dim: int) -> NoiseModel:
  """Builds the model from ``config.model`` and ``config.horizon`` (the same fields as the energy model)."""
  return NoiseModel(module=DiffusionTransformer(**backbone.head_kwargs(config, action_dim)), obs_dim=obs_dim)
