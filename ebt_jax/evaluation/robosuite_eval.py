"""Rollouts of a policy in robosuite, robomimic-style: success rate over seeded episodes.

Receding-horizon action chunking: every Ta env steps the policy sees the last To observations
(the first one repeated at the start of an episode) and returns Ta actions, executed open-loop. An
episode ends at success (robosuite's ``_check_success``) or after ``horizon`` env steps (20 Hz).

A policy with cameras also sees the last To frames of each camera. They are rendered only after the env
steps whose observation the next decision sees (the last To before it), not at every step: with To = 2,
Ta = 8, a quarter of the frames, the same images (rendering does not change the simulation). By default
(``CameraFrames``) the child renderer of ``evaluation.offscreen`` draws them from the env's MuJoCo state:
on Mesa's EGL an offscreen context in a process that runs XLA returns stale or dark frames after the
first jitted computation (measured: agentview mean pixel 219 before a policy decision, 10-98 after), so
the evaluating process never renders itself. ``frames_of=InProcessFrames(...)`` renders in this process
(``robosuite_env.render_cameras``; the env made with ``offscreen=True``), for GL drivers without that fault.

Rollout videos (``video.Recorder``): the recorded episodes (the first ``eval.video_episodes``) log their
model XML and the MuJoCo state after each env step; ``offscreen.Renderer`` (a child process without JAX)
draws ``eval.video_camera`` from them after the episode.
"""

from __future__ import annotations

import collections
from typing import Any, Callable, Mapping

import jax
import numpy as np
from absl import logging

from ebt_jax import progress
from ebt_jax.envs import robosuite_env
from ebt_jax.evaluation import offscreen, video
from ebt_jax.evaluation.episodes import EpisodeResult, concat_obs, describe, summarize
from ebt_jax.evaluation.policy import Policy


def run_episode(env, policy: Policy, seed: int, horizon: int, rng: jax.Array,
                inference: str | None = None, image_size: tuple[int, int] = (84, 84),
                after_step: Callable[[], None] | None = None,
                frames_of: Callable[[], dict[str, np.ndarray]] | None = None) -> EpisodeResult:
  """One rollout from the initial state of ``seed``; see the module docstring.

  Args:
    env: robosuite env (from ``robosuite_env.make_env``).
    policy: maps [1, To, obs_dim] raw observations to [1, Ta, A] raw actions.
    seed: reset seed (initial cube pose and size, robot joint noise).
    horizon: max env steps (20 Hz: 400 steps = 20 s).
    rng: PRNG key for the samplers' initial noise (split per decision).
    inference: inference label, e.g. "mcmc-2" or "ddim-10" (default ``policy.inference``).
    image_size: (H, W) of the rendered frames (the training frames'; a policy with cameras only).
    after_step: called after each env step (a video's frame grabber), if given.
    frames_of: a policy with cameras: ``new_episode()`` after the reset, then called after the reset and
      after the steps a decision sees, -> {image key: [H, W, 3] uint8} of the env's current state
      (``CameraFrames``, ``InProcessFrames``);
      default ``InProcessFrames(env, policy.cameras, image_size)``.

  Raises:
    KeyError / ValueError: if the env's observations lack a trained key or have another width, or
      the env has no camera a policy's image key names.
    offscreen.RenderError: the child renderer failed (a policy with cameras cannot be evaluated blind).
  """
  norm = policy.normalizer
  to = policy.model.module.obs_horizon
  if policy.cameras and frames_of is None:
    frames_of = InProcessFrames(env, policy.cameras, image_size)
  render = frames_of if policy.cameras else dict
  obs = concat_obs(robosuite_env.reset(env, seed), norm.obs_keys, norm.obs_key_dims)
  if policy.cameras:
    frames_of.new_episode()
  history = collections.deque([obs] * to, maxlen=to)
  frames = collections.deque([render()] * to, maxlen=to)
  queue: collections.deque = collections.deque()
  steps, energies, success, t = [], [], False, 0
  for t in range(1, horizon + 1):
    if not queue:
      rng, key = jax.random.split(rng)
      images = {c: np.stack([f[c] for f in frames])[None] for c in policy.cameras} or None
      decision = jax.device_get(policy(np.stack(history)[None], key, inference, images))
      queue.extend(decision.actions[0])
      steps.append(int(decision.steps[0]))
      if decision.energy is not None:
        energies.append(float(decision.energy[0]))
    raw, _, _, _ = env.step(np.asarray(queue.popleft(), np.float64))
    if after_step is not None:
      after_step()
    history.append(concat_obs(robosuite_env.low_dim_obs(raw), norm.obs_keys, norm.obs_key_dims))
    frames.append(render() if len(queue) < to else None)  # None: a frame no decision sees
    if robosuite_env.is_success(env):
      success = True
      break
  return EpisodeResult(seed=seed, success=success, length=t, sampler_steps=steps, energy=energies or None)


def evaluate(policy: Policy, env_args: Mapping[str, Any], num_episodes: int, horizon: int, seed: int,
             rng: jax.Array, inference: str | None = None, env=None,
             image_size: tuple[int, int] = (84, 84), recorder: video.Recorder | None = None,
             renderer: offscreen.Renderer | None = None) -> dict[str, Any]:
  """Runs episodes with seeds ``seed .. seed + num_episodes - 1`` and summarises them.

  Args:
    policy: the trained policy.
    env_args: robomimic env description (the dataset's ``env_args``).
    num_episodes: number of rollouts.
    horizon: max env steps per episode.
    seed: first episode seed (keep it disjoint from the demo seeds).
    rng: PRNG key for the samplers' initial noise.
    inference: inference label (default ``policy.inference``).
    env: an existing env built from ``env_args`` (reused across calls to save start-up time; no offscreen
      renderer needed: frames come from ``renderer``).
    image_size: (H, W) of the rendered frames (a policy with cameras; drawn by ``renderer``).
    recorder: rollout videos of the first ``recorder.episodes`` episodes (None: no videos); the summary
      then has ``videos``, the files written (``Recorder.relative_path``).
    renderer: the child renderer of ``env_args`` drawing the recorded episodes and a camera policy's
      observation frames (reuse one across calls: it takes seconds to start); default: one started here
      and ended on return.

  Returns:
    The eval.json fields of ``episodes.summarize`` (+ ``videos`` with a recorder).
  """
  env = env if env is not None else robosuite_env.make_env(env_args, horizon=horizon)
  wants_videos = recorder is not None and recorder.enabled
  own_renderer = (wants_videos or policy.cameras) and renderer is None and num_episodes > 0
  if own_renderer:
    renderer = offscreen.Renderer(env_args)
  frames_of = CameraFrames(env, renderer, policy.cameras, image_size) if policy.cameras else None
  label = inference or policy.inference
  results, videos = [], []
  bar = progress.bar(num_episodes, f"eval {label}", "episode")  # a terminal only
  for k in range(num_episodes):
    log = StateLog(env) if recorder is not None and recorder.wants(k) else None
    results.append(run_episode(env, policy, seed + k, horizon, jax.random.fold_in(rng, k), inference, image_size, log,
                               frames_of))
    progress.advance(bar, k + 1, success=f"{np.mean([r.success for r in results]):.0%}")
    if log is not None:
      frames = recorder.render(lambda log=log: renderer.states(log.model_xml, np.stack(log.states), recorder.camera,
                                                               recorder.size))
      written = recorder.write(label, k, frames, results[-1], policy.action_horizon) if frames is not None else None
      videos += [written] if written else []
  bar.close()
  if own_renderer:
    renderer.close()
  summary = summarize(results)
  if recorder is not None:
    summary["videos"] = videos
  logging.info("robosuite eval (%s): %s", inference or policy.inference, describe(summary))
  return summary


class StateLog:
  """An ``after_step`` hook logging an episode for its video: the model XML (robosuite's ``env.model``,
  the episode's cube size; taken at the first step) and the flattened MuJoCo state after each env step
  ([1 + nq + nv], ``robosuite_env.sim_state``)."""

  def __init__(self, env):
    self.env, self.model_xml, self.states = env, None, []

  def __call__(self) -> None:
    if self.model_xml is None:
      self.model_xml = self.env.model.get_xml()
    self.states.append(robosuite_env.sim_state(self.env))


class CameraFrames:
  """A camera policy's observation frames from the child renderer (``offscreen.Renderer``): each call
  sends the env's flattened MuJoCo state (and, first in an episode, its model XML: robosuite rebuilds the
  model at every reset) and returns {image key: [H, W, 3] uint8}, upright as ``render_cameras``'s."""

  def __init__(self, env, renderer: offscreen.Renderer, image_keys, image_size: tuple[int, int]):
    self.env, self.renderer, self.image_keys, self.size = env, renderer, tuple(image_keys), tuple(image_size)
    self._xml_sent = False

  def new_episode(self) -> None:
    """After a reset: the next call sends the episode's model."""
    self._xml_sent = False

  def __call__(self) -> dict[str, np.ndarray]:
    state = robosuite_env.sim_state(self.env)[None]
    out = {}
    for key in self.image_keys:
      xml = None if self._xml_sent else self.env.model.get_xml()
      out[key] = self.renderer.states(xml, state, robosuite_env.camera_name(key), self.size)[0]
      self._xml_sent = True
    return out


class InProcessFrames:
  """Observation frames rendered in this process (``robosuite_env.render_cameras``; the env made with
  ``offscreen=True``): for GL drivers whose offscreen contexts survive XLA in the same process."""

  def __init__(self, env, image_keys, image_size: tuple[int, int], reflections: bool = True):
    self.env, self.image_keys, self.size = env, tuple(image_keys), tuple(image_size)
    self.reflections = reflections  # robosuite_env.render_reflections(the dataset's env_args)

  def new_episode(self) -> None:
    """After a reset: nothing to do (the env's own context draws its current model)."""

  def __call__(self) -> dict[str, np.ndarray]:
    return robosuite_env.render_cameras(self.env, self.image_keys, *self.size, reflections=self.reflections)
