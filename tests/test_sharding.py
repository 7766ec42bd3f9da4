"""FSDP (``ebt_jax.training.sharding``, ``train.mesh``): the layout rule, one train step equal under every
mesh shape, checkpoints that resume under another mesh, a policy loaded from an FSDP run."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from ebt_jax.errors import ConfigError
from ebt_jax.evaluation.policy import Policy
from ebt_jax.training import checkpoint, sharding, trainer
from ebt_jax.training.train_step import init_train_state, make_optimizer
from test_training import Killed, _step_inputs, tiny_config, tiny_demos

MIN_SIZE = 32  # the tiny model's [16, 16] kernels (256 elements) are sharded, its [16] biases / scales are not
KERNEL = ("backbone", "blocks_0", "mlp", "Dense_0", "kernel")  # [16, 16] in the tiny model


def _leaf(tree, path):
  for k in path:
    tree = tree[k]
  return tree


def test_rule_shards_the_largest_divisible_axis_of_large_leaves():
  mesh = sharding.make_mesh((2, 4))
  sds = lambda *shape: jax.ShapeDtypeStruct(shape, np.float32)
  tree = {"kernel": sds(64, 256), "bias": sds(5), "odd": sds(6, 10), "square": sds(8, 8), "qkv": sds(256, 4, 64),
          "small": sds(4, 4), "scalar": sds()}
  got = jax.tree.map(lambda s: s.spec, sharding.fsdp_sharding(tree, mesh, min_size=16))
  assert got == {"kernel": P(None, "fsdp"), "bias": P(), "odd": P(), "square": P(None, "fsdp"),  # ties: last axis
                 "qkv": P("fsdp", None, None), "small": P(None, "fsdp"), "scalar": P()}
  assert sharding.fsdp_sharding(tree, mesh, min_size=17)["small"].spec == P()  # 16 elements < min_size
  assert sharding.fsdp_spec((64, 256), 4, min_size=1) == P(None, "fsdp")
  assert sharding.fsdp_spec((5,), 4, min_size=1) == P()
  # fsdp size 1 (the default mesh) is today's replication.
  dp = sharding.make_mesh()
  assert dict(dp.shape) == {"data": 8, "fsdp": 1}
  assert all(s == sharding.replicated(dp) for s in jax.tree.leaves(sharding.fsdp_sharding(tree, dp, min_size=1)))
  # Shard shapes and bytes per device for device counts this machine does not have.
  big = sharding.abstract_mesh((128, 2))
  kernel = sharding.with_shardings({"k": sds(64, 256)}, sharding.fsdp_sharding({"k": sds(64, 256)}, big, 1))
  assert kernel["k"].sharding.shard_shape((64, 256)) == (64, 128)
  assert sharding.bytes_per_device(kernel) == 64 * 128 * 4


def test_mesh_shapes_and_errors():
  assert dict(sharding.make_mesh((1, -1)).shape) == {"data": 1, "fsdp": 8}
  assert dict(sharding.make_mesh([-1, 2]).shape) == {"data": 4, "fsdp": 2}
  assert sharding.batch_sharding(sharding.make_mesh((2, 4))).spec == P(("data", "fsdp"))
  for bad, match in (((3, 2), "3 x 2 = 6, but there are 8 devices"), ((-1, 3), "must divide the 8 devices"),
                     ((-1, -1), "at most one -1"), ((0, 8), "at most one -1"), ((8,), "two sizes")):
    with pytest.raises(ConfigError, match=r"train\.mesh=.*" + match):
      sharding.make_mesh(bad)
  # The config field: in every config (Push-T inherits robomimic's train section), checked before any work.
  from configs import lift, pusht  # pylint: disable=g-import-not-at-top
  from ebt_jax import validation  # pylint: disable=g-import-not-at-top
  assert lift.get_config("paper").train.mesh == pusht.get_config().train.mesh == (-1, 1)
  config = tiny_config(mesh=(3, 2), fsdp_min_size=0)
  problems = validation.config_problems(config, num_devices=8, needs_data=False)
  assert [p for p in problems if p.startswith("train.")] == [
      "train.fsdp_min_size=0: must be an integer >= 1 (elements; smaller state leaves stay replicated)",
      "train.mesh=(3, 2): must cover every device: data x fsdp = 3 x 2 = 6, but there are 8 devices (use -1 in "
      "one entry for all remaining devices)"]
  config = tiny_config(mesh=(-1, 4), batch_size=12)
  assert [p for p in validation.config_problems(config, num_devices=8, needs_data=False) if "train." in p] == [
      "train.batch_size=12: must be a multiple of the 8 devices it is split over (both axes of train.mesh; CPU: "
      "train.num_cpu_devices)"]


def test_state_sharding_covers_params_ema_and_optimizer_state_alike():
  config = tiny_config()
  from ebt_jax import policies  # pylint: disable=g-import-not-at-top
  model, tx = policies.make(config, 5, 3), make_optimizer(config.train)
  abstract = sharding.abstract_state(lambda r: init_train_state(model, tx, r), sharding.make_mesh((1, 8)),
                                     jax.random.PRNGKey(0), min_size=MIN_SIZE)
  specs = jax.tree.map(lambda x: x.sharding.spec, abstract)
  assert _leaf(specs.params, KERNEL) == P(None, "fsdp")
  assert specs.ema_params == specs.params
  adam = specs.opt_state[1][0]  # chain(clip, adamw): adamw = (scale_by_adam, weight decay, schedule)
  assert adam.mu == specs.params and adam.nu == specs.params and adam.count == P()
  assert specs.step == P()


def test_one_step_is_the_same_under_every_mesh_shape_and_fsdp_shards_the_state():
  config = tiny_config(warmup_steps=0)  # a non-zero learning rate at step 0
  state, batch, step = _step_inputs(config)
  outs = {}
  for shape in ((8, 1), (2, 4), (1, 8)):
    mesh = sharding.make_mesh(shape)
    layout = sharding.fsdp_sharding(state, mesh, min_size=MIN_SIZE)
    fn = trainer.jit_train_step(step, mesh, donate=False, state_sharding=layout)
    new_state, metrics = fn(jax.device_put(state, layout), batch, jax.random.PRNGKey(5))
    kernel, mu = _leaf(new_state.params, KERNEL), _leaf(new_state.opt_state[1][0].mu, KERNEL)
    fsdp = shape[1]
    assert kernel.sharding.spec == mu.sharding.spec == (P(None, "fsdp") if fsdp > 1 else P())
    assert kernel.addressable_shards[0].data.shape == (16, 16 // fsdp)  # per-device shard
    assert len(kernel.addressable_shards) == 8
    bias = _leaf(new_state.params, KERNEL[:-1] + ("bias",))
    assert bias.sharding.spec == P() and bias.addressable_shards[0].data.shape == (16,)
    outs[shape] = jax.device_get((new_state, metrics))
  s8, m8 = outs[(8, 1)]
  assert m8["nonfinite"] == 0 and float(m8["grad_norm"]) > 0
  for shape in ((2, 4), (1, 8)):
    s, m = outs[shape]
    np.testing.assert_allclose(m["loss"], m8["loss"], rtol=1e-5)
    np.testing.assert_allclose(m["grad_norm"], m8["grad_norm"], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(s), jax.tree.leaves(s8)):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  moved = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), s8.params, jax.device_get(state.params))
  assert max(jax.tree.leaves(moved)) > 0  # the step did update the parameters


def _assert_close(a, b):
  assert int(a.step) == int(b.step)
  for x, y in zip(jax.tree.leaves(jax.device_get(a)), jax.tree.leaves(jax.device_get(b))):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_checkpoints_resume_under_another_mesh_and_load_policy_reads_an_fsdp_run(tmp_path):
  demos = tiny_demos()
  fsdp = tiny_config(mesh=(1, 8), fsdp_min_size=MIN_SIZE, num_steps=4)
  dp = tiny_config(mesh=(8, 1), fsdp_min_size=MIN_SIZE, num_steps=4)
  model, reference, normalizer = trainer.train(fsdp, str(tmp_path / "ref"), demos)  # uninterrupted, FSDP
  assert _leaf(reference.params, KERNEL).sharding.spec == P(None, "fsdp")

  def kill_after_3(step, state):
    if step == 3:  # checkpoint 2 is on disk
      raise Killed()

  # Saved sharded, resumed replicated: restore_latest places every array in the current mesh's sharding
  # (the same call restores a replicated checkpoint into FSDP shardings).
  workdir = str(tmp_path / "fsdp_then_dp")
  with pytest.raises(Killed):
    trainer.train(fsdp, workdir, demos, on_step=kill_after_3)
  seen = []
  _, resumed, _ = trainer.train(dp, workdir, demos, on_step=lambda step, state: seen.append(step))
  assert seen == [3, 4]  # resumed from the checkpoint of step 2, saved under the other mesh
  assert _leaf(resumed.params, KERNEL).sharding.spec == _leaf(resumed.ema_params, KERNEL).sharding.spec == P()
  _assert_close(resumed, reference)

  # load_policy restores the FSDP checkpoint onto one device; its decision is the trained state's.
  policy, _ = checkpoint.load_policy(str(tmp_path / "ref"))
  assert _leaf(policy.params, KERNEL).sharding.device_set == {jax.local_devices()[0]}
  trained = Policy.from_config(fsdp, model, reference.ema_params, normalizer)  # as main.py evaluates
  obs = np.random.default_rng(3).normal(size=(2, fsdp.horizon.obs, 5)).astype(np.float32)
  a, b = policy(obs, jax.random.PRNGKey(7)), trained(obs, jax.random.PRNGKey(7))
  assert a.actions.shape == (2, fsdp.horizon.action, 3)
  np.testing.assert_allclose(np.asarray(a.actions), np.asarray(b.actions), rtol=1e-4, atol=1e-5)
  np.testing.assert_array_equal(np.asarray(a.steps), np.asarray(b.steps))


def test_memory_report_arithmetic_matches_the_real_shards():
  """The benchmark's device-free arithmetic (AbstractMesh shard shapes) equals the bytes the 8 real devices
  hold, and the (8, 1) mesh is full replication."""
  from ebt_jax.benchmarks import sharding_memory  # pylint: disable=g-import-not-at-top
  config = tiny_config()
  report = sharding_memory.model_report("tiny", config, [8], MIN_SIZE)
  rows = {tuple(r["mesh"]): r for r in report["rows"]}
  assert set(rows) == {(8, 1), (4, 2), (1, 8)}
  assert rows[(8, 1)]["total"] == report["replicated_bytes"] and rows[(8, 1)]["fraction_of_replicated"] == 1
  assert rows[(1, 8)]["total"] < rows[(4, 2)]["total"] < rows[(8, 1)]["total"]
  state = sharding_memory.abstract_train_state(config)
  for shape, row in rows.items():
    real = jax.device_put(jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), state),
                          sharding.fsdp_sharding(state, sharding.make_mesh(shape), MIN_SIZE))
    parts = (real.params, real.ema_params, real.opt_state)  # the report's total (the step counter aside)
    on_device_0 = sum(s.data.nbytes for x in jax.tree.leaves(parts) for s in x.addressable_shards
                      if s.device == jax.devices()[0])
    assert on_device_0 == row["total"], shape
  with pytest.raises(ConfigError, match="even"):
    sharding_memory.meshes(7)
