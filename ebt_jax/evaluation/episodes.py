"""Per-episode records and the eval.json summary, shared by every evaluator (robosuite, MJX, gym-pusht)."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping, Sequence

import numpy as np

from ebt_jax import paths
from ebt_jax.errors import WorkdirError

EVAL_FILE = "eval.json"  # a run's final evaluation (<workdir>/eval.json), written by ebt_jax.main


@dataclasses.dataclass(frozen=True)
class EpisodeResult:
  """One rollout: its reset seed, success, length and per-decision diagnostics.

  Attributes:
    seed: the env's reset seed.
    success: the task's success (Lift: cube lifted; Push-T: max coverage >= 0.95).
    length: env steps taken (Lift 20 Hz, Push-T 10 Hz).
    sampler_steps: per decision, sampler steps taken (EBT: MCMC steps used; diffusion: denoising steps).
    energy: per decision, energy of the chosen chunk (decision k is taken at env step k * Ta); None for a
      policy without an energy (diffusion).
    max_coverage: Push-T only: the episode's maximum goal coverage in [0, 1].
    coverage: Push-T only: goal coverage after each env step, [length].
  """
  seed: int
  success: bool
  length: int
  sampler_steps: list[int]
  energy: list[float] | None
  max_coverage: float | None = None
  coverage: list[float] | None = None


def concat_obs(obs: Mapping[str, Any], keys: Sequence[str], dims: Sequence[int], xp=np):
  """Env observation dict -> [..., obs_dim] float32 in the training key order.

  Serves every backend: robosuite's per-step dict of [dim] numpy arrays (``xp=np``), MJX's batched dict
  of [N, dim] arrays (``xp=jax.numpy``) and gym-pusht's vector-env dict of [N, dim] numpy arrays;
  entries are concatenated on the last axis.

  Raises:
    KeyError / ValueError: naming the env observation key that is missing or has the wrong width.
  """
  parts = []
  for key, dim in zip(keys, dims):
    if key not in obs:
      raise KeyError(f"env observation has no key '{key}' (available: {sorted(obs)})")
    value = xp.asarray(obs[key])
    if value.shape[-1] != dim:
      raise ValueError(f"env observation '{key}' has width {value.shape[-1]}, the policy was trained with {dim}")
    parts.append(value)
  return xp.concatenate(parts, axis=-1).astype(xp.float32)


def summarize(results: Sequence[EpisodeResult]) -> dict[str, Any]:
  """-> the eval.json fields: success_rate, num_episodes, mean_episode_length, mean_sampler_steps (per
  decision), mean_final_energy (energy of each episode's last decision, averaged; None without an
  energy), per-episode records; with coverage (Push-T) also mean_max_coverage, mean_max_score (Diffusion
  Policy's reported score: the episode's max of min(coverage / 0.95, 1), averaged) and
  energy_coverage_spearman (None without an energy); with an energy also energy_failure_auroc (over all
  decisions; None when every episode succeeded or every one failed)."""
  has_energy = all(r.energy is not None for r in results)
  summary = {
      "success_rate": float(np.mean([r.success for r in results])),
      "num_episodes": len(results),
      "mean_episode_length": float(np.mean([r.length for r in results])),
      "mean_sampler_steps": float(np.mean(np.concatenate([r.sampler_steps for r in results]))),
      "mean_final_energy": float(np.mean([r.energy[-1] for r in results])) if has_energy else None,
  }
  if has_energy:
    summary["energy_failure_auroc"] = energy_failure_auroc(
        [{"energy": r.energy, "success": r.success} for r in results])
  if all(r.max_coverage is not None for r in results):
    cov = np.array([r.max_coverage for r in results])
    summary["mean_max_coverage"] = float(cov.mean())
    summary["mean_max_score"] = float(np.clip(cov / 0.95, 0.0, 1.0).mean())
    summary["energy_coverage_spearman"] = (
        energy_coverage_spearman([dataclasses.asdict(r) for r in results]) if has_energy else None)
  summary["episodes"] = [{k: v for k, v in dataclasses.asdict(r).items() if v is not None} for r in results]
  return summary


def wilson_ci95(success_rate: float, num_episodes: int) -> list[float]:
  """95 % Wilson score interval [low, high] of a success rate over ``num_episodes`` episodes (scipy.stats)."""
  from scipy import stats  # pylint: disable=g-import-not-at-top  (only the reports need it, not start-up)
  successes = int(round(success_rate * num_episodes))
  ci = stats.binomtest(successes, num_episodes).proportion_ci(confidence_level=0.95, method="wilson")
  return [float(ci.low), float(ci.high)]


def describe(summary: Mapping[str, Any]) -> str:
  """One log line of a ``summarize`` result: success, coverage (if any), length, sampler steps, energy (if any)."""
  parts = [f"success {summary['success_rate']:.3f} over {summary['num_episodes']} episodes"]
  if "mean_max_coverage" in summary:
    parts.append(f"mean max coverage {summary['mean_max_coverage']:.3f}")
  parts += [f"length {summary['mean_episode_length']:.1f}", f"sampler steps {summary['mean_sampler_steps']:.2f}"]
  if summary.get("mean_final_energy") is not None:
    parts.append(f"final energy {summary['mean_final_energy']:.4f}")
  if summary.get("energy_failure_auroc") is not None:
    parts.append(f"energy failure AUROC {summary['energy_failure_auroc']:.2f}")
  return ", ".join(parts)


def energy_coverage_spearman(episodes: Sequence[Mapping[str, Any]]) -> float | None:
  """Spearman rank correlation over episodes of the mean decision energy and the max coverage.

  The energy as an uncertainty signal: negative when the episodes the policy is less sure of (higher
  energy) are the ones that cover less of the goal. ``episodes``: eval.json records with ``energy`` and
  ``max_coverage``. None with fewer than 3 episodes or a constant input.
  """
  from scipy import stats  # pylint: disable=g-import-not-at-top
  energy = np.array([np.mean(e["energy"]) for e in episodes])
  coverage = np.array([e["max_coverage"] for e in episodes])
  if len(episodes) < 3 or np.ptp(energy) == 0 or np.ptp(coverage) == 0:
    return None
  return float(stats.spearmanr(energy, coverage).statistic)


def has_energies(episodes: Sequence[Mapping[str, Any]]) -> bool:
  """Whether every eval.json episode record carries a non-empty per-decision ``energy`` (a list, or an
  array [decisions]): true of EBT evaluations, false of a diffusion policy's."""
  return all(e.get("energy") is not None and len(e["energy"]) > 0 for e in episodes)


def energies_by_outcome(episodes: Sequence[Mapping[str, Any]], first_decisions: int = 0
                        ) -> tuple[np.ndarray, np.ndarray]:
  """-> (failed [n_failed], successful [n_successful]): each episode's mean energy over its first
  ``first_decisions`` decisions (0 = all; an episode with fewer uses those it has), split by ``success``.

  Raises:
    ValueError: ``first_decisions`` < 0, or an episode without energies (a diffusion policy's).
  """
  if first_decisions < 0:
    raise ValueError(f"first_decisions must be >= 0 (0 = all decisions), got {first_decisions}")
  if not has_energies(episodes):
    raise ValueError("the energy signal needs every episode's per-decision 'energy' (EBT evaluations)")
  energy = np.array([np.mean(e["energy"][:first_decisions or None]) for e in episodes])
  success = np.array([bool(e["success"]) for e in episodes], dtype=bool)
  return energy[~success], energy[success]


def energy_failure_auroc(episodes: Sequence[Mapping[str, Any]], first_decisions: int = 0) -> float | None:
  """AUROC of the energy as a failure detector: P(mean energy of a failed episode > that of a successful
  one), ties counted half (the Mann-Whitney U statistic over n_failed * n_successful, scipy.stats).

  The energy as an uncertainty signal on success-scored tasks: 1.0 when every failed episode's chosen
  chunks had higher energy than every successful one's, 0.5 for no signal. Failed robomimic episodes run
  to the horizon, so over all decisions their mean also covers steps a successful episode never reaches;
  ``first_decisions`` = k > 0 uses each episode's first k decisions only (decision j at env step j * Ta),
  the signal available before the outcome (episodes with fewer decisions use those they have).

  Args:
    episodes: eval.json records with ``energy`` ([decisions] float) and ``success`` (bool).
    first_decisions: decisions per episode to average (0 = all).
  Returns:
    The AUROC in [0, 1]; None when every episode succeeded or every one failed.
  Raises:
    ValueError: ``first_decisions`` < 0, or an episode without energies (a diffusion policy's).
  """
  test = failure_auroc_test(*energies_by_outcome(episodes, first_decisions))
  return None if test is None else test[0]


def failure_auroc_test(failed: np.ndarray, succeeded: np.ndarray) -> tuple[float, float] | None:
  """(AUROC, two-sided p of "no signal") of per-episode energies ``failed`` [n_failed] against ``succeeded``
  [n_successful]: the Mann-Whitney U statistic over n_failed * n_successful and its p-value (scipy.stats);
  None when either class is empty."""
  from scipy import stats  # pylint: disable=g-import-not-at-top
  if not len(failed) or not len(succeeded):
    return None
  test = stats.mannwhitneyu(failed, succeeded, alternative="two-sided")
  return float(test.statistic / (len(failed) * len(succeeded))), float(test.pvalue)


def read_eval_json(workdir: str) -> tuple[str, dict]:
  """-> (the path as the user spelled it, for messages; the parsed ``<workdir>/eval.json``).

  Raises:
    WorkdirError: if ``<workdir>/eval.json`` is missing or not JSON.
  """
  path = os.path.join(workdir, EVAL_FILE)  # a local path or a URI
  if not paths.path(path).exists():
    raise WorkdirError(f"{path}: no such file (has the run in {workdir} finished its evaluation?)")
  try:
    return path, json.loads(paths.path(path).read_text())
  except json.JSONDecodeError as e:
    raise WorkdirError(f"{path}: not valid JSON ({e})") from e
