"""One entry point for every dataset format: ``read_dataset(config.data) -> Demos``.

* a directory ending in ``.zarr`` (or holding ``.zgroup`` / ``zarr.json``): a Diffusion-Policy replay
  buffer (``zarr_replay``), e.g. Push-T's ``pusht_cchi_v7_replay.zarr``;
* anything else: a robomimic HDF5 file (``robomimic_hdf5``).

``config.data.derived_obs`` names a function computing observations from the stored arrays (see
``DERIVED_OBS``), so that training sees exactly what the evaluation env returns.
"""

from __future__ import annotations

import os

from ebt_jax.data import robomimic_hdf5, zarr_replay
from ebt_jax.data.demos import DatasetError, Demos


def _pusht(arrays):
  from ebt_jax.envs import pusht  # pylint: disable=g-import-not-at-top
  return pusht.observations_from_state(arrays)


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
                 derived_obs: str = "", image_keys=()) -> Demos:
  """Reads demonstrations from a robomimic HDF5 file or a Zarr replay buffer.

  Args:
    path: the dataset (``.hdf5`` file or ``.zarr`` directory).
    obs_keys: observation keys in concatenation order (robomimic ``obs/<key>``; Zarr ``data/<key>`` or a
      derived key).
    filter_key: robomimic ``mask/<filter_key>``; empty = every demo. Zarr buffers have no masks.
    action_key: Zarr only: the action array under ``data/``.
    derived_obs: a name of ``DERIVED_OBS`` (Zarr only).
    image_keys: RGB camera keys (robomimic ``obs/<key>``, Zarr ``data/<key>``), located, not loaded.

  Raises:
    DatasetError: from the reader, or an option the format does not have (a filter key or derived
      observations for HDF5, a filter key for Zarr), or an unknown ``derived_obs`` name.
  """
  if derived_obs not in DERIVED_OBS:
    raise DatasetError(f"{path}: unknown config.data.derived_obs={derived_obs!r} (known: {sorted(DERIVED_OBS)})")
  if is_zarr(path):
    if filter_key:
      raise DatasetError(f"{path}: Zarr replay buffers have no filter masks (config.data.filter_key={filter_key!r})")
    return zarr_replay.read_replay_buffer(path, obs_keys, action_key, DERIVED_OBS[derived_obs], image_keys)
  if derived_obs:
    raise DatasetError(f"{path}: config.data.derived_obs={derived_obs!r} applies to Zarr replay buffers only")
  return robomimic_hdf5.read_demos(path, obs_keys, filter_key or None, image_keys)


def read_configured(data_config, path: str) -> Demos:
  """``read_dataset`` with the fields of a config's ``data`` block (missing fields take defaults)."""
  return read_dataset(path, data_config.obs_keys, data_config.get("filter_key", ""),
                      data_config.get("action_key", "action"), data_config.get("derived_obs", ""),
                      tuple(data_config.get("image_keys", ())))
