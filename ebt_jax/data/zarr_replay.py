"""Reading Diffusion-Policy replay buffers (Zarr v2 groups, e.g. ``pusht_cchi_v7_replay.zarr``).

Layout (``diffusion_policy.common.replay_buffer.ReplayBuffer``)::

  data/<key>          [N, ...]  every step of every episode, laid end to end
                                (Push-T: state [N, 5], action [N, 2] px, keypoint [N, 9, 2], img [N, 96, 96, 3])
  meta/episode_ends   [E] int   exclusive end index of each episode, strictly increasing, last == N

Episodes become ``ebt_jax.data.demos.Demos`` (named ``episode_<k>``), the same interface as robomimic
files, so normalisation and windowing are shared. Arrays are read lazily: only the action, the observation
keys and what ``derived_obs`` asks for (never the images unless requested). Every error is a
``DatasetError`` naming the buffer, the key and what was expected.
"""

from __future__ import annotations

import os
from typing import Callable, Mapping, Sequence

import numpy as np
import zarr

from ebt_jax.data import images
from ebt_jax.data.demos import DatasetError, Demos, Episode

DerivedObs = Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]


class _DataArrays(Mapping):
  """``data/<key>`` arrays of one buffer, read on first access and checked: [N, ...], finite."""

  def __init__(self, path: str, data, num_steps: int):
    self._path, self._data, self._num_steps, self._cache = path, data, num_steps, {}

  def __getitem__(self, key: str) -> np.ndarray:
    if key not in self._cache:
      if key not in self._data:
        raise DatasetError(f"{self._path}: no array 'data/{key}' (available: {sorted(self._data.keys())})")
      node = self._data[key]
      if not isinstance(node, zarr.Array):
        raise DatasetError(f"{self._path}: 'data/{key}' is a group, expected an array")
      value = np.asarray(node[...])
      if value.ndim == 0 or len(value) != self._num_steps:
        raise DatasetError(f"{self._path}: 'data/{key}' has shape {value.shape}, expected [{self._num_steps}, ...] "
                           f"(meta/episode_ends[-1] = {self._num_steps} steps)")
      if np.issubdtype(value.dtype, np.number) and not np.all(np.isfinite(value)):
        row = int(np.argwhere(~np.isfinite(value.reshape(len(value), -1)))[0, 0])
        raise DatasetError(f"{self._path}: 'data/{key}' contains NaN or inf (first at step {row})")
      self._cache[key] = value
    return self._cache[key]

  def __iter__(self):
    return iter(self._data.keys())

  def __len__(self) -> int:
    return len(list(self._data.keys()))


def _open(path: str):
  if not os.path.isdir(path):
    raise DatasetError(f"{path}: not a directory (expected a Zarr replay buffer such as pusht_cchi_v7_replay.zarr)")
  try:
    root = zarr.open_group(path, mode="r")
  except Exception as e:  # zarr raises several types for "not a group"
    raise DatasetError(f"{path}: not a readable Zarr group ({type(e).__name__}: {e})") from e
  for group in ("data", "meta"):
    if group not in root or not isinstance(root[group], zarr.Group):
      raise DatasetError(f"{path}: no '{group}' group (top-level keys: {sorted(root.keys())})")
  return root


def episode_ends(path: str | os.PathLike[str]) -> np.ndarray:
  """The buffer's ``meta/episode_ends`` [E] int64, validated (positive, strictly increasing).

  Raises:
    DatasetError: missing, not 1-D integers, empty, or not strictly increasing from > 0.
  """
  path = os.fspath(path)
  return _episode_ends(path, _open(path))


def _episode_ends(path: str, root) -> np.ndarray:
  meta = root["meta"]
  if "episode_ends" not in meta:
    raise DatasetError(f"{path}: no array 'meta/episode_ends' (meta keys: {sorted(meta.keys())})")
  ends = np.asarray(meta["episode_ends"][...])
  if ends.ndim != 1 or not np.issubdtype(ends.dtype, np.integer):
    raise DatasetError(f"{path}: 'meta/episode_ends' has shape {ends.shape} and dtype {ends.dtype}, "
                       "expected [E] integers")
  if len(ends) == 0:
    raise DatasetError(f"{path}: 'meta/episode_ends' is empty (no episodes)")
  starts = np.concatenate([[0], ends[:-1]])
  bad = np.flatnonzero(ends <= starts)
  if len(bad):
    k = int(bad[0])
    raise DatasetError(f"{path}: 'meta/episode_ends' must be strictly increasing from > 0, but "
                       f"episode_ends[{k}] = {ends[k]} <= {'0' if k == 0 else f'episode_ends[{k - 1}] = {ends[k - 1]}'}")
  return ends.astype(np.int64)


def read_replay_buffer(path: str | os.PathLike[str], obs_keys: Sequence[str], action_key: str = "action",
                       derived_obs: DerivedObs | None = None, image_keys: Sequence[str] = ()) -> Demos:
  """Reads low-dim observations and actions of every episode of a replay buffer.

  Args:
    path: the ``.zarr`` directory.
    obs_keys: observation keys to concatenate, in order. Each is an array of ``derived_obs``'s output
      if given and it has the key, else ``data/<key>``; trailing dims are flattened (``keypoint``
      [N, 9, 2] -> 18 dims).
    action_key: the action array under ``data/`` ([N, A]; Push-T: absolute agent target, px).
    derived_obs: optional function of the ``data/`` arrays (a lazy mapping) returning extra
      observation arrays [N, ...], e.g. ``ebt_jax.envs.pusht.observations_from_state``, so that
      training observations are computed exactly as the evaluation env computes them.
    image_keys: RGB arrays under ``data/`` ([N, H, W, 3], uint8 or 0..255 floats: Push-T's ``img``),
      checked here and located per episode (``ebt_jax.data.images``), read later.

  Returns:
    ``Demos`` with one ``Episode`` per episode (``episode_<k>``), float32, ``env_args`` empty.

  Raises:
    DatasetError: not a directory or not a Zarr group; ``data`` / ``meta`` / ``meta/episode_ends`` /
      an observation key / the action missing; ``episode_ends`` not strictly increasing or not ending
      at the arrays' length; an array with another number of steps; the action not 2-D; NaN or inf;
      an image key missing or not [N, H, W, 3].
  """
  path = os.fspath(path)
  obs_keys = tuple(obs_keys)
  if not obs_keys:
    raise DatasetError(f"{path}: no observation keys configured (config.data.obs_keys is empty)")
  root = _open(path)
  ends = _episode_ends(path, root)
  data = _DataArrays(path, root["data"], int(ends[-1]))
  if action_key not in root["data"]:
    raise DatasetError(f"{path}: no action array 'data/{action_key}' (available: {sorted(root['data'].keys())})")
  n_action = root["data"][action_key].shape[0]
  if n_action != ends[-1]:
    raise DatasetError(f"{path}: 'meta/episode_ends' ends at step {ends[-1]} but 'data/{action_key}' has "
                       f"{n_action} steps")
  actions = data[action_key]
  if actions.ndim != 2:
    raise DatasetError(f"{path}: 'data/{action_key}' has shape {actions.shape}, expected [N, A]")
  derived = {}
  if derived_obs is not None:
    try:
      derived = dict(derived_obs(data))
    except DatasetError:
      raise
    except ValueError as e:
      raise DatasetError(f"{path}: computing derived observations: {e}") from e
  parts = []
  for key in obs_keys:
    value = np.asarray(derived[key]) if key in derived else data[key]
    if value.ndim == 0 or len(value) != len(actions):
      raise DatasetError(f"{path}: observation '{key}' has shape {value.shape}, expected [{len(actions)}, ...]")
    parts.append(value.reshape(len(value), -1))
  obs = np.concatenate(parts, axis=1).astype(np.float32)
  starts = np.concatenate([[0], ends[:-1]])
  image_hw = {}
  for key in image_keys:
    if key not in root["data"] or not isinstance(root["data"][key], zarr.Array):
      raise DatasetError(f"{path}: no image array 'data/{key}' (available: {sorted(root['data'].keys())})")
    node = root["data"][key]
    image_hw[key] = images.check_image_array(path, f"data/{key}", node.shape, node.dtype, int(ends[-1]), None)
  episodes = tuple(Episode(name=f"episode_{k}", obs=obs[a:b], actions=actions[a:b].astype(np.float32),
                           images={key: images.ImageSource(path, f"data/{key}", int(a), int(b - a), *image_hw[key],
                                                           "zarr") for key in image_keys})
                   for k, (a, b) in enumerate(zip(starts, ends)))
  return Demos(path=path, episodes=episodes, obs_keys=obs_keys, obs_key_dims=tuple(p.shape[1] for p in parts),
               env_args={}, image_keys=tuple(image_keys))
