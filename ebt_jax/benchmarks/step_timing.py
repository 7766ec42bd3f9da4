"""The library behind ``python -m ebt_jax.benchmarks.train_step`` (no flags, so tests and other tools can
import it): load a config size, apply overrides, time one setting's train step and its parts.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import time

import jax
import numpy as np

from ebt_jax import policies
from ebt_jax.benchmarks.common import unit_normalizer
from ebt_jax.data.demos import Demos, Episode
from ebt_jax.data.windows import WindowDataset
from ebt_jax.models import vision
from ebt_jax.errors import ConfigError
from ebt_jax.training import sharding, trainer
from ebt_jax.training.train_step import apply_gradients, init_train_state, make_optimizer, make_train_step

OBS_DIM, ACTION_DIM = 19, 7  # Lift low-dim


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
  episodes = tuple(Episode(f"demo_{k}", rng.normal(size=(length, OBS_DIM)).astype(np.float32),
                           rng.uniform(-1, 1, (length, ACTION_DIM)).astype(np.float32)) for k in range(num_episodes))
  return Demos(path="synthetic", episodes=episodes, obs_keys=("obs",), obs_key_dims=(OBS_DIM,), env_args={})


def random_batch(rng: np.random.Generator, model, batch: int, image_size: tuple[int, int]) -> dict:
  """A training batch of random values: obs [B, To, 19], actions [B, Tp, 7] in [-1, 1], and for a model
  with cameras uint8 frames {camera: [B, To, H, W, 3]} of ``image_size``."""
  m = model.module
  out = {"obs": rng.uniform(-1, 1, (batch, m.obs_horizon, OBS_DIM)).astype(np.float32),
         "actions": rng.uniform(-1, 1, (batch, m.pred_horizon, ACTION_DIM)).astype(np.float32)}
  for c in vision.cameras_of(m.vision):
    out.setdefault("images", {})[c] = rng.integers(0, 256, (batch, m.obs_horizon, *image_size, 3), dtype=np.uint8)
  return out


def _time(fn, args_of, runs: int, warmup: int) -> tuple[float, list[float]]:
  """-> (median ms, all ms) of ``runs`` calls ``fn(*args_of(i))`` after one call and ``warmup`` more."""
  jax.block_until_ready(fn(*args_of(0)))
  for i in range(warmup):
    jax.block_until_ready(fn(*args_of(1 + i)))
  times = []
  for i in range(runs):
    args = args_of(100 + i)
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append((time.perf_counter() - t0) * 1e3)
  return float(np.median(times)), times


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
  model = policies.make(config, OBS_DIM, ACTION_DIM)
  tx = make_optimizer(config.train)
  replicated, sharded = sharding.replicated(mesh), sharding.batch_sharding(mesh)
  state = jax.jit(lambda r: init_train_state(model, tx, r), out_shardings=replicated)(jax.random.PRNGKey(0))
  rng = np.random.default_rng(1)
  batches = [jax.device_put(random_batch(rng, model, batch, tuple(config.data.get("image_size", (84, 84)))), sharded)
             for _ in range(2)]
  keys = lambda i: jax.random.fold_in(jax.random.PRNGKey(2), i)
  step = trainer.jit_train_step(make_train_step(model, tx, config.train), mesh, donate=False)
  t0 = time.perf_counter()
  compiled = step.lower(state, batches[0], keys(0)).compile()
  compile_s = time.perf_counter() - t0
  step_ms, all_ms = _time(compiled, lambda i: (state, batches[i % 2], keys(i)), runs, warmup)
  row = {"setting": name, "policy": model.name, "batch": batch, "num_params": int(sum(
      x.size for x in jax.tree.leaves(state.params))), "compile_s": compile_s, "step_ms": step_ms,
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
  loss_ms, _ = _time(loss, args, runs, warmup)
  grad_ms, _ = _time(grad, args, runs, warmup)
  grads = grad(*args(0))[1]

  update = jax.jit(lambda s, g: apply_gradients(s, g, tx, config.train))  # the train step's AdamW + EMA
  update_ms, _ = _time(update, lambda i: (state, grads), runs, warmup)
  norm = unit_normalizer(OBS_DIM, ACTION_DIM)
  h = config.horizon
  data = WindowDataset(synthetic_demos(), norm, h.obs, h.action, h.pred, seed=0)
  host = lambda i: jax.block_until_ready(jax.device_put(data.batch(i, batch), sharded))
  host_ms, _ = _time(host, lambda i: (i,), runs, warmup)  # low-dim windows (frames: benchmarks/image_loader.py)
  row["breakdown_ms"] = {"host_input": host_ms, "loss_forward": loss_ms, "backward_to_theta": grad_ms - loss_ms,
                         "optimizer_and_ema": update_ms}
  return row


