r"""What each task's scripted expert does in each demo style: success rate, demo length, idle and jitter.

  python -m ebt_jax.benchmarks.demo_styles --num_episodes=20 [--action_noise=0] [--out=styles.json]
  python -m ebt_jax.benchmarks.demo_styles --tasks=can,square --styles=scripted,varied --num_episodes=200

Runs the styled scripted operator (``ebt_jax.tasks.styles``) of each task (``ebt_jax.tasks``) from the
reset seeds ``--seed * 1_000_000 + k`` (the collector's) in robosuite and prints, per task and style:
successes (the expert's own success rate, with its 95 % Wilson interval), demo length
(control steps at 20 Hz), the fraction of idle steps (no commanded motion) and the mean step-to-step
change of the commanded position (how smooth the labels are).
"""

from __future__ import annotations

import time

import numpy as np
from absl import flags

from ebt_jax import cli, collect, jsonio, tasks
from ebt_jax.benchmarks.common import device_description
from ebt_jax.envs import robosuite_env
from ebt_jax.evaluation.episodes import wilson_ci95
from ebt_jax.tasks import styles

def define_flags():
  """Defines this benchmark's flags (called under ``__main__`` only, so that importing the module beside
  other command-line modules, as the test suite does, defines nothing)."""
  global _TASKS, _STYLES, _EPISODES, _SEED, _NOISE, _OUT
  _TASKS = flags.DEFINE_list("tasks", ["lift"], f"Tasks to run, of {list(tasks.COLLECTABLE)}.")
  _STYLES = flags.DEFINE_list("styles", sorted(styles.STYLES), "Styles to run.")
  _EPISODES = flags.DEFINE_integer("num_episodes", 20, "Episodes per style.")
  _SEED = flags.DEFINE_integer("seed", 0, "Collection seed (episode k resets with seed * 1e6 + k).")
  _NOISE = flags.DEFINE_float("action_noise", 0.0, "DART noise std on executed position actions.")
  _OUT = flags.DEFINE_string("out", "", "Optional JSON output path.")
  cli.at_least("num_episodes", 1)
  cli.at_least("seed", 0)
  cli.at_least("action_noise", 0)
  cli.output_file("out")
  flags.register_validator("styles", lambda names: bool(names) and all(n in styles.STYLES for n in names),
                           f"each of --styles must be one of {sorted(styles.STYLES)}")
  flags.register_validator("tasks", lambda names: bool(names) and all(n in tasks.COLLECTABLE for n in names),
                           f"each of --tasks must be one of {list(tasks.COLLECTABLE)} (a task with a scripted expert)")


def style_stats(env, style: str, num_episodes: int, seed: int, action_noise: float, horizon: int = 400,
                task: str = "lift") -> dict:
  """{task, style, episodes, successes, success_rate, success_rate_ci95, length_mean, length_std,
  idle_fraction, label_jerk, wall_s} of one task's expert in one style.

  idle_fraction: share of steps whose commanded motion (dims 0-5) is zero; label_jerk: mean
  ||a_t - a_{t-1}|| over the position dims of successful demos (normalised OSC units)."""
  operator = styles.StyledOperator(tasks.get_task(task).expert, style)
  t0, demos = time.time(), []
  for k in range(num_episodes):
    demo = collect.collect_episode(env, operator, seed * collect.SEED_STRIDE + k, horizon, action_noise)
    if demo is not None:
      demos.append(demo.actions)
  lengths = [len(a) for a in demos]
  return {"task": task, "style": style, "episodes": num_episodes, "successes": len(demos),
          "success_rate": len(demos) / num_episodes,
          "success_rate_ci95": wilson_ci95(len(demos) / num_episodes, num_episodes),
          "length_mean": float(np.mean(lengths)) if demos else None,
          "length_std": float(np.std(lengths)) if demos else None,
          "idle_fraction": float(np.mean(np.concatenate([np.all(a[:, :6] == 0, axis=1) for a in demos]))) if demos else None,
          "label_jerk": float(np.mean(np.concatenate([np.linalg.norm(np.diff(a[:, :3], axis=0), axis=1)
                                                      for a in demos]))) if demos else None,
          "wall_s": time.time() - t0}


def main(argv):
  del argv  # cli.run refuses positional arguments
  rows = []
  print(f"{'task':<8} {'style':<10} {'success':>9} {'95% CI':>13} {'length':>14} {'idle':>6} {'jerk':>6}")
  for name in _TASKS.value:
    task = tasks.get_task(name)
    env = robosuite_env.make_env(task.env_args())
    for s in _STYLES.value:
      r = style_stats(env, s, _EPISODES.value, _SEED.value, _NOISE.value, task.horizon, name)
      rows.append(r)
      num = lambda key: float("nan") if r[key] is None else r[key]  # no successful demo: nothing to measure
      print(f"{name:<8} {s:<10} {r['successes']:>4}/{r['episodes']:<4} [{r['success_rate_ci95'][0]:.2f}, "
            f"{r['success_rate_ci95'][1]:.2f}] {num('length_mean'):7.1f} +- {num('length_std'):4.1f} "
            f"{num('idle_fraction'):6.3f} {num('label_jerk'):6.3f}", flush=True)
    env.close()
  if _OUT.value:
    jsonio.write(_OUT.value, {"device": device_description(), "seed": _SEED.value, "action_noise": _NOISE.value,
                              "styles": rows})  # one row per (task, style)


if __name__ == "__main__":
  define_flags()
  cli.run(main)
