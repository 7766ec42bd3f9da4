"""What a robomimic task is to ebt-jax: its robosuite env, its rollout horizon, its ``object`` width and its
scripted expert (if it has one). Success is robosuite's own ``_check_success`` of the env
(``ebt_jax.envs.robosuite_env.is_success``); each task module states what that test checks.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from ebt_jax.envs import robosuite_env


@dataclasses.dataclass(frozen=True)
class Expert:
  """A scripted expert as pure functions over an array namespace ``xp`` (numpy or jax.numpy).

  Attributes:
    config: the default expert config (a frozen dataclass of heights, gains, thresholds).
    init: (obs, xp) -> state for an episode whose first observation is ``obs``.
    step: (config, state, obs, xp) -> (action [7] in [-1, 1], next state).
    approach_point: (config, obs, xp) -> [3] where the approach ends (m); the ``varied`` demo style
      places its via point relative to it.
    vary: (config, rng: np.random.Generator) -> config: the ``varied`` style's per-demo draws (other
      heights, speeds, places), each range documented where it is defined.
  """
  config: Any
  init: Callable[..., Any]
  step: Callable[..., Any]
  approach_point: Callable[..., Any]
  vary: Callable[[Any, np.random.Generator], Any]


@dataclasses.dataclass(frozen=True)
class Task:
  """One robomimic task.

  Attributes:
    name: ebt-jax's name (``lift``, ``can``, ``square``, ``tool_hang``; robomimic's dataset folder).
    env_name: the robosuite environment (``env_args["env_name"]`` of robomimic's files).
    horizon: robomimic's rollout horizon for its PH data, control steps at 20 Hz.
    object_dim: width of the ``object`` observation (robosuite 1.5's ``object-state``).
    expert: the scripted expert, or None (demos must come from the user's file).
  """
  name: str
  env_name: str
  horizon: int
  object_dim: int
  expert: Expert | None = None

  def env_args(self, horizon: int | None = None) -> dict[str, Any]:
    """robomimic ``env_args`` of this task (``robosuite_env.robomimic_env_args``)."""
    return robosuite_env.robomimic_env_args(self.env_name, self.horizon if horizon is None else horizon)


class NumpyExpert:
  """Stateful numpy wrapper of an ``Expert`` for one episode at a time (robosuite).

  ``reset()`` between episodes; ``expert(obs) -> action`` [7] float64 in [-1, 1].
  """

  def __init__(self, expert: Expert, config: Any = None):
    self.expert = expert
    self.config = expert.config if config is None else config
    self.state = None

  def reset(self) -> None:
    self.state = None

  @property
  def phase(self) -> int:
    return 0 if self.state is None else int(self.state.phase)

  def __call__(self, obs) -> np.ndarray:
    """obs: robomimic low-dim dict of one env step -> action [7] float64 in [-1, 1]."""
    if self.state is None:
      self.state = self.expert.init(obs, np)
    action, self.state = self.expert.step(self.config, self.state, obs, np)
    return np.asarray(action, np.float64)
