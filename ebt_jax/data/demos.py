"""The dataset interface every reader returns: demonstrations as episodes of low-dim observations and actions
(and, with image keys, where each demo's camera frames live).

Two formats feed it (``ebt_jax.data.datasets.read_dataset`` picks by path): robomimic HDF5
(``robomimic_hdf5``) and Diffusion-Policy Zarr replay buffers (``zarr_replay``). Everything after it
(normalisation, windowing, batching, training) is format-independent.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

from ebt_jax.errors import DatasetError  # pylint: disable=unused-import  (re-exported: readers raise it)


@dataclasses.dataclass(frozen=True)
class Episode:
  """One demonstration, low-dim observations concatenated in the configured key order.

  Attributes:
    name: demo name: the robomimic group (``"demo_0"``) or the replay-buffer episode (``"episode_0"``).
    obs: [T, obs_dim] float32, the keys of ``Demos.obs_keys`` concatenated (raw units).
    actions: [T, action_dim] float32 (raw units).
    images: {camera: ``ebt_jax.data.images.ImageSource``} where this demo's frames live (not loaded;
      ``images.ImageStore`` reads them); empty without image keys.
  """
  name: str
  obs: np.ndarray
  actions: np.ndarray
  images: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Demos:
  """Demonstrations read from one dataset (HDF5 file or Zarr directory).

  Attributes:
    path: the dataset read.
    episodes: the selected demos, in the dataset's order.
    obs_keys: observation keys, in concatenation order.
    obs_key_dims: the width of each key in ``obs`` (same order).
    env_args: robomimic's parsed ``data.attrs["env_args"]`` (the robosuite env to evaluate in); empty
      for formats without one (Zarr replay buffers: the config names the env).
    image_keys: RGB camera keys read (``config.data.image_keys``), in order; each episode's ``images``
      has them all, with the same H x W in every demo.
    held_out: validation demos (``config.data.valid_filter_key`` / ``valid_fraction``; the same keys and
      widths), never trained on: ``episodes`` excludes them, and only the validation loss sees them.
  """
  path: str
  episodes: tuple[Episode, ...]
  obs_keys: tuple[str, ...]
  obs_key_dims: tuple[int, ...]
  env_args: dict[str, Any]
  image_keys: tuple[str, ...] = ()
  held_out: tuple[Episode, ...] = ()

  @property
  def image_shapes(self) -> dict[str, tuple[int, int]]:
    """{camera: (H, W)} of the image keys."""
    first = self.episodes[0].images
    return {cam: (first[cam].height, first[cam].width) for cam in self.image_keys}

  @property
  def obs_dim(self) -> int:
    return int(sum(self.obs_key_dims))

  @property
  def action_dim(self) -> int:
    return int(self.episodes[0].actions.shape[1])

  @property
  def num_samples(self) -> int:
    return int(sum(len(e.actions) for e in self.episodes))
