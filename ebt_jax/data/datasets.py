"""One entry point for every dataset format: ``read_dataset(config.data) -> Demos``.

* a directory ending in ``.zarr`` (or holding ``.zgroup`` / ``zarr.json``): a Diffusion-Policy replay
  buffer (``zarr_replay``), e.g. Push-T's ``pusht_cchi_v7_replay.zarr``;
* anything else: a robomimic HDF5 file (``robomimic_hdf5``).

``config.data.derived_obs`` names a function computing observations from the stored arrays (see
``DERIVED_OBS``), so that training sees exactly what the evaluation env returns.

Validation demos (``config.data.valid_filter_key``: a robomimic mask such as ``valid``; or
``config.data.valid_fraction`` of whole episodes, seeded) are read into ``Demos.held_out`` and left out of
``Demos.episodes``, so nothing downstream trains on them; the trainer reports their loss (``valid_loss``).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import numpy as np

from ebt_jax.data import robomimic_hdf5, zarr_replay
from ebt_jax.data.demos import DatasetError, Demos


def _pusht(arrays):
  from ebt_jax.envs import pusht  # pylint: disable=g-import-not-at-top
  return pusht.observations_from_state(arrays)


# The permutation of episode indices that ``valid_fraction`` holds out from: one fixed seed, so every run
# (every config.seed of a seed group) trains and validates on the same episodes.
VALID_SPLIT_SEED = 0


# name -> function of the stored arrays returning extra observation arrays.
DERIVED_OBS = {
    "": None,
    # gym-pusht's environment_state (the T's 8 corners, px) and agent_pos, from data/state.
    "pusht": _pusht,
}


def is_zarr(path: str) -> bool:
  """True for a Zarr group directory (``*.zarr``, or one holding ``.zgroup`` / ``zarr.json``)."""
  return os.path.isdir(path) and (path.rstrip("/").endswith(".zarr") or any(
      os.path.exists(os.path.join(path, f)) for f in (".zgroup", "zarr.json")))


def read_dataset(path: str, obs_keys, filter_key: str = "", action_key: str = "action",
                 derived_obs: str = "", image_keys=(), valid_filter_key: str = "",
                 valid_fraction: float = 0.0) -> Demos:
  """Reads demonstrations from a robomimic HDF5 file or a Zarr replay buffer, holding out validation demos.

  Args:
    path: the dataset (``.hdf5`` file or ``.zarr`` directory).
    obs_keys: observation keys in concatenation order (robomimic ``obs/<key>``; Zarr ``data/<key>`` or a
      derived key).
    filter_key: robomimic ``mask/<filter_key>``; empty = every demo. Zarr buffers have no masks.
    action_key: Zarr only: the action array under ``data/``.
    derived_obs: a name of ``DERIVED_OBS`` (Zarr only).
    image_keys: RGB camera keys (robomimic ``obs/<key>``, Zarr ``data/<key>``), located, not loaded.
    valid_filter_key: robomimic ``mask/<valid_filter_key>`` (e.g. ``"valid"``): these demos become
      ``Demos.held_out`` and are removed from ``episodes`` (the training demos); empty = none.
    valid_fraction: in [0, 1): hold out this share of whole episodes instead (at least one; meant for Zarr
      buffers, which have no masks, but any format), drawn by a permutation of the episode indices
      seeded with ``VALID_SPLIT_SEED`` (``fraction_held_out``); 0 = none. Not with ``valid_filter_key``.

  Returns:
    ``Demos``: ``episodes`` the training demos, ``held_out`` the validation ones (empty without a split).

  Raises:
    DatasetError: from the reader, or an option the format does not have (a filter key or derived
      observations for HDF5, a filter key or validation mask for Zarr), an unknown ``derived_obs`` name,
      a ``valid_filter_key`` the file has no mask of (the message lists its masks), both validation
      settings at once, or a split that leaves no training demo.
  """
  if derived_obs not in DERIVED_OBS:
    raise DatasetError(f"{path}: unknown config.data.derived_obs={derived_obs!r} (known: {sorted(DERIVED_OBS)})")
  if valid_filter_key and valid_fraction:
    raise DatasetError(f"{path}: config.data.valid_filter_key={valid_filter_key!r} and config.data.valid_fraction="
                       f"{valid_fraction:g} both select validation demos: set one of them")
  if is_zarr(path):
    if filter_key or valid_filter_key:
      field = "filter_key" if filter_key else "valid_filter_key"
      raise DatasetError(f"{path}: Zarr replay buffers have no filter masks (config.data.{field}="
                         f"{filter_key or valid_filter_key!r}); hold out episodes with config.data.valid_fraction")
    demos = zarr_replay.read_replay_buffer(path, obs_keys, action_key, DERIVED_OBS[derived_obs], image_keys)
    return hold_out(demos, fraction_held_out([e.name for e in demos.episodes], valid_fraction), valid_fraction)
  if derived_obs:
    raise DatasetError(f"{path}: config.data.derived_obs={derived_obs!r} applies to Zarr replay buffers only")
  demos = robomimic_hdf5.read_demos(path, obs_keys, filter_key or None, image_keys)
  if valid_filter_key:
    masks = robomimic_hdf5.filter_keys(path)
    if valid_filter_key not in masks:
      raise DatasetError(f"{path}: config.data.valid_filter_key={valid_filter_key!r}, but the file has no "
                         f"'mask/{valid_filter_key}' (its masks: {masks or 'none'}; robomimic's "
                         "split_train_val.py writes 'train' and 'valid')")
    valid = robomimic_hdf5.read_demos(path, obs_keys, valid_filter_key, image_keys)
    held = {v.name for v in valid.episodes}
    training = tuple(e for e in demos.episodes if e.name not in held)
    if not training:
      raise DatasetError(f"{path}: every training demo{f' of mask/{filter_key}' if filter_key else ''} is in "
                         f"mask/{valid_filter_key} (config.data.valid_filter_key): nothing is left to train on")
    return dataclasses.replace(demos, episodes=training, held_out=valid.episodes)
  return hold_out(demos, fraction_held_out([e.name for e in demos.episodes], valid_fraction), valid_fraction)


def fraction_held_out(names: Sequence[str], fraction: float, seed: int = VALID_SPLIT_SEED) -> list[str]:
  """The episodes ``valid_fraction`` holds out: the first ``max(1, round(fraction * E))`` of a seeded
  permutation of the E episode indices, returned in dataset order ([] for ``fraction`` 0). E.g. Push-T's
  206 episodes at 0.1 -> 21 episodes, the same for every run."""
  if not fraction:
    return []
  count = max(1, int(round(fraction * len(names))))
  chosen = np.random.default_rng(seed).permutation(len(names))[:count]
  return [names[i] for i in sorted(chosen)]


def hold_out(demos: Demos, names: Sequence[str], fraction: float = 0.0) -> Demos:
  """``demos`` with the episodes called ``names`` moved from ``episodes`` to ``held_out`` (order kept).

  Raises:
    DatasetError: if no training episode would be left (``fraction``: the setting named in the message).
  """
  if not names:
    return demos
  names = set(names)
  training = tuple(e for e in demos.episodes if e.name not in names)
  if not training:
    raise DatasetError(f"{demos.path}: config.data.valid_fraction={fraction:g} holds out all "
                       f"{len(demos.episodes)} episodes: nothing is left to train on (use a smaller fraction)")
  return dataclasses.replace(demos, episodes=training,
                             held_out=tuple(e for e in demos.episodes if e.name in names))


def read_configured(data_config, path: str) -> Demos:
  """``read_dataset`` with the fields of a config's ``data`` block (missing fields take defaults)."""
  return read_dataset(path, data_config.obs_keys, data_config.get("filter_key", ""),
                      data_config.get("action_key", "action"), data_config.get("derived_obs", ""),
                      tuple(data_config.get("image_keys", ())), data_config.get("valid_filter_key", ""),
                      data_config.get("valid_fraction", 0.0))
