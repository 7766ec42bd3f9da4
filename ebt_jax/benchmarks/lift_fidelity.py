r"""MJX Lift vs robosuite Lift: per-step differences under identical actions from identical states.

  python -m ebt_jax.benchmarks.lift_fidelity --out=/tmp/lift_fidelity.json
  JAX_ENABLE_X64=1 python -m ebt_jax.benchmarks.lift_fidelity --dtype=float64

Each episode is first run in robosuite from ``robosuite_env.reset(env, seed)`` (the scripted expert's
actions, or uniform random arm deltas of a given scale with a random gripper sign), then replayed in
MJX from robosuite's reset state (``MjxLift.reset_to``); every episode of the run is one vmapped MJX
batch. Prints, per episode, the largest difference over the control steps of the end-effector
position, cube position, cube quaternion, arm joints and finger joints, and the steps at which each
simulator reports success. ``tests/test_mjx_lift.py`` asserts on the same functions.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from ebt_jax import cli, jsonio
from ebt_jax.envs import lift_mjcf, mjx_lift, robosuite_env
from ebt_jax.tasks import NumpyExpert, lift


class Episode(NamedTuple):
  """A robosuite episode: initial state (``reset_to`` kwargs), actions [T, 7], observations (T + 1
  robomimic dicts, the reset's first) and robosuite's success after each step [T]."""
  initial: dict
  actions: np.ndarray
  observations: list
  success: np.ndarray


def robosuite_episode(rs_env, seed: int, policy: Callable[[int, dict], np.ndarray], num_steps: int) -> Episode:
  """Runs ``policy(t, obs) -> action [7]`` for ``num_steps`` control steps from reset ``seed``."""
  obs = robosuite_env.reset(rs_env, seed)
  initial = mjx_lift.initial_state_of(rs_env)
  actions, observations, success = [], [obs], []
  for t in range(num_steps):
    action = np.asarray(policy(t, obs), np.float64)
    obs = robosuite_env.low_dim_obs(rs_env.step(action)[0])
    actions.append(action)
    observations.append(obs)
    success.append(robosuite_env.is_success(rs_env))
  return Episode(initial, np.stack(actions), observations, np.array(success))


def expert_policy() -> Callable[[int, dict], np.ndarray]:
  expert = NumpyExpert(lift.TASK.expert)
  return lambda t, obs: expert(obs)


def random_policy(scale: float, num_steps: int, seed: int = 0) -> Callable[[int, dict], np.ndarray]:
  """Arm deltas uniform in [-scale, scale], gripper +-1 at random, fixed by ``seed``."""
  rng = np.random.default_rng(seed)
  actions = np.concatenate([scale * rng.uniform(-1, 1, (num_steps, 6)),
                            np.sign(rng.uniform(-1, 1, (num_steps, 1)))], axis=1)
  return lambda t, obs: actions[t]


def replay_in_mjx(env: mjx_lift.MjxLift, episodes: list[Episode], dtype=jnp.float32) -> dict[str, np.ndarray]:
  """Replays the episodes (one vmapped batch) in MJX and compares with robosuite at every step.

  Returns:
    dict of [E, T + 1] max-abs differences per episode and step (index 0 = after reset): ``eef``,
    ``cube`` (m), ``cube_quat``, ``object_rel`` (m), ``joints`` (rad), ``fingers`` (m),
    ``eef_quat``, ``eef_quat_site``; ``mjx_success`` [E, T] bool; ``reset_obs_max_error`` [E], the
    largest difference over every MJX observation key right after the reset.

  Raises:
    KeyError: if an MJX observation key is missing from robosuite's observation.
  """
  qpos = jnp.asarray(np.stack([e.initial["qpos"] for e in episodes]), dtype)
  half = jnp.asarray(np.stack([e.initial["cube_half_size"] for e in episodes]), dtype)
  actions = jnp.asarray(np.stack([e.actions for e in episodes], axis=1), dtype)  # [T, E, 7]
  state = jax.jit(jax.vmap(env.reset_to))(qpos, half)
  step = jax.jit(jax.vmap(env.step))
  pieces = {"eef": ("robot0_eef_pos", slice(None)), "cube": ("object", slice(0, 3)),
            "cube_quat": ("object", slice(3, 7)), "object_rel": ("object", slice(7, 10)),
            "joints": ("robot0_joint_pos", slice(None)), "fingers": ("robot0_gripper_qpos", slice(None)),
            "eef_quat": ("robot0_eef_quat", slice(None)), "eef_quat_site": ("robot0_eef_quat_site", slice(None))}
  errors = {name: [] for name in pieces}
  success, reset_error = [], np.zeros(len(episodes))
  for t in range(actions.shape[0] + 1):
    if t > 0:
      state = step(state, actions[t - 1])
      success.append(np.asarray(state.success))
    obs = jax.device_get(state.obs)
    for name, (key, sl) in pieces.items():
      errors[name].append([np.abs(obs[key][k][sl] - e.observations[t][key][sl]).max() for k, e in enumerate(episodes)])
    if t == 0:
      for key, value in obs.items():
        for k, e in enumerate(episodes):
          if key not in e.observations[0]:
            raise KeyError(f"MJX observation key '{key}' is not a robosuite observation key")
          reset_error[k] = max(reset_error[k], np.abs(value[k] - e.observations[0][key]).max())
  out = {name: np.asarray(v).T for name, v in errors.items()}
  out["mjx_success"] = np.asarray(success).T
  out["reset_obs_max_error"] = reset_error
  return out


def main(argv):
  del argv  # cli.run refuses positional arguments
  rs_env = lift_mjcf.robosuite_lift_env()
  robosuite_env.reset(rs_env, 0)
  env = mjx_lift.MjxLift.create(lift_mjcf.build(rs_env))
  n = flags.FLAGS.num_steps
  names, episodes = [], []
  for seed in flags.FLAGS.expert_seeds:
    names.append(f"expert seed {seed}")
    episodes.append(robosuite_episode(rs_env, int(seed), expert_policy(), n))
  for scale in flags.FLAGS.random_scales:
    names.append(f"random +-{scale} seed {flags.FLAGS.random_env_seed}")
    episodes.append(robosuite_episode(rs_env, flags.FLAGS.random_env_seed, random_policy(float(scale), n), n))
  err = replay_in_mjx(env, episodes, jnp.float64 if flags.FLAGS.dtype == "float64" else jnp.float32)
  rows = []
  print(f"\nMJX ({flags.FLAGS.dtype}) vs robosuite, {n} control steps; max |difference| over the episode")
  print(f"{'episode':<24} {'eef mm':>8} {'cube mm':>8} {'cube quat':>10} {'joints rad':>11} {'fingers mm':>11} "
        f"{'success step rs/mjx':>20}")
  for k, name in enumerate(names):
    rs_first = int(np.argmax(episodes[k].success)) + 1 if episodes[k].success.any() else None
    mjx_first = int(np.argmax(err["mjx_success"][k])) + 1 if err["mjx_success"][k].any() else None
    row = {"episode": name, "eef_m": float(err["eef"][k].max()), "cube_m": float(err["cube"][k].max()),
           "cube_quat": float(err["cube_quat"][k].max()), "joints_rad": float(err["joints"][k].max()),
           "fingers_m": float(err["fingers"][k].max()), "success_step_robosuite": rs_first,
           "success_step_mjx": mjx_first, "eef_m_per_step": err["eef"][k].tolist()}
    rows.append(row)
    print(f"{name:<24} {1e3 * row['eef_m']:>8.3f} {1e3 * row['cube_m']:>8.3f} {row['cube_quat']:>10.2e} "
          f"{row['joints_rad']:>11.2e} {1e3 * row['fingers_m']:>11.4f} {str(rs_first) + ' / ' + str(mjx_first):>20}")
  if flags.FLAGS.out:
    jsonio.write(flags.FLAGS.out, {"dtype": flags.FLAGS.dtype, "num_steps": n, "episodes": rows})


if __name__ == "__main__":
  # Flags are defined here, not at import, so that tests can import this module.
  flags.DEFINE_list("expert_seeds", ["3", "11"], "robosuite reset seeds of expert episodes.")
  flags.DEFINE_list("random_scales", ["0.5", "1.0"], "Random-action episodes: action scales.")
  flags.DEFINE_integer("random_env_seed", 12, "robosuite reset seed of the random episodes.")
  flags.DEFINE_integer("num_steps", 90, "Control steps per episode.")
  flags.DEFINE_enum("dtype", "float32", ["float32", "float64"], "MJX dtype (float64 needs JAX_ENABLE_X64=1).")
  flags.DEFINE_string("out", None, "JSON output path.")
  cli.ints_at_least("expert_seeds", 0)
  cli.at_least("random_env_seed", 0)
  cli.at_least("num_steps", 1)
  cli.output_file("out")
  cli.run(main)
