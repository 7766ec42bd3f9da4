"""Training windows: To observations and Tp actions per sample, edge-padded as in Diffusion Policy.

A window starting at step ``t`` of an episode of length T holds observations ``t .. t+To-1`` and
actions ``t .. t+Tp-1``; indices before 0 repeat the first step and indices past T-1 repeat the last
one. Starts run from ``-(To-1)`` to ``T-Tp+Ta-1`` so that every demo step is predicted with a full
observation history and the action chunk executed at inference (``To-1 .. To-1+Ta-1``) is never all
padding. Policy inference executes ``actions[To-1 : To-1+Ta]`` of each predicted chunk.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ebt_jax.data import images
from ebt_jax.data.demos import Demos


@dataclasses.dataclass(frozen=True)
class WindowIndex:
  """Gather indices into the concatenated demo arrays.

  Attributes:
    obs_idx: [W, To] int32 rows of the concatenated observations for each window.
    action_idx: [W, Tp] int32 rows of the concatenated actions.
  """
  obs_idx: np.ndarray
  action_idx: np.ndarray

  def __len__(self) -> int:
    return len(self.obs_idx)


def window_index(episode_lengths, obs_horizon: int, action_horizon: int, pred_horizon: int) -> WindowIndex:
  """Builds every training window over episodes laid end to end.

  Args:
    episode_lengths: sequence of T_e > 0 (steps per episode).
    obs_horizon: To >= 1.
    action_horizon: Ta, 1 <= Ta <= Tp - To + 1.
    pred_horizon: Tp.

  Returns:
    ``WindowIndex`` with sum_e (T_e - Tp + Ta + To - 1) windows (at least one per episode).

  Raises:
    ValueError: on horizons that cannot fit (Ta > Tp - To + 1) or non-positive lengths.
  """
  if not (obs_horizon >= 1 and 1 <= action_horizon <= pred_horizon - obs_horizon + 1):
    raise ValueError(f"need 1 <= To and 1 <= Ta <= Tp - To + 1, got To={obs_horizon}, "
                     f"Ta={action_horizon}, Tp={pred_horizon}")
  obs_rows, act_rows, offset = [], [], 0
  for length in episode_lengths:
    if length <= 0:
      raise ValueError(f"episode length must be positive, got {length}")
    last_start = max(length - pred_horizon + action_horizon - 1, 0)
    starts = np.arange(-(obs_horizon - 1), last_start + 1)
    obs_rows.append(offset + np.clip(starts[:, None] + np.arange(obs_horizon), 0, length - 1))
    act_rows.append(offset + np.clip(starts[:, None] + np.arange(pred_horizon), 0, length - 1))
    offset += length
  return WindowIndex(np.concatenate(obs_rows).astype(np.int32), np.concatenate(act_rows).astype(np.int32))


class WindowDataset:
  """Normalised demo windows, sampled into batches reproducibly from (seed, step).

  ``batch(step)`` depends only on ``seed`` and ``step``, so a resumed run sees exactly the batches an
  uninterrupted one would have. With image keys, each window also carries its To frames per camera
  (``ebt_jax.data.images.ImageStore``: in RAM, or read per batch from the file: ``image_storage``).
  """

  def __init__(self, demos: Demos, normalizer, obs_horizon: int, action_horizon: int,
               pred_horizon: int, seed: int, image_storage: str = "auto", image_ram_limit_gb: float = 8.0):
    self.obs = normalizer.obs.normalize(np.concatenate([e.obs for e in demos.episodes])).astype(np.float32)
    self.actions = normalizer.actions.normalize(
        np.concatenate([e.actions for e in demos.episodes])).astype(np.float32)
    self.index = window_index([len(e.actions) for e in demos.episodes], obs_horizon, action_horizon,
                              pred_horizon)
    self.seed = seed
    self.images = images.store_for(demos, image_storage, image_ram_limit_gb)

  def __len__(self) -> int:
    return len(self.index)

  def batch(self, step: int, batch_size: int, shard: tuple[int, int] = (0, 1)) -> dict[str, np.ndarray]:
    """-> {"obs": [B, To, obs_dim], "actions": [B, Tp, A]} float32, normalised to [-1, 1] (+ "images":
    {camera: [B, To, H, W, 3] uint8} with image keys).

    Args:
      step: the train step (the batch is a function of (seed, step) only).
      batch_size: the global batch B_global.
      shard: (k, n): this host's rows k * B .. (k + 1) * B - 1 of the global batch, B = B_global / n
        (multi-host: k = process index, n = process count), so the global batch is the same for every
        topology and a 2-host run trains exactly what a 1-host run does.

    Raises:
      ValueError: if n does not divide ``batch_size`` or k is not in [0, n).
    """
    k, n = shard
    if batch_size % n or not 0 <= k < n:
      raise ValueError(f"shard {shard} of a batch of {batch_size}: needs 0 <= k < n and n dividing the batch")
    rng = np.random.default_rng((self.seed, step))
    local = batch_size // n
    rows = rng.integers(0, len(self.index), size=batch_size)[k * local:(k + 1) * local]
    return self.at(rows)

  def at(self, rows: np.ndarray) -> dict[str, np.ndarray]:
    """The windows ``rows`` ([B] int indices into ``index``), in that order: the same dict as ``batch``
    (the trainer's fixed validation windows)."""
    out = {"obs": self.obs[self.index.obs_idx[rows]], "actions": self.actions[self.index.action_idx[rows]]}
    if self.images is not None:
      out["images"] = self.images.gather(self.index.obs_idx[rows])
    return out
