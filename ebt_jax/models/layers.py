"""Transformer layers of the EBT-Policy energy model (pre-RMSNorm blocks, qk-normalised attention)."""

from __future__ import annotations

import numpy as np
import flax.linen as nn
import jax
import jax.numpy as jnp

dense_init = nn.initializers.xavier_uniform()


def gelu(x: jax.Array) -> jax.Array:
  return nn.gelu(x, approximate=True)


def sincos_embedding(length: int, dim: int) -> np.ndarray:
  """Fixed 1-D sin-cos position embedding [length, dim] (Vaswani et al.; MAE's 1-D variant).

  Raises:
    ValueError: if ``dim`` is odd.
  """
  if dim % 2:
    raise ValueError(f"sin-cos embedding needs an even width, got {dim}")
  omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
  angles = np.arange(length, dtype=np.float64)[:, None] * omega[None]
  return np.concatenate([np.sin(angles), np.cos(angles)], axis=1).astype(np.float32)


def timestep_embedding(t: jax.Array, dim: int) -> jax.Array:
  """Sinusoidal embedding of diffusion timesteps (Diffusion Policy's ``SinusoidalPosEmb``).

  t: [B] int or float timesteps -> [B, dim] float32 (sin half, then cos half; frequencies
  exp(-log(10000) k / (dim/2 - 1)), k < dim/2).

  Raises:
    ValueError: if ``dim`` is odd or < 4.
  """
  if dim % 2 or dim < 4:
    raise ValueError(f"timestep embedding needs an even width >= 4, got {dim}")
  half = dim // 2
  freqs = jnp.exp(-np.log(10000.0) * jnp.arange(half, dtype=jnp.float32) / (half - 1))
  angles = jnp.asarray(t, jnp.float32)[:, None] * freqs[None]
  return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


class Attention(nn.Module):
  """Multi-head attention with per-head RMSNorm on queries and keys (qk-norm), biased projections.

  ``x``: [B, Tq, D] queries; ``context``: [B, Tk, D] keys/values (``x`` itself for self-attention);
  ``mask``: optional [Tq, Tk] bool, True where query q may attend to key k (every row needs a True).
  Returns [B, Tq, D]. Without a mask every token attends to every token.
  """
  num_heads: int
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, context: jax.Array, deterministic: bool,
               mask: np.ndarray | None = None) -> jax.Array:
    dim = x.shape[-1]
    if dim % self.num_heads:
      raise ValueError(f"width {dim} is not divisible by num_heads={self.num_heads}")
    head_dim = dim // self.num_heads
    proj = lambda name: nn.DenseGeneral((self.num_heads, head_dim), kernel_init=dense_init, name=name)
    q = nn.RMSNorm(name="q_norm")(proj("query")(x))
    k = nn.RMSNorm(name="k_norm")(proj("key")(context))
    v = proj("value")(context)
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(head_dim)
    if mask is not None:
      logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
    weights = jax.nn.softmax(logits, axis=-1)
    weights = nn.Dropout(self.dropout_rate)(weights, deterministic=deterministic)
    out = jnp.einsum("bhqk,bkhd->bqhd", weights, v)
    return nn.DenseGeneral(dim, axis=(-2, -1), kernel_init=dense_init, name="out")(out)


class Mlp(nn.Module):
  """Dense -> GELU(tanh) -> Dense, hidden width ``hidden`` (the authors use hidden = width)."""
  hidden: int
  out: int | None = None
  use_bias: bool = True

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = gelu(nn.Dense(self.hidden, use_bias=self.use_bias, kernel_init=dense_init)(x))
    return nn.Dense(self.out or x.shape[-1], use_bias=self.use_bias, kernel_init=dense_init)(h)


class EncoderBlock(nn.Module):
  """Pre-RMSNorm self-attention + MLP over observation tokens [B, To, D] (``mask`` [To, To] optional)."""
  num_heads: int
  mlp_hidden: int
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool, mask: np.ndarray | None = None) -> jax.Array:
    h = nn.RMSNorm()(x)
    x = x + Attention(self.num_heads, self.dropout_rate)(h, h, deterministic, mask)
    return x + Mlp(self.mlp_hidden)(nn.RMSNorm()(x))


class DecoderBlock(nn.Module):
  """Pre-RMSNorm self-attention over action tokens, cross-attention to obs tokens, MLP.

  ``x``: [B, Tp, D] action tokens; ``obs_tokens``: [B, M, D]; ``cross_mask``: optional [Tp, M] bool
  (True: action token t may attend to conditioning token m). Returns [B, Tp, D].
  """
  num_heads: int
  mlp_hidden: int
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, obs_tokens: jax.Array, deterministic: bool,
               cross_mask: np.ndarray | None = None) -> jax.Array:
    h = nn.RMSNorm(name="self_attn_norm")(x)
    x = x + Attention(self.num_heads, self.dropout_rate, name="self_attn")(h, h, deterministic)
    h = nn.RMSNorm(name="cross_attn_norm")(x)
    x = x + Attention(self.num_heads, self.dropout_rate, name="cross_attn")(h, obs_tokens, deterministic, cross_mask)
    return x + Mlp(self.mlp_hidden, name="mlp")(nn.RMSNorm(name="mlp_norm")(x))
