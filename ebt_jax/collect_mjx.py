"""Scripted Lift demonstrations collected in MJX: a batch of episodes per jitted call.

The expert (``lift_expert.expert_step`` with ``jax.numpy``) and ``MjxLift.step`` are vmapped over a
batch of environments and iterated in a ``lax.while_loop`` that stops when every episode has succeeded
or reached the horizon. The output is the same robomimic HDF5 layout as the robosuite collector
(``ebt_jax.collect``): successful episodes only, each ending at its first successful step, expert labels
in ``actions``, DART-perturbed executed actions in ``executed_actions``, MuJoCo states
[time, qpos (16), qvel (15)] in ``states``, robosuite's model XML (with the episode's cube size) in
``model_file``, and robosuite Lift ``env_args``, so the file trains and evaluates exactly like a
robosuite-collected one.

  python -m ebt_jax.collect --task=lift --backend=mjx --num_demos=1000 --out=/tmp/lift_mjx.hdf5

Episode k of a collection seed s starts from ``MjxLift.reset(fold_in(PRNGKey(s), k))``.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from ebt_jax.data.robomimic_hdf5 import RawDemo
from ebt_jax.envs import lift_expert, lift_mjcf, mjx_lift


class ExpertRollouts(NamedTuple):
  """A batch of N expert episodes, time-major buffers of length H (the horizon).

  Attributes:
    obs: dict of [H, N, dim] observations before each step.
    actions: [H, N, 7] expert labels.
    executed: [H, N, 7] executed actions (labels + DART noise on x, y, z, clipped to [-1, 1]).
    states: [H, N, 1 + nq + nv] MuJoCo state before each step.
    length: [N] int32 steps until the first success (or H).
    success: [N] bool.
    cube_half_size: [N, 3] (m).
  """
  obs: dict[str, jax.Array]
  actions: jax.Array
  executed: jax.Array
  states: jax.Array
  length: jax.Array
  success: jax.Array
  cube_half_size: jax.Array


def make_expert_rollout(env: mjx_lift.MjxLift, expert: lift_expert.ExpertConfig, horizon: int, action_noise: float):
  """-> jitted ``rollout(keys [N, 2]) -> ExpertRollouts``; one reset key per episode.

  Args:
    env: the MJX Lift env.
    expert: the scripted expert's gains.
    horizon: max control steps per episode.
    action_noise: std of the DART noise on executed position actions (0 = none).
  """
  step = jax.vmap(env.step)
  act = jax.vmap(lambda s, o: lift_expert.expert_step(expert, s, o, xp=jnp))

  def rollout(keys):
    split = jax.vmap(lambda k: jax.random.split(k, 2))(keys)
    reset_keys, noise_keys = split[:, 0], split[:, 1]
    states = jax.vmap(env.reset)(reset_keys)
    expert_state = jax.vmap(lambda o: lift_expert.expert_init(o, xp=jnp))(states.obs)
    n = keys.shape[0]

    def buffer(x):
      return jnp.zeros((horizon,) + x.shape, x.dtype)

    def sim_state(d):
      return jnp.concatenate([d.time[:, None], d.qpos, d.qvel], axis=1)

    bufs = {"obs": jax.tree.map(buffer, states.obs), "actions": jnp.zeros((horizon, n, mjx_lift.ACTION_DIM)),
            "executed": jnp.zeros((horizon, n, mjx_lift.ACTION_DIM)), "states": buffer(sim_state(states.data))}

    def cond(carry):
      t, _, _, done, _, _ = carry
      return (t < horizon) & ~jnp.all(done)

    def body(carry):
      t, states, expert_state, done, length, bufs = carry
      action, expert_state = act(expert_state, states.obs)
      eps = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, t), (3,)))(noise_keys)
      executed = action.at[:, :3].set(jnp.clip(action[:, :3] + action_noise * eps, -1.0, 1.0))
      bufs = {"obs": jax.tree.map(lambda b, x: b.at[t].set(x), bufs["obs"], states.obs),
              "actions": bufs["actions"].at[t].set(action), "executed": bufs["executed"].at[t].set(executed),
              "states": bufs["states"].at[t].set(sim_state(states.data))}
      states = step(states, executed)
      active = ~done
      length = length + active.astype(jnp.int32)
      done = done | states.success
      return t + 1, states, expert_state, done, length, bufs

    carry = (jnp.zeros((), jnp.int32), states, expert_state, jnp.zeros(n, bool), jnp.zeros(n, jnp.int32), bufs)
    _, states, _, done, length, bufs = jax.lax.while_loop(cond, body, carry)
    return ExpertRollouts(obs=bufs["obs"], actions=bufs["actions"], executed=bufs["executed"], states=bufs["states"],
                          length=length, success=done & (length <= horizon), cube_half_size=states.cube_half_size)

  return jax.jit(rollout)


def to_demos(rollouts: ExpertRollouts, episode_ids: np.ndarray, robosuite_xml: str,
             action_noise: float) -> list[RawDemo]:
  """Successful episodes of a host-side batch -> ``RawDemo`` records (time-major buffers cut at length)."""
  r = jax.device_get(rollouts)
  demos = []
  for k, episode in enumerate(episode_ids):
    if not r.success[k]:
      continue
    n = int(r.length[k])
    rewards = np.zeros(n)
    rewards[-1] = 1.0
    demos.append(RawDemo(
        obs={key: np.asarray(v[:n, k], np.float64) for key, v in r.obs.items()},
        actions=np.asarray(r.actions[:n, k], np.float64), rewards=rewards, dones=(rewards > 0).astype(np.int64),
        states=np.asarray(r.states[:n, k], np.float64),
        model_file=lift_mjcf.xml_with_cube_size(robosuite_xml, r.cube_half_size[k]),
        attrs={"seed": int(episode), "action_noise": action_noise, "backend": "mjx"},
        extra={"executed_actions": np.asarray(r.executed[:n, k], np.float64)}))
  return demos


def collect_demos(num_demos: int, seed: int, horizon: int, action_noise: float, batch_size: int,
                  max_attempts: int | None = None, env: mjx_lift.MjxLift | None = None) -> tuple[list[RawDemo], dict[str, Any]]:
  """Runs batches of ``batch_size`` expert episodes until ``num_demos`` succeed.

  Returns:
    (the first ``num_demos`` successful demos in episode order, stats: attempts, success rate,
    wall time with and without the first call's compilation).

  Raises:
    RuntimeError: fewer than ``num_demos`` successes within ``max_attempts`` (default 2 * num_demos).
  """
  env = env if env is not None else mjx_lift.MjxLift.create()
  rollout = make_expert_rollout(env, lift_expert.ExpertConfig(), horizon, action_noise)
  max_attempts = max_attempts or 2 * num_demos
  root = jax.random.PRNGKey(seed)
  demos, attempts, t0, t_first = [], 0, time.time(), None
  while len(demos) < num_demos:
    if attempts >= max_attempts:
      raise RuntimeError(f"only {len(demos)} of {num_demos} MJX lift demos succeeded in {attempts} attempts")
    ids = np.arange(attempts, attempts + batch_size)
    keys = jax.vmap(lambda i: jax.random.fold_in(root, i))(jnp.asarray(ids))
    out = jax.block_until_ready(rollout(keys))
    t_first = t_first if t_first is not None else time.time() - t0
    demos += to_demos(out, ids, env.model.robosuite_xml, action_noise)
    attempts += batch_size
    logging.info("MJX collect: %d/%d demos after %d episodes (%.1f s)", len(demos), num_demos, attempts, time.time() - t0)
  wall = time.time() - t0
  stats = {"attempts": attempts, "success_rate": len(demos) / attempts, "wall_time_s": wall,
           "first_batch_s": t_first}
  return demos[:num_demos], stats
