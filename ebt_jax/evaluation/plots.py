"""PNG figures of an evaluation: energy over an episode, success / coverage over training, and the train /
validation loss over training.

They read the records written to a run directory (``eval.json``'s ``episodes``, ``eval_curve.jsonl``,
``metrics.jsonl``),
so they can be redrawn from a finished run. matplotlib with the non-interactive Agg backend. Each
``path`` is a local path or a ``gs://`` URI (``save``).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
from etils import epath  # pylint: disable=g-import-not-at-top,wrong-import-position

from ebt_jax import paths  # pylint: disable=g-import-not-at-top,wrong-import-position


def save(fig, path: epath.PathLike) -> None:
  """Writes ``fig`` to ``path`` (a local path or ``gs://`` URI; the format from its suffix, e.g. ``.png``)
  through ``paths.path``, creating the parent directory, and closes the figure.

  Raises:
    OSError (or the object store client's error): if the file cannot be written.
  """
  target = paths.path(path)
  target.parent.mkdir(parents=True, exist_ok=True)
  try:
    with target.open("wb") as f:
      fig.savefig(f, dpi=110, format=target.suffix.lstrip(".") or "png")
  finally:
    plt.close(fig)


def energy_vs_step(episodes: Sequence[Mapping[str, Any]], action_horizon: int, path: str,
                   per_group: int = 4, hz: float | None = None) -> None:
  """Energy of each decision against the env step it was taken at, successes and failures side by side.

  Args:
    episodes: eval.json's per-episode records (``energy`` per decision, ``success``, ``seed``, and
      ``coverage`` per env step / ``max_coverage`` when the task has them, drawn in a second row).
      With coverage but no successes (Push-T), the left column shows the highest-coverage episodes and
      the right one the lowest.
    action_horizon: Ta; decision k is taken at env step k * Ta.
    path: the PNG to write.
    per_group: episodes drawn per column (successes in seed order; failures lowest max coverage first).
    hz: control rate, to label the x axis in seconds too (optional).
  """
  has_coverage = any("max_coverage" in e for e in episodes)
  successes = [e for e in episodes if e["success"]]
  failures = [e for e in episodes if not e["success"]]
  if has_coverage:  # failures from the lowest max coverage up
    failures = sorted(failures, key=lambda e: e["max_coverage"])
  if has_coverage and not successes:  # Push-T: success (>= 0.95) is rare; show the best episodes instead
    best = sorted(episodes, key=lambda e: -e["max_coverage"])[:per_group]
    groups = {"no successes; highest max coverage": best, "lowest max coverage": failures[:per_group]}
  else:
    groups = {"success": successes[:per_group], "failure": failures[:per_group]}
  rows = 2 if has_coverage else 1
  fig, axes = plt.subplots(rows, 2, figsize=(11, 3.6 * rows), sharex=True, squeeze=False)
  for col, (name, eps) in enumerate(groups.items()):
    ax = axes[0, col]
    for e in eps:
      steps = [k * action_horizon for k in range(len(e["energy"]))]
      label = f"seed {e['seed']}" + (f", max cov {e['max_coverage']:.2f}" if has_coverage else "")
      ax.plot(steps, e["energy"], marker=".", label=label)
    ax.set_title(f"{name} ({len(eps)} of {len(episodes)} episodes)", fontsize=10)
    ax.set_ylabel("energy of chosen chunk")
    if eps:
      ax.legend(fontsize=7)
    else:
      ax.text(0.5, 0.5, f"no {name}", transform=ax.transAxes, ha="center")
    if has_coverage:
      cax = axes[1, col]
      for e in eps:
        cax.plot(range(1, len(e["coverage"]) + 1), e["coverage"])
      cax.axhline(0.95, color="gray", ls="--", lw=0.8)
      cax.set_ylabel("goal coverage")
      cax.set_ylim(0, 1)
  for ax in axes[-1]:
    ax.set_xlabel("env step" + (f" ({hz:g} Hz)" if hz else ""))
  fig.tight_layout()
  save(fig, path)


def curve(records: Sequence[Mapping[str, Any]], path: str,
          keys: Sequence[str] = ("mean_max_coverage", "success_rate")) -> None:
  """Evaluation metrics against training steps (``eval_curve.jsonl`` records: ``step`` + metrics)."""
  records = sorted(records, key=lambda r: r["step"])
  fig, ax = plt.subplots(figsize=(6, 3.8))
  for key in keys:
    pts = [(r["step"], r[key]) for r in records if key in r]
    if pts:
      ax.plot(*zip(*pts), marker="o", label=key)
  _finish(fig, ax, path, "training step")


def loss_vs_step(records: Sequence[Mapping[str, Any]], path: str) -> None:
  """Training loss (``loss``: the mean over each ``train.log_every`` window, the raw parameters on the
  training batches) and, where recorded, the validation loss (``valid_loss``, held-out demos) against
  training steps, from ``metrics.jsonl`` records; a log-scale y axis when every loss is positive.

  Args:
    records: metrics.jsonl records (``step``, and ``loss`` and / or ``valid_loss``; non-finite as None).
    path: the PNG to write (local path or ``gs://`` URI).
  """
  records = sorted(records, key=lambda r: r["step"])
  fig, ax = plt.subplots(figsize=(6, 3.8))
  values = []
  for key, label in (("loss", "train loss"), ("valid_loss", "valid loss (held-out demos)")):
    pts = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
    if pts:
      ax.plot(*zip(*pts), marker="o" if key == "valid_loss" else None, label=label)
      values += [y for _, y in pts]
  if values and min(values) > 0:
    ax.set_yscale("log")
  ax.set_xlabel("training step")
  ax.set_ylabel("policy loss")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  save(fig, path)


def _error_bars(ax, xs, ys, cis, color) -> None:
  """Draws [low, high] intervals ``cis`` around the points (xs, ys), if every point has one."""
  if all(ci is not None for ci in cis):
    err = [[y - lo for y, (lo, _) in zip(ys, cis)], [hi - y for y, (_, hi) in zip(ys, cis)]]
    ax.errorbar(xs, ys, yerr=err, fmt="none", ecolor=color, alpha=0.4, capsize=2)


def _finish(fig, ax, path: str, xlabel: str, ylabel: str | None = None) -> None:
  """Shared styling of the [0, 1]-metric plots (labels, limits, grid, legend) and the PNG write."""
  ax.set_xlabel(xlabel)
  if ylabel:
    ax.set_ylabel(ylabel)
  ax.set_ylim(0, 1.05)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  save(fig, path)


def metric_vs_inference_steps(runs: Sequence[Mapping[str, Any]], path: str, metric: str = "success_rate") -> None:
  """The paper's Table 4 shape: ``metric`` against sampler steps per decision, one line per (run, sampler).

  Args:
    runs: eval.json dicts or ``compare`` seed groups (``policy``, ``by_inference`` {label: summary}); a
      ``name`` key, if present, labels the run (default: its policy); a summary's ``<metric>_ci95``
      [low, high] is drawn as an error bar.
    path: the PNG to write.
    metric: an eval.json summary field in [0, 1] (``success_rate``, ``mean_max_coverage``, ...).
  """
  fig, ax = plt.subplots(figsize=(6, 3.8))
  for run in runs:
    by_sampler: dict[str, list] = {}
    for label, summary in run["by_inference"].items():
      sampler, _, steps = label.rpartition("-")
      by_sampler.setdefault(sampler, []).append((int(steps), summary[metric], summary.get(f"{metric}_ci95")))
    for sampler, pts in by_sampler.items():
      pts.sort()
      xs, ys, cis = zip(*pts)
      line, = ax.plot(xs, ys, marker="o", label=f"{run.get('name', run['policy'])} {sampler}")
      _error_bars(ax, xs, ys, cis, line.get_color())
      for x, y, _ in pts:
        ax.annotate(f"{y:.2f}", (x, y), textcoords="offset points", xytext=(0, 5), fontsize=7, ha="center")
  ax.set_xscale("log")
  _finish(fig, ax, path, "sampler steps per decision (EBT: MCMC cap N; diffusion: denoising steps K)", metric)


def metric_vs_epochs(curves: Mapping[str, Sequence[Mapping[str, Any]]], path: str,
                     metric: str = "success_rate") -> None:
  """The paper's Fig. 5 shape: ``metric`` against training epochs, one line per run.

  ``curves``: {run name: eval_curve.jsonl records with ``epoch`` and ``metric``}.
  """
  metric_vs(curves, path, "epoch", "training epochs (passes over the demo windows)", metric)


def metric_vs_wall_clock(curves: Mapping[str, Sequence[Mapping[str, Any]]], path: str,
                         metric: str = "success_rate") -> None:
  """``metric`` against training wall-clock minutes (``train_wall_s``: compilation included, evaluations
  excluded), one line per run: what a user pays for a success rate. Records without it are skipped."""
  minutes = {name: [dict(r, train_wall_min=r["train_wall_s"] / 60) for r in records if r.get("train_wall_s") is not None]
             for name, records in curves.items()}
  metric_vs(minutes, path, "train_wall_min", "training wall-clock, minutes (compilation included, evaluation excluded)",
            metric)


def metric_vs(curves: Mapping[str, Sequence[Mapping[str, Any]]], path: str, x: str, xlabel: str,
              metric: str = "success_rate") -> None:
  """``metric`` against the record field ``x``, one line per run; a ``metric + "_ci95"`` [low, high]
  in a record is drawn as an error bar."""
  fig, ax = plt.subplots(figsize=(6, 3.8))
  for name, records in curves.items():
    rows = sorted((r[x], r[metric], r.get(f"{metric}_ci95")) for r in records if metric in r and x in r)
    if not rows:
      continue
    xs, ys, cis = zip(*rows)
    line, = ax.plot(xs, ys, marker="o", label=name)
    _error_bars(ax, xs, ys, cis, line.get_color())
  _finish(fig, ax, path, xlabel, metric)
