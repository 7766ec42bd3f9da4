"""config.policy: one switch between EBT-Policy and the Diffusion Policy baseline; inference labels; the
comparison report of two finished runs."""

import json
import os

import jax
import numpy as np
import pytest

from configs import lift
from ebt_jax import compare, policies
from ebt_jax.data.normalization import MinMax, Normalizer
from ebt_jax.errors import WorkdirError
from ebt_jax.evaluation.policy import Policy


def _config(policy):
  config = lift.get_config()
  config.policy = policy
  config.model.width, config.model.num_layers, config.model.num_obs_layers, config.model.num_heads = 16, 1, 1, 2
  return config


def _policy(policy):
  config = _config(policy)
  model = policies.make(config, obs_dim=4, action_dim=2)
  unit = lambda n: MinMax(-np.ones(n, np.float32), np.ones(n, np.float32))
  return Policy.from_config(config, model, model.init(jax.random.PRNGKey(0)), Normalizer(unit(4), unit(2), ("o",), (4,)))


def test_switch_builds_either_policy_on_the_same_backbone():
  ebt, dp = (policies.make(_config(p), obs_dim=4, action_dim=2) for p in ("ebt", "diffusion"))
  assert (ebt.name, dp.name) == ("ebt", "diffusion")
  assert ebt.inference == "mcmc-2" and ebt.sweep == ("mcmc-1", "mcmc-2", "mcmc-4", "mcmc-20")
  assert dp.inference == "ddpm-100" and dp.sweep == ("ddim-2", "ddim-10", "ddpm-100")
  shapes = lambda p: jax.tree.map(lambda x: x.shape, p["backbone"])
  assert shapes(ebt.init(jax.random.PRNGKey(0))) == shapes(dp.init(jax.random.PRNGKey(0)))
  with pytest.raises(ValueError, match="config.policy='dp'"):
    policies.make(_config("dp"), obs_dim=4, action_dim=2)
  bad = _config("diffusion")
  bad.diffusion.eval_sweep = ("ddim-200",)
  with pytest.raises(ValueError, match=r"inference 'ddim-200': steps must be in \[1, 100\]"):
    policies.make(bad, obs_dim=4, action_dim=2)
  bad = _config("ebt")
  bad.eval.max_steps_sweep = (2, 0)
  with pytest.raises(ValueError, match=r"inference 'mcmc-0': steps must be in"):
    policies.make(bad, obs_dim=4, action_dim=2)


@pytest.mark.parametrize("label, error", [("ddim10", "expected '<sampler>-<steps>'"), ("mcmc-x", "expected"),
                                          ("langevin-2", "not one of"), ("mcmc-0", "steps must be")])
def test_bad_inference_labels_are_rejected_by_name(label, error):
  with pytest.raises(ValueError, match=error):
    policies.parse_inference(label, ("mcmc",))


def test_diffusion_decisions_compile_once_per_sampler_not_per_step_count():
  policy = _policy("diffusion")
  obs = np.zeros((3, 2, 4), np.float32)
  for label in ("ddim-10", "ddim-2", "ddpm-100", "ddpm-5"):
    decision = policy(obs, jax.random.PRNGKey(1), label)
    assert decision.actions.shape == (3, 8, 2) and list(decision.steps) == [int(label.split("-")[1])] * 3
    assert np.all(np.abs(decision.actions) <= 1.0)  # clipped x_0, un-normalised by the identity normaliser
  assert {s: f._cache_size() for s, f in policy._jitted.items()} == {"ddim": 1, "ddpm": 1}
  ebt = _policy("ebt")
  for label in ("mcmc-1", "mcmc-3"):
    decision = ebt(obs, jax.random.PRNGKey(1), label)
    assert decision.energy.shape == (3,) and np.all(decision.steps <= int(label[-1]))
  assert ebt._jitted["mcmc"]._cache_size() == 1


def _write_run(workdir, policy, by_inference, curve):
  os.makedirs(workdir)
  with open(os.path.join(workdir, "eval.json"), "w") as f:
    json.dump({"policy": policy, "success_rate": 0.0, "train_steps": 100, "train_epochs": 2.5,
               "by_inference": {k: {"success_rate": v, "mean_sampler_steps": 1.0, "num_episodes": 50}
                                for k, v in by_inference.items()}}, f)
  with open(os.path.join(workdir, "eval_curve.jsonl"), "w") as f:
    for step, epoch, rate, *wall in curve:
      wall_s = {"train_wall_s": wall[0], "num_episodes": 50} if wall else {}
      f.write(json.dumps({"step": step, "epoch": epoch, "success_rate": rate, **wall_s}) + "\n")


def test_comparison_of_two_runs_writes_json_and_plots(tmp_path):
  ebt, dp = str(tmp_path / "lift"), str(tmp_path / "lift_diffusion")
  _write_run(ebt, "ebt", {"mcmc-1": 0.2, "mcmc-2": 0.9}, [(100, 2.5, 0.9, 240.0), (50, 1.25, 0.4, 120.0)])
  _write_run(dp, "diffusion", {"ddim-10": 0.5, "ddpm-100": 0.7}, [(50, 1.25, 0.1)])  # a run without wall times
  out = str(tmp_path / "cmp")
  result = compare.compare([ebt, dp], out)
  runs = {r["policy"]: r for r in result["runs"]}
  assert runs["ebt"]["by_inference"]["mcmc-2"]["success_rate"] == 0.9
  # 45 of 50 episodes: the 95 % Wilson score interval (Wilson 1927), here [0.786, 0.957].
  np.testing.assert_allclose(runs["ebt"]["by_inference"]["mcmc-2"]["success_rate_ci95"], [0.7864, 0.9565], atol=1e-4)
  assert [(r["step"], r["train_wall_s"]) for r in runs["ebt"]["curve"]] == [(50, 120.0), (100, 240.0)]  # by step
  assert runs["diffusion"]["curve"] == [{"step": 50, "epoch": 1.25, "success_rate": 0.1, "train_wall_s": None}]
  with open(os.path.join(out, compare.RESULT_FILE)) as f:
    assert json.load(f) == result
  for png in (compare.STEPS_PLOT, compare.EPOCHS_PLOT, compare.WALL_CLOCK_PLOT):
    with open(os.path.join(out, png), "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  with open(os.path.join(dp, "eval_curve.jsonl"), "a") as f:
    f.write(json.dumps({"step": 60, "success_rate": 0.2}) + "\n")
  with pytest.raises(WorkdirError, match="eval_curve.jsonl line 2 has no 'epoch'"):
    compare.compare([ebt, dp], out)
  with pytest.raises(WorkdirError, match="has no 'mean_max_coverage'"):
    compare.compare([ebt], out, metric="mean_max_coverage")


def test_comparison_aggregates_runs_that_differ_only_in_seed(tmp_path):
  config = {"policy": "ebt", "seed": 0, "model": {"width": 64}}
  rates = {0: 0.9, 1: 0.8, 2: 0.7}
  runs = []
  for seed, rate in rates.items():
    workdir = str(tmp_path / f"lift_teleop_s{seed}")
    _write_run(workdir, "ebt", {"mcmc-2": rate, "mcmc-20": rate - 0.5}, [(50, 1.0, rate - 0.2, 60.0), (100, 2.0, rate, 120.0)])
    with open(os.path.join(workdir, "eval.json")) as f:
      result = json.load(f)
    # Seed 2 ran after ebt-jax gained a config field: it still joins the others' group (and is reported).
    extra = {"eval": {"video_episodes": 2}} if seed == 2 else {}
    result.update(config=dict(config, seed=seed, **extra),
                  best_over_training={"metric": "success_rate", "value": rate, "step": 100})
    with open(os.path.join(workdir, "eval.json"), "w") as f:
      json.dump(result, f)
    runs.append(workdir)
  other = str(tmp_path / "lift_wide_s0")
  _write_run(other, "ebt", {"mcmc-2": 0.5}, [(100, 2.0, 0.5)])
  with open(os.path.join(other, "eval.json")) as f:
    result = json.load(f)
  with open(os.path.join(other, "eval.json"), "w") as f:
    json.dump(dict(result, config=dict(config, model={"width": 128})), f)
  result = compare.compare(runs + [other], str(tmp_path / "cmp"))
  assert [g["seeds"] for g in result["groups"]] == [[0, 1, 2], [0]]
  group = result["groups"][0]
  assert group["name"] == "ebt (lift_teleop, 3 seeds)" and group["workdirs"] == runs
  assert group["config_keys_not_in_every_run"] == ["eval.video_episodes"]
  assert result["groups"][1]["config_keys_not_in_every_run"] == []
  s = group["by_inference"]["mcmc-2"]
  np.testing.assert_allclose([s["success_rate"], s["success_rate_std"]], [0.8, 0.1])
  assert s["success_rate_per_seed"] == [0.9, 0.8, 0.7] and s["num_seeds"] == 3 and s["num_episodes"] == 150
  # Mean over seeds +- t(0.975, 2) * std / sqrt(3) = 0.8 +- 0.2484; pooled: 120 of 150 episodes (Wilson).
  np.testing.assert_allclose(s["success_rate_ci95_over_seeds"], [0.5516, 1.0484], atol=1e-4)
  np.testing.assert_allclose(s["success_rate_ci95"], [0.7289, 0.8562], atol=1e-4)
  assert [p["step"] for p in group["curve"]] == [50, 100]
  np.testing.assert_allclose(group["curve"][0]["success_rate"], 0.6)
  np.testing.assert_allclose(group["curve"][1]["train_wall_s"], 120.0)
  np.testing.assert_allclose(group["best_over_training"]["success_rate"], 0.8)
  single = result["groups"][1]["by_inference"]["mcmc-2"]
  assert single["success_rate_std"] is None and single["success_rate_ci95_over_seeds"] is None
  with pytest.raises(WorkdirError, match="same config and seeds"):
    compare.compare([runs[0], runs[0]], str(tmp_path / "cmp2"))
