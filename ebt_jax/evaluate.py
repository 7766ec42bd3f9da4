r"""Evaluates a trained run again, without its dataset: another checkpoint, inference, backend or episodes.

  python -m ebt_jax.evaluate --workdir=workdir/lift                      # latest checkpoint, as the main job
  python -m ebt_jax.evaluate --workdir=workdir/lift --checkpoint=best --inference=mcmc-2,mcmc-20
  python -m ebt_jax.evaluate --workdir=workdir/lift --backend=mjx --num_episodes=500 --name=mjx500
  python -m ebt_jax.evaluate --workdir=workdir/pusht --checkpoint=1500 --seed=200000

The policy is rebuilt from the checkpoint alone (config, normaliser, EMA parameters as ``eval.use_ema``
says; ``checkpoint.load_checkpoint``): ``--checkpoint`` = ``latest`` (default; the newest intact one),
``best`` (``checkpoints/best``, kept by runs that evaluate during training) or a step number. The env comes
from the env_args the run recorded (``<workdir>/env_args.json``, written when training starts), else from
the dataset file the run names (eval.json's ``dataset``, else ``data.path``), else, for built-in demos, the
task's own env_args (what the collector records); gym-pusht needs none.

Every flag overrides the run's config field of the same meaning: ``--backend`` eval.backend,
``--num_episodes`` eval.num_episodes, ``--horizon`` eval.horizon (env steps), ``--seed`` eval.seed (episode
k starts from seed + k), ``--video_episodes`` eval.video_episodes (rollout videos of each label's first
episodes, ``evaluation.video``, into ``<output file without .json>_videos/<label>/``); ``--inference``
(comma-separated labels, e.g. ``mcmc-2,mcmc-20`` or ``ddim-10,ddpm-100``) defaults to the policy's default
label and its sweep, as the main job evaluates.

Output: ``<workdir>/evals/<checkpoint>-<step>_<backend>_<name or UTC timestamp>.json`` (``--out``: another
file; never the main job's ``eval.json``) with, per label, the summary fields of eval.json and the
per-episode records, and a table on stdout (label, success rate, mean sampler steps, mean final energy;
Push-T also mean max coverage). Errors (no run directory, no checkpoint, an unknown checkpoint, label or a
backend the task cannot use) are one paragraph and exit status 2 (``ebt_jax.cli``).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Sequence

from absl import flags, logging

from ebt_jax import cli, jsonio, paths, policies, tasks, validation
from ebt_jax.data import datasets, robomimic_hdf5
from ebt_jax.errors import ConfigError, DatasetError, WorkdirError
from ebt_jax.evaluation import backends, episodes
from ebt_jax.training import checkpoint, trainer

EVALS_DIR = "evals"  # <workdir>/evals/: one JSON file per evaluate command
MAIN_EVAL_FILE = episodes.EVAL_FILE  # the main job's file (ebt_jax.main.EVAL_FILE), never written here
OVERRIDES = {"backend": "eval.backend", "num_episodes": "eval.num_episodes", "horizon": "eval.horizon",
             "seed": "eval.seed", "video_episodes": "eval.video_episodes"}  # flag -> the config field it overrides


def env_args_of(workdir: str, config) -> tuple[dict[str, Any], str]:
  """The env_args a run was trained with, without reading its demos: -> (env_args, where they came from).

  Looks in order at ``<workdir>/env_args.json`` (``trainer.ENV_ARGS_FILE``), the dataset file of
  eval.json's ``dataset``, the config's ``data.path`` (robomimic: its ``data`` attribute; a Zarr buffer
  has none: {}), and, for a run on built-in demos (``data.builtin``), the task's env_args.

  Raises:
    DatasetError: none of them exists (the message names the files looked for).
  """
  recorded = paths.path(workdir) / trainer.ENV_ARGS_FILE
  if recorded.exists():
    return json.loads(recorded.read_text()), str(recorded)
  looked = [str(recorded)]
  main_eval = paths.path(workdir) / MAIN_EVAL_FILE
  candidates = [json.loads(main_eval.read_text()).get("dataset", "")] if main_eval.exists() else []
  candidates.append(config.data.get("path", ""))
  for dataset in filter(None, candidates):
    if os.path.exists(dataset):
      return ({} if datasets.is_zarr(dataset) else robomimic_hdf5.read_env_args(dataset)), dataset
    looked.append(dataset)
  builtin = tasks.BUILTIN.get(config.data.get("builtin", "")) if not config.data.get("path", "") else None
  if builtin is not None:
    return tasks.get_task(builtin).env_args(), f"the built-in {builtin} demos' env_args (ebt_jax.tasks)"
  raise DatasetError(f"{workdir}: the run records no env_args (none of {looked} exists; runs trained before "
                     f"{trainer.ENV_ARGS_FILE} existed name their dataset instead), so there is no env to evaluate "
                     "in: put the dataset back at that path, or write its env_args (the robomimic file's 'data' "
                     f"attribute, JSON) to {recorded}")


def inference_labels(policy, requested: Sequence[str] | None) -> list[str]:
  """The labels to evaluate: ``requested`` (order kept, duplicates dropped) or the policy's default + sweep.

  Raises:
    ConfigError: a label this policy cannot run, naming every bad one and the valid forms.
  """
  model = policy.model
  if not requested:
    return policies.sort_labels((policy.inference, *model.sweep))
  labels = list(dict.fromkeys(str(l).strip() for l in requested if str(l).strip()))
  bad = []
  for label in labels:
    try:
      model.parse(label)
    except ValueError as e:
      bad.append(str(e))
  if bad or not labels:
    cap = getattr(model, "max_inference_steps", None)
    samplers = " or ".join(map(repr, model.samplers))
    forms = (f"this {model.name} policy takes '<sampler>-<steps>' with sampler {samplers} "
             f"and steps in [1, {cap or 'inf'}], e.g. its default {model.inference!r} or its sweep "
             f"{', '.join(model.sweep) or '(none)'}")
    raise ConfigError(f"--inference: {'; '.join(bad) or 'no label given'}; {forms}")
  return labels


def _apply_overrides(config, overrides: dict[str, Any]) -> None:
  """Sets each given override on the run's config and checks it against ``validation.FIELDS``.

  Raises:
    ConfigError: listing every value outside its field's range or set.
  """
  fields = {f.path: f for f in validation.FIELDS}
  problems = []
  for flag, value in overrides.items():
    if value is None:
      continue
    path = OVERRIDES[flag]
    problem = fields[path].problem(value)
    if problem:
      problems.append(f"--{flag}={value!r} ({path}): {problem}")
      continue
    node = config
    for part in path.split(".")[:-1]:
      node = node[part]
    node[path.split(".")[-1]] = value
  if problems:
    raise ConfigError(validation.format_problems(problems, "flags"))
  if config.eval.backend == "mjx":  # configs without the MJX fields (Push-T's) take their defaults
    for key, default in (("mjx_initial_states", backends.MJX_INITIAL_STATES[0]), ("mjx_batch_size", 0)):
      if key not in config.eval:
        config.eval[key] = default


def output_path(workdir: str, loaded: checkpoint.Loaded, which: str, backend: str, name: str | None = None,
                out: str | None = None) -> str:
  """Where the results go: ``out``, else ``<workdir>/evals/<which>-<step>_<backend>_<name>.json`` (``which``
  latest / best, or ``step`` for a step number; ``name`` default: the UTC time, ``20250131T120000``, with
  ``-2``, ``-3``... if that file exists).

  Raises:
    ConfigError: ``out`` is the run's ``eval.json`` (the main job's results are never overwritten), or
      ``name`` is not a plain file name.
  """
  main_eval = paths.path(workdir) / MAIN_EVAL_FILE
  if out:
    if str(paths.path(out)) == str(main_eval):
      raise ConfigError(f"--out={out}: that is the main job's {MAIN_EVAL_FILE}, which this tool never replaces; "
                        f"pass another file (default: {paths.path(workdir) / EVALS_DIR}/...)")
    return str(paths.path(out))
  if name is not None and (not name or os.sep in name or name in (".", "..")):
    raise ConfigError(f"--name={name!r}: must be a non-empty file name without '{os.sep}'")
  tag = f"{which if which in checkpoint.CHECKPOINT_NAMES else 'step'}-{loaded.step}_{backend}"
  directory = paths.path(workdir) / EVALS_DIR
  if name:
    return str(directory / f"{tag}_{name}.json")
  stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
  target, k = directory / f"{tag}_{stamp}.json", 1
  while target.exists():
    k += 1
    target = directory / f"{tag}_{stamp}-{k}.json"
  return str(target)


def evaluate_run(workdir: str, which: str | int = "latest", inference: Sequence[str] | None = None,
                 backend: str | None = None, num_episodes: int | None = None, horizon: int | None = None,
                 seed: int | None = None, name: str | None = None, out: str | None = None,
                 video_episodes: int | None = None) -> tuple[dict, str]:
  """Evaluates checkpoint ``which`` of the run in ``workdir`` and writes the results file.

  Args:
    workdir: a run directory of ``ebt_jax.main`` (local path or ``gs://`` URI).
    which: ``"latest"``, ``"best"`` or a step number (``checkpoint.load_checkpoint``).
    inference: labels to evaluate (e.g. ``["mcmc-2", "mcmc-20"]``); None: default + sweep.
    backend, num_episodes, horizon, seed, video_episodes: overrides of eval.backend, eval.num_episodes,
      eval.horizon (env steps per episode), eval.seed, eval.video_episodes (None: the run's).
    name: the file name's last part (default: a UTC timestamp); out: the output file instead.

  Returns:
    (results, path written): results = {workdir, checkpoint {which, step, directory, best}, policy,
    backend, num_episodes, horizon, seed, env_args_source, inference [labels], by_inference {label: the
    eval.json summary fields + per-episode records (+ ``videos``)}, video_dir (None without videos),
    wall_time_s {label: seconds}, config}. Videos go to ``<path without .json>_videos/``.

  Raises:
    WorkdirError: ``workdir`` is not a directory.
    CheckpointError: no checkpoint, or an unknown / damaged one (``load_checkpoint``).
    ConfigError: an override outside its range, a label the policy cannot run, a backend the run's task
      cannot use (``validation.backend_problems``), ``out`` = the run's eval.json.
    DatasetError: a simulator backend and no env_args anywhere (``env_args_of``).
  """
  if not paths.path(workdir).is_dir():
    raise WorkdirError(f"--workdir={workdir}: no such run directory (a --workdir of python -m ebt_jax.main)")
  loaded = checkpoint.load_checkpoint(workdir, which)
  policy, config = loaded.policy, loaded.config
  _apply_overrides(config, {"backend": backend, "num_episodes": num_episodes, "horizon": horizon, "seed": seed,
                            "video_episodes": video_episodes})
  labels = inference_labels(policy, inference)
  e = config.eval
  env_args, source = {}, "a gym-pusht run"
  if e.backend in validation.SIM_BACKENDS:
    env_args, source = env_args_of(workdir, config)
  problems = validation.backend_problems(config, env_args, policy.model.module.action_dim, source,
                                         "evaluate it with the backend it was trained for")
  if problems:
    raise ConfigError(validation.format_problems(problems, f"evaluation of {workdir}"))
  path = output_path(workdir, loaded, str(which), e.backend, name, out)
  logging.info("evaluating %s (step %d, %s) in %s: %s, %d episodes of <= %d steps from seed %d", loaded.directory,
               loaded.step, policy.model.name, e.backend, ", ".join(labels), e.num_episodes, e.horizon, e.seed)
  video_dir = (path[:-len(".json")] if path.endswith(".json") else path) + "_videos"
  video_dir = video_dir if e.get("video_episodes", 0) else None
  evaluate = backends.make_evaluator(config, policy, env_args, video_dir=video_dir)
  by_label, walls = {}, {}
  for label in labels:
    t0 = time.time()
    by_label[label] = evaluate(label)
    walls[label] = time.time() - t0
  result = {"workdir": str(paths.path(workdir)),
            "checkpoint": {"which": str(which), "step": loaded.step, "directory": loaded.directory,
                           "best": loaded.best},
            "policy": policy.model.name, "backend": e.backend, "num_episodes": e.num_episodes, "horizon": e.horizon,
            "seed": e.seed, "env_args_source": source, "inference": labels, "by_inference": by_label,
            "video_dir": video_dir, "wall_time_s": walls, "config": json.loads(config.to_json_best_effort())}
  jsonio.write(path, result)
  return result, path


def summary_table(result: dict) -> str:
  """The results as a text table: one row per label (success rate, mean sampler steps, mean final energy;
  EBT also the energy's failure AUROC, Push-T the mean max coverage)."""
  has = lambda key: any(key in r for r in result["by_inference"].values())
  head = ["inference", "success_rate", "mean_sampler_steps", "mean_final_energy"] + [
      key for key in ("energy_failure_auroc", "mean_max_coverage") if has(key)]
  fmt = lambda v: "-" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)
  rows = [[label, *(fmt(r.get(k)) for k in head[1:])] for label, r in result["by_inference"].items()]
  widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
  line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()
  return "\n".join([line(head), line(["-" * w for w in widths]), *map(line, rows)])


def main(argv):
  del argv  # cli.run refuses positional arguments
  logging.get_absl_handler().addFilter(cli.QuietLibraries())
  f = flags.FLAGS
  result, path = evaluate_run(f.workdir, f.checkpoint, f.inference, f.backend, f.num_episodes, f.horizon, f.seed,
                              f.name, f.out, f.video_episodes)
  print(f"{result['policy']} policy of {result['workdir']}, checkpoint {result['checkpoint']['which']} (step "
        f"{result['checkpoint']['step']}), {result['backend']}: {result['num_episodes']} episodes of <= "
        f"{result['horizon']} env steps from seed {result['seed']}")
  print(summary_table(result))
  print(f"results: {path}" + (f" (videos: {result['video_dir']})" if result["video_dir"] else ""))


def define_flags() -> None:
  """The CLI's flags. Defined on demand (``__main__``), not at import: ``workdir``, ``seed``, ``out`` ... are
  also flags of ebt_jax.main / ebt_jax.compare, and every module must import beside every other."""
  flags.DEFINE_string("workdir", None, "Run directory of python -m ebt_jax.main (local or gs://).", required=True)
  flags.DEFINE_string("checkpoint", "latest", "latest (the newest intact checkpoint), best (checkpoints/best: the "
                      "best in-training evaluation) or a step number.")
  flags.DEFINE_list("inference", None, "Inference labels to evaluate, e.g. mcmc-2,mcmc-20 or ddim-10,ddpm-100 "
                    "(default: the policy's default and its sweep, as the main job).")
  flags.DEFINE_enum("backend", None, list(backends.EVAL_BACKENDS), "Overrides eval.backend.")
  flags.DEFINE_integer("num_episodes", None, "Overrides eval.num_episodes.")
  flags.DEFINE_integer("horizon", None, "Overrides eval.horizon (max env steps per episode).")
  flags.DEFINE_integer("seed", None, "Overrides eval.seed (episode k is reset with seed + k).")
  flags.DEFINE_integer("video_episodes", None, "Overrides eval.video_episodes (rollout videos of each label's first "
                       "episodes; 0 = none).")
  flags.DEFINE_string("name", None, "Last part of the output file name (default: the UTC time).")
  flags.DEFINE_string("out", None, "Output JSON file instead of "
                      "<workdir>/evals/<checkpoint>-<step>_<backend>_<name>.json.")
  for flag, low in (("num_episodes", 1), ("horizon", 1), ("seed", 0), ("video_episodes", 0)):
    cli.at_least(flag, low)
  cli.output_file("out")


def console_main() -> None:
  """``python -m ebt_jax.evaluate`` (flags defined, then ``cli.run``)."""
  define_flags()
  cli.run(main)


if __name__ == "__main__":
  console_main()
