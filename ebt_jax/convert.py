r"""Converts demonstrations recorded in other layouts into robomimic HDF5 files that ebt_jax reads.

  python -m ebt_jax.convert --from=robosuite --in=/path/to/demo.hdf5 --out=/path/to/lift_low_dim.hdf5

``--from=robosuite``: robosuite's *raw* layout, what robosuite's
``robosuite/scripts/collect_human_demonstrations.py`` (``gather_demonstrations_as_hdf5``) writes::

  data/                      attrs: env (env name, e.g. "Lift"), env_info (JSON of the env kwargs:
                                    env_name, robots, controller_configs), repository_version, date, time
    demo_1/ demo_2/ ...      attrs: model_file (the episode's MJCF xml)
      states                 [T, S] flattened MuJoCo states (time, qpos, qvel), state t before action t
      actions                [T, A] actions

It has no observations. They are recovered the way robomimic does it in two scripts
(``robomimic/scripts/conversion/convert_robosuite.py``: env_args from ``env`` / ``env_info`` and a 90/10
train/valid split; ``robomimic/scripts/dataset_states_to_obs.py``: replay the states): the episode's
model is loaded, every stored state is set in turn and the env is observed. The output is robomimic's
layout (see ``ebt_jax.data.robomimic_hdf5``), demos renamed ``demo_0`` ... ``demo_{N-1}`` in the
input's numeric order.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any, Mapping

import h5py
import numpy as np
from absl import flags, logging

from ebt_jax import cli
from ebt_jax import progress as progress_bars
from ebt_jax.data.robomimic_hdf5 import RawDemo, open_demo_file, train_valid_masks, write_demos
from ebt_jax.envs import robosuite_env
from ebt_jax.errors import ConfigError, DatasetError
from ebt_jax.paths import output_file_problem

FORMATS = ("robosuite",)
_DEMO_NAME = re.compile(r"demo_(\d+)")
# Observation keys that a flattened state does not determine: joint accelerations depend on the applied
# torques, which robosuite's ``states`` do not hold (``proprio-state`` concatenates them in). robomimic's
# own replay drops ``*proprio-state`` too.
_NOT_FROM_STATE_SUFFIXES = ("joint_acc", "proprio-state")
_COLLECTOR = "robosuite's collect_human_demonstrations.py"


@dataclasses.dataclass(frozen=True)
class RobosuiteDemo:
  """One demo of robosuite's raw layout, read into memory.

  Attributes:
    name: its group name in the input, e.g. ``demo_1``.
    model_file: the episode's MJCF xml.
    states: [T, S] flattened MuJoCo states; ``states[t]`` is the state before ``actions[t]``.
    actions: [T, A] actions.
    attrs: the demo's other attributes (kept in the output).
  """
  name: str
  model_file: str
  states: np.ndarray
  actions: np.ndarray
  attrs: Mapping[str, Any]


def _text(value: Any) -> str:
  if isinstance(value, bytes):
    return value.decode()
  if isinstance(value, np.ndarray) and value.shape == ():
    return _text(value[()])
  return str(value)


def _array(path: str, name: str, demo: h5py.Group, key: str) -> np.ndarray:
  if key not in demo:
    raise DatasetError(f"{path}: demo '{name}' has no '{key}' array (keys: {sorted(demo.keys())}); "
                       f"robosuite's raw layout has 'states' [T, S] and 'actions' [T, A] in every demo")
  node = demo[key]
  if not isinstance(node, h5py.Dataset):
    raise DatasetError(f"{path}: demo '{name}': '{node.name}' is a group, expected an array")
  value = np.asarray(node[()])
  what = "[T, S] flattened MuJoCo states" if key == "states" else "[T, A] actions"
  if value.ndim != 2 or not np.issubdtype(value.dtype, np.number):
    raise DatasetError(f"{path}: demo '{name}' key '{key}' has shape {value.shape} ({value.dtype}), "
                       f"expected {what}")
  if not np.all(np.isfinite(value)):
    raise DatasetError(f"{path}: demo '{name}' key '{key}' contains NaN or inf")
  return value.astype(np.float64)


def robosuite_env_args(path: str, attrs: Mapping[str, Any], reward_shaping: bool = False) -> dict[str, Any]:
  """robomimic ``env_args`` from the ``data`` attributes of a raw robosuite file.

  As robomimic's ``convert_robosuite.py``: ``env_name`` from attribute ``env``, ``env_version`` from
  ``repository_version`` (omitted if absent), ``env_kwargs`` from the ``env_info`` JSON (minus its own
  ``env_name``, which robosuite's collector puts there); plus ``reward_shaping``, which
  ``dataset_states_to_obs.py`` sets (its ``--shaped`` flag, default off: sparse rewards) and records.

  Args:
    path: the input file (for messages).
    attrs: ``f["data"].attrs``.
    reward_shaping: the rewards' shaping, recorded in ``env_kwargs``.

  Returns:
    ``{"env_name", "type": 1, "env_version", "env_kwargs"}``.

  Raises:
    DatasetError: ``env`` or ``env_info`` missing, ``env_info`` not a JSON object, or naming another env.
  """
  if "env" not in attrs:
    raise DatasetError(f"{path}: 'data' has no attribute 'env' (attributes: {sorted(attrs.keys())}); expected "
                       f"the robosuite env name, e.g. 'Lift', as {_COLLECTOR} writes it")
  env_name = _text(attrs["env"])
  if "env_info" not in attrs:
    raise DatasetError(f"{path}: 'data' has no attribute 'env_info' (attributes: {sorted(attrs.keys())}); "
                       f"expected the JSON of the env kwargs (robots, controller_configs), as {_COLLECTOR} "
                       f"writes it")
  try:
    env_info = json.loads(_text(attrs["env_info"]))
  except json.JSONDecodeError as e:
    raise DatasetError(f"{path}: 'data' attribute 'env_info' is not valid JSON ({e})") from e
  if not isinstance(env_info, dict):
    raise DatasetError(f"{path}: 'data' attribute 'env_info' is a JSON {type(env_info).__name__}, expected "
                       f"an object of env kwargs (robots, controller_configs)")
  env_kwargs = dict(env_info)
  info_name = env_kwargs.pop("env_name", env_name)
  if info_name != env_name:
    raise DatasetError(f"{path}: 'data' attribute 'env' is '{env_name}' but 'env_info' has env_name "
                       f"'{info_name}'; expected the same env")
  env_kwargs["reward_shaping"] = bool(reward_shaping)
  env_args = {"env_name": env_name, "type": robosuite_env.ROBOSUITE_ENV_TYPE}
  if "repository_version" in attrs:
    env_args["env_version"] = _text(attrs["repository_version"])
  env_args["env_kwargs"] = env_kwargs
  return env_args


def read_robosuite_demos(path: str, reward_shaping: bool = False) -> tuple[dict[str, Any], list[RobosuiteDemo]]:
  """Reads and checks a file in robosuite's raw layout (module docstring).

  Args:
    path: the input ``.hdf5``.
    reward_shaping: recorded in the returned ``env_args`` (see ``robosuite_env_args``).

  Returns:
    (robomimic ``env_args``, demos sorted by their number: ``demo_2`` before ``demo_10``).

  Raises:
    DatasetError: file missing or not HDF5; no ``data`` group or no demos; a group not named
      ``demo_<number>``; a file already in robomimic layout (``obs`` groups); missing ``model_file``,
      ``states`` or ``actions``; arrays not 2-D, empty, of different lengths or widths, NaN or inf.
  """
  with open_demo_file(path, f"--in must be a demo.hdf5 written by {_COLLECTOR}",
                      "; expected robosuite's raw layout data/demo_<k>/{states, actions}") as f:
    data = f["data"]
    names = sorted(data.keys(), key=lambda n: (0, int(m.group(1))) if (m := _DEMO_NAME.fullmatch(n)) else (1, n))
    for name in names:
      if not _DEMO_NAME.fullmatch(name) or not isinstance(data[name], h5py.Group):
        raise DatasetError(f"{path}: 'data/{name}' is not a demo; expected only groups named demo_<number> "
                           f"in 'data', as {_COLLECTOR} writes them")
      if "obs" in data[name]:
        raise DatasetError(f"{path}: demo '{name}' already has an 'obs' group: the file is in robomimic's "
                           f"layout, not robosuite's raw one, and needs no conversion; train on it directly "
                           f"(--config.data.path={path})")
    if not names:
      raise DatasetError(f"{path}: no demos in 'data' (expected groups demo_1, demo_2, ... as {_COLLECTOR} "
                         f"writes them)")
    env_args = robosuite_env_args(path, data.attrs, reward_shaping)
    demos, action_dim = [], None
    for name in names:
      group = data[name]
      if "model_file" not in group.attrs:
        raise DatasetError(f"{path}: demo '{name}' has no attribute 'model_file' (attributes: "
                           f"{sorted(group.attrs.keys())}); expected the episode's MJCF xml")
      model_file = _text(group.attrs["model_file"])
      if "<mujoco" not in model_file:
        raise DatasetError(f"{path}: demo '{name}' attribute 'model_file' is not an MJCF xml (no <mujoco> "
                           f"element; starts {model_file[:60]!r})")
      states = _array(path, name, group, "states")
      actions = _array(path, name, group, "actions")
      if len(actions) == 0:
        raise DatasetError(f"{path}: demo '{name}' is empty (key 'actions' has 0 steps)")
      if len(states) != len(actions):
        raise DatasetError(f"{path}: demo '{name}' key 'states' has {len(states)} steps but 'actions' has "
                           f"{len(actions)}; expected one state before each action")
      if action_dim is None:
        action_dim = actions.shape[1]
      elif actions.shape[1] != action_dim:
        raise DatasetError(f"{path}: demo '{name}' key 'actions' has shape {actions.shape}, expected "
                           f"[T, {action_dim}] like the demos before it")
      attrs = {k: v for k, v in group.attrs.items() if k not in ("model_file", "num_samples")}
      demos.append(RobosuiteDemo(name=name, model_file=model_file, states=states, actions=actions, attrs=attrs))
  return env_args, demos


def replay_demo(env, demo: RobosuiteDemo, path: str = "") -> tuple[RawDemo, bool]:
  """Observations, rewards and dones of one raw demo, by replaying its states in ``env``.

  As robomimic's ``dataset_states_to_obs.py`` (``extract_trajectory``):

  * ``obs[t]``: the env's low-dim observation set to ``states[t]`` (``robosuite_env.set_state``), after
    loading the demo's ``model_file``; keys that a state does not determine (``*joint_acc``,
    ``*proprio-state``) are left out. These are observations *of the stored states*; the ones the live
    env returned from ``env.step`` were sampled one or two physics substeps earlier (see
    ``robosuite_env.set_state``), as in every robomimic dataset made by replay.
  * ``rewards[t]``: ``env.reward(actions[t])`` in the *next* state ``states[t + 1]`` (robosuite's
    rewards are r(s')); for the last step there is no stored next state, so, as robomimic, the last
    action is executed once with ``env.step`` from ``states[T - 1]``. That s' is approximate: the
    gripper's command ramp (robosuite grippers move their command a fixed amount per step from the
    value they hold) is not part of a state and restarts from 0 after the model is loaded. With sparse
    rewards (robosuite's ``reward_shaping=False``) the reward is 1 where s' passes robosuite's success
    check, else 0.
  * ``dones[t]``: 1 where s' is a success state or t is the last step (robomimic's ``--done_mode 2``, the
    mode its released datasets use), else 0.

  Args:
    env: robosuite env from ``robosuite_env.make_env`` of the file's ``env_args``.
    demo: the raw demo.
    path: the input file (for messages).

  Returns:
    (a ``RawDemo`` with the input's ``model_file``, ``states`` and ``actions`` unchanged and attribute
    ``source_demo`` (the input's demo name); whether any s' passed robosuite's success check).

  Raises:
    DatasetError: the ``model_file`` cannot be loaded, or ``states`` rows do not match its model.
  """
  try:
    robosuite_env.load_model_xml(env, demo.model_file)
  except Exception as e:  # pylint: disable=broad-except  # the env was built: the xml is at fault
    raise DatasetError(f"{path}: demo '{demo.name}' attribute 'model_file' cannot be loaded as the "
                       f"'{env.__class__.__name__}' env's model ({type(e).__name__}: {e}); expected the MJCF "
                       f"xml robosuite saved for the episode (env.sim.model.get_xml())") from e
  width = len(robosuite_env.sim_state(env))
  if demo.states.shape[1] != width:
    raise DatasetError(f"{path}: demo '{demo.name}' key 'states' has shape {demo.states.shape}, expected "
                       f"[T, {width}] (1 + nq + nv of its 'model_file')")
  steps = len(demo.actions)
  observations, rewards, dones, succeeded = [], np.zeros(steps), np.zeros(steps, np.int64), False
  obs = robosuite_env.set_state(env, demo.states[0])
  for t in range(steps):
    observations.append({k: v for k, v in obs.items() if not k.endswith(_NOT_FROM_STATE_SUFFIXES)})
    if t + 1 < steps:
      obs = robosuite_env.set_state(env, demo.states[t + 1])
    else:
      env.step(demo.actions[t])
    rewards[t] = env.reward(demo.actions[t])
    success = robosuite_env.is_success(env)
    succeeded = succeeded or success
    dones[t] = int(t + 1 == steps or success)
  return RawDemo(obs={k: np.stack([o[k] for o in observations]) for k in observations[0]},
                 actions=demo.actions, rewards=rewards, dones=dones, states=demo.states,
                 model_file=demo.model_file, attrs={**demo.attrs, "source_demo": demo.name}), succeeded


def _check_output(in_path: str, out_path: str) -> None:
  problem = output_file_problem(out_path)
  if problem is not None:
    raise ConfigError(f"--out={out_path}: cannot write the converted file there: {problem}")
  if os.path.exists(out_path) and os.path.exists(in_path) and os.path.samefile(in_path, out_path):
    raise ConfigError(f"--out={out_path} is the input file (--in); choose a new path for the converted file")


def convert_robosuite(in_path: str | os.PathLike[str], out_path: str | os.PathLike[str],
                      reward_shaping: bool = False, progress: bool = True) -> str:
  """Converts a raw robosuite demo file into a robomimic low-dim HDF5 file (module docstring).

  Every demo is replayed (``replay_demo``) in one env built from the file's ``env`` / ``env_info``
  (``robosuite_env.make_env``; robosuite 1.5 composite or older part controller configs); the output
  has ``data.attrs["env_args"]``, ``demo_0`` ... ``demo_{N-1}`` with ``obs/<key>`` [T, D] (robomimic
  low-dim keys, e.g. Lift's ``object`` [10], ``robot0_eef_pos`` [3], ``robot0_eef_quat`` [4],
  ``robot0_gripper_qpos`` [2]; metres, quaternions x-y-z-w), ``actions``, ``rewards``, ``dones``,
  ``states``, attribute ``model_file``; and ``mask/train`` / ``mask/valid`` (``train_valid_masks``). It
  is written atomically, only after every demo converted.

  Args:
    in_path: robosuite's ``demo.hdf5``.
    out_path: the robomimic file to write (replaced if it exists).
    reward_shaping: robosuite's dense shaped rewards instead of sparse 0/1 success rewards
      (robomimic's ``dataset_states_to_obs.py --shaped``).
    progress: show a tqdm bar over demos (on a terminal only, ``ebt_jax.progress``).

  Returns:
    ``out_path``.

  Raises:
    ConfigError: ``out_path`` cannot be written (checked first) or is the input.
    DatasetError: the input is missing, not in robosuite's raw layout (see ``read_robosuite_demos``), its
      env cannot be built, its actions do not fit the env, or a demo's model or states do not load.
  """
  in_path, out_path = os.fspath(in_path), os.fspath(out_path)
  if not os.path.exists(in_path):
    raise DatasetError(f"{in_path}: file not found (--in must be a demo.hdf5 written by {_COLLECTOR})")
  _check_output(in_path, out_path)
  env_args, demos = read_robosuite_demos(in_path, reward_shaping)
  try:
    env = robosuite_env.make_env(env_args)
  except Exception as e:  # pylint: disable=broad-except
    raise DatasetError(f"{in_path}: cannot build the robosuite env from 'data' attributes 'env' "
                       f"({env_args['env_name']!r}) and 'env_info' ({type(e).__name__}: {e})") from e
  action_dim = int(env.action_spec[0].shape[0])
  if demos[0].actions.shape[1] != action_dim:
    raise DatasetError(f"{in_path}: demo '{demos[0].name}' key 'actions' has shape {demos[0].actions.shape}, "
                       f"expected [T, {action_dim}] for the env of 'env' / 'env_info'")
  converted, successes = [], 0
  with progress_bars.bar(len(demos), "convert robosuite demos", "demo", enabled=progress) as bar:
    for demo in demos:
      raw, succeeded = replay_demo(env, demo, in_path)
      converted.append(raw)
      successes += succeeded
      progress_bars.advance(bar, len(converted))
  env.close()
  write_demos(out_path, converted, env_args, train_valid_masks(len(converted)))
  steps = sum(len(d.actions) for d in converted)
  logging.info("converted %d robosuite %s demos (%d steps, %d reach success on replay) from %s to %s",
               len(converted), env_args["env_name"], steps, successes, in_path, out_path)
  if successes < len(converted):
    logging.warning("%d of %d demos never pass robosuite's success check on replay (robosuite's collector "
                    "keeps only successful demos): were they recorded with this env ('env_info' of %s)?",
                    len(converted) - successes, len(converted), in_path)
  return out_path


def convert(source: str, in_path: str, out_path: str) -> str:
  """``convert_robosuite`` for ``source == "robosuite"`` (the only format so far)."""
  if source == "robosuite":
    return convert_robosuite(in_path, out_path)
  raise ConfigError(f"--from={source}: unknown format; available: {list(FORMATS)}")


def main(argv):
  del argv  # cli.run refuses positional arguments
  f = flags.FLAGS
  convert(getattr(f, "from"), getattr(f, "in"), f.out)


if __name__ == "__main__":
  # Flags are defined here, not at import, so that other modules can import convert_robosuite.
  flags.DEFINE_enum("from", None, list(FORMATS), "Layout of --in: robosuite (raw collect_human_demonstrations "
                    "files: states and actions, no observations).", required=True)
  flags.DEFINE_string("in", None, "Input .hdf5 file.", required=True)
  flags.DEFINE_string("out", None, "Output robomimic .hdf5 path (replaced if it exists).", required=True)
  cli.run(main)
