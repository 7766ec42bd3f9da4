r"""Benchmark: decision latency of EBT-Policy vs the Diffusion Policy baseline on the same backbone.

  python -m ebt_jax.benchmarks.latency --out=/tmp/latency.json                       # CPU-sized model
  python -m ebt_jax.benchmarks.latency --config=configs/lift.py:paper --out=gpu.json # paper-sized, GPU
  python -m ebt_jax.benchmarks.latency --ebt_workdir=workdir/lift --diffusion_workdir=workdir/lift_diffusion

One decision = one jitted call of ``Policy.decide``: normalise To observations, encode them, sample a
Tp-step action chunk (EBT: Alg. 2 with cap N and early stop at ||dE/dy|| < tau; diffusion: K DDIM / DDPM
network calls), un-normalise the executed Ta actions. Both policies are built from the same
``config.model`` (one Backbone definition), in one process, on one device. For each inference label
(``--ebt_inference``, ``--diffusion_inference``) and batch size (``--batch_sizes``): compile, ``--warmup``
untimed calls, then the median (and 10th / 90th percentile) of ``--runs`` timed calls, each with its
own PRNG key and ``jax.block_until_ready``. Prints a table and the DP/EBT latency ratios, and writes
the same numbers to ``--out`` (JSON).

Without ``--*_workdir`` the parameters are random: an untrained energy's gradient never falls below
tau, so EBT then runs its full cap (the worst case); trained policies may stop earlier
(``mean_sampler_steps`` in the output tells).
"""

from __future__ import annotations

import time

import jax
import numpy as np
from absl import flags, logging
from ml_collections import config_flags

from ebt_jax import cli, compile_options, jsonio, policies, validation
from ebt_jax.benchmarks.common import device_description, unit_normalizer
from ebt_jax.errors import ConfigError
from ebt_jax.evaluation.policy import Policy
from ebt_jax.training import checkpoint

def define_flags():
  """Defines this benchmark's flags (called under ``__main__`` only, so that importing the module beside
  other command-line modules, as the test suite does, defines nothing)."""
  global _CONFIG, _BATCH_SIZES, _EBT, _DP, _RUNS, _WARMUP, _OBS_DIM, _ACTION_DIM, _EBT_WORKDIR, _DP_WORKDIR, _OUT
  _CONFIG = config_flags.DEFINE_config_file("config", "configs/lift.py", "Run config whose model both policies use.")
  _BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["1", "256"], "Decisions per call (parallel environments).")
  _EBT = flags.DEFINE_list("ebt_inference", ["mcmc-1", "mcmc-2", "mcmc-4", "mcmc-20"], "EBT inference labels.")
  _DP = flags.DEFINE_list("diffusion_inference", ["ddim-10", "ddpm-100"], "Diffusion Policy inference labels.")
  _RUNS = flags.DEFINE_integer("runs", 20, "Timed calls per setting (median reported).")
  _WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed calls after compilation.")
  _OBS_DIM = flags.DEFINE_integer("obs_dim", 19, "Observation width without a workdir (Lift low-dim: 19).")
  _ACTION_DIM = flags.DEFINE_integer("action_dim", 7, "Action width without a workdir (Lift OSC_POSE: 7).")
  _EBT_WORKDIR = flags.DEFINE_string("ebt_workdir", "", "Time this trained EBT run instead of random parameters.")
  _DP_WORKDIR = flags.DEFINE_string("diffusion_workdir", "", "Time this trained diffusion run instead.")
  _OUT = flags.DEFINE_string("out", "", "Write the results as JSON here.")
  cli.ints_at_least("batch_sizes", 1)
  cli.at_least("runs", 1)
  cli.at_least("warmup", 0)
  cli.at_least("obs_dim", 1)
  cli.at_least("action_dim", 1)
  cli.existing_path("ebt_workdir")
  cli.existing_path("diffusion_workdir")
  cli.output_file("out")


def random_policy(config, policy: str, obs_dim: int, action_dim: int, seed: int = 0) -> Policy:
  """``config`` with ``config.policy = policy``, random parameters and an identity normaliser on [-1, 1]."""
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.policy = policy
  model = policies.make(config, obs_dim, action_dim)
  return Policy.from_config(config, model, model.init(jax.random.PRNGKey(seed)), unit_normalizer(obs_dim, action_dim))


def time_decisions(policy: Policy, label: str, batch: int, runs: int, warmup: int) -> dict:
  """Latency of ``runs`` decisions of ``batch`` environments with inference ``label``, after warm-up.

  Returns {policy, inference, sampler, steps, batch, median_ms, p10_ms, p90_ms, compile_s,
  mean_sampler_steps, num_params, runs}; times in milliseconds of wall clock per decision call.

  Raises:
    ValueError: if ``label`` is not one of the policy's samplers.
  """
  sampler, steps = policy.parse(label)
  obs = np.random.default_rng(0).uniform(-1, 1, (batch, policy.model.module.obs_horizon, policy.model.obs_dim))
  obs = jax.device_put(obs.astype(np.float32))
  fn = compile_options.jit_decision(policy.decide(sampler))  # as Policy.__call__ compiles it
  n = np.int32(steps)
  t0 = time.perf_counter()
  jax.block_until_ready(fn(policy.params, obs, jax.random.PRNGKey(0), n))
  compile_s = time.perf_counter() - t0
  for i in range(warmup):
    jax.block_until_ready(fn(policy.params, obs, jax.random.PRNGKey(1 + i), n))
  times, used = [], []
  for i in range(runs):
    key = jax.random.PRNGKey(1000 + i)
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(policy.params, obs, key, n))
    times.append(time.perf_counter() - t0)
    used.append(float(np.mean(out.steps)))
  ms = np.asarray(times) * 1e3
  return {"policy": policy.model.name, "inference": label, "sampler": sampler, "steps": steps, "batch": batch,
          "median_ms": float(np.median(ms)), "p10_ms": float(np.percentile(ms, 10)),
          "p90_ms": float(np.percentile(ms, 90)), "compile_s": compile_s, "mean_sampler_steps": float(np.mean(used)),
          "num_params": int(sum(x.size for x in jax.tree.leaves(policy.params))), "runs": runs}


def ratios(results: list[dict]) -> list[dict]:
  """DP / EBT median latency for every (diffusion label, EBT label) pair at the same batch size."""
  out = []
  for d in (r for r in results if r["policy"] == "diffusion"):
    for e in (r for r in results if r["policy"] == "ebt" and r["batch"] == d["batch"]):
      out.append({"batch": d["batch"], "diffusion": d["inference"], "ebt": e["inference"],
                  "ratio": d["median_ms"] / e["median_ms"]})
  return out


def _check_labels(config) -> None:
  """Every --ebt_inference / --diffusion_inference label parses (before any compilation)."""
  problems = []
  for flag, samplers in ((_EBT, ("mcmc",)), (_DP, validation.DIFFUSION_SAMPLERS)):
    for label in flag.value:
      try:
        policies.parse_inference(label, samplers)
      except ValueError as e:
        problems.append(f"--{flag.name}: {e}")
  if problems:
    raise ConfigError(validation.format_problems(problems, "flags"))


def main(argv):
  del argv  # cli.run refuses positional arguments
  config = _CONFIG.value
  validation.check_config(config, needs_data=False)  # the model and sampler fields; no dataset is read
  _check_labels(config)
  device = device_description()
  logging.info("device: %s", device)
  ebt = (checkpoint.load_policy(_EBT_WORKDIR.value)[0] if _EBT_WORKDIR.value
         else random_policy(config, "ebt", _OBS_DIM.value, _ACTION_DIM.value))
  dp = (checkpoint.load_policy(_DP_WORKDIR.value)[0] if _DP_WORKDIR.value
        else random_policy(config, "diffusion", _OBS_DIM.value, _ACTION_DIM.value))
  results = []
  for batch in [int(b) for b in _BATCH_SIZES.value]:
    for policy, labels in ((ebt, _EBT.value), (dp, _DP.value)):
      for label in labels:
        results.append(time_decisions(policy, label, batch, _RUNS.value, _WARMUP.value))
        logging.info("%s", results[-1])
  print(f"\nDecision latency on {device['platform']} ({device['device_kind']}, {device['host_cpus']} host CPUs, "
        f"jax {device['jax']}); model width {ebt.model.module.width}, {ebt.model.module.num_layers} layers; "
        f"median of {_RUNS.value} runs; EBT energy reported: {ebt.model.sampler.inference_energy}; "
        f"compile options {compile_options.decision()}")
  print(f"{'policy':<10} {'inference':<10} {'batch':>6} {'median ms':>10} {'p10 ms':>8} {'p90 ms':>8} "
        f"{'steps used':>10} {'params':>9}")
  for r in results:
    print(f"{r['policy']:<10} {r['inference']:<10} {r['batch']:>6} {r['median_ms']:>10.2f} {r['p10_ms']:>8.2f} "
          f"{r['p90_ms']:>8.2f} {r['mean_sampler_steps']:>10.2f} {r['num_params']:>9}")
  pairs = ratios(results)
  print("\nDP / EBT median latency")
  for p in pairs:
    print(f"batch {p['batch']:>4}: {p['diffusion']:<9} / {p['ebt']:<8} = {p['ratio']:7.2f}x")
  if _OUT.value:
    model = {k: getattr(ebt.model.module, k) for k in ("width", "num_layers", "num_obs_layers", "num_heads",
                                                       "obs_horizon", "pred_horizon", "action_dim")}
    jsonio.write(_OUT.value, {"device": device, "model": model, "compile_options": compile_options.decision(),
                              "ebt_inference_energy": ebt.model.sampler.inference_energy,
                              "ebt_workdir": _EBT_WORKDIR.value,
                              "diffusion_workdir": _DP_WORKDIR.value, "results": results, "ratios": pairs})


if __name__ == "__main__":
  define_flags()
  cli.run(main)
