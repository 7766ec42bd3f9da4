"""Reading and writing robomimic HDF5 demonstration files with h5py.

Layout (robomimic v0.3 / v1.5 datasets)::

  data/                      attrs: env_args (JSON str), total (int: number of samples)
    demo_<k>/                attrs: num_samples (int), model_file (MJCF xml str, optional)
      obs/<key>              [T, D] float   low-dim observation keys
      obs/<camera>_image     [T, H, W, 3] uint8  RGB frames (image datasets: agentview_image,
                                            robot0_eye_in_hand_image, sideview_image; 84x84)
      actions                [T, A] float   e.g. Lift: OSC_POSE delta in [-1, 1], gripper +-1
      rewards                [T]    float
      dones                  [T]    int
      states                 [T, S] float   flattened MuJoCo states (for replay / reset)
  mask/<filter_key>          [M] bytes      demo names, e.g. b"demo_3" (train / valid splits)

Every reading error is a ``DatasetError`` naming the file, the demo and the key at fault. The result is
the format-independent ``ebt_jax.data.demos.Demos``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping, Sequence

import h5py
import numpy as np

from ebt_jax.data import images
from ebt_jax.data.demos import DatasetError, Demos, Episode  # pylint: disable=unused-import


def demo_sort_key(name: str):
  """Sort key of demo group names in numeric order (demo_2 before demo_10), other names after."""
  suffix = name.rsplit("_", 1)[-1]
  return (0, int(suffix), name) if suffix.isdigit() else (1, 0, name)


def _read_array(path: str, demo: str, group: h5py.Group, key: str, what: str) -> np.ndarray:
  if key not in group:
    available = sorted(group.keys())
    raise DatasetError(f"{path}: demo '{demo}' has no {what} '{key}' (available: {available})")
  node = group[key]
  if not isinstance(node, h5py.Dataset):
    raise DatasetError(f"{path}: demo '{demo}': '{node.name}' is a group, expected an array")
  return np.asarray(node[()])


def read_demos(path: str | os.PathLike[str], obs_keys: Sequence[str],
               filter_key: str | None = None, image_keys: Sequence[str] = ()) -> Demos:
  """Reads low-dim observations and actions from a robomimic HDF5 file (and locates its camera frames).

  Args:
    path: the ``.hdf5`` file.
    obs_keys: observation keys to concatenate, e.g. Lift's ``("object", "robot0_eef_pos",
      "robot0_eef_quat", "robot0_gripper_qpos")`` -> obs_dim 10 + 3 + 4 + 2 = 19.
    filter_key: a name under ``mask/`` (e.g. ``"train"``) selecting demos; ``None`` reads all.
    image_keys: RGB observation keys (e.g. ``agentview_image``), each ``obs/<key>`` [T, H, W, 3] uint8;
      checked here, read later (``ebt_jax.data.images.ImageStore``).

  Returns:
    ``Demos`` with one ``Episode`` per demo, float32 arrays, each episode's ``images`` located.

  Raises:
    DatasetError: file missing or not HDF5; ``data`` group missing or empty; unknown filter key or a
      mask naming a missing demo; a demo without ``actions`` or an observation key; arrays that are
      not 2-D; observation and action lengths that disagree; a key or the action whose width
      differs between demos; NaN or inf values; an empty demo; an image key missing, not
      [T, H, W, 3] uint8, or of another size than in the demos before it.
  """
  path = os.fspath(path)
  obs_keys = tuple(obs_keys)
  image_keys = tuple(image_keys)
  if not obs_keys:
    raise DatasetError(f"{path}: no observation keys configured (config.data.obs_keys is empty)")
  with open_demo_file(path, "set --config.data.path to a robomimic .hdf5 file") as f:
    data = f["data"]
    env_args = parse_env_args(path, data.attrs.get("env_args"))
    names = sorted(data.keys(), key=demo_sort_key)
    if filter_key is not None:
      masks = f["mask"] if "mask" in f else {}
      if filter_key not in masks:
        raise DatasetError(
            f"{path}: unknown filter key 'mask/{filter_key}' (available: {sorted(masks.keys())})")
      wanted = [n.decode() if isinstance(n, bytes) else str(n) for n in np.asarray(masks[filter_key])]
      missing = [n for n in wanted if n not in data]
      if missing:
        raise DatasetError(f"{path}: 'mask/{filter_key}' names demos not in 'data': {missing[:5]}")
      names = sorted(wanted, key=demo_sort_key)
    if not names:
      raise DatasetError(f"{path}: no demos in 'data'" + (f" for mask '{filter_key}'" if filter_key else ""))
    episodes, key_dims, action_dim, image_hw = [], None, None, {}
    for name in names:
      demo = data[name]
      actions = _read_array(path, name, demo, "actions", "array")
      if actions.ndim != 2:
        raise DatasetError(f"{path}: demo '{name}' key 'actions' has shape {actions.shape}, expected [T, A]")
      if len(actions) == 0:
        raise DatasetError(f"{path}: demo '{name}' is empty (key 'actions' has 0 steps)")
      if action_dim is None:
        action_dim = actions.shape[1]
      elif actions.shape[1] != action_dim:
        raise DatasetError(f"{path}: demo '{name}' key 'actions' has shape {actions.shape}, "
                           f"expected [T, {action_dim}] like the demos before it")
      if "obs" not in demo:
        if "states" in demo:  # actions are there (read above): robosuite's raw collector layout
          raise DatasetError(
              f"{path}: demo '{name}' has no 'obs' group, only 'states' and 'actions' (keys: "
              f"{sorted(demo.keys())}): this looks like robosuite's raw demo layout (written by "
              f"robosuite's collect_human_demonstrations.py), which stores simulator states, not "
              f"observations. Convert it once with: python -m ebt_jax.convert --from=robosuite "
              f"--in={path} --out=<new>.hdf5 and read the new file")
        raise DatasetError(f"{path}: demo '{name}' has no 'obs' group (keys: {sorted(demo.keys())})")
      parts = []
      for key in obs_keys:
        value = _read_array(path, name, demo["obs"], key, "observation key")
        if value.ndim == 1:
          value = value[:, None]
        if value.ndim != 2:
          raise DatasetError(f"{path}: demo '{name}' key 'obs/{key}' has shape {value.shape}, expected [T, D]")
        if len(value) != len(actions):
          raise DatasetError(f"{path}: demo '{name}' key 'obs/{key}' has {len(value)} steps but "
                             f"'actions' has {len(actions)}")
        parts.append(value)
      dims = tuple(p.shape[1] for p in parts)
      if key_dims is None:
        key_dims = dims
      elif dims != key_dims:
        bad = [k for k, a, b in zip(obs_keys, dims, key_dims) if a != b][0]
        raise DatasetError(f"{path}: demo '{name}' key 'obs/{bad}' has width {dims[obs_keys.index(bad)]}, "
                           f"expected {key_dims[obs_keys.index(bad)]} like the demos before it")
      for key, value in zip(("actions",) + tuple(f"obs/{k}" for k in obs_keys), [actions] + parts):
        if not np.all(np.isfinite(value)):
          raise DatasetError(f"{path}: demo '{name}' key '{key}' contains NaN or inf")
      sources = {}
      for key in image_keys:
        if key not in demo["obs"] or not isinstance(demo["obs"][key], h5py.Dataset):
          raise DatasetError(f"{path}: demo '{name}' has no image key 'obs/{key}' (available: "
                             f"{sorted(demo['obs'].keys())}); an image file has e.g. agentview_image "
                             "(render one from a low-dim file with states: python -m ebt_jax.render)")
        node = demo["obs"][key]
        if node.dtype != np.uint8:
          raise DatasetError(f"{path}: demo '{name}' key 'obs/{key}' has dtype {node.dtype}, expected uint8 RGB frames")
        h, w = images.check_image_array(path, f"data/{name}/obs/{key}", node.shape, node.dtype, len(actions),
                                        image_hw.get(key))
        image_hw[key] = (h, w)
        sources[key] = images.ImageSource(path, node.name, 0, len(actions), h, w, "hdf5")
      episodes.append(Episode(name=name, obs=np.concatenate(parts, axis=1).astype(np.float32),
                              actions=actions.astype(np.float32), images=sources))
  return Demos(path=path, episodes=tuple(episodes), obs_keys=obs_keys, obs_key_dims=key_dims,
               env_args=env_args, image_keys=image_keys)


def read_step(path: str | os.PathLike[str], demo: str, step: int,
              obs_keys: Sequence[str]) -> tuple[np.ndarray, str, dict[str, np.ndarray]] | None:
  """One step of a demo as the env sees it: (state [S], model_file xml, {key: obs[key][step]}), or None
  if the demo stores no ``states`` or no ``model_file`` (nothing to replay). ``step`` is clipped to the
  demo's length. For checking a file's observation layout against the env (``validation``).
  """
  path = os.fspath(path)
  with h5py.File(path, "r") as f:
    g = f["data"][demo]
    if "states" not in g or not g.attrs.get("model_file"):
      return None
    states = g["states"]
    t = min(step, len(states) - 1)
    return np.asarray(states[t], np.float64), model_file_of(g), {k: np.asarray(g["obs"][k][t], np.float64) for k in obs_keys}


def open_demo_file(path: str, missing_hint: str, layout_hint: str = "") -> h5py.File:
  """Opens an HDF5 demo file (robomimic's or robosuite's raw layout) that must have a ``data`` group.

  Args:
    path: the ``.hdf5`` file.
    missing_hint: what to do if the file does not exist (e.g. "set --config.data.path to ...").
    layout_hint: appended to the error for a missing ``data`` group (e.g. the layout expected).

  Returns:
    The open ``h5py.File`` (read-only); use it in a ``with`` block.

  Raises:
    DatasetError: the file does not exist, is not HDF5, or has no ``data`` group.
  """
  if not os.path.exists(path):
    raise DatasetError(f"{path}: file not found ({missing_hint})")
  try:
    f = h5py.File(path, "r")
  except OSError as e:
    raise DatasetError(f"{path}: not a readable HDF5 file ({e})") from e
  if "data" not in f or not isinstance(f["data"], h5py.Group):
    keys = sorted(f.keys())
    f.close()
    raise DatasetError(f"{path}: no 'data' group (top-level keys: {keys}){layout_hint}")
  return f


def model_file_of(demo: h5py.Group) -> str:
  """A demo's ``model_file`` attribute (the episode's MJCF xml) as str (h5py may return bytes)."""
  value = demo.attrs["model_file"]
  return value.decode() if isinstance(value, bytes) else str(value)


def parse_env_args(path: str, raw: Any) -> dict[str, Any]:
  """``data.attrs["env_args"]`` (JSON str or bytes) -> dict; {} when absent.

  Raises:
    DatasetError: naming ``path`` if it is not valid JSON.
  """
  if raw is None:
    return {}
  try:
    return json.loads(raw.decode() if isinstance(raw, bytes) else str(raw))
  except json.JSONDecodeError as e:
    raise DatasetError(f"{path}: 'data' attribute 'env_args' is not valid JSON ({e})") from e


def filter_keys(path: str | os.PathLike[str]) -> list[str]:
  """The names under ``mask/`` of a robomimic file (its filter keys, e.g. ``["train", "valid"]``), sorted;
  [] without a ``mask`` group.

  Raises:
    DatasetError: the file does not exist, is not HDF5, or has no ``data`` group.
  """
  path = os.fspath(path)
  with open_demo_file(path, "set --config.data.path to a robomimic .hdf5 file") as f:
    return sorted(f["mask"].keys()) if "mask" in f and isinstance(f["mask"], h5py.Group) else []


def read_env_args(path: str | os.PathLike[str]) -> dict[str, Any]:
  """``data.attrs["env_args"]`` of a robomimic file, parsed ({} when absent), without reading any demo.

  Raises:
    DatasetError: the file does not exist, is not HDF5, has no ``data`` group, or invalid env_args JSON.
  """
  path = os.fspath(path)
  with open_demo_file(path, "the dataset the run was trained on") as f:
    return parse_env_args(path, f["data"].attrs.get("env_args"))


def train_valid_masks(num_demos: int) -> dict[str, list[int]]:
  """robomimic's 90% / 10% ``mask/train`` / ``mask/valid`` split, as demo indices for ``write_demos``.

  The last ``max(1, num_demos // 10)`` demos are ``valid`` (none if there is only one demo), the rest
  ``train``; e.g. 25 demos -> train [0 .. 22], valid [23, 24]. (robomimic's
  ``scripts/split_train_val.py`` holds out ``int(0.1 * num_demos)`` demos drawn at random, none below
  10 demos; this split keeps at least one and is deterministic.)

  Args:
    num_demos: number of demos in the file (``demo_0`` ... ``demo_{num_demos-1}``).

  Returns:
    ``{"train": [...], "valid": [...]}``, disjoint, covering ``range(num_demos)``.

  Raises:
    ValueError: if ``num_demos`` is negative.
  """
  if num_demos < 0:
    raise ValueError(f"num_demos must be >= 0, got {num_demos}")
  num_valid = max(1, num_demos // 10) if num_demos > 1 else 0
  return {"train": list(range(num_demos - num_valid)), "valid": list(range(num_demos - num_valid, num_demos))}


@dataclasses.dataclass(frozen=True)
class RawDemo:
  """One demonstration to write: every robomimic field, raw units.

  Attributes:
    obs: key -> [T, D] observations (robomimic names, e.g. ``object``, ``robot0_eef_pos``) or [T, H, W, 3]
      uint8 camera frames (``agentview_image``; written gzip-compressed, one chunk per frame).
    actions: [T, A] actions.
    rewards: [T] task rewards.
    dones: [T] 1 where the episode ended (success), else 0.
    states: [T, S] flattened MuJoCo states.
    model_file: the episode's MJCF xml (robosuite reloads the model every reset).
    attrs: extra demo attributes (e.g. ``{"seed": 3}``).
    extra: extra per-step arrays stored next to ``actions`` (e.g. ``executed_actions``).
  """
  obs: Mapping[str, np.ndarray]
  actions: np.ndarray
  rewards: np.ndarray
  dones: np.ndarray
  states: np.ndarray
  model_file: str = ""
  attrs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  extra: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)


def write_demos(path: str | os.PathLike[str], demos: Sequence[RawDemo], env_args: Mapping[str, Any],
                masks: Mapping[str, Sequence[int]] | None = None) -> None:
  """Writes demos as a robomimic HDF5 file (``demo_0`` ... ``demo_{N-1}``), atomically.

  Args:
    path: destination ``.hdf5``; written to ``path + ".tmp"`` then renamed, so a killed writer never
      leaves a truncated file behind.
    demos: the demonstrations.
    env_args: robomimic env description (see ``ebt_jax.envs.robosuite_env.lift_env_args``).
    masks: filter key -> demo indices, e.g. ``{"train": [...], "valid": [...]}``.
  """
  path = os.fspath(path)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + ".tmp"
  with h5py.File(tmp, "w") as f:
    data = f.create_group("data")
    data.attrs["env_args"] = json.dumps(dict(env_args))
    data.attrs["total"] = int(sum(len(d.actions) for d in demos))
    for i, d in enumerate(demos):
      g = data.create_group(f"demo_{i}")
      g.attrs["num_samples"] = len(d.actions)
      if d.model_file:
        g.attrs["model_file"] = d.model_file
      for k, v in d.attrs.items():
        g.attrs[k] = v
      for key, value in d.obs.items():
        value = np.asarray(value)
        if value.ndim == 4:  # RGB frames: one gzip chunk per frame, so a batch reads only its frames
          g.create_dataset(f"obs/{key}", data=value, chunks=(1, *value.shape[1:]), compression="gzip",
                           compression_opts=4)
        else:
          g.create_dataset(f"obs/{key}", data=value)
      g.create_dataset("actions", data=np.asarray(d.actions))
      g.create_dataset("rewards", data=np.asarray(d.rewards))
      g.create_dataset("dones", data=np.asarray(d.dones))
      g.create_dataset("states", data=np.asarray(d.states))
      for key, value in d.extra.items():
        g.create_dataset(key, data=np.asarray(value))
    for key, idx in (masks or {}).items():
      f.create_dataset(f"mask/{key}", data=np.array([f"demo_{i}".encode() for i in idx], dtype="S"))
  os.replace(tmp, path)
