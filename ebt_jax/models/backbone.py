"""The transformer trunk shared by every policy head (EBT energy head, diffusion noise head).

  obs [B, To, obs_dim] (+ camera features [B, To, 64 per camera] from ``vision.ImageEncoder`` when
  ``cameras`` is set) -> Dense -> + position embedding(To) -> ``num_obs_layers`` pre-RMSNorm
  self-attention blocks -> obs tokens [B, To, D]                            (``encode``; EBT Alg. 1 line 2)
  actions [B, Tp, A] -> Dense, LayerNorm, GELU, Dense, GELU -> + sin-cos(Tp) -> ``num_layers`` blocks of
  (self-attention over action tokens, cross-attention to the conditioning tokens, MLP) -> [B, Tp, D]
                                                                            (``decode``)

The authors' code adds three choices (``config.model``; defaults off): ``obs_pos_emb="learned"`` (a
zero-initialised learned obs position embedding instead of sin-cos), ``obs_causal_mask`` (obs token
s attends to obs tokens <= s) and ``cross_attn_mask`` (action token t attends to obs tokens <= t:
their memory mask, rows >= cols; with Tp > To the tokens t >= To see every obs token).

The conditioning tokens are the obs tokens for EBT, and [timestep token, obs tokens] for the diffusion
baseline, so the two policies differ only in their heads, objectives and samplers.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ebt_jax.models import layers, vision


class Backbone(nn.Module):
  """Observation encoder + action-token decoder (architecture: paper Sec. 4 / Table 2, authors' fork).

  Attributes:
    obs_horizon: To.
    pred_horizon: Tp.
    width: D, token width.
    num_layers: decoder blocks over the action tokens.
    num_obs_layers: observation-encoder blocks.
    num_heads: attention heads (divides ``width``).
    mlp_ratio: MLP hidden width / D (authors: 1).
    attn_dropout: dropout on attention weights during training (authors: 0.3).
    obs_pos_emb: "sincos" (fixed) or "learned" (zero-initialised parameter [To, D], the authors').
    obs_causal_mask: causal self-attention over obs tokens (the authors').
    cross_attn_mask: action token t cross-attends only to obs tokens <= t (the authors'); tokens
      before the obs tokens in ``decode``'s conditioning (the diffusion timestep) stay visible.
    vision: the camera encoder (``vision.VisionSpec``: cameras, crop, colour jitter, ResNet-18 widths,
      keypoints, features), each camera through its own ``vision.CameraEncoder``; None: low-dim only.
  """
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
  vision: vision.VisionSpec | None = None

  def setup(self):
    hidden = int(self.width * self.mlp_ratio)
    self.obs_proj = nn.Dense(self.width, kernel_init=layers.dense_init)
    self.obs_blocks = [layers.EncoderBlock(self.num_heads, hidden, self.attn_dropout)
                       for _ in range(self.num_obs_layers)]
    self.action_in = nn.Dense(self.width, kernel_init=layers.dense_init)
    self.action_in_norm = nn.LayerNorm()
    self.action_out = nn.Dense(self.width, kernel_init=layers.dense_init)
    self.blocks = [layers.DecoderBlock(self.num_heads, hidden, self.attn_dropout)
                   for _ in range(self.num_layers)]
    if self.obs_pos_emb not in OBS_POS_EMBS:
      raise ValueError(f"obs_pos_emb must be one of {OBS_POS_EMBS}, got {self.obs_pos_emb!r}")
    if self.obs_pos_emb == "learned":
      self.obs_pos = self.param("obs_pos_emb", nn.initializers.zeros, (self.obs_horizon, self.width))
    if self.vision is not None:
      self.image_encoder = vision.ImageEncoder(**dataclasses.asdict(self.vision))

  def encode(self, obs: jax.Array, images: Mapping[str, jax.Array] | None = None, deterministic: bool = True,
             augment: bool = False) -> jax.Array:
    """obs [B, To, obs_dim] normalised, images {camera: [B, To, H, W, 3] uint8} (with ``cameras``; else
    None) -> obs tokens [B, To, D]. ``augment``: training crops and colour jitter (``"augment"`` rngs).

    Raises:
      ValueError: if the model has cameras and ``images`` is None.
    """
    pos = self.obs_pos if self.obs_pos_emb == "learned" else layers.sincos_embedding(self.obs_horizon, self.width)
    if self.vision is not None:
      if images is None:
        raise ValueError(f"this model encodes cameras {list(self.vision.cameras)}: pass their images")
      obs = jnp.concatenate([obs, self.image_encoder(images, augment)], axis=-1)
    x = self.obs_proj(obs) + pos
    mask = np.tril(np.ones((self.obs_horizon, self.obs_horizon), bool)) if self.obs_causal_mask else None
    for block in self.obs_blocks:
      x = block(x, deterministic, mask)
    return x

  def decode(self, cond_tokens: jax.Array, actions: jax.Array, deterministic: bool = True) -> jax.Array:
    """conditioning tokens [B, M, D] (any prefix tokens, then the To obs tokens), actions [B, Tp, A]
    -> action features [B, Tp, D]."""
    x = layers.gelu(self.action_in_norm(self.action_in(actions)))
    x = layers.gelu(self.action_out(x)) + layers.sincos_embedding(self.pred_horizon, self.width)
    mask = cross_attention_mask(self.pred_horizon, cond_tokens.shape[1], self.obs_horizon) if self.cross_attn_mask else None
    for block in self.blocks:
      x = block(x, cond_tokens, deterministic, mask)
    return x

  def __call__(self, obs: jax.Array, actions: jax.Array, images: Mapping[str, jax.Array] | None = None,
               deterministic: bool = True) -> jax.Array:
    return self.decode(self.encode(obs, images, deterministic), actions, deterministic)


OBS_POS_EMBS = ("sincos", "learned")


def cross_attention_mask(pred_horizon: int, num_cond: int, obs_horizon: int) -> np.ndarray:
  """[Tp, M] bool: action token t sees the M - To prefix tokens and obs tokens s <= t (authors' memory
  mask). Raises ValueError if ``num_cond`` < ``obs_horizon``."""
  prefix = num_cond - obs_horizon
  if prefix < 0:
    raise ValueError(f"{num_cond} conditioning tokens cannot hold {obs_horizon} obs tokens")
  t, s = np.arange(pred_horizon)[:, None], np.arange(obs_horizon)[None]
  return np.concatenate([np.ones((pred_horizon, prefix), bool), s <= t], axis=1)


# The Backbone fields every head module carries (and ``config.model`` / ``config.horizon`` set).
TRUNK_FIELDS = ("obs_horizon", "pred_horizon", "width", "num_layers", "num_obs_layers", "num_heads", "mlp_ratio",
                "attn_dropout", "obs_pos_emb", "obs_causal_mask", "cross_attn_mask", "vision")


def trunk_of(head: nn.Module) -> Backbone:
  """The Backbone of a head module (inside its ``setup``), built from the head's own trunk fields."""
  return Backbone(**{f: getattr(head, f) for f in TRUNK_FIELDS})


def head_kwargs(config, action_dim: int) -> dict[str, Any]:
  """Constructor arguments of a head module from ``config.horizon``, ``config.model`` (see configs/lift.py)
  and the cameras ``config.data.image_keys`` (with ``config.model.vision``)."""
  m = config.model
  return dict(vision=vision.VisionSpec.from_config(config), action_dim=action_dim, obs_horizon=config.horizon.obs, pred_horizon=config.horizon.pred,
              width=m.width, num_layers=m.num_layers, num_obs_layers=m.num_obs_layers, num_heads=m.num_heads,
              mlp_ratio=m.mlp_ratio, attn_dropout=m.attn_dropout, obs_pos_emb=m.get("obs_pos_emb", "sincos"),
              obs_causal_mask=m.get("obs_causal_mask", False), cross_attn_mask=m.get("cross_attn_mask", False),
              head_bias=m.get("head_bias", False))


def apply_method(module: nn.Module, params: Any, *args, method, dropout_rng: jax.Array | None,
                 augment_rng: jax.Array | None = None):
  """``module.apply`` of one method; attention dropout is on exactly when a ``dropout_rng`` is given, image
  augmentation (``encode`` of a model with cameras) exactly when an ``augment_rng`` is."""
  rngs, kwargs = {}, {"deterministic": dropout_rng is None}
  if dropout_rng is not None:
    rngs["dropout"] = dropout_rng
  if augment_rng is not None:
    rngs["augment"], kwargs["augment"] = augment_rng, True
  return module.apply({"params": params}, *args, method=method, rngs=rngs, **kwargs)


AUGMENT_STREAM = 0x696D67  # folded into a loss's rng for the image augmentation key


def augment_rng(module: nn.Module, rng: jax.Array) -> jax.Array | None:
  """The training augmentation key of a head module with cameras (folded from the loss's ``rng``, so the
  other random streams of a low-dim model are unchanged); None without cameras."""
  return jax.random.fold_in(rng, AUGMENT_STREAM) if module.vision is not None else None


def init_key(module: nn.Module, rng: jax.Array) -> jax.Array:
  """The key a head module's parameters are drawn from: ``rng`` itself for a low-dim model; for a model
  with cameras an RBG key derived from it (deterministic per ``rng``), because XLA:CPU compiles
  threefry draws for ResNet-18's ~60 arrays per camera for minutes (measured: one CPU-width trunk's jitted
  init 66 s with threefry, 7 s with rbg)."""
  if module.vision is None:
    return rng
  return jax.random.wrap_key_data(jax.random.bits(rng, (4,), jnp.uint32), impl="rbg")


def dummy_images(module: nn.Module) -> dict[str, jax.Array] | None:
  """Zero images {camera: [1, To, crop_h, crop_w, 3] uint8} to initialise a head module with cameras; None without."""
  if module.vision is None:
    return None
  crop = module.vision.crop
  return {cam: jnp.zeros((1, module.obs_horizon, *crop, 3), jnp.uint8) for cam in module.vision.cameras}
