"""Evaluation of a ``Policy`` in the backend its config names (``eval.backend``: robosuite, mjx, gym_pusht):
one evaluator per run, called once per inference label; shared by the main job and ``ebt_jax.evaluate``."""

from __future__ import annotations

from typing import Callable

import jax

from ebt_jax import policies
from ebt_jax.envs import robosuite_env
from ebt_jax.errors import ConfigError
from ebt_jax.evaluation import robosuite_eval
from ebt_jax.evaluation.policy import Policy

EVAL_BACKENDS = ("robosuite", "mjx", "gym_pusht")
MJX_INITIAL_STATES = ("robosuite", "sampled")  # where MJX episodes start: robosuite's reset states, or sampled


def make_evaluator(config, policy: Policy, env_args: dict) -> Callable[[str], dict]:
  """-> ``evaluate(inference label) -> summary`` for ``config.eval.backend`` (robosuite, mjx or gym_pusht).

  All run episodes ``eval.seed + k``, k < ``eval.num_episodes``, of at most ``eval.horizon`` env steps;
  MJX by default starts them from robosuite's own reset states for those seeds
  (``eval.mjx_initial_states``); gym_pusht runs them as one vector env.

  Raises:
    ConfigError: unknown ``eval.backend`` or ``eval.mjx_initial_states``, or MJX asked to evaluate a
      task other than Lift (``validation.check_config`` / ``check_dataset`` report these before training).
  """
  e = config.eval
  rng = jax.random.PRNGKey(config.seed + 1)
  if e.backend == "gym_pusht":
    from ebt_jax.evaluation import pusht_eval  # pylint: disable=g-import-not-at-top
    envs = pusht_eval.make_envs(policy, e.num_episodes, e.horizon)
    return lambda label: pusht_eval.evaluate(policy, e.num_episodes, e.horizon, e.seed, rng, label, envs=envs)
  if e.backend == "robosuite":
    env = robosuite_env.make_env(env_args, horizon=e.horizon, offscreen=bool(policy.cameras))
    size = tuple(config.data.get("image_size", (84, 84)))
    return lambda label: robosuite_eval.evaluate(policy, env_args, e.num_episodes, e.horizon, e.seed, rng, label,
                                                 env=env, image_size=size)
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
  return lambda label: evaluator.evaluate(initial, rng, label, batch_size=e.mjx_batch_size or None)


def evaluate_all(config, policy: Policy, env_args: dict) -> dict:
  """Evaluation with the policy's default inference and every label of its sweep, in ``eval.backend``.

  Returns the default inference's summary (with its episodes) plus ``policy``, ``backend``, ``inference``
  and ``by_inference`` {label: summary without episodes}, labels ordered by sampler and step count.
  """
  evaluate = make_evaluator(config, policy, env_args)
  by_label = {label: evaluate(label) for label in policies.sort_labels((policy.inference, *policy.model.sweep))}
  main_result = dict(by_label[policy.inference])
  main_result.update(policy=policy.model.name, backend=config.eval.backend, inference=policy.inference)
  main_result["by_inference"] = {label: {k: v for k, v in r.items() if k != "episodes"}
                                 for label, r in by_label.items()}
  return main_result
