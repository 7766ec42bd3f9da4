r"""What a robosuite camera frame costs to draw, with and without MuJoCo's reflection pass.

  python -m ebt_jax.benchmarks.render_speed [--task=lift] [--image_keys=agentview_image,robot0_eye_in_hand_image] \
      [--size=84] [--states=20] [--rounds=3] [--out=render_speed.json]

Makes the task's env with the offscreen renderer (MuJoCo's GL context: EGL by default, software Mesa on a
machine without a GPU), takes ``--states`` states of a random-action episode and draws every camera of
each with ``offscreen.render_states`` (the drawing code of ``ebt_jax.render`` and of the evaluations),
alternating reflections on / off for ``--rounds`` rounds so that both settings see the same machine load.
Reports milliseconds per state (all cameras) per round, and per camera how far the frames without
reflections are from robomimic's look (mean |difference| of uint8 values, share of values more than 8
apart). Prints JSON (and writes it with ``--out``).
"""

from __future__ import annotations

import time

import numpy as np
from absl import flags

from ebt_jax import cli, jsonio, tasks
from ebt_jax.benchmarks.common import device_description
from ebt_jax.envs import robosuite_env
from ebt_jax.evaluation import offscreen


def define_flags():
  """Defines this benchmark's flags (under ``__main__`` only, as every benchmark)."""
  global _TASK, _KEYS, _SIZE, _STATES, _ROUNDS, _OUT
  _TASK = flags.DEFINE_enum("task", "lift", sorted(tasks.COLLECTABLE), "Task whose env is drawn.")
  _KEYS = flags.DEFINE_list("image_keys", ["agentview_image", "robot0_eye_in_hand_image"], "Camera keys.")
  _SIZE = flags.DEFINE_integer("size", 84, "Frame height and width, px.")
  _STATES = flags.DEFINE_integer("states", 20, "States drawn per round and setting.")
  _ROUNDS = flags.DEFINE_integer("rounds", 3, "Rounds (each: reflections on, then off).")
  _OUT = flags.DEFINE_string("out", None, "Also write the JSON here.")
  for name in ("size", "states", "rounds"):
    cli.at_least(name, 1)
  cli.output_file("out")


def measure(task: str, image_keys, size: int, num_states: int, rounds: int, seed: int = 0) -> dict:
  """{"ms_per_state": {"reflections": [per round], "no_reflections": [...]}, "difference": {key: {...}}}.

  Raises:
    ValueError: an image key naming no camera of the env (``robosuite_env.render_cameras``).
  """
  env = robosuite_env.make_env(tasks.get_task(task).env_args(), offscreen=True)
  robosuite_env.reset(env, seed)
  rng = np.random.default_rng(seed)
  states = []
  for _ in range(num_states):
    env.step(rng.uniform(-1, 1, env.action_spec[0].shape))
    states.append(robosuite_env.sim_state(env))
  states = np.stack(states)  # [T, 1 + nq + nv]

  def draw(reflections: bool) -> tuple[float, dict[str, np.ndarray]]:
    """Every camera of every state as ``ebt_jax.render`` and the evaluations draw them (one camera at a
    time, ``offscreen.render_states``): (ms per state, {key: [T, H, W, 3] uint8})."""
    start = time.perf_counter()
    frames = {key: offscreen.render_states(env, states, robosuite_env.camera_name(key), (size, size),
                                           reflections=reflections) for key in image_keys}
    return (time.perf_counter() - start) / len(states) * 1e3, frames

  draw(True)  # the context's first frames (shader compilation) are not timed
  times = {"reflections": [], "no_reflections": []}
  for _ in range(rounds):
    ms, with_refl = draw(True)
    times["reflections"].append(ms)
    ms, without = draw(False)
    times["no_reflections"].append(ms)
  difference = {}
  for key in image_keys:
    a, b = with_refl[key].astype(np.int16), without[key].astype(np.int16)
    difference[key] = {"mean_abs": float(np.abs(a - b).mean()), "share_over_8": float((np.abs(a - b) > 8).mean())}
  env.close()
  return {"ms_per_state": times, "median_ms_per_state": {k: float(np.median(v)) for k, v in times.items()},
          "difference": difference}


def main(argv):
  del argv
  result = measure(_TASK.value, _KEYS.value, _SIZE.value, _STATES.value, _ROUNDS.value)
  out = {"command": "python -m ebt_jax.benchmarks.render_speed", "device": device_description(),  # JAX after GL
         "task": _TASK.value, "image_keys": _KEYS.value, "size": _SIZE.value, "states": _STATES.value, **result}
  print(jsonio.dumps(out, indent=1))
  if _OUT.value:
    jsonio.write(_OUT.value, out)


if __name__ == "__main__":
  define_flags()
  cli.run(main)
