"""The EBT-Policy energy model E_theta(obs, action chunk) -> scalar energy per sample.

Architecture (paper Sec. 4 / Table 2, details from the authors' robomimic fork): the shared trunk
``ebt_jax.models.backbone.Backbone`` (obs encoder -> obs tokens z = f_theta(x), Alg. 1 line 2; action
decoder cross-attending to z) -> RMSNorm -> MLP head (biases with ``head_bias``) -> per-step, per-dimension outputs [B, Tp, A]
-> mean -> energy [B]

The model holds no sampler logic: ``ebt_jax.samplers`` minimises this energy (Alg. 1 and 2).
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


class EBTransformer(nn.Module):
  """Flax module; use it through ``EnergyModel``'s pure functions.

  Attributes:
    action_dim: A, action width (Lift: 7).
    obs_horizon: To.
    pred_horizon: Tp.
    width: D, token width.
    num_layers: energy (decoder) blocks.
    num_obs_layers: observation-encoder blocks.
    num_heads: attention heads (divides ``width``).
    mlp_ratio: MLP hidden width / D (authors: 1).
    attn_dropout: dropout on attention weights during training (authors: 0.3).
    obs_pos_emb, obs_causal_mask, cross_attn_mask: the trunk's mask and position choices
      (``backbone.Backbone``; the authors': "learned", True, True).
    head_bias: biases in the energy head's MLP (the authors': yes; default: no).
    vision: the camera encoder (``vision.VisionSpec``; None: low-dim only).
  """
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
    self.head_norm = nn.RMSNorm()
    self.head = layers.Mlp(self.width, out=self.action_dim, use_bias=self.head_bias)

  def encode(self, obs: jax.Array, images=None, deterministic: bool = True, augment: bool = False) -> jax.Array:
    """obs [B, To, obs_dim] normalised (+ images, ``backbone.Backbone.encode``) -> obs tokens [B, To, D]."""
    return self.backbone.encode(obs, images, deterministic, augment)

  def energy_terms(self, obs_tokens: jax.Array, actions: jax.Array, deterministic: bool = True) -> jax.Array:
    """obs tokens [B, To, D], actions [B, Tp, A] -> per-step, per-dim energy terms [B, Tp, A]."""
    return self.head(self.head_norm(self.backbone.decode(obs_tokens, actions, deterministic)))

  def __call__(self, obs: jax.Array, actions: jax.Array, images=None, deterministic: bool = True) -> jax.Array:
    return self.energy_terms(self.encode(obs, images, deterministic), actions, deterministic).mean(axis=(-2, -1))


@dataclasses.dataclass(frozen=True)
class EnergyModel:
  """Pure functions of (params, inputs) around ``EBTransformer``.

  All arrays are float32; obs and actions are normalised to [-1, 1] (``ebt_jax.data.normalization``);
  images (a model with cameras) are {camera: [B, To, H, W, 3] uint8}. Passing a ``dropout_rng`` turns
  attention dropout on (training), an ``augment_rng`` the image augmentation; ``None`` is deterministic.
  """
  module: EBTransformer
  obs_dim: int

  def init(self, rng: jax.Array) -> Params:
    """-> parameter pytree (init on a [1, To, obs_dim] / [1, Tp, A] dummy batch, images of the crop size)."""
    obs = jnp.zeros((1, self.module.obs_horizon, self.obs_dim), jnp.float32)
    actions = jnp.zeros((1, self.module.pred_horizon, self.module.action_dim), jnp.float32)
    return self.module.init(backbone.init_key(self.module, rng), obs, actions,
                            backbone.dummy_images(self.module))["params"]

  def encode(self, params: Params, obs: jax.Array, dropout_rng: jax.Array | None = None, images=None,
             augment_rng: jax.Array | None = None) -> jax.Array:
    """z = f_theta(x) (Alg. 1/2 line 2). obs: [B, To, obs_dim], images {camera: [B, To, H, W, 3] uint8}
    (a model with cameras) -> obs tokens [B, To, D]."""
    chex.assert_shape(obs, (None, self.module.obs_horizon, self.obs_dim))
    return backbone.apply_method(self.module, params, obs, images, method=EBTransformer.encode,
                                 dropout_rng=dropout_rng, augment_rng=augment_rng)

  def energy_from_tokens(self, params: Params, obs_tokens: jax.Array, actions: jax.Array,
                         dropout_rng: jax.Array | None = None) -> jax.Array:
    """E_theta(z, y). obs_tokens [B, To, D], actions [B, Tp, A] -> energy [B] (mean of the head)."""
    chex.assert_shape(actions, (obs_tokens.shape[0], self.module.pred_horizon, self.module.action_dim))
    terms = backbone.apply_method(self.module, params, obs_tokens, actions, method=EBTransformer.energy_terms,
                                  dropout_rng=dropout_rng)
    return terms.mean(axis=(-2, -1))

  def energy(self, params: Params, obs: jax.Array, actions: jax.Array,
             dropout_rng: jax.Array | None = None, images=None) -> jax.Array:
    """E_theta(x, y): obs [B, To, obs_dim], actions [B, Tp, A] (images: ``encode``) -> energy [B] float32."""
    enc_rng = dec_rng = None
    if dropout_rng is not None:
      enc_rng, dec_rng = jax.random.split(dropout_rng)
    return self.energy_from_tokens(params, self.encode(params, obs, enc_rng, images), actions, dec_rng)


def make_energy_model(config, obs_dim: int, action_dim: int) -> EnergyModel:
  """Builds the model from ``config.model`` (see configs/lift.py) and ``config.horizon``."""
  return EnergyModel(module=EBTransformer(**backbone.head_kwargs(config, action_dim)), obs_dim=obs_dim)
