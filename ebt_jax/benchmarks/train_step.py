r"""Benchmark: what one training step of EBT-Policy and of the Diffusion Policy baseline costs.

  python -m ebt_jax.benchmarks.train_step --out=/tmp/train_step.json                     # CPU size
  python -m ebt_jax.benchmarks.train_step --sizes=cpu,paper --batch_sizes=64,256 --out=gpu.json
  python -m ebt_jax.benchmarks.train_step --variant=steps_2_3:sampler.train_steps=2,sampler.train_extra_steps=1

For every model size (``--sizes``: variants of ``--config``, e.g. ``cpu`` and ``paper`` of
configs/lift.py), batch size (``--batch_sizes``) and policy setting (Diffusion Policy, EBT with the
config's settings, and each ``--variant`` of EBT: a name and ``config`` overrides), it times the jitted
train step exactly as the trainer builds it (``trainer.jit_train_step``: the batch split over every
device of a 1-D mesh, state replicated): compile time (first call), then the median of ``--runs``
calls after ``--warmup``; train steps/s and samples/s follow. Random parameters and random normalised
batches (obs_dim 19, A = 7 as Lift low-dim): the step's cost does not depend on the data.

``--breakdown`` (default on) splits each policy's default step into where its time goes, each part a
jitted function of its own timed the same way:
  * host input: ``WindowDataset.batch`` on synthetic demos + the transfer to the devices;
  * loss forward: the policy's loss without any gradient to theta (EBT: the whole MCMC chain,
    energies and first-order dE/dy included; diffusion: one noise-prediction forward pass);
  * backward to theta: value_and_grad(loss) minus the loss forward (EBT: the second-order pass
    through every differentiated MCMC step);
  * optimiser + EMA: the whole train step minus value_and_grad(loss).

Memory: the compiled step's temporary buffers (``memory_analysis``, any backend) and, where the
backend reports it (GPU, TPU), the device's peak bytes in use. Prints a table and writes ``--out``.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import time

import jax
import numpy as np
from absl import flags, logging
from jax.sharding import NamedSharding, PartitionSpec

from ebt_jax import cli, jsonio, policies, validation
from ebt_jax.benchmarks.common import device_description
from ebt_jax.data.demos import Demos, Episode
from ebt_jax.data.normalization import MinMax, Normalizer
from ebt_jax.data.windows import WindowDataset
from ebt_jax.errors import ConfigError
from ebt_jax.training import trainer
from ebt_jax.training.train_step import init_train_state, make_optimizer, make_train_step

_CONFIG = flags.DEFINE_string("config", "configs/lift.py", "Config file whose get_config(size) builds each size.")
_SIZES = flags.DEFINE_list("sizes", ["cpu"], "Config variants to time (configs/lift.py: cpu, paper).")
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["64", "256"], "Global batch sizes.")
_POLICIES = flags.DEFINE_list("policies", ["diffusion", "ebt"], "Policies to time with the config's settings.")
_VARIANTS = flags.DEFINE_multi_string(
    "variant", ["no_remat:sampler.remat_train_steps=False", "truncated:sampler.truncate_chain=True",
                "detach_step_scale:sampler.detach_step_scale=True",
                "steps_2_3:sampler.train_steps=2,sampler.train_extra_steps=1"],
    "EBT variants, NAME:FIELD=VALUE[,FIELD=VALUE...] (config overrides; values as Python literals).")
_RUNS = flags.DEFINE_integer("runs", 10, "Timed calls per setting (median reported).")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed calls after compilation.")
_BREAKDOWN = flags.DEFINE_boolean("breakdown", True, "Also time host input, loss forward and backward parts.")
_NUM_CPU_DEVICES = flags.DEFINE_integer("num_cpu_devices", 0, "CPU devices to split the host into "
                                        "(0: the config's train.num_cpu_devices); ignored on GPU / TPU.")
_OBS_DIM, _ACTION_DIM = 19, 7
_OUT = flags.DEFINE_string("out", "", "Write the results as JSON here.")
cli.ints_at_least("batch_sizes", 1)
cli.at_least("runs", 1)
cli.at_least("warmup", 0)
cli.at_least("num_cpu_devices", 0)
cli.existing_path("config")
cli.output_file("out")


def load_config(path: str, size: str):
  """``get_config(size)`` of the config file at ``path`` (as ``--config=path:size`` would load it).

  Raises:
    ConfigError: if the file has no ``get_config`` or refuses ``size``.
  """
  spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ConfigError(f"--config={path}: the file defines no get_config()")
  try:
    return module.get_config(size)
  except ValueError as e:
    raise ConfigError(f"--config={path} --sizes={size}: {e}") from e


def parse_variant(spec: str) -> tuple[str, dict]:
  """``"name:a.b=1,c.d=True"`` -> ("name", {"a.b": 1, "c.d": True}).

  Raises:
    ConfigError: naming the spec if it has no name, no ``FIELD=VALUE`` or a value that is no literal.
  """
  name, sep, rest = spec.partition(":")
  if not sep or not name or not rest:
    raise ConfigError(f"--variant={spec!r}: expected NAME:FIELD=VALUE[,FIELD=VALUE...]")
  overrides = {}
  for item in rest.split(","):
    field, eq, value = item.partition("=")
    if not eq:
      raise ConfigError(f"--variant={spec!r}: {item!r} is not FIELD=VALUE")
    try:
      overrides[field.strip()] = ast.literal_eval(value.strip())
    except (ValueError, SyntaxError) as e:
      raise ConfigError(f"--variant={spec!r}: value {value!r} of {field!r} is not a Python literal") from e
  return name, overrides


def with_overrides(config, policy: str, overrides: dict):
  """A copy of ``config`` with ``policy`` and the ``"section.field"`` overrides set.

  Raises:
    ConfigError: for an unknown field (naming it) or a value of the wrong type.
  """
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.policy = policy
  for path, value in overrides.items():
    *parents, leaf = path.split(".")
    node = config
    for part in parents:
      if part not in node:
        raise ConfigError(f"override {path}={value!r}: the config has no section {part!r}")
      node = node[part]
    if leaf not in node:
      raise ConfigError(f"override {path}={value!r}: the config has no field {leaf!r}")
    try:
      node[leaf] = value
    except TypeError as e:
      raise ConfigError(f"override {path}={value!r}: {e}") from e
  return config


def synthetic_demos(num_episodes: int = 32, length: int = 60, seed: int = 0) -> Demos:
  """Random Lift-shaped demos (obs_dim 19, A = 7; 60 steps each, like the scripted ones) for host input."""
  rng = np.random.default_rng(seed)
  episodes = tuple(Episode(f"demo_{k}", rng.normal(size=(length, _OBS_DIM)).astype(np.float32),
                           rng.uniform(-1, 1, (length, _ACTION_DIM)).astype(np.float32)) for k in range(num_episodes))
  return Demos(path="synthetic", episodes=episodes, obs_keys=("obs",), obs_key_dims=(_OBS_DIM,), env_args={})


def _time(fn, args_of, runs: int, warmup: int) -> tuple[float, float, list[float]]:
  """-> (first call seconds, i.e. compile + run; median ms; all ms) of ``fn(*args_of(i))``."""
  t0 = time.perf_counter()
  jax.block_until_ready(fn(*args_of(0)))
  first = time.perf_counter() - t0
  for i in range(warmup):
    jax.block_until_ready(fn(*args_of(1 + i)))
  times = []
  for i in range(runs):
    args = args_of(100 + i)
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append((time.perf_counter() - t0) * 1e3)
  return first, float(np.median(times)), times


def _memory(compiled) -> dict:
  """Compiled temporary / argument / output bytes (any backend) and device peak bytes (GPU / TPU)."""
  out = {}
  try:
    m = compiled.memory_analysis()
    out.update(temp_bytes=int(m.temp_size_in_bytes), argument_bytes=int(m.argument_size_in_bytes),
               output_bytes=int(m.output_size_in_bytes))
  except Exception:  # noqa: BLE001 - not every backend implements it
    pass
  stats = jax.devices()[0].memory_stats()
  if stats and "peak_bytes_in_use" in stats:
    out["device_peak_bytes"] = int(stats["peak_bytes_in_use"])
  return out


def time_setting(config, name: str, batch: int, mesh, runs: int, warmup: int, breakdown: bool) -> dict:
  """Times the train step of ``config`` at global ``batch``; -> one result row (see module docstring)."""
  model = policies.make(config, _OBS_DIM, _ACTION_DIM)
  tx = make_optimizer(config.train)
  replicated, sharded = NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec("batch"))
  state = jax.jit(lambda r: init_train_state(model, tx, r), out_shardings=replicated)(jax.random.PRNGKey(0))
  rng = np.random.default_rng(1)
  batches = [jax.device_put({"obs": rng.uniform(-1, 1, (batch, model.module.obs_horizon, _OBS_DIM)).astype(np.float32),
                             "actions": rng.uniform(-1, 1, (batch, model.module.pred_horizon, _ACTION_DIM)).astype(
                                 np.float32)}, sharded) for _ in range(2)]
  keys = lambda i: jax.random.fold_in(jax.random.PRNGKey(2), i)
  step = trainer.jit_train_step(make_train_step(model, tx, config.train), mesh, donate=False)
  compiled = step.lower(state, batches[0], keys(0)).compile()
  first, step_ms, all_ms = _time(step, lambda i: (state, batches[i % 2], keys(i)), runs, warmup)
  row = {"setting": name, "policy": model.name, "batch": batch, "num_params": int(sum(
      x.size for x in jax.tree.leaves(state.params))), "compile_s": first, "step_ms": step_ms,
         "p10_ms": float(np.percentile(all_ms, 10)), "p90_ms": float(np.percentile(all_ms, 90)),
         "steps_per_s": 1e3 / step_ms, "samples_per_s": batch * 1e3 / step_ms, **_memory(compiled)}
  if model.name == "ebt":
    s = model.sampler
    row.update(mcmc_steps=f"{s.train_steps}..{s.train_steps + s.train_extra_steps}", truncate_chain=s.truncate_chain,
               remat_train_steps=s.remat_train_steps, detach_step_scale=s.detach_step_scale)
  if not breakdown:
    return row
  loss = jax.jit(lambda p, b, r: model.loss(p, b, r)[0])
  grad = jax.jit(lambda p, b, r: jax.value_and_grad(lambda q: model.loss(q, b, r)[0])(p))
  args = lambda i: (state.params, batches[i % 2], keys(i))
  _, loss_ms, _ = _time(loss, args, runs, warmup)
  _, grad_ms, _ = _time(grad, args, runs, warmup)
  norm = Normalizer(obs=MinMax(-np.ones(_OBS_DIM, np.float32), np.ones(_OBS_DIM, np.float32)),
                    actions=MinMax(-np.ones(_ACTION_DIM, np.float32), np.ones(_ACTION_DIM, np.float32)),
                    obs_keys=("obs",), obs_key_dims=(_OBS_DIM,))
  h = config.horizon
  data = WindowDataset(synthetic_demos(), norm, h.obs, h.action, h.pred, seed=0)
  host = lambda i: jax.block_until_ready(jax.device_put(data.batch(i, batch), sharded))
  _, host_ms, _ = _time(host, lambda i: (i,), runs, warmup)
  row["breakdown_ms"] = {"host_input": host_ms, "loss_forward": loss_ms, "backward_to_theta": grad_ms - loss_ms,
                         "optimizer_and_ema": step_ms - grad_ms}
  return row


def main(argv):
  del argv  # cli.run refuses positional arguments
  variants = [parse_variant(v) for v in _VARIANTS.value]
  settings = []  # (size, name, config)
  for size in _SIZES.value:
    base = load_config(_CONFIG.value, size)
    for policy in _POLICIES.value:
      settings.append((size, policy, with_overrides(base, policy, {})))
    settings += [(size, f"ebt {name}", with_overrides(base, "ebt", o)) for name, o in variants]
  problems = []
  for size, name, config in settings:
    problems += [f"{size} / {name}: {p}" for p in validation.config_problems(config, needs_data=False)]
  if problems:
    raise ConfigError(validation.format_problems(problems, "settings"))
  jax.config.update("jax_num_cpu_devices", _NUM_CPU_DEVICES.value or settings[0][2].train.num_cpu_devices)
  mesh = trainer.make_mesh()
  bad = [b for b in _BATCH_SIZES.value if int(b) % mesh.size]
  if bad:
    raise ConfigError(f"--batch_sizes={','.join(bad)}: must be multiples of the {mesh.size} devices")
  device = device_description()
  logging.info("device: %s", device)
  results = []
  for size, name, config in settings:
    for batch in (int(b) for b in _BATCH_SIZES.value):
      row = time_setting(config, name, batch, mesh, _RUNS.value, _WARMUP.value,
                         _BREAKDOWN.value and name in policies.POLICIES)
      row["size"] = size
      results.append(row)
      logging.info("%s", row)
  print(f"\nTrain step on {device['platform']} ({device['device_kind']}, {device['num_devices']} devices, "
        f"{device['host_cpus']} host CPUs, jax {device['jax']}); median of {_RUNS.value} steps")
  print(f"{'size':<6} {'setting':<24} {'batch':>5} {'step ms':>9} {'steps/s':>8} {'samples/s':>10} {'compile s':>9} "
        f"{'temp MiB':>8}")
  for r in results:
    temp = f"{r['temp_bytes'] / 2**20:8.1f}" if "temp_bytes" in r else f"{'-':>8}"
    print(f"{r['size']:<6} {r['setting']:<24} {r['batch']:>5} {r['step_ms']:>9.1f} {r['steps_per_s']:>8.2f} "
          f"{r['samples_per_s']:>10.0f} {r['compile_s']:>9.1f} {temp}")
  for r in (r for r in results if "breakdown_ms" in r):
    parts = "  ".join(f"{k} {v:.1f}" for k, v in r["breakdown_ms"].items())
    print(f"breakdown ms, {r['size']} {r['setting']} batch {r['batch']}: {parts}")
  if _OUT.value:
    jsonio.write(_OUT.value, {"device": device, "config": _CONFIG.value, "results": results})


if __name__ == "__main__":
  cli.run(main)
