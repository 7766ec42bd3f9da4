"""robomimic Can, Square and ToolHang: envs from robomimic env_args, observation widths, the scripted
experts (numpy and jax.numpy), the collector's files, and a tiny main-job run per task."""

import copy
import json
import os

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import can as can_config
from configs import square as square_config
from configs import tool_hang as tool_hang_config
from ebt_jax import collect, main, tasks, validation
from ebt_jax.data.robomimic_hdf5 import read_demos
from ebt_jax.envs import robosuite_env
from ebt_jax.errors import ConfigError, DatasetError
from ebt_jax.tasks import can, geometry, pick_place, square, styles

OBS_KEYS = ("object", "robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos")

# The arm controller as robomimic's v1.5 files store it (robosuite 1.5 composite form, robomimic/__init__.py
# v0.5 datasets) and as the v1.4.1 files do (one flat part config).
_OSC = {"type": "OSC_POSE", "input_max": 1, "input_min": -1, "output_max": [0.05, 0.05, 0.05, 0.5, 0.5, 0.5],
        "output_min": [-0.05, -0.05, -0.05, -0.5, -0.5, -0.5], "kp": 150, "damping": 1, "impedance_mode": "fixed",
        "kp_limits": [0, 300], "damping_limits": [0, 10], "position_limits": None, "orientation_limits": None,
        "uncouple_pos_ori": True, "control_delta": True, "interpolation": None, "ramp_ratio": 0.2}
V15_CONTROLLER = {"type": "BASIC", "body_parts": {"right": dict(_OSC, input_ref_frame="world", gripper={"type": "GRIP"})}}
V141_CONTROLLER = _OSC


def robomimic_env_args(env_name: str, controller: dict) -> dict:
  return {"env_name": env_name, "env_version": "1.5.1", "type": 1, "env_kwargs": {
      "has_renderer": False, "has_offscreen_renderer": False, "ignore_done": True, "use_object_obs": True,
      "use_camera_obs": False, "control_freq": 20, "robots": ["Panda"], "camera_depths": False,
      "camera_heights": 84, "camera_widths": 84, "lite_physics": False, "reward_shaping": False,
      "controller_configs": copy.deepcopy(controller)}}


@pytest.mark.parametrize("name", ["can", "square", "tool_hang"])
def test_envs_from_robomimic_env_args_have_the_task_observations(name):
  task = tasks.get_task(name)
  for controller in (V15_CONTROLLER, V141_CONTROLLER):
    env = robosuite_env.make_env(robomimic_env_args(task.env_name, controller), horizon=task.horizon)
    arm = env.robots[0].part_controllers["right"]
    assert type(arm).__name__ == "OperationalSpaceController" and arm.input_type == "delta"
    np.testing.assert_allclose(arm.kp, 150)
    obs = robosuite_env.reset(env, seed=0)
    assert env.action_dim == 7
    assert obs["object"].shape == (task.object_dim,), (name, obs["object"].shape)
    assert obs["robot0_eef_pos"].shape == (3,) and obs["robot0_eef_quat"].shape == (4,)
    assert obs["robot0_gripper_qpos"].shape == (2,)
    assert not robosuite_env.is_success(env)
    env.close()
  # Our own env_args describe the same env, with robomimic's horizon.
  ours = task.env_args()
  assert ours["env_name"] == task.env_name and ours["env_kwargs"]["horizon"] == task.horizon
  assert tasks.task_of_env(task.env_name) is task


def test_task_horizons_and_object_widths_are_robomimics():
  assert {n: (t.horizon, t.object_dim) for n, t in tasks.TASKS.items()} == {
      "lift": (400, 10), "can": (400, 14), "square": (400, 14), "tool_hang": (700, 44)}
  assert tasks.COLLECTABLE == ("lift", "can", "square")
  with pytest.raises(ValueError, match="unknown task 'transport'"):
    tasks.get_task("transport")


def test_object_layout_is_the_world_pose_after_the_relative_one():
  env = robosuite_env.make_env(can.TASK.env_args())
  robosuite_env.reset(env, seed=3)
  obs = robosuite_env.set_state(env, robosuite_env.sim_state(env))  # forced update: relative entries filled
  can_body = env.sim.data.body_xpos[env.obj_body_id["Can"]]
  np.testing.assert_allclose(obs["object"][can.CAN_POS], can_body, atol=1e-9)
  eef_rot = geometry.quat_to_mat(obs["robot0_eef_quat"])  # the eef frame of robot0_eef_quat
  np.testing.assert_allclose(obs["object"][:3], eef_rot.T @ (can_body - obs["robot0_eef_pos"]), atol=1e-5)
  env.close()
  env = robosuite_env.make_env(square.TASK.env_args())
  robosuite_env.reset(env, seed=3)
  obs = robosuite_env.set_state(env, robosuite_env.sim_state(env))
  handle = env.sim.data.site_xpos[env.sim.model.site_name2id("SquareNut_handle_site")]
  # The expert grasps 8 mm out along the handle from its site (clear of the ring's wall).
  offset = np.asarray(square.HANDLE_OFFSET) - np.array([0.054, 0.0, 0.0])
  np.testing.assert_allclose(square.handle_point(obs) - geometry.quat_to_mat(obs["object"][square.NUT_QUAT]) @ offset,
                             handle, atol=1e-6)
  env.close()


@pytest.mark.parametrize("name,seeds", [("can", (0, 1)), ("square", (0, 4))])
def test_scripted_experts_succeed(name, seeds):
  """Square seed 4: a nut whose handle points at the robot (grasped with the gripper turned the other way)."""
  task = tasks.get_task(name)
  env = robosuite_env.make_env(task.env_args())
  for seed in seeds:
    demo = collect.collect_episode(env, styles.StyledOperator(task.expert), seed, task.horizon)
    assert demo is not None, (name, seed)
    assert 60 < len(demo.actions) < 300 and np.abs(demo.actions).max() <= 1.0
    gripper = demo.actions[:, 6]
    assert gripper[0] == -1 and gripper.max() == 1 and gripper[-1] == -1  # open, close, let go
  env.close()


@pytest.mark.parametrize("name", ["can", "square"])
def test_expert_is_one_function_for_numpy_and_jax(name):
  task = tasks.get_task(name)
  env = robosuite_env.make_env(task.env_args())
  obs = robosuite_env.reset(env, seed=2)
  spec = task.expert
  step = jax.jit(lambda state, o: spec.step(spec.config, state, o, jnp))
  state_np, state_jx = spec.init(obs, np), spec.init({k: jnp.asarray(v) for k, v in obs.items()}, jnp)
  for _ in range(40):  # through the approach and into the descent
    a_np, state_np = spec.step(spec.config, state_np, obs, np)
    a_jx, state_jx = step(state_jx, {k: jnp.asarray(v, jnp.float32) for k, v in obs.items()})
    np.testing.assert_allclose(np.asarray(a_jx), a_np, atol=2e-3)
    assert int(state_jx.phase) == int(state_np.phase)
    raw, _, _, _ = env.step(np.asarray(a_np))
    obs = robosuite_env.low_dim_obs(raw)
  assert int(state_np.phase) >= pick_place.DESCEND
  env.close()


def test_varied_style_draws_other_places_and_heights():
  expert = can.TASK.expert
  a = expert.vary(expert.config, np.random.default_rng(0))
  b = expert.vary(expert.config, np.random.default_rng(1))
  assert a != b and a.place_offset != expert.config.place_offset
  for cfg in (a, b):
    x, y = can.TARGET_XY[0] + cfg.place_offset[0], can.TARGET_XY[1] + cfg.place_offset[1]
    assert 0.135 < x < 0.265 and 0.315 < y < 0.525  # the can stays inside its compartment


@pytest.fixture(scope="module")
def task_demos(tmp_path_factory):
  out = {}
  for name in ("can", "square"):
    path = str(tmp_path_factory.mktemp("data") / f"{name}.hdf5")
    collect.collect(name, num_demos=2, out=path, seed=3)
    out[name] = path
  return out


@pytest.mark.parametrize("name", ["can", "square"])
def test_collector_writes_robomimic_files_the_reader_reads(task_demos, name):
  task = tasks.get_task(name)
  with h5py.File(task_demos[name]) as f:
    env_args = json.loads(f["data"].attrs["env_args"])
    assert env_args["env_name"] == task.env_name and env_args["env_kwargs"]["horizon"] == task.horizon
    n = f["data/demo_0"].attrs["num_samples"]
    assert f["data/demo_0/obs/object"].shape == (n, task.object_dim) and f["data/demo_0/actions"].shape == (n, 7)
    assert f["data/demo_0/rewards"][-1] == 1
  demos = read_demos(task_demos[name], OBS_KEYS)
  assert demos.obs_dim == task.object_dim + 9 and demos.action_dim == 7 and len(demos.episodes) == 2
  assert demos.env_args["env_name"] == task.env_name


@pytest.mark.parametrize("config_module", [can_config, square_config])
def test_tiny_main_job_per_task(task_demos, config_module, tmp_path):
  config = config_module.get_config()
  name = config.name
  assert config.data.builtin == f"{name}_scripted" and config.eval.horizon == 400
  config.data.path = task_demos[name]
  config.model.width, config.model.num_layers, config.model.num_obs_layers, config.model.num_heads = 16, 1, 1, 2
  config.sampler.train_steps, config.sampler.train_extra_steps = 2, 1
  config.train.update(batch_size=8, num_steps=3, warmup_steps=1, log_every=1, checkpoint_every=3)
  config.eval.update(num_episodes=1, horizon=10, max_steps_sweep=(1,))
  workdir = str(tmp_path / name)
  result = main.run(config, workdir)
  with open(os.path.join(workdir, main.EVAL_FILE)) as f:
    saved = json.load(f)
  assert saved["num_episodes"] == 1 and saved["train_steps"] == 3 and result["success_rate"] == saved["success_rate"]
  assert saved["config"]["data"]["builtin"] == f"{name}_scripted"


def test_tool_hang_needs_the_users_file_and_collection_refuses_it():
  config = tool_hang_config.get_config()
  assert config.eval.horizon == 700 and config.data.builtin == ""
  problems = "\n".join(validation.config_problems(config))
  assert "data.path is empty" in problems
  with pytest.raises(ConfigError, match="task='tool_hang' \\(it has no scripted expert"):
    collect.collect("tool_hang", 1, "/tmp/never_written.hdf5")
  with pytest.raises(ConfigError, match="the MJX collector implements lift only, not 'can'"):
    collect.collect("can", 1, "/tmp/never_written.hdf5", backend="mjx")


def test_a_file_with_robosuite_1_4_object_layout_is_refused_before_training(task_demos, tmp_path):
  """robomimic's v1.4.1 files list the world pose first; evaluated in robosuite 1.5 the policy would see
  other inputs than it was trained on. The replayed state says so, naming file, demo and key."""
  path = str(tmp_path / "can_v141_layout.hdf5")
  with h5py.File(task_demos["can"]) as src, h5py.File(path, "w") as dst:
    for key in src:
      src.copy(key, dst)
    for key, value in src.attrs.items():
      dst.attrs[key] = value
    for name in dst["data"]:
      obj = dst[f"data/{name}/obs/object"]
      obj[...] = np.concatenate([obj[:, 7:], obj[:, :7]], axis=1)  # world pose first, as robosuite <= 1.4
  config = can_config.get_config()
  config.data.path = path
  validation.check_dataset(config, read_demos(task_demos["can"], OBS_KEYS))  # our own file passes
  with pytest.raises(DatasetError, match=r"demo 'demo_0' key 'obs/object': replaying its state 1 .* robosuite <= 1.4"):
    validation.check_dataset(config, read_demos(path, OBS_KEYS))


def test_a_missed_grasp_starts_again_from_the_approach():
  """The fingers closed on nothing (width < empty_grip_width) during the lift: back to the approach; a
  held handle (3.2 cm) keeps the lift going."""
  obs = {"robot0_eef_pos": np.array([-0.06, 0.15, 0.9]), "robot0_eef_quat": np.array([1.0, 0.0, 0.0, 0.0]),
         "robot0_joint_pos": np.zeros(7),
         "object": np.concatenate([np.zeros(7), [-0.11, 0.17, 0.83], [0.0, 0.0, 0.0, 1.0]])}
  state = pick_place.ExpertState(phase=np.asarray(pick_place.LIFT), phase_steps=np.asarray(3), anchor=obs["robot0_eef_pos"])
  for width, phase in ((0.001, pick_place.APPROACH), (0.031, pick_place.LIFT)):
    o = dict(obs, robot0_gripper_qpos=np.array([width / 2, -width / 2]))
    _, nxt = square.TASK.expert.step(square.EXPERT_CONFIG, state, o, np)
    assert int(nxt.phase) == phase, (width, int(nxt.phase))


def test_jobs_started_together_collect_the_built_in_demos_once(tmp_path, monkeypatch):
  """Two jobs (EBT beside DP, two seeds) asking for the same not-yet-collected demos: one collects, the other
  waits for it and reads its file (without the lock both collected into the same temporary file)."""
  import threading  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  calls = []

  def slow_collect(task, num_demos, out, seed, **kwargs):
    calls.append(out)
    time.sleep(1.0)
    with open(out, "w") as f:
      f.write(f"{task} {num_demos} {seed} {kwargs}")

  monkeypatch.setattr(collect, "collect", slow_collect)
  paths = []
  jobs = [threading.Thread(target=lambda: paths.append(collect.cached_dataset("can", 3, 0, 0.2, str(tmp_path))))
          for _ in range(2)]
  for j in jobs:
    j.start()
  for j in jobs:
    j.join()
  assert len(calls) == 1 and paths == [calls[0]] * 2
  assert os.path.exists(calls[0])
