r"""What each built-in Lift demo style looks like: expert success, demo length, idle and jitter.

  python -m ebt_jax.benchmarks.demo_styles --num_episodes=20 [--action_noise=0] [--out=styles.json]

Runs the styled scripted operator (``ebt_jax.envs.lift_styles``) from the reset seeds
``--seed * 1_000_000 + k`` (the collector's) in robosuite and prints, per style: successes, demo length
(control steps at 20 Hz), the fraction of idle steps (no commanded motion) and the mean step-to-step
change of the commanded position (how smooth the labels are).
"""

from __future__ import annotations

import time

import numpy as np
from absl import flags

from ebt_jax import cli, collect, jsonio
from ebt_jax.benchmarks.common import device_description
from ebt_jax.envs import lift_styles, robosuite_env

_STYLES = flags.DEFINE_list("styles", sorted(lift_styles.STYLES), "Styles to run.")
_EPISODES = flags.DEFINE_integer("num_episodes", 20, "Episodes per style.")
_SEED = flags.DEFINE_integer("seed", 0, "Collection seed (episode k resets with seed * 1e6 + k).")
_NOISE = flags.DEFINE_float("action_noise", 0.0, "DART noise std on executed position actions.")
_OUT = flags.DEFINE_string("out", "", "Optional JSON output path.")
cli.at_least("num_episodes", 1)
cli.at_least("seed", 0)
cli.at_least("action_noise", 0)
cli.output_file("out")
flags.register_validator("styles", lambda names: bool(names) and all(n in lift_styles.STYLES for n in names),
                         f"each of --styles must be one of {sorted(lift_styles.STYLES)}")


def style_stats(env, style: str, num_episodes: int, seed: int, action_noise: float, horizon: int = 400) -> dict:
  """{style, episodes, successes, length_mean, length_std, idle_fraction, label_jerk, wall_s} of one style.

  idle_fraction: share of steps whose commanded motion (dims 0-5) is zero; label_jerk: mean
  ||a_t - a_{t-1}|| over the position dims of successful demos (normalised OSC units)."""
  operator = lift_styles.StyledOperator(style)
  t0, demos = time.time(), []
  for k in range(num_episodes):
    demo = collect.collect_episode(env, operator, seed * collect.SEED_STRIDE + k, horizon, action_noise)
    if demo is not None:
      demos.append(demo.actions)
  lengths = [len(a) for a in demos]
  return {"style": style, "episodes": num_episodes, "successes": len(demos),
          "length_mean": float(np.mean(lengths)) if demos else None,
          "length_std": float(np.std(lengths)) if demos else None,
          "idle_fraction": float(np.mean(np.concatenate([np.all(a[:, :6] == 0, axis=1) for a in demos]))) if demos else None,
          "label_jerk": float(np.mean(np.concatenate([np.linalg.norm(np.diff(a[:, :3], axis=0), axis=1)
                                                      for a in demos]))) if demos else None,
          "wall_s": time.time() - t0}


def main(argv):
  del argv  # cli.run refuses positional arguments
  env = robosuite_env.make_env(robosuite_env.lift_env_args())
  rows = [style_stats(env, s, _EPISODES.value, _SEED.value, _NOISE.value) for s in _STYLES.value]
  print(f"{'style':<10} {'success':>9} {'length':>14} {'idle':>6} {'jerk':>6}")
  for r in rows:
    print(f"{r['style']:<10} {r['successes']:>4}/{r['episodes']:<4} {r['length_mean']:7.1f} +- {r['length_std']:4.1f} "
          f"{r['idle_fraction']:6.3f} {r['label_jerk']:6.3f}")
  if _OUT.value:
    jsonio.write(_OUT.value, {"device": device_description(), "seed": _SEED.value, "action_noise": _NOISE.value,
                              "styles": rows})


if __name__ == "__main__":
  cli.run(main)
