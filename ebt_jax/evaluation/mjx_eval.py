"""Vectorised evaluation in MJX Lift: N episodes in one jitted ``lax.scan``.

One call runs every episode of a batch in parallel: every Ta control steps the policy decides for all
N environments at once (normalise the last To observations, the policy's sampler over the batch: Alg. 2's
while loop for EBT, DDPM / DDIM for diffusion), then an inner ``lax.scan`` executes the Ta actions with the vmapped ``MjxLift.step``. An
episode ends at its first success or after ``horizon`` control steps; finished environments keep
stepping (shapes are static) but are masked out of success, length and the per-decision records.

The results are the same ``EpisodeResult`` records (``episodes``) as ``robosuite_eval``, so both backends write the
same ``eval.json``. Initial states are robosuite's own resets for the evaluation seeds
(``initial_states_from_robosuite``), so the two backends are scored on identical episodes, or MJX
samples of robosuite's reset distribution (``MjxLift.sample_initial_qpos``) for large batches.

Rollout videos: the scan also returns every episode's joint positions after each control step
(``Rollouts.qpos``, [N, horizon, 16] float32: 1.3 MB for 50 episodes of 400 steps); the recorded
episodes (the first ``eval.video_episodes``) are drawn afterwards by ``offscreen.Renderer`` (a child
process without JAX): each qpos set into robosuite's Lift with the offscreen renderer (MJX's qpos layout is
robosuite's: the MJX model only drops geoms, ``lift_mjcf``), ``mj_forward``, ``eval.video_camera`` rendered.
"""

from __future__ import annotations

import functools
import math
import time
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from ebt_jax import progress
from ebt_jax.envs import mjx_lift, robosuite_env
from ebt_jax.evaluation import offscreen, video
from ebt_jax.evaluation.episodes import EpisodeResult, concat_obs, describe, summarize
from ebt_jax.evaluation.policy import Policy


class InitialStates(NamedTuple):
  """Episode initial states for ``MjxLift.reset_to``: qpos [N, 16], cube_half_size [N, 3] (m), seeds [N]."""
  qpos: np.ndarray
  cube_half_size: np.ndarray
  seeds: np.ndarray


class Rollouts(NamedTuple):
  """Outcome of N parallel episodes with D = ceil(horizon / Ta) decision slots each.

  Attributes:
    success: [N] bool.
    length: [N] int32 control steps taken (first success, else horizon).
    energy: [N, D] energy of each decision's chosen chunk; None for a policy without an energy.
    sampler_steps: [N, D] int32 sampler steps of each decision (EBT: MCMC steps; diffusion: K).
    decided: [N, D] bool, whether the episode was still running at that decision.
    qpos: [N, horizon, 16] joint positions after each control step (7 arm joints rad, 2 fingers m, cube
      position m + quaternion w-x-y-z); steps past an episode's ``length`` continue its finished state.
  """
  success: jax.Array
  length: jax.Array
  energy: jax.Array | None
  sampler_steps: jax.Array
  decided: jax.Array
  qpos: jax.Array


def initial_states_from_robosuite(env, seeds: Sequence[int]) -> InitialStates:
  """robosuite Lift reset states for ``seeds`` (``robosuite_env.reset``), to load into MJX.

  Args:
    env: a robosuite Lift env (``robosuite_env.make_env``).
    seeds: reset seeds, e.g. ``eval.seed + k``.
  """
  qpos, sizes = [], []
  for seed in seeds:
    robosuite_env.reset(env, int(seed))
    init = mjx_lift.initial_state_of(env)
    qpos.append(init["qpos"])
    sizes.append(init["cube_half_size"])
  return InitialStates(np.stack(qpos), np.stack(sizes), np.asarray(seeds, np.int64))


def sampled_initial_states(env: mjx_lift.MjxLift, rng: jax.Array, num: int) -> InitialStates:
  """``num`` draws from robosuite Lift's reset distribution, sampled in JAX (seeds = 0..num-1)."""
  qpos, half = jax.vmap(env.sample_initial_qpos)(jax.random.split(rng, num))
  return InitialStates(np.asarray(qpos), np.asarray(half), np.arange(num))


def make_rollout(env: mjx_lift.MjxLift, policy: Policy, horizon: int, sampler: str):
  """-> jitted ``rollout(params, qpos [N,16], cube_half_size [N,3], rng, steps) -> Rollouts``.

  Args:
    env: the MJX Lift env.
    policy: the trained policy (its ``decide(sampler)`` is traced into the rollout).
    horizon: max control steps per episode (20 Hz).
    sampler: the policy's sampler ("mcmc", "ddim", "ddpm"); its step count ``steps`` (int32) is a traced
      argument of the rollout, so changing it does not recompile.
  """
  keys, dims = policy.normalizer.obs_keys, policy.normalizer.obs_key_dims
  to, ta = policy.model.module.obs_horizon, policy.action_horizon
  num_decisions = math.ceil(horizon / ta)
  step = jax.vmap(env.step)
  decide = policy.decide(sampler)

  def rollout(params, qpos, cube_half_size, rng, steps):
    states = jax.vmap(env.reset_to)(qpos, cube_half_size)
    n = qpos.shape[0]
    obs = concat_obs(states.obs, keys, dims, xp=jnp)
    history = jnp.repeat(obs[:, None], to, axis=1)  # [N, To, obs_dim], first observation repeated
    done = jnp.zeros(n, bool)
    success = jnp.zeros(n, bool)
    length = jnp.zeros(n, jnp.int32)

    def env_step(carry, action):
      states, history, done, success, length, t = carry
      states = step(states, action)
      active = ~done
      history = jnp.concatenate([history[:, 1:], concat_obs(states.obs, keys, dims, xp=jnp)[:, None]], axis=1)
      success = success | (active & states.success)
      length = length + active.astype(jnp.int32)
      done = done | success | (t + 1 >= horizon)
      return (states, history, done, success, length, t + 1), states.data.qpos

    def decision(carry, key):
      states, history, done, success, length, t = carry
      dec = decide(params, history, key, steps)
      decided = ~done
      carry, qpos = jax.lax.scan(env_step, carry, jnp.swapaxes(dec.actions, 0, 1))
      return carry, (dec.energy, dec.steps, decided, qpos)

    carry = (states, history, done, success, length, jnp.zeros((), jnp.int32))
    carry, (energy, sampler_steps, decided, qpos) = jax.lax.scan(decision, carry,
                                                                 jax.random.split(rng, num_decisions))
    _, _, _, success, length, _ = carry
    qpos = jnp.swapaxes(qpos.reshape((num_decisions * ta,) + qpos.shape[2:]), 0, 1)[:, :horizon]
    return Rollouts(success=success, length=length, energy=None if energy is None else energy.T,
                    sampler_steps=sampler_steps.T, decided=decided.T, qpos=qpos)

  return jax.jit(rollout)


def to_episode_results(rollouts: Rollouts, seeds: Sequence[int]) -> list[EpisodeResult]:
  """Host-side ``Rollouts`` -> per-episode records (decisions of finished episodes dropped)."""
  r = jax.device_get(rollouts)
  results = []
  for k, seed in enumerate(seeds):
    mask = np.asarray(r.decided[k])
    results.append(EpisodeResult(seed=int(seed), success=bool(r.success[k]), length=int(r.length[k]),
                                 sampler_steps=[int(x) for x in r.sampler_steps[k][mask]],
                                 energy=None if r.energy is None else [float(x) for x in r.energy[k][mask]]))
  return results


class MjxEvaluator:
  """Holds the jitted rollouts of one (env, policy, horizon), one per sampler, so that repeated
  evaluations (step counts, batches) compile once per sampler."""

  def __init__(self, policy: Policy, horizon: int, env: mjx_lift.MjxLift | None = None):
    self.policy, self.horizon = policy, horizon
    self.env = env if env is not None else mjx_lift.MjxLift.create()
    self._rollouts: dict[str, Any] = {}

  def rollout(self, sampler: str):
    """The jitted rollout of ``sampler`` (``make_rollout``), built on first use."""
    if sampler not in self._rollouts:
      self._rollouts[sampler] = make_rollout(self.env, self.policy, self.horizon, sampler)
    return self._rollouts[sampler]

  def evaluate(self, initial: InitialStates, rng: jax.Array, inference: str | None = None,
               batch_size: int | None = None, recorder: video.Recorder | None = None,
               renderer: offscreen.Renderer | None = None) -> dict[str, Any]:
    """Runs one episode per initial state and summarises them (``episodes.summarize``).

    Args:
      initial: episode initial states (``initial_states_from_robosuite`` or ``sampled_initial_states``).
      rng: PRNG key for the samplers' initial noise.
      inference: inference label, e.g. "mcmc-4" or "ddim-10" (default ``policy.inference``); a new step
        count of a sampler already used does not recompile.
      batch_size: episodes per jitted call (default: all at once). The last batch is padded by
        repeating the final initial state; the padding is dropped.
      recorder: rollout videos of the first ``recorder.episodes`` episodes (None: none), drawn after the
        rollouts by ``renderer`` (a child renderer of robosuite Lift; default: one started for this call).

    Returns:
      The eval.json fields of ``summarize`` plus ``wall_time_s`` (the first call includes compilation;
      videos excluded) and, with a recorder, ``videos`` (the files written).
    """
    n = len(initial.seeds)
    batch_size = batch_size or n
    sampler, steps = self.policy.parse(inference)
    rollout = self.rollout(sampler)
    results, trajectories, t0 = [], {}, time.time()
    bar = progress.bar(n, f"MJX eval {inference or self.policy.inference}", "episode")  # a terminal only
    for start in range(0, n, batch_size):
      idx = np.minimum(np.arange(start, start + batch_size), n - 1)
      out = rollout(self.policy.params, jnp.asarray(initial.qpos[idx], jnp.float32),
                    jnp.asarray(initial.cube_half_size[idx], jnp.float32), jax.random.fold_in(rng, start),
                    jnp.int32(steps))
      keep = min(batch_size, n - start)
      recorded = sum(recorder is not None and recorder.wants(start + j) for j in range(keep))  # the first ones
      out = jax.tree.map(lambda x, k=keep: x[:k], out)
      out = jax.device_get(out._replace(qpos=out.qpos[:recorded]))  # only the recorded trajectories to the host
      results += to_episode_results(out, initial.seeds[start:start + keep])
      progress.advance(bar, len(results), success=f"{np.mean([r.success for r in results]):.0%}")
      for j in range(keep):
        if recorder is not None and recorder.wants(start + j):
          trajectories[start + j] = np.asarray(out.qpos[j, :int(out.length[j])])
    bar.close()
    summary = summarize(results)
    summary["wall_time_s"] = time.time() - t0
    if recorder is not None:
      summary["videos"] = self._write_videos(recorder, renderer, trajectories, initial, results,
                                             inference or self.policy.inference)
    logging.info("MJX eval (%s): %s, %.1f s", inference or self.policy.inference, describe(summary),
                 summary["wall_time_s"])
    return summary

  def _write_videos(self, recorder: video.Recorder, renderer: offscreen.Renderer | None,
                    trajectories: dict[int, np.ndarray], initial: InitialStates, results: Sequence[EpisodeResult],
                    label: str) -> list[str]:
    """The recorded episodes' videos from their qpos trajectories (``Renderer.qpos``) -> the files written."""
    if not trajectories or not recorder.enabled:
      return []
    own = renderer is None
    renderer = renderer if renderer is not None else offscreen.Renderer(robosuite_env.lift_env_args(self.horizon))
    written = []
    for k in sorted(trajectories):
      frames = recorder.render(functools.partial(renderer.qpos, trajectories[k], initial.cube_half_size[k],
                                                 recorder.camera, recorder.size))
      path = recorder.write(label, k, frames, results[k], self.policy.action_horizon) if frames is not None else None
      written += [path] if path else []
    if own:
      renderer.close()
    return written

