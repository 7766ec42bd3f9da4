"""Push-T evaluation in gym-pusht with the Diffusion Policy protocol, all episodes as one batch.

Protocol (Chi et al. 2023, ``PushTKeypointsRunner``): 50 episodes reset with seeds 100000..100049, at
most 300 env steps (10 Hz, 30 s), receding-horizon chunking (every Ta env steps the policy sees the
last To observations and its Ta actions are executed open-loop). Per episode: the maximum of the env's
``coverage`` info over the episode, and success = max coverage >= 0.95 (the env also terminates there).

The N envs run in a gymnasium ``SyncVectorEnv``; the policy is called once per decision for all of
them (one jitted call on [N, To, obs_dim]). Finished episodes are masked: their later steps (after
gymnasium's autoreset) are never recorded. A policy with cameras (``img``) also sees the last To
96x96 frames of each env (gym-pusht's ``pixels_agent_pos`` observation).

Rollout videos (``video.Recorder``): after each env step, the recorded episodes' envs (the first
``eval.video_episodes``) also draw gym-pusht's own visualisation (``render()``: goal, T, agent and the
last action's target cross) at ``eval.video_size``; pygame, no OpenGL.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import numpy as np
from absl import logging

from ebt_jax import progress
from ebt_jax.envs import pusht
from ebt_jax.evaluation import video
from ebt_jax.evaluation.episodes import EpisodeResult, concat_obs, describe, summarize
from ebt_jax.evaluation.policy import Policy


def run_episodes(policy: Policy, seeds, max_env_steps: int, rng: jax.Array, inference: str | None = None,
                 envs=None, recorder: video.Recorder | None = None,
                 video_frames: dict[int, list] | None = None) -> list[EpisodeResult]:
  """Runs one Push-T episode per seed, all in one vector env; see the module docstring.

  Args:
    policy: maps [N, To, obs_dim] raw observations (keypoints, agent position; px) to [N, Ta, 2] raw
      actions (absolute agent targets, px).
    seeds: N reset seeds.
    max_env_steps: episode cap in env steps (the protocol's 300 = 30 s at 10 Hz).
    rng: PRNG key; decision k uses ``fold_in(rng, k)`` for the samplers' initial noise of all envs.
    inference: inference label, e.g. "mcmc-2" or "ddpm-100" (default ``policy.inference``).
    envs: an existing ``make_envs(policy, len(seeds), max_env_steps)`` to reuse.
    recorder, video_frames: {episode index: list}: each env step appends episode i's frame ([H, W, 3]
      uint8 at ``recorder.size``, ``render_frame``) to ``video_frames[i]`` (``recorder.capture``).

  Returns:
    One ``EpisodeResult`` per seed with ``max_coverage`` and the per-step ``coverage`` trace.

  Raises:
    KeyError / ValueError: if the env's observation lacks a trained key or has another width.
  """
  seeds = [int(s) for s in seeds]
  n = len(seeds)
  norm = policy.normalizer
  to, ta = policy.model.module.obs_horizon, policy.action_horizon
  envs = envs if envs is not None else make_envs(policy, n, max_env_steps)
  obs, _ = envs.reset(seed=seeds)
  obs = pusht.observation(obs)
  history = np.repeat(concat_obs(obs, norm.obs_keys, norm.obs_key_dims)[:, None], to, axis=1)
  frames = {c: np.repeat(np.asarray(obs[c])[:, None], to, axis=1) for c in policy.cameras}
  live = np.ones(n, bool)
  length = np.zeros(n, np.int64)
  coverage = [[] for _ in range(n)]
  energy = [[] for _ in range(n)]
  sampler_steps = [[] for _ in range(n)]
  t, k = 0, 0
  bar = progress.bar(max_env_steps, f"eval {inference or policy.inference} ({n} envs)", "step")  # a terminal only
  while t < max_env_steps and live.any():
    decision = jax.device_get(policy(history, jax.random.fold_in(rng, k), inference, frames or None))
    k += 1
    for i in np.flatnonzero(live):
      if decision.energy is not None:
        energy[i].append(float(decision.energy[i]))
      sampler_steps[i].append(int(decision.steps[i]))
    for j in range(min(ta, max_env_steps - t)):
      obs, _, terminated, truncated, info = envs.step(np.asarray(decision.actions[:, j], np.float64))
      obs = pusht.observation(obs)
      for c in policy.cameras:
        frames[c] = np.concatenate([frames[c][:, 1:], np.asarray(obs[c])[:, None]], axis=1)
      for i in np.flatnonzero(live):
        coverage[i].append(float(info["coverage"][i]))
        if recorder is not None and i in (video_frames or {}):
          recorder.capture(functools.partial(render_frame, envs.envs[i], recorder.size), video_frames[i],
                           hint="")
      length += live
      history = np.concatenate([history[:, 1:], concat_obs(obs, norm.obs_keys, norm.obs_key_dims)[:, None]], axis=1)
      live &= ~(terminated | truncated)
      t += 1
      if not live.any():
        break
    progress.advance(bar, t, done=f"{n - int(live.sum())}/{n}",
                     success=sum(bool(c) and max(c) >= pusht.SUCCESS_COVERAGE for c in coverage))
  bar.close()
  results = []
  for i, seed in enumerate(seeds):
    max_cov = max(coverage[i])
    results.append(EpisodeResult(seed=seed, success=bool(max_cov >= pusht.SUCCESS_COVERAGE), length=int(length[i]),
                                 sampler_steps=sampler_steps[i], energy=energy[i] or None, max_coverage=max_cov,
                                 coverage=coverage[i]))
  return results


def make_envs(policy: Policy, num_envs: int, max_env_steps: int = 300):
  """The vector env ``run_episodes`` needs for ``policy``: low-dim observations, or with frames for a
  policy with cameras."""
  obs_type = pusht.IMAGE_OBS_TYPE if policy.cameras else pusht.OBS_TYPE
  return pusht.make_vector_env(num_envs, max_env_steps, obs_type)


def evaluate(policy: Policy, num_episodes: int = 50, max_env_steps: int = 300, seed: int = 100_000,
             rng: jax.Array | None = None, inference: str | None = None, envs=None,
             recorder: video.Recorder | None = None) -> dict[str, Any]:
  """Runs episodes with seeds ``seed .. seed + num_episodes - 1`` and summarises them.

  ``recorder``: rollout videos of the first ``recorder.episodes`` episodes (None: no videos).

  Returns:
    The eval.json fields of ``episodes.summarize``, including ``mean_max_coverage``,
    ``mean_max_score`` and per-episode energies / coverage traces (+ ``videos``, the files written, with a
    recorder).
  """
  rng = jax.random.PRNGKey(0) if rng is None else rng
  frames = {k: [] for k in range(num_episodes) if recorder is not None and recorder.wants(k)}
  results = run_episodes(policy, range(seed, seed + num_episodes), max_env_steps, rng, inference, envs,
                         recorder, frames)
  summary = summarize(results)
  if recorder is not None:
    label = inference or policy.inference
    written = [recorder.write(label, k, frames[k], results[k], policy.action_horizon) for k in sorted(frames)]
    summary["videos"] = [w for w in written if w]
  logging.info("gym-pusht eval (%s): %s", inference or policy.inference, describe(summary))
  return summary


def render_frame(env, size: tuple[int, int]) -> np.ndarray:
  """gym-pusht's visualisation of ``env``'s current state (goal, T, agent, the last action's target) as
  [H, W, 3] uint8, (H, W) = ``size``; the env's ``render()`` (``render_mode="rgb_array"``) at that size."""
  u = env.unwrapped
  u.visualization_height, u.visualization_width = int(size[0]), int(size[1])
  return np.asarray(u.render(), np.uint8)
