r"""EBT-Policy vs Diffusion Policy from finished runs: success vs inference steps, training epochs and wall-clock.

  python -m ebt_jax.main --config=configs/lift.py --config.eval.every_steps=500
  python -m ebt_jax.main --config=configs/lift.py --config.policy=diffusion --config.eval.every_steps=500
  python -m ebt_jax.compare --runs=workdir/lift,workdir/lift_diffusion --out=workdir/lift_comparison

Reads each run's ``eval.json`` (the per-inference sweep, ``by_inference``) and ``eval_curve.jsonl`` (the
evaluations during training, with ``epoch``); both come from the same evaluation code for every policy.
Writes to ``--out``: ``comparison.json`` (the numbers plotted), ``success_vs_inference_steps.png`` (the
paper's Table 4 shape), ``success_vs_epochs.png`` (its Fig. 5 shape) and ``success_vs_wall_clock.png``
(training minutes, from the curves' ``train_wall_s``; runs from before it was recorded are left out).
``--metric`` picks the eval.json field (default ``success_rate``; Push-T: ``mean_max_coverage``). Every
success rate gets its 95 % Wilson interval over its episodes (``success_rate_ci95``, scipy.stats).

**Seeds.** Runs whose configs (eval.json ``config``) differ only in ``seed`` form one group
(``comparison.json`` ``groups``; the plots draw groups): per inference label and curve step, the mean
over seeds, the standard deviation (ddof 1), the per-seed values, a 95 % interval of the mean over seeds
(Student t, ``<metric>_ci95_over_seeds``; none for one seed) and, for success rates, the 95 % Wilson
interval of all the group's episodes pooled (``success_rate_ci95``). A run without a saved config
(older eval.json) is a group of its own.
"""

from __future__ import annotations

import json
import os
import re

import numpy as np
from absl import flags
from scipy import stats

from ebt_jax import cli, jsonio, paths
from ebt_jax.errors import WorkdirError
from ebt_jax.evaluation import episodes, plots
from ebt_jax.evaluation.episodes import wilson_ci95

_RUNS = flags.DEFINE_list("runs", None, "Run directories (each with eval.json; eval_curve.jsonl optional).",
                          required=True)
_OUT = flags.DEFINE_string("out", None, "Directory for comparison.json and the PNGs.", required=True)
_METRIC = flags.DEFINE_string("metric", "success_rate", "eval.json field to compare (success_rate, "
                              "mean_max_coverage, mean_max_score).")
cli.existing_path("runs", uri=True)
cli.output_dir("out")

STEPS_PLOT = "success_vs_inference_steps.png"
EPOCHS_PLOT = "success_vs_epochs.png"
WALL_CLOCK_PLOT = "success_vs_wall_clock.png"
RESULT_FILE = "comparison.json"


def _with_ci(summary: dict) -> dict:
  """``summary`` plus ``success_rate_ci95`` when it has a success rate and an episode count."""
  if summary.get("success_rate") is not None and summary.get("num_episodes"):
    return {**summary, "success_rate_ci95": wilson_ci95(summary["success_rate"], summary["num_episodes"])}
  return summary


def read_run(workdir: str, metric: str) -> dict:
  """One run's comparison record: {name, workdir, policy, train_steps, train_epochs, by_inference, curve}.

  ``by_inference``: {label: {metric, success_rate, success_rate_ci95, mean_sampler_steps, num_episodes}};
  ``curve``: the evaluations during training plus the final one, [{step, epoch, metric, train_wall_s
  (None for runs that did not record it), num_episodes, success_rate, success_rate_ci95}].

  Raises:
    WorkdirError: if ``<workdir>/eval.json`` is missing or not JSON; naming the file and field, if eval.json
      lacks ``by_inference`` / ``metric`` (a run from before the policy switch) or a curve record lacks
      ``epoch`` / ``metric``.
  """
  path, result = episodes.read_eval_json(workdir)
  for key in ("by_inference", "policy", metric):
    if key not in result:
      raise WorkdirError(f"{path} has no '{key}' (re-run the evaluation with this version of ebt_jax.main)")
  keep = (metric, "success_rate", "mean_sampler_steps", "num_episodes")
  by_inference = {label: _with_ci({k: s[k] for k in keep if k in s}) for label, s in result["by_inference"].items()}
  curve = []
  curve_path = os.path.join(workdir, "eval_curve.jsonl")
  lines = paths.path(curve_path).read_text().splitlines() if paths.path(curve_path).exists() else []
  for line_no, line in enumerate(lines, 1):
    if not line.strip():
      continue
    record = json.loads(line)
    for key in ("step", "epoch", metric):
      if key not in record:
        raise WorkdirError(f"{curve_path} line {line_no} has no '{key}'")
    curve.append(_with_ci({"step": record["step"], "epoch": record["epoch"], metric: record[metric],
                           "train_wall_s": record.get("train_wall_s"),
                           **{k: record[k] for k in ("num_episodes", "success_rate") if k in record}}))
  best = result.get("best_over_training") or {}
  return {"name": f"{result['policy']} ({paths.path(workdir).name})", "workdir": workdir,
          "policy": result["policy"], "seed": result.get("config", {}).get("seed"),
          "config": result.get("config"), "train_steps": result.get("train_steps"),
          "train_epochs": result.get("train_epochs"), "by_inference": by_inference,
          "best_over_training": best.get("value") if best.get("metric") == metric else None,
          "curve": sorted(curve, key=lambda r: r["step"])}


def _flat(config: dict, prefix: str = "") -> dict:
  """{"model.width": 64, ...}: a saved (nested) config as dotted keys."""
  out = {}
  for k, v in config.items():
    if isinstance(v, dict):
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def _same_but_seed(a: dict, b: dict) -> bool:
  """Flat configs equal on every key both have, ``seed`` aside (a key only one has was added to the config
  after the other run: see ``seed_groups``)."""
  return all(a[k] == b[k] for k in a.keys() & b.keys() if k != "seed")


def seed_groups(runs: list[dict]) -> list[list[dict]]:
  """Runs whose saved configs are equal but for ``seed``, in order of first appearance; a run without a
  config is alone. A field that some runs' configs lack (added to ebt-jax after they ran: e.g. video or
  image settings) does not split a group; ``aggregate`` lists such fields as
  ``config_keys_not_in_every_run``. Raises WorkdirError if one group holds the same seed twice (a run listed
  twice)."""
  groups: list[list[dict]] = []
  firsts: list[dict | None] = []  # each group's first run's flat config (None: a run without a config)
  for run in runs:
    flat = _flat(run["config"]) if run.get("config") else None
    for group, first in zip(groups, firsts):
      if flat is not None and first is not None and _same_but_seed(flat, first):
        group.append(run)
        break
    else:
      groups.append([run])
      firsts.append(flat)
  for group in groups:
    seeds = [r["seed"] for r in group]
    if len(set(seeds)) != len(seeds):
      raise WorkdirError(f"runs {[r['workdir'] for r in group]} have the same config and seeds {seeds}: "
                         "list each run once")
  return groups


def _keys_not_in_every_run(group: list[dict]) -> list[str]:
  flats = [set(_flat(r["config"])) for r in group if r.get("config")]
  return sorted(set.union(*flats) - set.intersection(*flats)) if flats else []


def summarize_seeds(values: list[float], metric: str, num_episodes: list[int] | None = None) -> dict:
  """{metric: mean, metric_std, metric_per_seed, metric_ci95_over_seeds, num_seeds[, num_episodes,
  success_rate_ci95]} of one quantity measured once per seed (``num_episodes``: each seed's episodes,
  for the pooled Wilson interval of a success rate)."""
  x = np.asarray(values, np.float64)
  n = len(x)
  std = float(x.std(ddof=1)) if n > 1 else None
  over_seeds = None
  if n > 1:
    half = float(stats.t.ppf(0.975, n - 1) * std / np.sqrt(n))
    over_seeds = [float(x.mean() - half), float(x.mean() + half)]
  out = {metric: float(x.mean()), f"{metric}_std": std, f"{metric}_per_seed": [float(v) for v in x],
         f"{metric}_ci95_over_seeds": over_seeds, "num_seeds": n}
  if num_episodes and all(num_episodes):
    total = int(sum(num_episodes))
    out["num_episodes"] = total
    if metric == "success_rate":
      successes = sum(round(v * e) for v, e in zip(x, num_episodes))
      out["success_rate_ci95"] = wilson_ci95(successes / total, total)
  return out


def _group_name(group: list[dict]) -> str:
  stem = paths.path(group[0]["workdir"]).name
  if len(group) == 1:
    return group[0]["name"]
  stem = re.sub(r"[_-](s|seed)\d+$", "", stem)
  return f"{group[0]['policy']} ({stem}, {len(group)} seeds)"


def aggregate(group: list[dict], metric: str) -> dict:
  """One seed group's record: {name, policy, seeds, workdirs, by_inference, curve, best_over_training},
  each number a ``summarize_seeds`` dict. Labels and curve steps that some seed lacks are left out."""
  labels = [l for l in group[0]["by_inference"] if all(l in r["by_inference"] for r in group)]
  by_inference = {}
  for label in labels:
    rows = [r["by_inference"][label] for r in group]
    summary = summarize_seeds([s[metric] for s in rows], metric, [s.get("num_episodes") for s in rows])
    if metric != "success_rate" and all("success_rate" in s for s in rows):
      summary.update({k: v for k, v in summarize_seeds([s["success_rate"] for s in rows], "success_rate",
                                                       [s.get("num_episodes") for s in rows]).items()
                      if k.startswith("success_rate")})
    summary["mean_sampler_steps"] = float(np.mean([s["mean_sampler_steps"] for s in rows]))
    by_inference[label] = summary
  steps = sorted(set.intersection(*(set(p["step"] for p in r["curve"]) for r in group))) if group else []
  curve = []
  for step in steps:
    points = [next(p for p in r["curve"] if p["step"] == step) for r in group]
    point = {"step": step, "epoch": float(np.mean([p["epoch"] for p in points]))}
    walls = [p.get("train_wall_s") for p in points]
    point["train_wall_s"] = float(np.mean(walls)) if all(w is not None for w in walls) else None
    point.update(summarize_seeds([p[metric] for p in points], metric, [p.get("num_episodes") for p in points]))
    curve.append(point)
  bests = [r.get("best_over_training") for r in group]
  return {"name": _group_name(group), "policy": group[0]["policy"], "seeds": [r["seed"] for r in group],
          "workdirs": [r["workdir"] for r in group], "by_inference": by_inference, "curve": curve,
          "best_over_training": summarize_seeds(bests, metric) if all(b is not None for b in bests) else None,
          "config_keys_not_in_every_run": _keys_not_in_every_run(group)}


def compare(workdirs, out: str, metric: str = "success_rate") -> dict:
  """Writes ``comparison.json`` ({metric, runs, groups}) and the PNGs (one line per seed group) into
  ``out``; returns the comparison dict.

  Raises:
    WorkdirError: from ``read_run`` or ``seed_groups``.
  """
  runs = [read_run(w, metric) for w in workdirs]
  groups = [aggregate(g, metric) for g in seed_groups(runs)]
  out_dir = paths.path(out)
  out_dir.mkdir(parents=True, exist_ok=True)
  plots.metric_vs_inference_steps(groups, out_dir / STEPS_PLOT, metric)
  curves = {g["name"]: g["curve"] for g in groups if g["curve"]}
  plots.metric_vs_epochs(curves, out_dir / EPOCHS_PLOT, metric)
  plots.metric_vs_wall_clock(curves, out_dir / WALL_CLOCK_PLOT, metric)
  comparison = {"metric": metric, "runs": runs, "groups": groups}
  jsonio.write(out_dir / RESULT_FILE, comparison)
  return comparison


def main(argv):
  del argv  # cli.run refuses positional arguments
  comparison = compare(_RUNS.value, _OUT.value, _METRIC.value)
  metric = comparison["metric"]
  for group in comparison["groups"]:
    if len(group["seeds"]) < 2:
      continue
    best = group["best_over_training"]
    print(f"\n{group['name']}: seeds {group['seeds']}" + (
        f"; max over evaluations {best[metric]:.3f} +- {best[f'{metric}_std']:.3f}" if best else ""))
    if group["config_keys_not_in_every_run"]:
      print(f"  config fields only some seeds' runs have (added later; not compared): "
            f"{', '.join(group['config_keys_not_in_every_run'])}")
    for label, s in group["by_inference"].items():
      pooled = "  pooled 95% CI [{:.2f}, {:.2f}]".format(*s["success_rate_ci95"]) if "success_rate_ci95" in s else ""
      print(f"  {label:<10} {metric} {s[metric]:.3f} +- {s[f'{metric}_std']:.3f} (per seed "
            f"{', '.join(f'{v:.2f}' for v in s[f'{metric}_per_seed'])}){pooled}")
  for run in comparison["runs"]:
    print(f"\n{run['name']}: {run['train_steps']} steps = {run['train_epochs'] or float('nan'):.1f} epochs")
    for label, s in run["by_inference"].items():
      ci = "  95% CI [{:.2f}, {:.2f}]".format(*s["success_rate_ci95"]) if "success_rate_ci95" in s else ""
      print(f"  {label:<10} {metric} {s[metric]:.3f}{ci}  ({s.get('num_episodes')} episodes, "
            f"{s['mean_sampler_steps']:.2f} steps/decision)")
    for r in run["curve"]:
      wall = f"{r['train_wall_s'] / 60:6.2f} train min" if r.get("train_wall_s") is not None else ""
      ci = "  95% CI [{:.2f}, {:.2f}]".format(*r["success_rate_ci95"]) if "success_rate_ci95" in r else ""
      print(f"  step {r['step']:>6}  epoch {r['epoch']:7.2f}  {wall}  {metric} {r[metric]:.3f}{ci}")
  print(f"\nwrote {os.path.join(_OUT.value, RESULT_FILE)}, {STEPS_PLOT}, {EPOCHS_PLOT}, {WALL_CLOCK_PLOT}")


if __name__ == "__main__":
  cli.run(main)
