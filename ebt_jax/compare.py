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
"""

from __future__ import annotations

import json
import os

from absl import flags
from scipy import stats

from ebt_jax import cli, jsonio
from ebt_jax.errors import WorkdirError
from ebt_jax.evaluation import plots

_RUNS = flags.DEFINE_list("runs", None, "Run directories (each with eval.json; eval_curve.jsonl optional).",
                          required=True)
_OUT = flags.DEFINE_string("out", None, "Directory for comparison.json and the PNGs.", required=True)
_METRIC = flags.DEFINE_string("metric", "success_rate", "eval.json field to compare (success_rate, "
                              "mean_max_coverage, mean_max_score).")
cli.existing_path("runs")
cli.output_dir("out")

STEPS_PLOT = "success_vs_inference_steps.png"
EPOCHS_PLOT = "success_vs_epochs.png"
WALL_CLOCK_PLOT = "success_vs_wall_clock.png"
RESULT_FILE = "comparison.json"


def wilson_ci95(success_rate: float, num_episodes: int) -> list[float]:
  """95 % Wilson score interval [low, high] of a success rate over ``num_episodes`` episodes."""
  successes = int(round(success_rate * num_episodes))
  ci = stats.binomtest(successes, num_episodes).proportion_ci(confidence_level=0.95, method="wilson")
  return [float(ci.low), float(ci.high)]


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
  path = os.path.join(workdir, "eval.json")
  if not os.path.exists(path):
    raise WorkdirError(f"{path}: no such file (has the run in {workdir} finished its evaluation?)")
  try:
    with open(path) as f:
      result = json.load(f)
  except json.JSONDecodeError as e:
    raise WorkdirError(f"{path}: not valid JSON ({e})") from e
  for key in ("by_inference", "policy", metric):
    if key not in result:
      raise WorkdirError(f"{path} has no '{key}' (re-run the evaluation with this version of ebt_jax.main)")
  keep = (metric, "success_rate", "mean_sampler_steps", "num_episodes")
  by_inference = {label: _with_ci({k: s[k] for k in keep if k in s}) for label, s in result["by_inference"].items()}
  curve = []
  curve_path = os.path.join(workdir, "eval_curve.jsonl")
  if os.path.exists(curve_path):
    with open(curve_path) as f:
      for line_no, line in enumerate(f, 1):
        if not line.strip():
          continue
        record = json.loads(line)
        for key in ("step", "epoch", metric):
          if key not in record:
            raise WorkdirError(f"{curve_path} line {line_no} has no '{key}'")
        curve.append(_with_ci({"step": record["step"], "epoch": record["epoch"], metric: record[metric],
                               "train_wall_s": record.get("train_wall_s"),
                               **{k: record[k] for k in ("num_episodes", "success_rate") if k in record}}))
  return {"name": f"{result['policy']} ({os.path.basename(os.path.normpath(workdir))})", "workdir": workdir,
          "policy": result["policy"], "train_steps": result.get("train_steps"),
          "train_epochs": result.get("train_epochs"), "by_inference": by_inference,
          "curve": sorted(curve, key=lambda r: r["step"])}


def compare(workdirs, out: str, metric: str = "success_rate") -> dict:
  """Writes ``comparison.json`` and both PNGs into ``out``; returns the comparison dict."""
  runs = [read_run(w, metric) for w in workdirs]
  os.makedirs(out, exist_ok=True)
  plots.metric_vs_inference_steps(runs, os.path.join(out, STEPS_PLOT), metric)
  curves = {r["name"]: r["curve"] for r in runs if r["curve"]}
  plots.metric_vs_epochs(curves, os.path.join(out, EPOCHS_PLOT), metric)
  plots.metric_vs_wall_clock(curves, os.path.join(out, WALL_CLOCK_PLOT), metric)
  comparison = {"metric": metric, "runs": runs}
  jsonio.write(os.path.join(out, RESULT_FILE), comparison)
  return comparison


def main(argv):
  del argv  # cli.run refuses positional arguments
  comparison = compare(_RUNS.value, _OUT.value, _METRIC.value)
  metric = comparison["metric"]
  for run in comparison["runs"]:
    print(f"\n{run['name']}: {run['train_steps']} steps = {run['train_epochs'] or float('nan'):.1f} epochs")
    for label, s in run["by_inference"].items():
      print(f"  {label:<10} {metric} {s[metric]:.3f}  ({s.get('num_episodes')} episodes, "
            f"{s['mean_sampler_steps']:.2f} steps/decision)")
    for r in run["curve"]:
      wall = f"{r['train_wall_s'] / 60:6.2f} train min" if r.get("train_wall_s") is not None else ""
      ci = "  95% CI [{:.2f}, {:.2f}]".format(*r["success_rate_ci95"]) if "success_rate_ci95" in r else ""
      print(f"  step {r['step']:>6}  epoch {r['epoch']:7.2f}  {wall}  {metric} {r[metric]:.3f}{ci}")
  print(f"\nwrote {os.path.join(_OUT.value, RESULT_FILE)}, {STEPS_PLOT}, {EPOCHS_PLOT}, {WALL_CLOCK_PLOT}")


if __name__ == "__main__":
  cli.run(main)
