"""Camera encoders of the image policies: a ResNet-18 conv trunk with GroupNorm and a SpatialSoftmax per camera.

The paper's EBT-Policy-S (Table 2) and robomimic's image policies encode each RGB camera with its own
``VisualCore``: torchvision's ResNet-18 without its pooling and classifier (conv 7x7/2, max-pool 3x3/2,
four stages of two BasicBlocks at 64, 128, 256, 512 channels, strides 1, 2, 2, 2), BatchNorm replaced
by GroupNorm (Diffusion Policy's ``replace_bn_with_gn``: channels // 16 groups), a SpatialSoftmax of 32
keypoints (the expected (x, y) of each keypoint's softmax over the feature map, in [-1, 1]) and a
linear layer to 64 features. A 76x76 crop leaves a 3x3x512 map. ``widths`` scales the trunk for a CPU
(e.g. (16, 32, 64, 128): ~1/16 of the FLOPs); the block structure stays ResNet-18's.

No well-kept JAX library ships a GroupNorm ResNet-18 (Flax's examples and big_vision are not packages;
flaxmodels has BatchNorm only), so the trunk is written here; augmentation comes from dm-pix
(``ebt_jax.models.image_augment``).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ebt_jax.models import image_augment

RESNET18_WIDTHS = (64, 128, 256, 512)
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")  # torchvision's kaiming_normal_


def num_groups(channels: int) -> int:
  """GroupNorm groups for ``channels`` (Diffusion Policy: channels // 16, at least 1)."""
  return max(channels // 16, 1)


class BasicBlock(nn.Module):
  """ResNet BasicBlock: 3x3 conv, GN, ReLU, 3x3 conv, GN, + shortcut (1x1 conv + GN when the shape changes), ReLU."""
  channels: int
  stride: int = 1

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x [N, H, W, C_in] -> [N, ceil(H / stride), ceil(W / stride), channels]."""
    norm = lambda: nn.GroupNorm(num_groups=num_groups(self.channels), epsilon=1e-5)
    y = nn.Conv(self.channels, (3, 3), (self.stride, self.stride), padding=1, use_bias=False, kernel_init=conv_init)(x)
    y = nn.relu(norm()(y))
    y = nn.Conv(self.channels, (3, 3), padding=1, use_bias=False, kernel_init=conv_init)(y)
    y = norm()(y)
    if self.stride != 1 or x.shape[-1] != self.channels:
      x = nn.Conv(self.channels, (1, 1), (self.stride, self.stride), use_bias=False, kernel_init=conv_init)(x)
      x = norm()(x)
    return nn.relu(x + y)


class ResNet18Conv(nn.Module):
  """ResNet-18's conv trunk with GroupNorm (module docstring).

  Attributes:
    widths: channels of the stem and of the four stages (ResNet-18: 64, 128, 256, 512; the stem has
      ``widths[0]``).
  """
  widths: Sequence[int] = RESNET18_WIDTHS

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x [N, H, W, 3] float32 in [0, 1] -> feature map [N, ~H/32, ~W/32, widths[-1]] (76x76 -> 3x3)."""
    if len(self.widths) != 4:
      raise ValueError(f"ResNet-18 has four stages: widths needs 4 entries, got {tuple(self.widths)}")
    x = nn.Conv(self.widths[0], (7, 7), (2, 2), padding=3, use_bias=False, kernel_init=conv_init)(x)
    x = nn.relu(nn.GroupNorm(num_groups=num_groups(self.widths[0]), epsilon=1e-5)(x))
    x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
    for stage, channels in enumerate(self.widths):
      x = BasicBlock(channels, 1 if stage == 0 else 2)(x)
      x = BasicBlock(channels)(x)
    return x


class SpatialSoftmax(nn.Module):
  """Keypoints of a feature map (Levine et al. 2016; robomimic ``SpatialSoftmax``, temperature 1, no noise).

  Attributes:
    num_keypoints: K, a 1x1 conv maps the C channels to K maps first.
  """
  num_keypoints: int = 32

  @nn.compact
  def __call__(self, features: jax.Array) -> jax.Array:
    """features [N, H, W, C] -> [N, 2K]: per keypoint the softmax-weighted mean (x, y) over the map,
    x along W and y along H, each in [-1, 1] (-1 = first column / row)."""
    maps = nn.Conv(self.num_keypoints, (1, 1), kernel_init=nn.initializers.lecun_normal())(features)
    n, h, w, k = maps.shape
    attn = jax.nn.softmax(maps.reshape(n, h * w, k), axis=1)  # [N, HW, K]
    pos_x, pos_y = np.meshgrid(np.linspace(-1.0, 1.0, w), np.linspace(-1.0, 1.0, h))
    grid = jnp.asarray(np.stack([pos_x.ravel(), pos_y.ravel()], axis=-1), jnp.float32)  # [HW, 2]
    keypoints = jnp.einsum("npk,pc->nkc", attn, grid)  # [N, K, 2]
    return keypoints.reshape(n, 2 * k)


class CameraEncoder(nn.Module):
  """One camera's ``VisualCore``: ResNet18Conv -> SpatialSoftmax -> Dense(features)."""
  widths: Sequence[int] = RESNET18_WIDTHS
  num_keypoints: int = 32
  features: int = 64

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    """images [N, h, w, 3] float32 in [0, 1] (cropped) -> [N, features]."""
    x = SpatialSoftmax(self.num_keypoints)(ResNet18Conv(self.widths)(images))
    return nn.Dense(self.features, kernel_init=nn.initializers.lecun_normal())(x)


@dataclasses.dataclass(frozen=True)
class VisionSpec:
  """What a model's camera encoder is (one hashable field of the Flax modules; ``ImageEncoder``'s fields).

  Attributes:
    cameras: RGB observation keys, in order (``config.data.image_keys``).
    crop: (h, w) of the training crop and the evaluation centre crop.
    color_jitter: training (brightness, contrast, saturation, hue) strengths; zeros: none.
    widths: the ResNet-18 stage widths.
    num_keypoints: SpatialSoftmax keypoints.
    features: features per camera.
  """
  cameras: tuple[str, ...]
  crop: tuple[int, int] = (76, 76)
  color_jitter: tuple[float, float, float, float] = (0.3, 0.3, 0.3, 0.3)
  widths: tuple[int, ...] = RESNET18_WIDTHS
  num_keypoints: int = 32
  features: int = 64

  @classmethod
  def from_config(cls, config) -> "VisionSpec | None":
    """From ``config.data.image_keys`` and ``config.model.vision``; None without image keys."""
    cameras = tuple(config.data.get("image_keys", ())) if "data" in config else ()
    if not cameras:
      return None
    v = config.model.vision
    return cls(cameras=cameras, crop=tuple(v.crop), color_jitter=tuple(v.color_jitter), widths=tuple(v.widths),
               num_keypoints=v.num_keypoints, features=v.features)


def cameras_of(spec: VisionSpec | None) -> tuple[str, ...]:
  """The cameras of a model's ``vision`` field (empty for a low-dim model)."""
  return () if spec is None else tuple(spec.cameras)


class ImageEncoder(nn.Module):
  """All cameras of an observation step: one ``CameraEncoder`` each, features concatenated in camera order.

  Attributes:
    cameras: observation keys of the RGB cameras, in order (robomimic: ``agentview_image``,
      ``robot0_eye_in_hand_image``; Push-T: ``image``).
    crop: (h, w) of the training crop and of the evaluation centre crop (robomimic 84 -> 76).
    color_jitter: (brightness, contrast, saturation, hue) strengths in training (authors: 0.3 each);
      zeros: none.
    widths, num_keypoints, features: each camera's ``CameraEncoder``.
  """
  cameras: Sequence[str]
  crop: Sequence[int] = (76, 76)
  color_jitter: Sequence[float] = (0.3, 0.3, 0.3, 0.3)
  widths: Sequence[int] = RESNET18_WIDTHS
  num_keypoints: int = 32
  features: int = 64

  @property
  def out_features(self) -> int:
    return len(self.cameras) * self.features

  @nn.compact
  def __call__(self, images: Mapping[str, jax.Array], augment: bool = False) -> jax.Array:
    """images {camera: [B, To, H, W, 3] uint8} -> features [B, To, len(cameras) * features] float32.

    ``augment``: random crop + colour jitter with the ``"augment"`` PRNG stream (training); otherwise
    the centre crop (evaluation).

    Raises:
      KeyError: naming a camera missing from ``images``.
      ValueError: if a camera's array is not [B, To, H, W, 3].
    """
    out = []
    for cam in self.cameras:
      if cam not in images:
        raise KeyError(f"image observation '{cam}' missing (got {sorted(images)})")
      x = images[cam]
      if x.ndim != 5 or x.shape[-1] != 3:
        raise ValueError(f"image observation '{cam}' has shape {x.shape}, expected [B, To, H, W, 3]")
      b, t = x.shape[:2]
      x = x.reshape(b * t, *x.shape[2:]).astype(jnp.float32) / 255.0
      if augment:
        x = image_augment.train_views(self.make_rng("augment"), x, self.crop, self.color_jitter)
      else:
        x = image_augment.center_crop(x, self.crop)
      feats = CameraEncoder(self.widths, self.num_keypoints, self.features, name=f"camera_{cam}")(x)
      out.append(feats.reshape(b, t, self.features))
    return jnp.concatenate(out, axis=-1)
