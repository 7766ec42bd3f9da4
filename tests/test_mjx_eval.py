"""Vectorised MJX evaluation (masking, records, eval.json fields) and the batched MJX demo collector.

Each test's cost is XLA compiling its one big jitted program (every one holds a whole MjxLift step:
~45-65 s on the 2 loaded cores; tracing it another ~12 s), not running it. Hence:
* the two evaluation tests compile with ``jax_disable_most_optimizations`` (``unoptimised_xla``: the
  same programs, ~40 % less compile time, ~3x slower to run), and their tiny policies execute Ta = 2
  actions per decision, so that their rollouts are 5 and 3 control steps. The collector keeps XLA's
  defaults: its expert needs ~50 steps, whose slower execution would cost what the compile saves;
* one robosuite Lift model from a seeded reset (``lift_model``) serves every test and the collector, so
  the programs are the same in every run and JAX's persistent compilation cache (tests/conftest.py)
  hits from the second run on (``lift_mjcf.default_model()`` exports a randomly reset env: a new cube
  size is new constants in the programs, a cache miss every run).
"""

import dataclasses

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import lift
from ebt_jax import collect, policies
from ebt_jax.data.normalization import MinMax, Normalizer
from ebt_jax.data.robomimic_hdf5 import read_demos
from ebt_jax.envs import lift_mjcf, mjx_lift, robosuite_env
from ebt_jax.evaluation import episodes, mjx_eval
from ebt_jax.evaluation.policy import Policy

OBS_KEYS = ("object", "robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos")
OBS_DIMS = (10, 3, 4, 2)
TA = 2  # actions per decision of the tiny policies (lift's config: 8); fewer control steps per rollout


@pytest.fixture
def unoptimised_xla():
  """XLA without LLVM optimisation for the programs compiled in the test (restored afterwards)."""
  old = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", old)


@pytest.fixture(scope="module")
def lift_model():
  rs_env = lift_mjcf.robosuite_lift_env()
  robosuite_env.reset(rs_env, 0)
  return lift_mjcf.build(rs_env)


@pytest.fixture(scope="module")
def env(lift_model):
  return mjx_lift.MjxLift.create(lift_model)


def _tiny_policy(policy="ebt"):
  config = lift.get_config()
  config.policy = policy
  config.model.width, config.model.num_layers, config.model.num_obs_layers = 16, 1, 1
  config.horizon.action = TA
  model = policies.make(config, obs_dim=sum(OBS_DIMS), action_dim=7)
  obs_dim = sum(OBS_DIMS)
  normalizer = Normalizer(obs=MinMax(-np.ones(obs_dim, np.float32), np.ones(obs_dim, np.float32)),
                          actions=MinMax(-np.ones(7, np.float32), np.ones(7, np.float32)),
                          obs_keys=OBS_KEYS, obs_key_dims=OBS_DIMS)
  return Policy.from_config(config, model, model.init(jax.random.PRNGKey(0)), normalizer)


@pytest.fixture(scope="module")
def ebt_policy():
  return _tiny_policy()


@pytest.fixture(scope="module")
def two_initial_states(env):
  """(qpos [2, 16], cube_half_size [2, 3]) from robosuite Lift's reset distribution."""
  return jax.jit(jax.vmap(env.sample_initial_qpos))(jax.random.split(jax.random.PRNGKey(1), 2))


def test_vectorised_eval_masks_finished_episodes_and_writes_eval_json_fields(env, ebt_policy, two_initial_states,
                                                                            unoptimised_xla):
  policy = ebt_policy
  assert policy.action_horizon == TA
  qpos, half = two_initial_states
  qpos = np.array(qpos)
  qpos[0, 11] = 0.95  # episode 0: cube starts 15 cm above the table -> success at the first step
  # Three episodes in batches of two: the second batch is padded (and the padding dropped) without
  # recompiling the rollout.
  initial = mjx_eval.InitialStates(qpos[[0, 1, 1]], np.asarray(half)[[0, 1, 1]], np.array([7, 8, 9]))
  horizon = 5  # 3 decisions of Ta = 2 (the last one cut at step 5)
  evaluator = mjx_eval.MjxEvaluator(policy, horizon, env=env)
  out = jax.device_get(evaluator.rollout("mcmc")(policy.params, jnp.asarray(qpos), jnp.asarray(half),
                                         jax.random.PRNGKey(0), jnp.int32(2)))
  np.testing.assert_array_equal(out.success, [True, False])  # an untrained policy does not lift the cube
  np.testing.assert_array_equal(out.length, [1, horizon])
  np.testing.assert_array_equal(out.decided, [[True, False, False], [True, True, True]])
  assert np.all(np.isfinite(out.energy)) and np.all((out.sampler_steps >= 1) & (out.sampler_steps <= 2))

  summary = evaluator.evaluate(initial, jax.random.PRNGKey(0), "mcmc-2", batch_size=2)
  reference = episodes.summarize([episodes.EpisodeResult(0, True, 1, [2], [0.0])])
  assert set(reference) <= set(summary)
  assert summary["num_episodes"] == 3 and summary["success_rate"] == pytest.approx(1 / 3)
  records = summary["episodes"]
  assert [e["seed"] for e in records] == [7, 8, 9] and [e["length"] for e in records] == [1, horizon, horizon]
  assert len(records[0]["energy"]) == 1 and len(records[1]["sampler_steps"]) == 3
  assert evaluator.rollout("mcmc")._cache_size() == 1  # the padded batch reused the compiled rollout


def test_vectorised_eval_of_the_diffusion_policy(env, two_initial_states, unoptimised_xla):
  """The diffusion baseline goes through the same jitted rollout: no energy, K denoising steps per decision."""
  policy = _tiny_policy("diffusion")
  qpos, half = two_initial_states
  initial = mjx_eval.InitialStates(np.asarray(qpos), np.asarray(half), np.array([3, 4]))
  evaluator = mjx_eval.MjxEvaluator(policy, horizon=TA + 1, env=env)
  for label in ("ddim-3", "ddim-10"):  # one compilation for both step counts
    summary = evaluator.evaluate(initial, jax.random.PRNGKey(0), label)
    assert summary["mean_sampler_steps"] == int(label.split("-")[1]) and summary["mean_final_energy"] is None
    assert [len(e["sampler_steps"]) for e in summary["episodes"]] == [2, 2]  # decisions at steps 0 and Ta
    assert all("energy" not in e for e in summary["episodes"])
  assert evaluator.rollout("ddim")._cache_size() == 1


def test_vectorised_eval_rejects_observation_key_the_env_lacks(env, ebt_policy):
  policy = ebt_policy
  bad = Normalizer(obs=policy.normalizer.obs, actions=policy.normalizer.actions,
                   obs_keys=("object", "robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_pos"), obs_key_dims=OBS_DIMS)
  policy = dataclasses.replace(policy, normalizer=bad)
  rollout = mjx_eval.make_rollout(env, policy, horizon=8, sampler="mcmc")
  qpos, half = env.sample_initial_qpos(jax.random.PRNGKey(0))
  with pytest.raises(KeyError, match="robot0_gripper_pos"):
    rollout(policy.params, qpos[None], half[None], jax.random.PRNGKey(0), jnp.int32(2))


def test_mjx_collector_writes_successful_robomimic_demos(tmp_path, monkeypatch, lift_model):
  # The collector builds its own env from lift_mjcf.default_model(): the module's seeded model instead.
  monkeypatch.setattr(lift_mjcf, "default_model", lambda: lift_model)
  path = str(tmp_path / "lift_mjx.hdf5")
  collect.collect("lift", 2, path, seed=0, horizon=120, backend="mjx", batch_size=2)
  demos = read_demos(path, OBS_KEYS)
  assert len(demos.episodes) == 2 and demos.env_args["env_name"] == "Lift"
  with h5py.File(path, "r") as f:
    for k in range(2):
      g = f[f"data/demo_{k}"]
      actions, executed, states = g["actions"][()], g["executed_actions"][()], g["states"][()]
      n = actions.shape[0]
      assert 20 < n < 120 and executed.shape == actions.shape and states.shape == (n, 1 + 16 + 15)
      assert np.abs(actions).max() <= 1.0 and np.abs(executed).max() <= 1.0
      np.testing.assert_array_equal(executed[:, 3:], actions[:, 3:])  # DART noise on x, y, z only
      assert not np.allclose(executed[:, :3], actions[:, :3])
      assert g["rewards"][-1] == 1.0 and g["rewards"][:-1].sum() == 0
      cube_z = g["obs/object"][:, 2]
      # Resting on the table (~0.82 m) then lifted: the success (> 0.84 m) comes with the step after the
      # last stored observation, so that observation is close to it.
      assert cube_z[-1] - cube_z.min() > 0.01 and cube_z[-1] > 0.83
      # model_file is robosuite's XML with this episode's cube, consistent with its initial state.
      half = np.array(_cube_size(g.attrs["model_file"]))
      assert np.all((half >= 0.020) & (half <= 0.022))
      np.testing.assert_allclose(states[0, 1 + 11], 0.81 + half[2], atol=1e-6)
      np.testing.assert_array_equal(g["obs/robot0_eef_pos"].shape, (n, 3))


def _cube_size(xml):
  import mujoco  # pylint: disable=g-import-not-at-top
  spec = mujoco.MjSpec.from_string(xml)
  return spec.geom(lift_mjcf.CUBE_GEOM).size
