"""Evaluation of a ``Policy`` in the backend its config names (``eval.backend``: robosuite, mjx, gym_pusht):
one evaluator per run, called once per inference label; shared by the main job and ``ebt_jax.evaluate``."""

from __future__ import annotations

from typing import Callable

import jax

from ebt_jax import policies
from ebt_jax.envs import pusht, robosuite_env
from ebt_jax.errors import ConfigError
from ebt_jax.evaluation import offscreen, robosuite_eval, video
from ebt_jax.evaluation.policy import Policy

EVAL_BACKENDS = ("robosuite", "mjx", "gym_pusht")
MJX_INITIAL_STATES = ("robosuite", "sampled")  # where MJX episodes start: robosuite's reset states, or sampled


def make_evaluator(config, policy: Policy, env_args: dict, video_dir: str | None = None) -> Callable[[str], dict]:
  """-> ``evaluate(inference label) -> summary`` for ``config.eval.backend`` (robosuite, mjx or gym_pusht).

  All run episodes ``eval.seed + k``, k < ``eval.num_episodes``, of at most ``eval.horizon`` env steps;
  MJX by default starts them from robosuite's own reset states for those seeds
  (``eval.mjx_initial_states``); gym_pusht runs them as one vector env.

  ``video_dir`` (local path or URI; None: no videos, as with ``eval.video_episodes`` = 0): rollout videos
  of the first ``eval.video_episodes`` episodes of each label, ``<video_dir>/<label>/episode_<k>_<success|
  failure>.mp4`` (``evaluation.video``), listed in the summary's ``videos``. Without an offscreen GL
  context (robosuite, MJX) one warning says so and the evaluation runs without videos.

  Raises:
    ConfigError: unknown ``eval.backend`` or ``eval.mjx_initial_states``, or MJX asked to evaluate a
      task other than Lift (``validation.check_config`` / ``check_dataset`` report these before training).
  """
  e = config.eval
  rng = jax.random.PRNGKey(config.seed + 1)
  recorder = video.recorder_of(config, video_dir, pusht.CONTROL_HZ if e.backend == "gym_pusht"
                               else robosuite_env.CONTROL_HZ)
  if e.backend == "gym_pusht":
    from ebt_jax.evaluation import pusht_eval  # pylint: disable=g-import-not-at-top
    envs = pusht_eval.make_envs(policy, e.num_episodes, e.horizon)
    return lambda label: pusht_eval.evaluate(policy, e.num_episodes, e.horizon, e.seed, rng, label, envs=envs,
                                             recorder=recorder)
  # robosuite and MJX episodes are drawn by one child process for all labels, started now (it makes its env
  # while the first episodes run).
  renderer = _renderer(env_args, recorder)
  if e.backend == "robosuite":
    if policy.cameras and renderer is None:  # the observation frames come from the child renderer too
      renderer = offscreen.Renderer(env_args)
    env = robosuite_env.make_env(env_args, horizon=e.horizon)
    size = tuple(config.data.get("image_size", (84, 84)))
    return lambda label: robosuite_eval.evaluate(policy, env_args, e.num_episodes, e.horizon, e.seed, rng, label,
                                                 env=env, image_size=size, recorder=recorder, renderer=renderer)
  if e.backend != "mjx":
    raise ConfigError(f"eval.backend={e.backend!r}: must be one of {EVAL_BACKENDS}")
  if env_args.get("env_name") != "Lift":
    raise ConfigError(f"eval.backend='mjx' implements robosuite Lift only, the dataset's env is "
                      f"{env_args.get('env_name')!r}")
  from ebt_jax.evaluation import mjx_eval  # pylint: disable=g-import-not-at-top
  evaluator = mjx_eval.MjxEvaluator(policy, e.horizon)
  seeds = [e.seed + k for k in range(e.num_episodes)]
  if e.mjx_initial_states == "robosuite":
    initial = mjx_eval.initial_states_from_robosuite(robosuite_env.make_env(env_args, horizon=e.horizon), seeds)
  elif e.mjx_initial_states == "sampled":
    initial = mjx_eval.sampled_initial_states(evaluator.env, jax.random.PRNGKey(e.seed), e.num_episodes)
  else:
    raise ConfigError(f"eval.mjx_initial_states={e.mjx_initial_states!r}: must be one of "
                      f"{MJX_INITIAL_STATES}")
  return lambda label: evaluator.evaluate(initial, rng, label, batch_size=e.mjx_batch_size or None,
                                          recorder=recorder, renderer=renderer)


def _renderer(env_args: dict, recorder: video.Recorder | None) -> offscreen.Renderer | None:
  """The child renderer of ``env_args`` for ``recorder`` (None without one, or if the child cannot start:
  then the recorder is off, with one warning)."""
  if recorder is None:
    return None
  try:
    return offscreen.Renderer(env_args)
  except Exception as e:  # pylint: disable=broad-except  (a video never stops the evaluation)
    recorder.disable("cannot start the renderer process", e)
    return None


def evaluate_all(config, policy: Policy, env_args: dict,
                 on_result: Callable[[str, dict], None] | None = None, video_dir: str | None = None) -> dict:
  """Evaluation with the policy's default inference and every label of its sweep, in ``eval.backend``;
  ``on_result(label, summary)``, if given, sees each label's whole summary (episodes included) as it is done.

  Returns the default inference's summary (with its episodes) plus ``policy``, ``backend``, ``inference``
  and ``by_inference`` {label: summary without episodes}, labels ordered by sampler and step count.
  ``video_dir``: rollout videos (each summary's ``videos``), as ``make_evaluator``.
  """
  evaluate = make_evaluator(config, policy, env_args, video_dir=video_dir)
  by_label = {}
  for label in policies.sort_labels((policy.inference, *policy.model.sweep)):
    by_label[label] = evaluate(label)
    if on_result is not None:
      on_result(label, by_label[label])
  main_result = dict(by_label[policy.inference])
  main_result.update(policy=policy.model.name, backend=config.eval.backend, inference=policy.inference)
  main_result["by_inference"] = {label: {k: v for k, v in r.items() if k != "episodes"}
                                 for label, r in by_label.items()}
  return main_result
