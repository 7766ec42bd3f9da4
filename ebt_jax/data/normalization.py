"""Min-max normalisation of actions and low-dim observations to [-1, 1].

The statistics are fitted on the training demos, saved with every checkpoint (``to_dict``) and applied
at evaluation, so a policy always sees inputs in the space it was trained in. ``MinMax.identity`` is
the map for data used raw (``config.data.normalize_actions`` / ``normalize_obs`` false: the authors
train on raw robosuite OSC actions, already in [-1, 1], and raw low-dim observations).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

# A dimension whose demo range is below this is treated as constant: it is centred, not scaled
# (scaling it by 2 / range would blow measurement noise up to +-1).
RANGE_EPS = 1e-4


@dataclasses.dataclass(frozen=True)
class MinMax:
  """Per-dimension affine map [min, max] -> [-1, 1].

  Attributes:
    low: [D] float32 per-dimension minimum over the fitted data (raw units).
    high: [D] float32 per-dimension maximum.
  """
  low: np.ndarray
  high: np.ndarray

  @classmethod
  def fit(cls, x: np.ndarray) -> "MinMax":
    """x: [N, D] raw values -> statistics. Raises ValueError on empty or non-finite input."""
    x = np.asarray(x, np.float64)
    if x.ndim != 2 or len(x) == 0:
      raise ValueError(f"MinMax.fit expects a non-empty [N, D] array, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
      raise ValueError("MinMax.fit got NaN or inf values")
    return cls(low=x.min(0).astype(np.float32), high=x.max(0).astype(np.float32))

  @classmethod
  def identity(cls, dim: int) -> "MinMax":
    """The identity map on ``dim`` dimensions (range [-1, 1]): for data used in raw units."""
    return cls(low=-np.ones(dim, np.float32), high=np.ones(dim, np.float32))

  def _scale_offset(self, xp):
    low, high = xp.asarray(self.low), xp.asarray(self.high)
    span = high - low
    constant = span < RANGE_EPS
    scale = xp.where(constant, 1.0, 2.0 / xp.where(constant, 1.0, span))
    centre = (high + low) / 2
    return scale, centre

  def normalize(self, x, xp=np):
    """[..., D] raw -> [..., D] in [-1, 1] on the fitted range (constant dims: x - value)."""
    scale, centre = self._scale_offset(xp)
    return (x - centre) * scale

  def unnormalize(self, y, xp=np):
    """Inverse of ``normalize``: [..., D] normalised -> raw units."""
    scale, centre = self._scale_offset(xp)
    return y / scale + centre

  def to_dict(self) -> dict[str, list[float]]:
    return {"low": self.low.tolist(), "high": self.high.tolist()}

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "MinMax":
    return cls(low=np.asarray(d["low"], np.float32), high=np.asarray(d["high"], np.float32))


@dataclasses.dataclass(frozen=True)
class Normalizer:
  """Observation and action statistics of one dataset, with the obs keys they belong to."""
  obs: MinMax
  actions: MinMax
  obs_keys: tuple[str, ...]
  obs_key_dims: tuple[int, ...]

  def to_dict(self) -> dict[str, Any]:
    return {"obs": self.obs.to_dict(), "actions": self.actions.to_dict(),
            "obs_keys": list(self.obs_keys), "obs_key_dims": list(self.obs_key_dims)}

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "Normalizer":
    return cls(obs=MinMax.from_dict(d["obs"]), actions=MinMax.from_dict(d["actions"]),
               obs_keys=tuple(d["obs_keys"]), obs_key_dims=tuple(int(x) for x in d["obs_key_dims"]))
