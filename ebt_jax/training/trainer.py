"""The training loop: demos -> normaliser -> windows -> sharded jitted train step -> checkpoints.

The same loop trains EBT-Policy and the Diffusion Policy baseline: ``config.policy`` picks the policy
model (``ebt_jax.policies``), whose loss the train step differentiates.

Runs unchanged on 1 CPU, several fake CPU devices, a GPU or every host of a TPU pod: the batch is
split over every device of a (data, fsdp) mesh (``train.mesh``, ``training.sharding``), the train state
is replicated over "data" and its large leaves sharded over "fsdp" (FSDP; (-1, 1), the default: all
replicated), and each host contributes its slice of the global batch (the global batch of a step is
the same for every topology, ``WindowDataset.batch``'s ``shard``). A SIGTERM saves the current step
and stops (``training.preemption``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from typing import Any, Callable

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding

from ebt_jax import jsonio, paths, policies, progress
from ebt_jax.data import images, loader
from ebt_jax.data.normalization import MinMax, Normalizer
from ebt_jax.data.demos import Demos
from ebt_jax.data.windows import WindowDataset, window_index
from ebt_jax.errors import CheckpointError, ConfigError, DivergedError
from ebt_jax.policies import PolicyModel
from ebt_jax.training import checkpoint, sharding, preemption, workdir as workdir_lib, writers
from ebt_jax.training.train_step import TrainState, init_train_state, make_optimizer, make_train_step

METRICS_FILE = "metrics.jsonl"
CURVE_FILE = "eval_curve.jsonl"  # evaluations during training: one {"step": ..., <summary>} per line
# The dataset's env_args (robomimic ``data.attrs["env_args"]``; {} for Zarr buffers), written when training
# starts: what ``ebt_jax.evaluate`` rebuilds the evaluation env from without the dataset.
ENV_ARGS_FILE = "env_args.json"
# Validation loss: at most this many held-out windows (a seeded subset of them if there are more).
VALID_MAX_WINDOWS = 1024
VALID_RNG_TAG = 0x7A11D  # folded into PRNGKey(config.seed): the one fixed key of every validation loss

# evaluate(model, state, normalizer) -> summary dict (eval.json fields without per-episode records).
EvalFn = Callable[[PolicyModel, TrainState, Normalizer], dict]


def fit_normalizer(demos: Demos, normalize_obs: bool = True, normalize_actions: bool = True) -> Normalizer:
  """Min-max statistics of all observations and actions of ``demos``; the identity map for a part used
  raw (``normalize_obs`` / ``normalize_actions`` false: ``config.data.normalize_*``)."""
  fit = lambda on, x: MinMax.fit(x) if on else MinMax.identity(x.shape[1])
  return Normalizer(obs=fit(normalize_obs, np.concatenate([e.obs for e in demos.episodes])),
                    actions=fit(normalize_actions, np.concatenate([e.actions for e in demos.episodes])),
                    obs_keys=demos.obs_keys, obs_key_dims=demos.obs_key_dims)


def epochs(config, demos: Demos, steps: int) -> float:
  """Passes over the training windows that ``steps`` optimisation steps of ``config.train.batch_size`` make."""
  h = config.horizon
  windows = window_index([len(e.actions) for e in demos.episodes], h.obs, h.action, h.pred)
  return steps * config.train.batch_size / len(windows)


def make_mesh(shape=sharding.DEFAULT_MESH) -> Mesh:
  """The (data, fsdp) mesh of ``train.mesh`` sizes over every device of every host (``sharding.make_mesh``;
  the default (-1, 1): data parallelism over all of them).

  Raises:
    ConfigError: if the sizes are invalid or do not cover the devices.
  """
  return sharding.make_mesh(shape)


def jit_train_step(train_step, mesh: Mesh, donate: bool = True, state_sharding: Any = None):
  """jit with the batch split along its first axis over every axis of ``mesh`` (``sharding.batch_sharding``;
  a 1-D mesh works too), the rng replicated, and the state (in and out) in ``state_sharding`` (a
  ``NamedSharding`` pytree, e.g. ``sharding.shardings_of(sharding.abstract_state(...))``; None:
  replicated); the metrics come out replicated."""
  replicated = sharding.replicated(mesh)
  state_sharding = replicated if state_sharding is None else state_sharding
  return jax.jit(train_step, in_shardings=(state_sharding, sharding.batch_sharding(mesh), replicated),
                 out_shardings=(state_sharding, replicated), donate_argnums=0 if donate else ())


_STEPS: dict = {}  # this process's jitted train steps (tests and sweeps train the same model several times)


def _cached_step(config, demos: Demos, mesh: Mesh, state_sharding, build: Callable[[], Callable]) -> Callable:
  """``build()``, or the jitted step an earlier ``train`` call of this process built for the same config,
  data widths, devices and state layout: tracing the EBT training chain (Alg. 1, second-order gradients)
  costs seconds per call, and jit caches by function identity, which a new closure never matches."""
  key = (config.to_json_best_effort(sort_keys=True), demos.obs_dim, demos.action_dim,
         tuple(d.id for d in mesh.devices.flat), mesh.devices.shape, mesh.axis_names,
         str(jax.tree.map(lambda s: s.spec, state_sharding)))
  if key not in _STEPS:
    _STEPS[key] = build()
  return _STEPS[key]


def _global_batch(local: dict[str, Any], batch_sharding: NamedSharding) -> dict[str, Any]:
  """This host's batch (nested dicts of [B_local, ...] arrays: obs, actions, images) -> global arrays split
  along the batch axis (``sharding.batch_sharding``)."""
  return jax.tree.map(lambda v: jax.make_array_from_process_local_data(batch_sharding, v), local)


def append_record(path: str, record: dict) -> None:
  """Appends one strict-JSON line to ``path`` (a local path or ``gs://`` URI; non-finite numbers as null;
  on process 0 only)."""
  if jax.process_index() != 0:  # one writer on multi-host runs
    return
  jsonio.append_line(path, record)


def truncate_records(path: str, last_step: int) -> None:
  """Drops records past ``last_step`` from the JSON Lines file ``path`` (``metrics.jsonl``,
  ``eval_curve.jsonl``; local path or ``gs://`` URI; rewritten atomically, ``paths.write_atomic``; process 0
  only; no file: nothing). Used for those written after the checkpoint a resumed run starts from, and by the
  main job before a finished run's final evaluation is recorded again."""
  target = paths.path(path)
  if jax.process_index() != 0 or not target.exists():
    return
  lines = [l for l in target.read_text().splitlines(keepends=True) if l.strip() and json.loads(l)["step"] <= last_step]
  paths.write_atomic(path, "".join(lines))


def read_curve(workdir: str) -> list[dict]:
  """The records of ``<workdir>/eval_curve.jsonl`` in file order ([] without one); ``workdir``: a local
  path or a ``gs://`` URI."""
  return jsonio.read_lines(paths.path(workdir) / CURVE_FILE)


def best_evaluation(records: list[dict], metric: str) -> dict | None:
  """The record with the highest ``metric`` (the earliest of equal ones); None if no record has it.

  This is the paper's Table 4 number: the maximum success over the evaluations of a training run."""
  scored = [r for r in records if isinstance(r.get(metric), (int, float))]
  return max(scored, key=lambda r: (r[metric], -r["step"])) if scored else None


def train_wall_s(workdir: str) -> float:
  """Seconds spent training so far (``train_wall_s`` of the last ``metrics.jsonl`` record; 0 without one).

  Training time is wall clock from the first train step (compilation included) to the last logged one,
  summed over resumed runs, without evaluations during training: what success vs wall-clock plots use.
  """
  records = jsonio.read_lines(paths.path(workdir) / METRICS_FILE)  # a local path or a gs:// URI
  return float(records[-1].get("train_wall_s", 0.0)) if records else 0.0


def valid_every(config) -> int:
  """Steps between validation losses: ``eval.every_steps``, or ``train.checkpoint_every`` when that is 0
  (a validation loss for every checkpoint); the last step always gets one too."""
  every = config.eval.get("every_steps", 0) if "eval" in config else 0
  return every or config.train.checkpoint_every


def make_validation(config, model: PolicyModel, demos: Demos, normalizer: Normalizer, mesh: Mesh,
                    shard: tuple[int, int] = (0, 1)) -> Callable[[TrainState], dict] | None:
  """-> ``validate(state) -> {"valid_loss": float, "valid_windows": int}``, or None without held-out demos.

  The loss is the policy model's training loss (EBT: the Alg. 1 chain loss; diffusion: the DDPM loss),
  jitted, on a fixed set of windows of ``demos.held_out`` (normalised with the training normaliser):
  all of them, or a subset of ``VALID_MAX_WINDOWS`` drawn once with ``config.seed``, in batches of
  ``train.batch_size`` (the last batch filled up with the first windows again), each batch with its own
  key folded from one fixed key (``VALID_RNG_TAG``), so the values of different steps differ only by
  the parameters. The parameters are those evaluation uses: the EMA ones when ``eval.use_ema`` (the
  default, as Diffusion Policy's val_loss), else the raw ones. ``valid_loss`` is the mean over the
  batches (a float, normalised-action units as ``loss``); ``valid_windows`` how many distinct windows.

  Args:
    config, model, demos, normalizer: as the trainer has them.
    mesh: the (data, fsdp) mesh the batch is split over (``sharding.batch_sharding``).
    shard: (process index, process count): this host's rows of each batch (multi-host).
  """
  if not demos.held_out:
    return None
  h, batch_size = config.horizon, config.train.batch_size
  held = dataclasses.replace(demos, episodes=demos.held_out, held_out=())
  data = WindowDataset(held, normalizer, h.obs, h.action, h.pred, seed=config.seed,
                       image_storage=config.data.get("image_storage", "auto"),
                       image_ram_limit_gb=config.data.get("image_ram_limit_gb", 8.0))
  rows = np.arange(len(data))
  if len(rows) > VALID_MAX_WINDOWS:
    rows = np.sort(np.random.default_rng(config.seed).choice(len(rows), VALID_MAX_WINDOWS, replace=False))
  distinct = len(rows)
  batches = np.resize(rows, -(-len(rows) // batch_size) * batch_size).reshape(-1, batch_size)
  k, n = shard
  local = batch_size // n
  use_ema = config.eval.get("use_ema", True) if "eval" in config else True
  key = jax.random.fold_in(jax.random.PRNGKey(config.seed), VALID_RNG_TAG)
  batch_sharding = sharding.batch_sharding(mesh)
  loss = jax.jit(lambda params, batch, rng: model.loss(params, batch, rng)[0],
                 out_shardings=sharding.replicated(mesh))

  def validate(state: TrainState) -> dict:
    params = state.ema_params if use_ema else state.params
    total = 0.0
    for i, batch_rows in enumerate(batches):
      batch = _global_batch(data.at(batch_rows[k * local:(k + 1) * local]), batch_sharding)
      total += float(jax.device_get(loss(params, batch, jax.random.fold_in(key, i))))
    return {"valid_loss": total / len(batches), "valid_windows": distinct}

  return validate


def train(config, workdir: str, demos: Demos,
          on_step: Callable[[int, TrainState], None] | None = None,
          evaluate: EvalFn | None = None,
          writer: writers.Writer | None = None) -> tuple[PolicyModel, TrainState, Normalizer]:
  """Trains (or resumes training of) the ``config.policy`` policy on ``demos``; -> (policy model, state, normaliser).

  Args:
    config: the ConfigDict of configs/lift.py (uses ``policy``, ``horizon``, ``model``, ``sampler`` or
      ``diffusion``, ``train``, ``seed``).
    workdir: run directory; checkpoints in ``<workdir>/checkpoints``, metrics in ``<workdir>/metrics.jsonl``,
      the dataset's env_args in ``<workdir>/env_args.json`` (``ENV_ARGS_FILE``).
    demos: training demonstrations (raw units; normalised here); with ``demos.held_out`` (validation
      demos, ``config.data.valid_filter_key`` / ``valid_fraction``) also ``valid_loss`` (``make_validation``)
      every ``valid_every(config)`` steps and at the last one, merged into that step's metrics record, or
      its own record {step, valid_loss, valid_windows, train_wall_s} at a step that logs nothing else.
    on_step: optional callback ``(step, state)`` after every step (tests use it to simulate a crash).
    evaluate: optional evaluation run every ``config.eval.every_steps`` steps before the last one
      (single-process runs only); each summary is appended to ``<workdir>/eval_curve.jsonl`` with its
      step, epoch (passes over the training windows) and ``max_<best_metric>_so_far``, before the
      checkpoint of that step is written;
      a summary whose ``eval.best_metric`` (default success_rate) beats every earlier one also saves
      the state to ``<workdir>/checkpoints/best`` (``checkpoint.best_manager``).
    writer: where the metrics records and evaluation summaries also go (``writers.Writer``: TensorBoard in
      ``<workdir>/tensorboard``, wandb with ``train.wandb``); None: one of this run, closed on return
      (``writers.open_run``). A progress bar (steps, steps/s, loss, ETA) shows on a terminal only.

  Holds the workdir's lock (``ebt_jax.training.workdir``) while it runs. Resumes from the newest intact
  checkpoint (``checkpoint.restore_latest``: damaged newer steps are logged and moved to
  ``<workdir>/checkpoints_damaged``).

  Raises:
    ConfigError: if the global batch does not divide over the devices, ``train.keep_checkpoints`` < 1, or
      ``train.wandb`` asks for wandb where it is not installed.
    CheckpointError: if the checkpoint to resume was trained with another policy, model, horizons or
      obs / action layout (the message lists the differing fields), or no checkpoint restores.
    WorkdirError: if another run holds the workdir.
    DivergedError: after ``train.max_consecutive_nonfinite`` skipped non-finite steps in a row.
    preemption.Preempted: on SIGTERM (or, multi-host, JAX's preemption notice) after saving the checkpoint
      of the step it stopped at (``ebt_jax.training.preemption``); a rerun resumes there.
  """
  with workdir_lib.hold(workdir, lock=jax.process_index() == 0), preemption.Watch() as watch, \
      contextlib.ExitStack() as cleanup:  # closes the writer and the progress bar on every exit
    if writer is None:
      writer = cleanup.enter_context(writers.open_run(config, workdir))
    return _train(config, workdir, demos, on_step, evaluate, watch, writer, cleanup)


def _check_resumable(workdir: str, config_dict: dict, demos: Demos, model: PolicyModel):
  """-> ``check(step, normalizer, saved config)`` for ``checkpoint.restore_latest``: refuses a checkpoint
  of another policy, model, horizons or observation / action layout, listing what differs."""

  def check(step: int, saved: Normalizer, saved_config: dict) -> None:
    where = str(paths.path(checkpoint.checkpoint_dir(workdir)) / str(step))
    if saved_config.get("policy", "ebt") != model.name:  # the message tests and users know
      raise CheckpointError(f"{workdir}: checkpoint step {step} is a {saved_config.get('policy', 'ebt')!r} "
                            f"policy, config.policy is {model.name!r}; use a new --workdir")
    diffs = checkpoint.architecture_differences(saved_config, config_dict)
    if (saved.obs_keys, tuple(saved.obs_key_dims), len(saved.actions.low)) != (
        demos.obs_keys, tuple(demos.obs_key_dims), demos.action_dim):
      diffs.append(f"observations / actions: obs keys {list(saved.obs_keys)} of widths {list(saved.obs_key_dims)} "
                   f"(obs_dim={sum(saved.obs_key_dims)}), action_dim={len(saved.actions.low)} in the checkpoint; "
                   f"{list(demos.obs_keys)} of widths {list(demos.obs_key_dims)} (obs_dim={demos.obs_dim}), "
                   f"action_dim={demos.action_dim} in {demos.path}")
    if diffs:
      raise CheckpointError(
          f"{workdir}: the checkpoint at step {step} ({where}) was trained with another model or data, so this "
          "run cannot resume it:\n" + "\n".join(f"  - {d}" for d in diffs) +
          f"\nResume with the checkpoint's settings, or start a fresh run with another --workdir (or move "
          f"{checkpoint.checkpoint_dir(workdir)} away).")

  return check


def _train(config, workdir: str, demos: Demos, on_step, evaluate,
           watch: preemption.Watch, writer: writers.Writer,
           cleanup: contextlib.ExitStack) -> tuple[PolicyModel, TrainState, Normalizer]:
  tcfg = config.train
  mesh = make_mesh(tuple(tcfg.get("mesh", sharding.DEFAULT_MESH)))
  if tcfg.batch_size % mesh.size:
    raise ConfigError(f"train.batch_size={tcfg.batch_size}: must be a multiple of the {mesh.size} devices it is "
                      "split over (both axes of train.mesh; CPU: train.num_cpu_devices)")
  batch_sharding = sharding.batch_sharding(mesh)

  model = policies.make(config, demos.obs_dim, demos.action_dim)
  tx = make_optimizer(tcfg)
  init = lambda rng: init_train_state(model, tx, rng)
  root = jax.random.PRNGKey(config.seed)
  init_rng, step_root = jax.random.split(root)
  # The state's layout from its shapes alone: initialised in it (parameters born sharded) and restored into
  # it, whatever mesh a checkpoint was saved under.
  abstract = sharding.abstract_state(init, mesh, init_rng,
                                     min_size=tcfg.get("fsdp_min_size", sharding.MIN_SHARD_SIZE))
  state_sharding = sharding.shardings_of(abstract)

  config_dict = json.loads(config.to_json_best_effort())
  mngr = checkpoint.manager(workdir, tcfg.keep_checkpoints)
  restored = checkpoint.restore_latest(mngr, abstract, check=_check_resumable(workdir, config_dict, demos, model),
                                       damaged_dir=str(paths.path(workdir) / checkpoint.DAMAGED_DIR))
  if restored is None:
    state = jax.jit(init, out_shardings=state_sharding)(init_rng)
    start, normalizer = 0, fit_normalizer(demos, config.data.get("normalize_obs", True),
                                          config.data.get("normalize_actions", True))
  else:  # the checkpoint's normaliser is the one the parameters were trained with
    start, state, normalizer = restored.step, restored.state, restored.normalizer
    logging.info("Resumed from %s at step %d", mngr.directory, start)
    writer.restart(start)
  metrics_path = str(paths.path(workdir) / METRICS_FILE)
  curve_path = str(paths.path(workdir) / CURVE_FILE)
  truncate_records(metrics_path, start)
  truncate_records(curve_path, start)
  if jax.process_index() == 0:
    jsonio.write(paths.path(workdir) / ENV_ARGS_FILE, dict(demos.env_args))
  eval_every = config.eval.get("every_steps", 0) if "eval" in config else 0
  if evaluate is not None and eval_every and jax.process_count() > 1:
    logging.warning("eval.every_steps is ignored on multi-host runs (evaluate the checkpoints instead)")
    evaluate = None

  best_metric = config.eval.get("best_metric", "success_rate") if "eval" in config else "success_rate"
  best_mngr, best = None, None
  if evaluate is not None and eval_every:
    best_mngr = checkpoint.best_manager(workdir)
    best_record = best_evaluation(read_curve(workdir), best_metric)
    best = None if best_record is None else best_record[best_metric]
    for stale in [s for s in best_mngr.all_steps() if s > start]:  # saved after the checkpoint resumed from
      best_mngr.delete(stale)

  data = WindowDataset(demos, normalizer, config.horizon.obs, config.horizon.action, config.horizon.pred,
                       seed=config.seed,
                       image_storage=config.data.get("image_storage", "auto"),
                       image_ram_limit_gb=config.data.get("image_ram_limit_gb", 8.0))
  if data.images is not None:
    logging.info("%s", images.describe(data.images))
  step_fn = _cached_step(config, demos, mesh, state_sharding,
                         lambda: jit_train_step(make_train_step(model, tx, tcfg), mesh, state_sharding=state_sharding))
  validate = make_validation(config, model, demos, normalizer, mesh, shard=(jax.process_index(), jax.process_count()))
  num_params = sum(x.size for x in jax.tree.leaves(state.params))
  logging.info("policy %s: %d parameters, %d windows from %d demos, %d devices (mesh %s), batch %d, steps %d -> %d",
               model.name, num_params, len(data), len(demos.episodes), mesh.size, dict(mesh.shape), tcfg.batch_size,
               start, tcfg.num_steps)

  wall = train_wall_s(workdir)  # training seconds before this (resumed) run
  nonfinite_run, window, t0 = 0, [], time.time()
  host_batches = loader.batches(data, start, tcfg.num_steps, tcfg.batch_size, tcfg.get("loader_threads", 2),
                                tcfg.get("prefetch_batches", 4), shard=(jax.process_index(), jax.process_count()))
  input_wait = 0.0  # seconds the loop waited for the next batch (0 when the prefetch keeps up)
  bar = cleanup.enter_context(progress.bar(tcfg.num_steps, "train", "step", initial=start,
                                           enabled=jax.process_index() == 0))
  for step in range(start, tcfg.num_steps):
    t_wait = time.time()
    host_batch = next(host_batches)
    input_wait += time.time() - t_wait
    batch = _global_batch(host_batch, batch_sharding)
    state, metrics = step_fn(state, batch, jax.random.fold_in(step_root, step))
    window.append(metrics)
    done = step + 1
    valid = None
    if validate is not None and (done % valid_every(config) == 0 or done == tcfg.num_steps):
      t_valid = time.time()
      valid = validate(state)
      logging.info("step %d: valid_loss %.4f on %d held-out windows", done, valid["valid_loss"], valid["valid_windows"])
      t0 += time.time() - t_valid  # validation time stays out of steps/s and train_wall_s
      if done % tcfg.log_every and done != tcfg.num_steps:  # no training record at this step: one of its own
        valid_record = {"step": done, **valid, "train_wall_s": wall + (time.time() - t0)}
        append_record(metrics_path, valid_record)
        writer.scalars(done, valid_record, "train")
    if done % tcfg.log_every == 0 or done == tcfg.num_steps:
      host = jax.device_get(window)
      record = {k: float(np.mean([m[k] for m in host])) for k in host[0]}
      record["nonfinite"] = int(sum(m["nonfinite"] for m in host))
      for m in host:
        nonfinite_run = nonfinite_run + 1 if m["nonfinite"] else 0
      wall += time.time() - t0
      record.update(step=done, steps_per_s=len(host) / (time.time() - t0), train_wall_s=wall,
                    input_wait_fraction=input_wait / max(time.time() - t0, 1e-9))
      input_wait = 0.0
      record.update(valid or {})
      append_record(metrics_path, record)
      writer.scalars(done, record, "train")  # TensorBoard / wandb: the same numbers (writers.py)
      progress.advance(bar, done, loss=f"{record['loss']:.4f}")
      logging.info("step %d/%d  loss %.4f  %s  grad_norm %.3f  %.2f steps/s%s", done, tcfg.num_steps, record["loss"],
                   "  ".join(f"{k} {record[k]:.4f}" for k in model.log_keys), record["grad_norm"],
                   record["steps_per_s"],
                   f"  SKIPPED {record['nonfinite']} non-finite steps" if record["nonfinite"] else "")
      if nonfinite_run >= tcfg.max_consecutive_nonfinite:
        raise DivergedError(
            f"{nonfinite_run} consecutive training steps had a non-finite loss or gradient (none of them "
            f"changed the parameters; last at step {done}, train.max_consecutive_nonfinite="
            f"{tcfg.max_consecutive_nonfinite}); see {metrics_path}. Lower train.learning_rate "
            f"(={tcfg.learning_rate:g}) or, for EBT, sampler.step_size (alpha), and resume: the last checkpoint "
            "is kept.")
      window, t0 = [], time.time()
    if evaluate is not None and eval_every and done % eval_every == 0 and done < tcfg.num_steps:
      t_eval = time.time()
      summary = evaluate(model, state, normalizer)
      score = summary.get(best_metric)
      new_best = isinstance(score, (int, float)) and (best is None or score > best)
      best = score if new_best else best
      append_record(curve_path, {"step": done, "epoch": epochs(config, demos, done),
                                 "train_wall_s": wall + (t_eval - t0),
                                 **{k: v for k, v in summary.items() if k != "episodes"},
                                 f"max_{best_metric}_so_far": best})
      writer.evaluation(done, model.inference, summary)
      if new_best:
        checkpoint.save(best_mngr, done, state, normalizer, config_dict)
        logging.info("step %d: new best %s %.3f -> %s", done, best_metric, score, best_mngr.directory)
      t0 += time.time() - t_eval  # keep evaluation time out of the next steps/s
    preempted = watch.reached(done, mngr) and done < tcfg.num_steps
    if done % tcfg.checkpoint_every == 0 or done == tcfg.num_steps or preempted:
      checkpoint.save(mngr, done, state, normalizer, config_dict)
    if preempted:
      directory = os.fspath(mngr.directory)
      for m in (mngr, best_mngr):
        if m is not None:
          m.close()
      logging.warning("stopped at step %d on a preemption notice; checkpoint saved in %s", done, directory)
      raise preemption.Preempted(done, directory)
    if on_step is not None:
      on_step(done, state)
  mngr.close()
  if best_mngr is not None:
    best_mngr.close()
  return model, state, normalizer
