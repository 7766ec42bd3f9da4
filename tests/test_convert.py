"""python -m ebt_jax.convert --from=robosuite: raw robosuite demos -> robomimic layout, on a file written here.

The raw file is written the way robosuite's collect_human_demonstrations.py (gather_demonstrations_as_hdf5)
writes it, from two Lift episodes of the scripted expert run live in robosuite, so the replayed
observations can be compared with the ones the live env produced.
"""

import datetime
import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
import robosuite

from ebt_jax.convert import convert_robosuite
from ebt_jax.data.robomimic_hdf5 import DatasetError, read_demos, train_valid_masks
from ebt_jax.envs import robosuite_env
from ebt_jax.tasks import NumpyExpert, lift

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEYS = ("object", "robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos")
# Live env.step observations lag the state stored after the step by 1-2 of its 25 physics substeps
# (robosuite_env.set_state); measured: at most 0.15 of the step's change. An off-by-one step would be ~1.
LAG_FRACTION = 0.25


def _run_episode(env, seed, max_steps, steps_after_success=None):
  """The expert from ``seed``: states before each action, actions, live observations, model xml.

  Like robosuite's DataCollectionWrapper._start_new_episode, the episode runs in the model reloaded from
  its own xml (the xml round trip is not lossless: e.g. it rounds body quaternions to ~1e-7).
  """
  robosuite_env.reset(env, seed)
  ep = {"xml": env.sim.model.get_xml(), "states": [], "actions": [], "obs": []}
  obs = robosuite_env.reset_to(env, robosuite_env.sim_state(env), ep["xml"])
  expert = NumpyExpert(lift.TASK.expert)
  expert.reset()
  success_at = None
  for t in range(max_steps):
    action = expert(obs)
    ep["states"].append(robosuite_env.sim_state(env))
    ep["actions"].append(action)
    ep["obs"].append(obs)
    raw, _, _, _ = env.step(action)
    obs = robosuite_env.low_dim_obs(raw)
    if success_at is None and robosuite_env.is_success(env):
      success_at = t
    if steps_after_success is not None and success_at is not None and t >= success_at + steps_after_success:
      break
  ep["success_at"] = success_at
  # The reference for exact agreement: each recorded state observed in the live episode's model.
  ep["state_obs"] = [robosuite_env.set_state(env, s) for s in ep["states"]]
  return ep


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
  """Two Lift episodes (25 steps; expert until 2 steps past success) in robosuite's raw layout."""
  env_args = robosuite_env.lift_env_args()
  env = robosuite_env.make_env(env_args)
  episodes = [_run_episode(env, 0, 25), _run_episode(env, 1, 120, steps_after_success=2)]
  assert episodes[1]["success_at"] is not None
  env.close()
  path = str(tmp_path_factory.mktemp("raw") / "demo.hdf5")
  # As gather_demonstrations_as_hdf5 (robosuite 1.5.2); env_info as collect_human_demonstrations.py's config.
  env_info = {"env_name": "Lift", "robots": ["Panda"],
              "controller_configs": env_args["env_kwargs"]["controller_configs"]}
  now = datetime.datetime.now()
  names = ["demo_2", "demo_10"]  # numbered as in a longer recording: alphabetical order would differ
  with h5py.File(path, "w") as f:
    grp = f.create_group("data")
    for name, ep in zip(names, episodes):
      g = grp.create_group(name)
      g.attrs["model_file"] = ep["xml"]
      g.create_dataset("states", data=np.array(ep["states"]))
      g.create_dataset("actions", data=np.array(ep["actions"]))
    grp.attrs["date"] = "{}-{}-{}".format(now.month, now.day, now.year)
    grp.attrs["time"] = "{}:{}:{}".format(now.hour, now.minute, now.second)
    grp.attrs["repository_version"] = robosuite.__version__
    grp.attrs["env"] = "Lift"
    grp.attrs["env_info"] = json.dumps(env_info)
  return {"path": path, "episodes": episodes, "env_args": env_args}


def _cli(*args):
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
  return subprocess.run([sys.executable, "-m", "ebt_jax.convert", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300)


def test_cli_converts_raw_robosuite_demos(raw, tmp_path):
  out = str(tmp_path / "converted" / "lift_low_dim.hdf5")
  result = _cli("--from=robosuite", f"--in={raw['path']}", f"--out={out}")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "converted 2 robosuite Lift demos" in result.stderr and out in result.stderr

  demos = read_demos(out, KEYS)
  episodes = raw["episodes"]
  assert [e.name for e in demos.episodes] == ["demo_0", "demo_1"]
  robosuite_env.make_env(demos.env_args).close()  # env_args rebuild the env
  assert demos.env_args["env_name"] == "Lift" and demos.env_args["type"] == robosuite_env.ROBOSUITE_ENV_TYPE
  max_diff = {}
  with h5py.File(out, "r") as f, h5py.File(raw["path"], "r") as src:
    assert [n.decode() for n in f["mask/train"][()]] == ["demo_0"]
    assert [n.decode() for n in f["mask/valid"][()]] == ["demo_1"]
    for i, (src_name, ep) in enumerate(zip(["demo_2", "demo_10"], episodes)):
      g = f[f"data/demo_{i}"]
      assert g.attrs["source_demo"] == src_name and g.attrs["num_samples"] == len(ep["actions"])
      assert g.attrs["model_file"] == src[f"data/{src_name}"].attrs["model_file"]
      np.testing.assert_array_equal(g["states"][()], src[f"data/{src_name}/states"][()])
      np.testing.assert_array_equal(g["actions"][()], src[f"data/{src_name}/actions"][()])
      assert "robot0_joint_acc" not in g["obs"] and "robot0_proprio-state" not in g["obs"]
      for key in ("robot0_joint_pos", *KEYS):
        got = g[f"obs/{key}"][()]
        state_obs = np.stack([o[key] for o in ep["state_obs"]])
        live = np.stack([o[key] for o in ep["obs"]])
        # Exact: the same states observed in the live episode's model.
        np.testing.assert_allclose(got, state_obs, rtol=0, atol=1e-12, err_msg=key)
        # Live env.step observations: the same at the initial state, then a fraction of a step behind.
        np.testing.assert_allclose(got[0], live[0], rtol=0, atol=1e-12, err_msg=key)
        lag = np.abs(got[1:] - live[1:]).max(axis=1)
        step = np.abs(got[1:] - got[:-1]).max(axis=1)
        assert np.all(lag <= LAG_FRACTION * step + 1e-6), (key, np.max(lag / np.maximum(step, 1e-12)))
        max_diff[key] = max(max_diff.get(key, 0.0), float(lag.max()))
      rewards, dones = g["rewards"][()], g["dones"][()]
      assert dones[-1] == 1 and set(np.unique(rewards)) <= {0.0, 1.0}
      np.testing.assert_array_equal(dones, np.maximum(rewards, np.arange(len(rewards)) == len(rewards) - 1))
      first = np.flatnonzero(rewards)
      if ep["success_at"] is None:
        assert first.size == 0
      else:  # live rewards read the lagged kinematics too: the first success may be one step apart
        assert first.size and abs(int(first[0]) - ep["success_at"]) <= 1, (first, ep["success_at"])
  for demo, ep in zip(demos.episodes, episodes):  # the reader's float32 [T, 19] concatenation
    want = np.concatenate([np.stack([o[k] for o in ep["state_obs"]]) for k in KEYS], axis=1)
    np.testing.assert_allclose(demo.obs, want, rtol=0, atol=1e-6)
    np.testing.assert_allclose(demo.actions, np.array(ep["actions"]), rtol=0, atol=1e-6)
  print("max |converted - live env.step obs| per key:", max_diff)


def test_reader_points_raw_files_to_the_converter(raw):
  with pytest.raises(DatasetError) as err:
    read_demos(raw["path"], KEYS)
  message = str(err.value)
  assert message.startswith(raw["path"]) and "demo_2" in message and "raw" in message
  assert f"python -m ebt_jax.convert --from=robosuite --in={raw['path']} --out=" in message


def test_refuses_files_already_in_robomimic_layout(tmp_path):
  path = str(tmp_path / "robomimic.hdf5")
  with h5py.File(path, "w") as f:
    f.create_dataset("data/demo_0/obs/object", data=np.zeros((3, 10)))
    f.create_dataset("data/demo_0/actions", data=np.zeros((3, 7)))
  with pytest.raises(DatasetError, match=r"already has an 'obs' group.*--config.data.path="):
    convert_robosuite(path, str(tmp_path / "out.hdf5"))
  assert not os.path.exists(tmp_path / "out.hdf5")


def _copy_without(src, dst, key):
  with h5py.File(src, "r") as f, h5py.File(dst, "w") as g:
    f.copy("data", g)
    if key.startswith("@"):
      del g["data"].attrs[key[1:]]
    else:
      del g[key]
  return dst


@pytest.mark.parametrize("case, words", [
    ("missing_input", ["file not found"]),
    ("no_env_attribute", ["'data' has no attribute 'env'", "env name"]),
    ("demo_without_states", ["demo 'demo_10'", "'states'", "[T, S]"]),
    ("unwritable_out", ["--out=", "a_file' is a file"]),
])
def test_cli_user_errors_exit_2_without_traceback_or_output(raw, tmp_path, case, words):
  src, out = raw["path"], str(tmp_path / "out.hdf5")
  if case == "missing_input":
    src = str(tmp_path / "nope.hdf5")
  elif case == "no_env_attribute":
    src = _copy_without(src, str(tmp_path / "no_env.hdf5"), "@env")
  elif case == "demo_without_states":
    src = _copy_without(src, str(tmp_path / "no_states.hdf5"), "data/demo_10/states")
  else:
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    out = str(blocker / "out.hdf5")
  result = _cli("--from=robosuite", f"--in={src}", f"--out={out}")
  assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
  assert "Traceback" not in result.stderr and "ebt_jax.convert: error:" in result.stderr
  for word in [out if case == "unwritable_out" else src, *words]:
    assert word in result.stderr, (word, result.stderr)
  assert not os.path.exists(out) and not os.path.exists(out + ".tmp")


def test_train_valid_masks_split_like_robomimic():
  assert train_valid_masks(0) == {"train": [], "valid": []}
  assert train_valid_masks(1) == {"train": [0], "valid": []}
  assert train_valid_masks(2) == {"train": [0], "valid": [1]}
  assert train_valid_masks(25) == {"train": list(range(23)), "valid": [23, 24]}
