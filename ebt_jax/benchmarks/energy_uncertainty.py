r"""The energy as an uncertainty signal: does a failed episode's energy stand out before and after the fact?

  python -m ebt_jax.benchmarks.energy_uncertainty --runs=workdir/can,workdir/square [--first_decisions=0,4,8,16] \
      [--out=energy_uncertainty.json]

Reads each EBT run's final evaluation (``<run>/eval.json``: per episode its success and the energy of the
chunk chosen at every decision) and reports, per run and per window of each episode's first k decisions
(k = 0: all decisions), the AUROC of the window's mean energy as a failure detector
(``episodes.failure_auroc_test``, as ``energy_failure_auroc``: P(a failed episode's energy > a successful
one's), 0.5 = no signal) with
the two-sided Mann-Whitney p-value of "no signal" (scipy.stats), and the mean energy of failed and successful
episodes. Failed robomimic episodes run to the horizon, so the all-decision mean also covers phases a
successful episode never reaches (e.g. re-grasping); the first-k windows are the signal available before the
outcome (decision j is taken at env step j * Ta). Prints a table and JSON (and writes the JSON with ``--out``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from absl import flags

from ebt_jax import cli, jsonio, paths
from ebt_jax.errors import WorkdirError
from ebt_jax.evaluation.episodes import energies_by_outcome, failure_auroc_test, has_energies, read_eval_json


def define_flags():
  """Defines this benchmark's flags (under ``__main__`` only, as every benchmark)."""
  global _RUNS, _FIRST, _OUT
  _RUNS = flags.DEFINE_list("runs", None, "EBT run directories (each with eval.json).", required=True)
  _FIRST = flags.DEFINE_list("first_decisions", ["0", "4", "8", "16"],
                             "Windows: each episode's first k decisions (0 = all decisions).")
  _OUT = flags.DEFINE_string("out", None, "Also write the JSON here.")
  cli.existing_path("runs", uri=True)
  cli.output_file("out")


def measure(workdir: str, first_decisions: Sequence[int]) -> dict:
  """One run's row: {run, policy, inference, train_steps, num_episodes, success_rate, median_decisions_succeeded
  / _failed (decisions per episode, None for an empty class), windows: {k: {auroc,
  p_value, mean_energy_failed, mean_energy_succeeded}}}; auroc / p_value / a class's mean are None when
  every episode succeeded or every one failed.

  Raises:
    WorkdirError: eval.json missing or not JSON (``read_eval_json``), or without per-episode
      energies (a diffusion policy's evaluation, or one from before episodes were recorded).
    ValueError: a window k < 0.
  """
  path, result = read_eval_json(workdir)
  episodes = result.get("episodes") or []
  if not episodes or not has_energies(episodes):
    raise WorkdirError(f"{path}: its episodes carry no per-decision 'energy' (policy "
                       f"{result.get('policy')!r}); the energy signal needs an EBT evaluation")
  success = np.array([bool(e["success"]) for e in episodes])
  windows = {}
  for k in first_decisions:
    failed, succeeded = energies_by_outcome(episodes, k)
    auroc, p = failure_auroc_test(failed, succeeded) or (None, None)
    windows[str(k)] = {"auroc": auroc, "p_value": p,
                       "mean_energy_failed": float(failed.mean()) if len(failed) else None,
                       "mean_energy_succeeded": float(succeeded.mean()) if len(succeeded) else None}
  decisions = np.array([len(e["energy"]) for e in episodes])
  median = lambda x: float(np.median(x)) if len(x) else None
  return {"run": paths.path(workdir).name, "workdir": workdir, "policy": result.get("policy"),
          "inference": result.get("inference"), "train_steps": result.get("train_steps"),
          "num_episodes": len(episodes), "success_rate": float(success.mean()),
          "median_decisions_succeeded": median(decisions[success]), "median_decisions_failed": median(decisions[~success]),
          "windows": windows}


def table(rows: Sequence[dict]) -> str:
  """Markdown table: one line per run and window."""
  out = ["| run | inference | success | decisions per episode (median) succeeded / failed | window | AUROC (failure) "
         "| p | mean energy failed / succeeded |", "|---|---|---|---|---|---|---|---|"]
  fmt = lambda v, spec: "-" if v is None else format(v, spec)
  for r in rows:
    for k, w in r["windows"].items():
      window = "all decisions" if k == "0" else f"first {k}"
      out.append(f"| {r['run']} | {r['inference']} | {r['success_rate']:.2f} ({r['num_episodes']}) | "
                 f"{fmt(r['median_decisions_succeeded'], '.0f')} / {fmt(r['median_decisions_failed'], '.0f')} | {window} | "
                 f"{fmt(w['auroc'], '.2f')} | {fmt(w['p_value'], '.2g')} | "
                 f"{fmt(w['mean_energy_failed'], '.3f')} / {fmt(w['mean_energy_succeeded'], '.3f')} |")
  return "\n".join(out)


def main(argv):
  del argv
  try:
    first = [int(k) for k in _FIRST.value]
  except ValueError as e:
    raise ValueError(f"--first_decisions takes integers >= 0, got {_FIRST.value}") from e
  rows = [measure(w, first) for w in _RUNS.value]
  out = {"command": "python -m ebt_jax.benchmarks.energy_uncertainty", "runs": rows}
  print(table(rows))
  print(jsonio.dumps(out, indent=1))
  if _OUT.value:
    jsonio.write(_OUT.value, out)


if __name__ == "__main__":
  define_flags()
  cli.run(main)
