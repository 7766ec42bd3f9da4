"""robosuite env construction from robomimic env_args, seeded resets, the scripted expert."""

import numpy as np
import pytest

from ebt_jax import collect
from ebt_jax.envs import robosuite_env
from ebt_jax.tasks import styles
from ebt_jax.tasks import NumpyExpert, lift
from ebt_jax.errors import ConfigError

# env_args as stored in robomimic's v1.5 Lift datasets (robosuite 1.4 controller format).
ROBOMIMIC_V15_LIFT = {
    "env_name": "Lift", "env_version": "1.4.1", "type": 1,
    "env_kwargs": {
        "has_renderer": False, "has_offscreen_renderer": False, "ignore_done": True, "use_object_obs": True,
        "use_camera_obs": False, "control_freq": 20, "robots": ["Panda"], "camera_depths": False,
        "camera_heights": 84, "camera_widths": 84, "reward_shaping": False,
        "controller_configs": {
            "type": "OSC_POSE", "input_max": 1, "input_min": -1,
            "output_max": [0.05, 0.05, 0.05, 0.5, 0.5, 0.5], "output_min": [-0.05, -0.05, -0.05, -0.5, -0.5, -0.5],
            "kp": 150, "damping": 1, "impedance_mode": "fixed", "kp_limits": [0, 300], "damping_limits": [0, 10],
            "position_limits": None, "orientation_limits": None, "uncouple_pos_ori": True, "control_delta": True,
            "interpolation": None, "ramp_ratio": 0.2,
        },
    },
}


@pytest.fixture(scope="module")
def v15_env():
  return robosuite_env.make_env(ROBOMIMIC_V15_LIFT, horizon=400)


def test_robomimic_v15_env_args_build_osc_pose_lift(v15_env):
  arm = v15_env.robots[0].part_controllers["right"]
  assert type(arm).__name__ == "OperationalSpaceController" and arm.input_type == "delta"
  np.testing.assert_allclose(arm.kp, 150)
  np.testing.assert_allclose(arm.kd, 2 * np.sqrt(150))  # damping ratio 1
  obs = robosuite_env.reset(v15_env, seed=0)
  assert obs["object"].shape == (10,) and obs["robot0_eef_pos"].shape == (3,)
  assert obs["robot0_eef_quat"].shape == (4,) and obs["robot0_gripper_qpos"].shape == (2,)
  np.testing.assert_allclose(obs["object"][7:], obs["object"][:3] - obs["robot0_eef_pos"], atol=1e-6)


def test_seeded_reset_is_reproducible_and_seeds_differ(v15_env):
  a = robosuite_env.reset(v15_env, seed=3)
  state_a = robosuite_env.sim_state(v15_env)
  robosuite_env.reset(v15_env, seed=4)
  b = robosuite_env.reset(v15_env, seed=3)
  np.testing.assert_array_equal(robosuite_env.sim_state(v15_env), state_a)  # cube size and pose included
  np.testing.assert_array_equal(a["object"], b["object"])
  c = robosuite_env.reset(v15_env, seed=5)
  assert not np.allclose(a["object"][:3], c["object"][:3])


def test_scripted_expert_lifts_the_cube(v15_env):
  expert = NumpyExpert(lift.TASK.expert)
  for seed in (11, 12):
    obs = robosuite_env.reset(v15_env, seed)
    expert.reset()
    for step in range(150):
      raw, _, _, _ = v15_env.step(expert(obs))
      obs = robosuite_env.low_dim_obs(raw)
      if robosuite_env.is_success(v15_env):
        break
    assert robosuite_env.is_success(v15_env), f"seed {seed}: cube z {obs['object'][2]:.3f} after {step} steps"


def _idle_steps(actions):
  """Steps with zero commanded motion (dims 0-5): the expert's grasp, and the operator's pauses."""
  return int(np.all(actions[:, :6] == 0, axis=1).sum())


def test_demo_styles_change_how_the_expert_demonstrates(v15_env):
  seed = 23  # a seed whose teleop demo pauses (a pause starts with probability 0.04 per step)
  demos = {name: collect.collect_episode(v15_env, styles.StyledOperator(lift.TASK.expert, name), seed, 400)
           for name in ("scripted", "varied", "hesitant", "teleop")}
  assert all(d is not None for d in demos.values()), {k: d is None for k, d in demos.items()}  # all succeed
  scripted, teleop = demos["scripted"].actions, demos["teleop"].actions
  grasp = NumpyExpert(lift.TASK.expert).config.grasp_steps  # the scripted expert stands still only while it closes the gripper
  assert _idle_steps(scripted) == grasp and _idle_steps(demos["hesitant"].actions) >= grasp + 3
  assert _idle_steps(teleop) >= 3  # idle pauses, recorded as the operator's commands (jitter elsewhere)
  assert len(teleop) > len(scripted) and len(demos["varied"].actions) != len(scripted)
  assert demos["teleop"].attrs["style"] == "teleop"
  # Without DART the executed actions are the labels; the operator's jitter is in both.
  np.testing.assert_array_equal(demos["teleop"].extra["executed_actions"], teleop)
  assert np.abs(teleop).max() <= 1.0
  again = collect.collect_episode(v15_env, styles.StyledOperator(lift.TASK.expert, "teleop"), seed, 400)
  np.testing.assert_array_equal(again.actions, teleop)  # a function of the seed
  other = collect.collect_episode(v15_env, styles.StyledOperator(lift.TASK.expert, "teleop"), seed + 1, 400)
  assert len(other.actions) != len(teleop) or not np.allclose(other.actions, teleop)
  with pytest.raises(ValueError, match="unknown demo style 'human'"):
    styles.StyledOperator(lift.TASK.expert, "human")
  with pytest.raises(ConfigError, match="backend='mjx': the MJX collector runs the 'scripted' expert only"):
    collect.collect("lift", 2, "/tmp/never_written.hdf5", backend="mjx", style="teleop")
