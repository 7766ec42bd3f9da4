"""Train step: sharding invariance (8 fake CPU devices == 1), non-finite guard, save -> kill -> resume."""

import json
import os

import jax
import ml_collections
import numpy as np
import pytest
from jax.sharding import Mesh

from configs import lift
from ebt_jax.data.robomimic_hdf5 import Demos, Episode
from ebt_jax import policies
from ebt_jax.training import trainer
from ebt_jax.training.train_step import init_train_state, make_optimizer, make_train_step


def tiny_config(**train) -> ml_collections.ConfigDict:
  c = lift.get_config()
  c.model.width, c.model.num_layers, c.model.num_obs_layers, c.model.num_heads = 16, 1, 1, 2
  c.sampler.train_steps, c.sampler.train_extra_steps = 2, 1
  c.train.batch_size, c.train.num_steps, c.train.warmup_steps = 8, 6, 2
  c.train.log_every, c.train.checkpoint_every = 2, 2
  c.train.update(train)
  return c


def tiny_demos(n=3, length=20, obs_dim=5, action_dim=3) -> Demos:
  rng = np.random.default_rng(0)
  episodes = tuple(Episode(f"demo_{k}", rng.normal(size=(length, obs_dim)).astype(np.float32),
                           rng.uniform(-1, 1, size=(length, action_dim)).astype(np.float32)) for k in range(n))
  return Demos(path="memory", episodes=episodes, obs_keys=("a", "b"), obs_key_dims=(2, obs_dim - 2), env_args={})


def _step_inputs(config):
  model = policies.make(config, obs_dim=5, action_dim=3)
  tx = make_optimizer(config.train)
  state = init_train_state(model, tx, jax.random.PRNGKey(0))
  rng = np.random.default_rng(1)
  batch = {"obs": rng.normal(size=(8, 2, 5)).astype(np.float32),
           "actions": rng.uniform(-1, 1, size=(8, 16, 3)).astype(np.float32)}
  step = make_train_step(model, tx, config.train)
  return state, batch, step


def test_sharded_step_on_8_devices_equals_1_device():
  assert jax.device_count() == 8, "tests/conftest.py sets 8 CPU devices"
  config = tiny_config(warmup_steps=0)  # a non-zero learning rate at step 0
  state, batch, step = _step_inputs(config)
  outs = []
  for devices in (jax.devices()[:1], jax.devices()):
    mesh = Mesh(np.asarray(devices), ("batch",))
    fn = trainer.jit_train_step(step, mesh, donate=False)
    new_state, metrics = fn(state, batch, jax.random.PRNGKey(5))
    assert len(new_state.params["backbone"]["blocks_0"]["mlp"]["Dense_0"]["kernel"].sharding.device_set) == len(devices)
    outs.append(jax.device_get((new_state, metrics)))
  (s1, m1), (s8, m8) = outs
  np.testing.assert_allclose(m1["loss"], m8["loss"], rtol=1e-5)
  assert m1["nonfinite"] == 0 and float(m1["grad_norm"]) > 0
  for a, b in zip(jax.tree.leaves(s1), jax.tree.leaves(s8)):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6)
  moved = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), s1.params, jax.device_get(state.params))
  assert max(jax.tree.leaves(moved)) > 0  # the step did update the parameters


def test_non_finite_batch_is_reported_and_not_trained_on():
  state, batch, step = _step_inputs(tiny_config())
  batch["obs"][0, 0, 0] = np.nan
  new_state, metrics = jax.jit(step)(state, batch, jax.random.PRNGKey(0))
  assert int(metrics["nonfinite"]) == 1
  assert int(new_state.step) == 1
  for a, b in zip(jax.tree.leaves((new_state.params, new_state.opt_state)), jax.tree.leaves((state.params, state.opt_state))):
    np.testing.assert_array_equal(a, b)


class Killed(Exception):
  pass


def test_save_kill_resume_continues_at_same_step_with_same_state(tmp_path):
  config, demos = tiny_config(), tiny_demos()
  _, reference, _ = trainer.train(config, str(tmp_path / "ref"), demos)

  def kill_after_3(step, state):
    if step == 3:  # checkpoint 2 is on disk, step 3 is lost with the process
      raise Killed()

  workdir = str(tmp_path / "run")
  with pytest.raises(Killed):
    trainer.train(config, workdir, demos, on_step=kill_after_3)
  seen = []
  _, resumed, _ = trainer.train(config, workdir, demos, on_step=lambda step, state: seen.append(step))
  assert seen == [3, 4, 5, 6]  # restarted right after the last checkpoint (step 2)
  assert int(resumed.step) == int(reference.step) == 6
  for a, b in zip(jax.tree.leaves(jax.device_get(resumed)), jax.tree.leaves(jax.device_get(reference))):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  with open(os.path.join(workdir, trainer.METRICS_FILE)) as f:
    steps = [json.loads(line)["step"] for line in f]
  assert steps == [2, 4, 6]  # no duplicated or missing records after the resume
  with open(os.path.join(str(tmp_path / "ref"), trainer.METRICS_FILE)) as f:
    ref_loss = [json.loads(line)["loss"] for line in f]
  with open(os.path.join(workdir, trainer.METRICS_FILE)) as f:
    run_loss = [json.loads(line)["loss"] for line in f]
  np.testing.assert_allclose(run_loss, ref_loss, rtol=1e-5)


def test_resume_refuses_a_dataset_of_other_dims(tmp_path):
  config = tiny_config(num_steps=2)
  trainer.train(config, str(tmp_path), tiny_demos())
  with pytest.raises(ValueError, match="obs_dim"):
    trainer.train(tiny_config(num_steps=4), str(tmp_path), tiny_demos(obs_dim=6))


def test_best_checkpoint_follows_the_highest_evaluation_and_survives_a_resume(tmp_path):
  """A run scores 0.2, 0.6, 0.9 at steps 1..3 and is killed after step 3 (checkpoint 2 on disk): its best
  (step 3) is newer than what the resumed run starts from, so the resume drops it, evaluates step 3
  again (0.4 this time), 4 (0.8) and 5 (0.5): checkpoints/best ends at step 4."""
  from ebt_jax.training import checkpoint  # pylint: disable=g-import-not-at-top
  scores = {1: 0.2, 2: 0.6, 3: 0.9, 4: 0.8, 5: 0.5}
  config = tiny_config(num_steps=6)
  config.eval.every_steps = 1
  workdir = str(tmp_path / "run")
  calls = []

  def evaluate(model, state, normalizer):
    step = int(state.step)
    calls.append(step)
    return {"success_rate": scores[step], "num_episodes": 10}

  def kill_after_3(step, state):
    if step == 3:
      raise Killed()

  with pytest.raises(Killed):
    trainer.train(config, workdir, tiny_demos(), on_step=kill_after_3, evaluate=evaluate)
  assert checkpoint.best_manager(workdir).all_steps() == [3]  # 0.9 at step 3, newer than checkpoint 2
  scores[3] = 0.4  # the resumed run evaluates step 3 again (and, here, scores it lower)
  trainer.train(config, workdir, tiny_demos(), evaluate=evaluate)
  assert calls == [1, 2, 3, 3, 4, 5]
  assert checkpoint.best_manager(workdir).all_steps() == [4]
  curve = trainer.read_curve(workdir)
  assert [r["step"] for r in curve] == [1, 2, 3, 4, 5]
  assert [r["max_success_rate_so_far"] for r in curve] == [0.2, 0.6, 0.6, 0.8, 0.8]
  assert trainer.best_evaluation(curve, "success_rate")["step"] == 4
  assert trainer.best_evaluation(curve + [{"step": 6, "success_rate": 0.8}], "success_rate")["step"] == 4  # earliest
  assert trainer.best_evaluation([{"step": 1}], "success_rate") is None
  policy, _ = checkpoint.load_policy(workdir, best=True)
  assert policy.inference == "mcmc-2"
  with pytest.raises(ValueError, match="no checkpoint"):
    checkpoint.load_policy(str(tmp_path / "ref_never"), best=True)


def test_config_seed_drives_init_batches_and_training_noise(tmp_path):
  demos = tiny_demos()
  states = {}
  for name, seed in (("a", 0), ("b", 0), ("c", 1)):
    config = tiny_config(num_steps=2)
    config.seed = seed
    _, states[name], _ = trainer.train(config, str(tmp_path / name), demos)
  leaves = {k: jax.tree.leaves(jax.device_get(v.params)) for k, v in states.items()}
  for x, y in zip(leaves["a"], leaves["b"]):
    np.testing.assert_array_equal(x, y)  # the same seed: the same run
  assert not all(np.allclose(x, y) for x, y in zip(leaves["a"], leaves["c"]))
  from ebt_jax.data.windows import WindowDataset  # pylint: disable=g-import-not-at-top
  norm = trainer.fit_normalizer(demos)
  batches = [WindowDataset(demos, norm, 2, 8, 16, seed=s).batch(0, 8)["actions"] for s in (0, 1)]
  assert not np.allclose(*batches)  # batch order follows the seed too
