"""Image augmentation of camera observations as pure JAX functions of an explicit PRNG key (dm-pix).

robomimic's image policies (and the authors' EBT template, ``exps/templates/ebt_policy.json``) use two
randomisers on every RGB key: ``CropRandomizer`` (84 -> 76 random crop in training, the centre crop at
evaluation) and ``ColorRandomizer`` (torchvision ``ColorJitter(brightness=0.3, contrast=0.3,
saturation=0.3, hue=0.3)`` in training, nothing at evaluation). Both are applied per image, i.e. per
(sample, obs step, camera), with independent draws.

Images here are float32 in [0, 1], [N, H, W, 3] (N = batch x obs steps); every function is jittable
and shape-static. Colour jitter follows torchvision's factors: brightness multiplies by
U[1 - b, 1 + b], contrast and saturation blend with U[1 - c, 1 + c] (dm-pix ``adjust_contrast`` /
``adjust_saturation``), hue shifts by U[-h, h] of the hue circle (dm-pix ``adjust_hue``), in this fixed
order (torchvision draws the order at random), and the result is clipped to [0, 1].
"""

from __future__ import annotations

from typing import Sequence

import dm_pix as pix
import jax
import jax.numpy as jnp


def center_crop(images: jax.Array, crop: Sequence[int]) -> jax.Array:
  """images [N, H, W, C] -> [N, crop_h, crop_w, C], the centre window (robomimic's eval-time crop:
  offset (H - crop_h) // 2, (W - crop_w) // 2).

  Raises:
    ValueError: if the crop is larger than the image.
  """
  h, w = images.shape[-3:-1]
  ch, cw = crop
  if ch > h or cw > w:
    raise ValueError(f"crop {tuple(crop)} is larger than the {h}x{w} images")
  top, left = (h - ch) // 2, (w - cw) // 2
  return images[..., top:top + ch, left:left + cw, :]


def random_crop(key: jax.Array, images: jax.Array, crop: Sequence[int]) -> jax.Array:
  """images [N, H, W, C] -> [N, crop_h, crop_w, C], an independent uniform window per image
  (dm-pix ``random_crop``, vmapped over N keys).

  Raises:
    ValueError: if the crop is larger than the image.
  """
  h, w, c = images.shape[-3:]
  if crop[0] > h or crop[1] > w:
    raise ValueError(f"crop {tuple(crop)} is larger than the {h}x{w} images")
  keys = jax.random.split(key, images.shape[0])
  return jax.vmap(lambda k, im: pix.random_crop(k, im, (crop[0], crop[1], c)))(keys, images)


def color_jitter(key: jax.Array, images: jax.Array, brightness: float, contrast: float, saturation: float,
                 hue: float) -> jax.Array:
  """torchvision-style ``ColorJitter`` per image (module docstring): images [N, H, W, 3] in [0, 1] ->
  the same shape, clipped to [0, 1]. A strength of 0 leaves that property unchanged.

  Raises:
    ValueError: on a negative strength, or hue > 0.5 (half the hue circle).
  """
  if min(brightness, contrast, saturation, hue) < 0 or hue > 0.5:
    raise ValueError(f"colour jitter strengths must be >= 0 (hue <= 0.5), got brightness={brightness}, "
                     f"contrast={contrast}, saturation={saturation}, hue={hue}")

  def one(k, im):
    kb, kc, ks, kh = jax.random.split(k, 4)
    if brightness:
      im = im * jax.random.uniform(kb, (), minval=1 - brightness, maxval=1 + brightness)
    if contrast:
      im = pix.random_contrast(kc, im, 1 - contrast, 1 + contrast)
    if saturation:
      im = pix.random_saturation(ks, jnp.clip(im, 0, 1), 1 - saturation, 1 + saturation)
    if hue:
      im = pix.random_hue(kh, jnp.clip(im, 0, 1), hue)
    return jnp.clip(im, 0.0, 1.0)

  return jax.vmap(one)(jax.random.split(key, images.shape[0]), images)


def train_views(key: jax.Array, images: jax.Array, crop: Sequence[int], jitter: Sequence[float]) -> jax.Array:
  """Training-time view of a batch of images: random crop, then colour jitter ``(brightness, contrast,
  saturation, hue)`` (all zero: none). images [N, H, W, 3] in [0, 1] -> [N, crop_h, crop_w, 3]."""
  crop_key, jitter_key = jax.random.split(key)
  out = random_crop(crop_key, images, crop)
  if any(jitter):
    out = color_jitter(jitter_key, out, *jitter)
  return out
