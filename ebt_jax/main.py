r"""EBT-Policy (or the Diffusion Policy baseline) end to end: demonstrations -> training -> evaluation
(robosuite / MJX Lift, gym-pusht Push-T).

  python -m ebt_jax.main --config=configs/lift.py [--workdir=workdir/<config.name>] [--config.key=value]
  python -m ebt_jax.main --config=configs/lift.py --config.policy=diffusion   # -> workdir/lift_diffusion
  python -m ebt_jax.main --config=configs/pusht.py --config.data.path=.../pusht_cchi_v7_replay.zarr

1. Dataset: ``config.data.path`` (a robomimic HDF5 file or a Diffusion-Policy Zarr replay buffer), or
   for Lift built-in scripted demos collected once into the cache (``ebt_jax.collect``).
2. Training (``ebt_jax.training.trainer``), resuming from ``<workdir>/checkpoints`` if present; with
   ``config.eval.every_steps`` also evaluations during training (``<workdir>/eval_curve.jsonl``); with
   held-out demos (``data.valid_filter_key`` / ``data.valid_fraction``) their ``valid_loss`` in
   ``metrics.jsonl``; ``loss_vs_step.png`` (train and valid loss) when training ends.
3. Evaluation of the EMA parameters (``config.eval.backend``: robosuite, mjx or gym_pusht) with the
   policy's default inference (EBT: ``mcmc-<sampler.max_steps>``; diffusion: ``diffusion.inference``) and
   each label of its sweep (EBT: ``eval.max_steps_sweep``; diffusion: ``diffusion.eval_sweep``); results in
   ``<workdir>/eval.json``, figures ``energy_vs_step.png`` (EBT) and, with a curve, ``coverage_vs_steps.png``.
   eval.json's ``success_rate`` is the final checkpoint's; ``best_over_training`` is the maximum of
   ``eval.best_metric`` over the evaluations during training and the final one (the paper's protocol),
   whose checkpoint is kept in ``<workdir>/checkpoints/best``. Rollout videos of the first
   ``eval.video_episodes`` episodes of each label, the energy trace beside the frames:
   ``<workdir>/videos/<label>/episode_<k>_<success|failure>.mp4`` (``evaluation.video``).

Multi-host (``--distributed``; ``launch/tpu_pod.sh``, ``launch/slurm.sbatch``): every host runs this command
on one shared workdir (a ``gs://`` URI or a shared filesystem); ``training.distributed`` starts JAX's
distributed runtime and checks the workdir is shared, process 0 alone evaluates. A SIGTERM saves the current
step's checkpoint and exits 0 (``training.preemption``); the same command resumes.

``config.seed`` drives every random stream of a run: parameter init, the train steps' randomness
(MCMC / diffusion noise, dropout) and the order of the training batches; decisions at evaluation draw
from ``PRNGKey(seed + 1)``. The episodes' initial states are fixed by ``eval.seed + k``, the same for
every seed, and the built-in demos by ``data.collect_seed``.
"""

from __future__ import annotations

import json
import os
import time
import jax
from absl import app, flags, logging
from ml_collections import config_flags

from ebt_jax import cli, collect, jsonio, paths, render, tasks, validation
from ebt_jax.data import datasets
from ebt_jax.envs import pusht, robosuite_env
from ebt_jax.errors import ConfigError
from ebt_jax.evaluation import backends, episodes, plots
from ebt_jax.evaluation.policy import Policy
from ebt_jax.training import checkpoint, distributed, preemption, trainer, workdir as workdir_lib, writers

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/lift.py.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "", "Run directory (checkpoints, metrics, eval.json); "
                               "default workdir/<config.name> for EBT, workdir/<config.name>_<config.policy> "
                               "otherwise, e.g. workdir/lift, workdir/lift_diffusion.")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "Multi-process run (TPU pod, multi-node GPU): "
                                  "jax.distributed.initialize() from the three flags below, their JAX_* variables "
                                  "or JAX's auto-detection (Cloud TPU, SLURM, Open MPI, Kubernetes).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "With --distributed: host:port of process 0 "
                                   "(default $JAX_COORDINATOR_ADDRESS, else auto-detected).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "With --distributed: number of processes (default "
                                      "$JAX_NUM_PROCESSES, else auto-detected).", lower_bound=1)
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "With --distributed: this process's index, 0..N-1 (default "
                                   "$JAX_PROCESS_ID, else auto-detected).", lower_bound=0)
_SKIP_EVAL = flags.DEFINE_bool("skip_eval", False, "Train only.")

EVAL_FILE = episodes.EVAL_FILE
ENERGY_PLOT = "energy_vs_step.png"
CURVE_PLOT = "coverage_vs_steps.png"
VIDEO_DIR = "videos"  # <workdir>/videos/<label>/episode_<k>_<success|failure>.mp4 (eval.video_episodes)
LOSS_PLOT = "loss_vs_step.png"  # train loss and, with held-out demos, valid_loss vs step (metrics.jsonl)


def dataset_path(config) -> str:
  """The configured dataset, or the cached built-in scripted demos of the config's task (``data.builtin``,
  e.g. ``can_scripted``; collected on first use, and with ``data.image_keys`` rendered from their states
  once more, ``ebt_jax.render``).

  Raises:
    ConfigError: if ``data.path`` is empty and the config has no built-in dataset (Push-T, ToolHang); the
      validation pass (``ebt_jax.validation``) reports this before anything runs.
  """
  if config.data.path:
    return config.data.path
  task = tasks.BUILTIN.get(config.data.get("builtin", ""))
  if task is None:
    raise ConfigError("data.path is empty and this config has no built-in dataset: pass --config.data.path=<dataset>")
  path = collect.cached_dataset(task, config.data.num_demos, config.data.collect_seed,
                                config.data.action_noise, config.data.cache_dir, config.data.collect_backend,
                                config.data.get("demo_style", "scripted"))
  if config.data.get("image_keys", ()):  # the built-in demos' frames, rendered once from their states
    path = render.cached_rendered(path, config.data.image_keys, *config.data.image_size,
                                  reflections=config.data.get("render_reflections", True))
  return path


def default_workdir(config) -> str:
  """``workdir/<name>`` for EBT-Policy, ``workdir/<name>_<policy>`` for another policy (e.g. lift_diffusion)."""
  name, policy = config.get("name", "run"), config.get("policy", "ebt")
  return os.path.join("workdir", name if policy == "ebt" else f"{name}_{policy}")


def _eval_during_training(config, env_args: dict) -> trainer.EvalFn | None:
  """``config.eval.every_steps`` > 0: evaluation of the current EMA parameters with the default inference.

  Each call builds a fresh evaluator (env, jitted decision), so it costs one compilation of the policy
  (seconds; MJX recompiles its rollout, minutes on CPU).
  """
  if not config.eval.get("every_steps", 0):
    return None

  def evaluate(model, state, normalizer):
    policy = Policy.from_config(config, model, state.ema_params if config.eval.use_ema else state.params, normalizer)
    return backends.make_evaluator(config, policy, env_args)(policy.inference)

  return evaluate


def best_over_training(config, workdir: str, result: dict, state, normalizer) -> dict:
  """eval.json's ``best_over_training``: the highest ``eval.best_metric`` over the evaluations during
  training (``eval_curve.jsonl``) and the final one, {metric, value, step, epoch, num_evaluations,
  checkpoint}. If the final evaluation is the best of a run that evaluated during training, its state
  is saved to ``checkpoints/best`` too (the trainer saved the earlier bests)."""
  metric = config.eval.get("best_metric", "success_rate")
  curve = trainer.read_curve(workdir)
  final = {"step": result["train_steps"], "epoch": result["train_epochs"], metric: result.get(metric)}
  best = trainer.best_evaluation(curve + [final], metric)
  if best is None:
    return {"metric": metric, "value": None, "step": None, "num_evaluations": 0, "checkpoint": None}
  if curve and best is final:  # ties go to the earlier evaluation, so the final one beat them all
    mngr = checkpoint.best_manager(workdir)
    checkpoint.save(mngr, final["step"], state, normalizer, result["config"])
    mngr.close()
  best_dir = paths.path(checkpoint.checkpoint_dir(workdir)) / checkpoint.BEST_DIR / str(best["step"])
  return {"metric": metric, "value": best[metric], "step": best["step"], "epoch": best.get("epoch"),
          "num_evaluations": len(curve) + 1, "checkpoint": str(best_dir) if best_dir.is_dir() else None}


def write_plots(config, workdir: str, result: dict) -> None:
  """``energy_vs_step.png`` from eval.json's episodes (policies with an energy); ``coverage_vs_steps.png``
  from the curve, if any. ``workdir``: a local path or a ``gs://`` URI."""
  hz = pusht.CONTROL_HZ if config.eval.backend == "gym_pusht" else robosuite_env.CONTROL_HZ
  if all("energy" in e for e in result["episodes"]):
    plots.energy_vs_step(result["episodes"], config.horizon.action, paths.path(workdir) / ENERGY_PLOT,
                         per_group=config.eval.get("plot_episodes", 4), hz=hz)
  records = trainer.read_curve(workdir)
  if records:
    keys = ("mean_max_coverage", "success_rate") if "mean_max_coverage" in result else ("success_rate",)
    plots.curve(records, paths.path(workdir) / CURVE_PLOT, keys)


def run(config, workdir: str, skip_eval: bool = False) -> dict | None:
  """The whole job; returns the eval.json contents (None with ``skip_eval``).

  Checks the config (``validation.check_config``: every field, the workdir, the batch over the devices)
  before anything else, holds the workdir's lock (``training.workdir``) for the whole job, and checks
  what needs the demos (``validation.check_dataset``) right after reading them, before training. The
  metrics and every evaluation also go to TensorBoard (``<workdir>/tensorboard``) and, with
  ``train.wandb``, to wandb (``training.writers``; closed on every exit).

  Multi-process runs (``--distributed``): every host trains; the final evaluation runs on process 0 only,
  from a host copy of the parameters, while the other processes wait for it and return None.

  Raises:
    ConfigError, DatasetError, CheckpointError, WorkdirError: user errors (``ebt_jax.errors``), each
      before the work it would spoil (WorkdirError also when the hosts of a multi-process run do not
      share the workdir: ``distributed.check_shared_workdir``).
    preemption.Preempted: training stopped on SIGTERM after saving its checkpoint; nothing evaluated.
  """
  validation.check_config(config, workdir, num_devices=jax.device_count())
  distributed.check_shared_workdir(workdir)
  with workdir_lib.hold(workdir, lock=jax.process_index() == 0), writers.open_run(config, workdir) as writer:
    return _run(config, workdir, skip_eval, writer)


def _run(config, workdir: str, skip_eval: bool, writer: writers.Writer) -> dict | None:
  t0 = time.time()
  path = dataset_path(config)
  demos = datasets.read_configured(config.data, path)
  logging.info("dataset %s: %d demos, %d samples, obs_dim %d, action_dim %d", path, len(demos.episodes),
               demos.num_samples, demos.obs_dim, demos.action_dim)
  validation.check_dataset(config, demos, skip_eval)
  model, state, normalizer = trainer.train(
      config, workdir, demos, evaluate=None if skip_eval else _eval_during_training(config, demos.env_args),
      writer=writer)
  t_train = time.time()
  if distributed.on_process_zero():  # also with --skip_eval: the losses need no evaluation
    plots.loss_vs_step(jsonio.read_lines(paths.path(workdir) / trainer.METRICS_FILE), paths.path(workdir) / LOSS_PLOT)
  if skip_eval:
    return None
  # Multi-host arrays span other hosts' devices: every process takes part in the copy, then only process 0
  # evaluates (one robosuite / MJX / gym-pusht evaluation, one eval.json) while the others wait.
  params, step = distributed.host_copy((state.ema_params if config.eval.use_ema else state.params, state.step))
  step = int(step)
  if not distributed.on_process_zero():
    logging.info("process %d: evaluation runs on process 0", jax.process_index())
    distributed.wait_for_all("ebt_jax_final_evaluation")
    return None
  policy = Policy.from_config(config, model, params, normalizer)
  result = backends.evaluate_all(config, policy, demos.env_args,  # also to TensorBoard / wandb (writers.py)
                                 on_result=lambda label, summary: writer.evaluation(step, label, summary),
                                 video_dir=str(paths.path(workdir) / VIDEO_DIR))  # the final evaluation only
  result.update(dataset=os.path.abspath(path), config=json.loads(config.to_json_best_effort()),
                train_steps=step,
                train_epochs=trainer.epochs(config, demos, step),
                train_wall_s=trainer.train_wall_s(workdir),
                wall_time_s={"data_and_train": t_train - t0, "eval": time.time() - t_train})
  # A finished run started again (same workdir and num_steps) evaluates its final checkpoint again: that
  # evaluation replaces the curve's earlier final row instead of counting twice.
  trainer.truncate_records(str(paths.path(workdir) / trainer.CURVE_FILE), step - 1)
  result["best_over_training"] = best_over_training(config, workdir, result, state, normalizer)
  jsonio.write(paths.path(workdir) / EVAL_FILE, result)
  if config.eval.get("every_steps", 0):
    trainer.append_record(str(paths.path(workdir) / trainer.CURVE_FILE), {
        "step": int(state.step), "epoch": result["train_epochs"],
        **{k: v for k, v in result.items() if k not in ("episodes", "by_inference", "train_epochs", "best_over_training",
                                                        "config", "videos")},
        f"max_{result['best_over_training']['metric']}_so_far": result["best_over_training"]["value"]})
  write_plots(config, workdir, result)
  summary = {k: v for k, v in result.items() if k not in ("episodes", "config")}
  print(jsonio.dumps(summary, indent=1))
  distributed.wait_for_all("ebt_jax_final_evaluation")
  return result


def main(argv):
  logging.get_absl_handler().addFilter(cli.QuietLibraries())
  del argv  # cli.run refuses positional arguments
  config = _CONFIG.value
  if config is None:
    raise app.UsageError("--config is required, e.g. --config=configs/lift.py")
  workdir = _WORKDIR.value or default_workdir(config)
  # Every field before anything starts (the devices are checked again in run(), once they exist).
  validation.check_config(config, workdir)
  # Split a CPU-only host into several single-threaded devices for data parallelism (faster on CPU).
  # Must happen before the backend starts; has no effect on GPU/TPU devices.
  jax.config.update("jax_num_cpu_devices", config.train.num_cpu_devices)
  if _DISTRIBUTED.value:
    distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  logging.info("devices: %s", jax.devices())
  try:
    run(config, workdir, _SKIP_EVAL.value)
  except preemption.Preempted as e:  # a clean stop: the rerun of the same command resumes
    logging.warning("%s", e)


def console_main() -> None:
  """The `ebt-train` console script (pyproject.toml): the same as `python -m ebt_jax.main`."""
  cli.run(main)


if __name__ == "__main__":
  console_main()
