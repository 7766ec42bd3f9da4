r"""Benchmark: Lift simulation throughput and full-evaluation wall time, robosuite vs MJX.

  python -m ebt_jax.benchmarks.lift_sim --workdir=workdir/lift --out=/tmp/lift_sim.json
  python -m ebt_jax.benchmarks.lift_sim --batch_sizes=1,64,512,4096 --out=gpu.json   # on a GPU

Measures, on whatever device JAX runs on (named in the output):

1. Control steps per second (20 Hz steps, each 25 physics substeps + controller + observation):
   robosuite (one process, ``env.step``) and MJX at each N of ``--batch_sizes`` (a jitted
   ``lax.scan`` of ``--mjx_steps`` vmapped steps; compile time reported separately).
2. Wall time of the full evaluation protocol, ``--eval_episodes`` episodes x ``--horizon`` steps of
   the trained policy in ``--workdir``, from the same robosuite reset states: robosuite (episodes end
   at success, as ``robosuite_eval``) and MJX (``mjx_eval``: one jitted scan over the whole horizon;
   compilation timed apart via ahead-of-time ``lower().compile()``).

Prints a table and writes every number to ``--out`` as JSON.
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags, logging

from ebt_jax import cli, jsonio
from ebt_jax.errors import ConfigError
from ebt_jax.benchmarks.common import device_description
from ebt_jax.envs import lift_mjcf, mjx_lift, robosuite_env
from ebt_jax.evaluation import episodes, mjx_eval, robosuite_eval
from ebt_jax.training import checkpoint

def define_flags():
  """Defines this benchmark's flags (called under ``__main__`` only, so that importing the module beside
  other command-line modules, as the test suite does, defines nothing)."""
  global _WORKDIR, _BATCH_SIZES, _MJX_STEPS, _ROBOSUITE_STEPS, _EVAL_EPISODES, _HORIZON, _EVAL_SEED, _OUT
  _WORKDIR = flags.DEFINE_string("workdir", "workdir/lift", "Trained run (checkpoints/) for the evaluation timing.")
  _BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["1", "64", "512"], "MJX batch sizes N for throughput.")
  _MJX_STEPS = flags.DEFINE_integer("mjx_steps", 5, "Control steps per timed MJX call.")
  _ROBOSUITE_STEPS = flags.DEFINE_integer("robosuite_steps", 400, "Timed robosuite control steps.")
  _EVAL_EPISODES = flags.DEFINE_integer("eval_episodes", 50, "Episodes of the timed evaluation (0: skip).")
  _HORIZON = flags.DEFINE_integer("horizon", 400, "Max control steps per evaluation episode.")
  _EVAL_SEED = flags.DEFINE_integer("eval_seed", 1_000_000_000, "Episode k resets with eval_seed + k.")
  _OUT = flags.DEFINE_string("out", None, "JSON output path.")
  cli.ints_at_least("batch_sizes", 1)
  for _name, _low in (("mjx_steps", 1), ("robosuite_steps", 1), ("eval_episodes", 0), ("horizon", 1), ("eval_seed", 0)):
    cli.at_least(_name, _low)
  cli.output_file("out")


def robosuite_throughput(env, num_steps: int, seed: int = 0) -> dict:
  """Control steps/s of ``env.step`` with random actions in [-0.5, 0.5] (one process)."""
  robosuite_env.reset(env, seed)
  actions = np.random.default_rng(seed).uniform(-0.5, 0.5, (num_steps, 7))
  t0 = time.perf_counter()
  for a in actions:
    env.step(a)
  wall = time.perf_counter() - t0
  return {"backend": "robosuite", "num_envs": 1, "steps_per_s": num_steps / wall, "wall_s": wall}


def mjx_throughput(env: mjx_lift.MjxLift, num_envs: int, num_steps: int, seed: int = 0) -> dict:
  """Control steps/s (summed over envs) of a jitted scan of ``num_steps`` vmapped steps of N envs."""
  step = jax.vmap(env.step)

  def run(states, actions):
    return jax.lax.scan(lambda s, a: (step(s, a), None), states, actions)[0]

  rng = jax.random.PRNGKey(seed)
  states = jax.jit(jax.vmap(env.reset))(jax.random.split(rng, num_envs))
  actions = jax.random.uniform(rng, (num_steps, num_envs, mjx_lift.ACTION_DIM), minval=-0.5, maxval=0.5)
  t0 = time.perf_counter()
  compiled = jax.jit(run).lower(states, actions).compile()
  compile_s = time.perf_counter() - t0
  jax.block_until_ready(compiled(states, actions))  # warm-up
  t0 = time.perf_counter()
  jax.block_until_ready(compiled(states, actions))
  wall = time.perf_counter() - t0
  return {"backend": "mjx", "num_envs": num_envs, "steps_per_s": num_envs * num_steps / wall,
          "wall_s": wall, "timed_steps": num_steps, "compile_s": compile_s}


def eval_timings(workdir: str, num_episodes: int, horizon: int, seed: int, rs_env, env: mjx_lift.MjxLift) -> list[dict]:
  """Full-protocol evaluation wall times of the trained policy in both backends."""
  policy, _ = checkpoint.load_policy(workdir)
  seeds = [seed + k for k in range(num_episodes)]
  rng = jax.random.PRNGKey(0)
  policy(np.zeros((1, policy.model.module.obs_horizon, policy.model.obs_dim), np.float32), rng)  # compile
  t0 = time.perf_counter()
  rs = robosuite_eval.evaluate(policy, {}, num_episodes, horizon, seed, rng, env=rs_env)
  rs_wall = time.perf_counter() - t0

  initial = mjx_eval.initial_states_from_robosuite(rs_env, seeds)
  evaluator = mjx_eval.MjxEvaluator(policy, horizon, env=env)
  sampler, steps = policy.parse()
  args = (policy.params, jnp.asarray(initial.qpos, jnp.float32), jnp.asarray(initial.cube_half_size, jnp.float32),
          rng, jnp.int32(steps))
  t0 = time.perf_counter()
  compiled = evaluator.rollout(sampler).lower(*args).compile()
  compile_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  out = jax.block_until_ready(compiled(*args))
  mjx_wall = time.perf_counter() - t0
  mjx_summary = episodes.summarize(mjx_eval.to_episode_results(out, seeds))
  common = {"num_episodes": num_episodes, "horizon": horizon, "inference": policy.inference}
  return [dict(common, backend="robosuite", wall_s=rs_wall, compile_s=0.0, success_rate=rs["success_rate"],
               env_steps=int(sum(e["length"] for e in rs["episodes"])), note="episodes end at success"),
          dict(common, backend="mjx", wall_s=mjx_wall, compile_s=compile_s, success_rate=mjx_summary["success_rate"],
               env_steps=num_episodes * horizon, note="all episodes step the full horizon (masked after success)")]


def main(argv):
  del argv  # cli.run refuses positional arguments
  if _EVAL_EPISODES.value and not os.path.isdir(checkpoint.checkpoint_dir(_WORKDIR.value)):
    raise ConfigError(f"--workdir={_WORKDIR.value}: no checkpoints/ there to time the evaluation with "
                                 "(train a run first, or pass --eval_episodes=0)")
  device = device_description()
  logging.info("device: %s", device)
  rs_env = lift_mjcf.robosuite_lift_env()
  robosuite_env.reset(rs_env, 0)
  env = mjx_lift.MjxLift.create(lift_mjcf.build(rs_env))
  throughput = [robosuite_throughput(rs_env, _ROBOSUITE_STEPS.value)]
  for n in [int(b) for b in _BATCH_SIZES.value]:
    throughput.append(mjx_throughput(env, n, _MJX_STEPS.value))
    logging.info("%s", throughput[-1])
  evals = []
  if _EVAL_EPISODES.value:
    evals = eval_timings(_WORKDIR.value, _EVAL_EPISODES.value, _HORIZON.value, _EVAL_SEED.value, rs_env, env)
  print(f"\nLift simulation on {device['platform']} ({device['device_kind']}, {device['host_cpus']} host CPUs)")
  print(f"{'backend':<10} {'N envs':>7} {'control steps/s':>16} {'compile s':>10}")
  for r in throughput:
    print(f"{r['backend']:<10} {r['num_envs']:>7} {r['steps_per_s']:>16.1f} {r.get('compile_s', 0.0):>10.1f}")
  if evals:
    print(f"\nFull evaluation: {evals[0]['num_episodes']} episodes x {evals[0]['horizon']} steps, "
          f"policy from {_WORKDIR.value}")
    print(f"{'backend':<10} {'wall s':>9} {'compile s':>10} {'env steps':>10} {'success':>8}")
    for r in evals:
      print(f"{r['backend']:<10} {r['wall_s']:>9.1f} {r['compile_s']:>10.1f} {r['env_steps']:>10} {r['success_rate']:>8.2f}")
  result = {"device": device, "throughput": throughput, "evaluation": evals}
  if _OUT.value:
    jsonio.write(_OUT.value, result)


if __name__ == "__main__":
  define_flags()
  cli.run(main)
