"""The benchmarks: the train-step benchmark (ebt_jax.benchmarks.step_timing) times the trainer's own jitted step, splits it into
parts, and its variants really change the step (remat: less memory); the render and energy-uncertainty benchmarks report what they measure."""

import json
import os
import subprocess
import sys

import pytest

from configs import lift
from ebt_jax import jsonio
from ebt_jax.benchmarks import energy_uncertainty, step_timing
from ebt_jax.errors import ConfigError, WorkdirError
from ebt_jax.evaluation import episodes
from ebt_jax.training import trainer


def _tiny():
  config = lift.get_config()
  config.model.width, config.model.num_layers, config.model.num_obs_layers, config.model.num_heads = 16, 1, 1, 2
  return config


def test_train_step_rows_for_both_policies_with_breakdown():
  mesh = trainer.make_mesh()
  batch = 2 * mesh.size
  rows = {}
  # (The truncated chain's effect on the gradient is tested in tests/test_samplers.py; one row less here
  # saves a compilation of the EBT step on the 2-core CI machine.)
  for name, overrides in (("diffusion", {}), ("ebt", {}), ("ebt no_remat", {"sampler.remat_train_steps": False})):
    config = step_timing.with_overrides(_tiny(), name.split()[0], overrides)
    rows[name] = step_timing.time_setting(config, name, batch, mesh, runs=2, warmup=0, breakdown=name == "ebt")
  for name, row in rows.items():
    assert row["policy"] == name.split()[0] and row["batch"] == batch and row["step_ms"] > 0
    assert row["steps_per_s"] == pytest.approx(1e3 / row["step_ms"])
    assert row["samples_per_s"] == pytest.approx(batch * row["steps_per_s"]) and row["compile_s"] > 0
  parts = rows["ebt"]["breakdown_ms"]
  assert set(parts) == {"host_input", "loss_forward", "backward_to_theta", "optimizer_and_ema"}
  assert parts["host_input"] > 0 and parts["loss_forward"] > 0 and parts["optimizer_and_ema"] > 0
  assert rows["ebt"]["mcmc_steps"] == "6..9" and rows["ebt"]["remat_train_steps"] is True
  # Rematerialisation keeps one MCMC step's activations instead of all nine: less compiled scratch memory.
  assert rows["ebt"]["temp_bytes"] < rows["ebt no_remat"]["temp_bytes"]
  assert rows["ebt"]["truncate_chain"] is False


def test_variant_specs_and_overrides_are_checked():
  assert step_timing.parse_variant("short:sampler.train_steps=2,sampler.truncate_chain=True") == (
      "short", {"sampler.train_steps": 2, "sampler.truncate_chain": True})
  with pytest.raises(ConfigError, match="expected NAME:FIELD=VALUE"):
    step_timing.parse_variant("sampler.train_steps=2")
  with pytest.raises(ConfigError, match="not a Python literal"):
    step_timing.parse_variant("x:sampler.inference_energy=exact")
  with pytest.raises(ConfigError, match="no field 'nope'"):
    step_timing.with_overrides(_tiny(), "ebt", {"sampler.nope": 1})
  config = step_timing.with_overrides(_tiny(), "ebt", {"sampler.train_steps": 2})
  assert config.sampler.train_steps == 2 and lift.get_config().sampler.train_steps == 6


def test_every_module_imports_beside_every_other():
  """pytest imports every test module into one process, so every ebt_jax module (CLIs and benchmarks
  included) must import beside every other: a benchmark defining ``--out`` at import beside ``ebt_jax.compare``
  raised DuplicateFlagError and failed CI. Fresh interpreter: this process's flags are already taken."""
  code = ("import importlib, pkgutil, ebt_jax\n"
          "names = [m.name for m in pkgutil.walk_packages(ebt_jax.__path__, 'ebt_jax.')]\n"
          "for name in names:\n"
          "  importlib.import_module(name)\n"
          "print(len(names))\n")
  done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False,
                        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert done.returncode == 0, done.stderr[-3000:]
  assert int(done.stdout.split()[-1]) > 40  # the walk saw the package, not an empty path


def test_render_speed_times_both_settings_and_reports_the_difference(tmp_path):
  """The render benchmark's CLI (a fresh process: drawn before any XLA ran) times every round of both
  settings and finds the agentview without reflections different (the table's reflection is gone)."""
  out = tmp_path / "render.json"
  proc = subprocess.run([sys.executable, "-m", "ebt_jax.benchmarks.render_speed", "--states=2", "--rounds=2",
                         "--size=32", "--image_keys=agentview_image", f"--out={out}"],
                        capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  with open(out) as f:
    result = json.load(f)
  assert [len(result["ms_per_state"][k]) for k in ("reflections", "no_reflections")] == [2, 2]
  assert all(t > 0 for times in result["ms_per_state"].values() for t in times)
  assert result["difference"]["agentview_image"]["mean_abs"] > 0


def test_energy_failure_auroc_ranks_failed_against_successful_episodes():
  eps = [{"energy": [1.0, 2.0], "success": False}, {"energy": [0.0, 0.0], "success": True},
         {"energy": [3.0], "success": False}, {"energy": [-1.0, 5.0], "success": True}]
  # Means: failed 1.5, 3.0; successful 0.0, 2.0 -> 3 of the 4 (failed, successful) pairs ordered.
  assert episodes.energy_failure_auroc(eps) == pytest.approx(0.75)
  # First decision only: failed 1, 3 against 0, -1: every pair ordered.
  assert episodes.energy_failure_auroc(eps, first_decisions=1) == pytest.approx(1.0)
  flipped = [{**e, "success": not e["success"]} for e in eps]
  assert episodes.energy_failure_auroc(flipped) == pytest.approx(0.25)
  ties = [{"energy": [0.5], "success": s} for s in (True, False, True, False)]
  assert episodes.energy_failure_auroc(ties) == pytest.approx(0.5)
  assert episodes.energy_failure_auroc([e for e in eps if e["success"]]) is None  # one class: undefined
  with pytest.raises(ValueError, match="first_decisions"):
    episodes.energy_failure_auroc(eps, first_decisions=-1)
  with pytest.raises(ValueError, match="energy"):
    episodes.energy_failure_auroc([{"energy": None, "success": True}, *eps])
  summary = episodes.summarize([episodes.EpisodeResult(i, e["success"], 10, [2] * len(e["energy"]), e["energy"])
                                for i, e in enumerate(eps)])
  assert summary["energy_failure_auroc"] == pytest.approx(0.75)
  assert "energy failure AUROC 0.75" in episodes.describe(summary)
  diffusion = episodes.summarize([episodes.EpisodeResult(0, True, 10, [100], None)])
  assert "energy_failure_auroc" not in diffusion


def test_energy_uncertainty_benchmark_reads_runs_and_refuses_runs_without_energies(tmp_path):
  ebt, dp = tmp_path / "ebt", tmp_path / "dp"
  ebt.mkdir(), dp.mkdir()
  # Failed episodes: the same energy as the successful ones for 4 decisions, then higher.
  records = ([{"success": True, "energy": [-1.0 - 0.01 * i] * 6} for i in range(5)]
             + [{"success": False, "energy": [-1.0 - 0.01 * i] * 4 + [0.0] * 46} for i in range(5)])
  jsonio.write(ebt / "eval.json", {"policy": "ebt", "inference": "mcmc-2", "train_steps": 10, "episodes": records})
  jsonio.write(dp / "eval.json", {"policy": "diffusion", "episodes": [{"success": True, "length": 3}]})
  row = energy_uncertainty.measure(str(ebt), [0, 4])
  assert row["success_rate"] == 0.5 and row["num_episodes"] == 10 and row["inference"] == "mcmc-2"
  assert row["windows"]["0"]["auroc"] == 1.0 and row["windows"]["0"]["p_value"] < 0.05
  assert row["windows"]["4"]["auroc"] == pytest.approx(0.5)  # identical first 4 decisions: no signal yet
  assert row["windows"]["4"]["mean_energy_failed"] == pytest.approx(row["windows"]["4"]["mean_energy_succeeded"])
  assert row["median_decisions_succeeded"] == 6 and row["median_decisions_failed"] == 50
  assert "| ebt | mcmc-2 | 0.50 (10) | 6 / 50 | first 4 | 0.50 |" in energy_uncertainty.table([row])
  with pytest.raises(WorkdirError, match=r"dp/eval.json.*no per-decision 'energy'.*'diffusion'"):
    energy_uncertainty.measure(str(dp), [0])
  with pytest.raises(WorkdirError, match="no such file"):
    energy_uncertainty.measure(str(tmp_path / "missing"), [0])
