"""Demonstration styles of the built-in collectors: how a scripted operator behaves, for every task.

A scripted expert moves on one smooth path at one speed and grasps at one height. Human demonstrations
(robomimic PH, teleoperated with a SpaceMouse) do not: operators pause and hesitate, take other
approach paths, grasp and place at other heights and spots, and jitter. Each style here is a named
operator behaviour layered on a task's expert (``ebt_jax.tasks.task.Expert``), so that a recipe can be
tested on more than one kind of data (``config.data.demo_style``; ``python -m ebt_jax.collect --style=...``):

  scripted   the expert as it is: one path, one speed, one grasp (today's built-in demos)
  varied     per demo: a via point 5-12 cm off the straight approach (any side) and the task's own
             draws (``Expert.vary``: e.g. Lift's hover height 3-10 cm, grasp height -1.2..+0.8 cm,
             position gain 6-14)
  hesitant   idle pauses (3-15 steps of zero motion, gripper held; 4 % chance per step) and
             slow-downs (5-15 steps at 20-50 % speed; 3 % per step), recorded as executed
  teleop     varied + hesitant + operator jitter (N(0, 0.1^2) on the commanded position, recorded in
             the labels, as a teleoperated demo records what the operator commanded); the hardest

Styles are orthogonal to DART (``action_noise``: noise on the *executed* position action with the
expert's clean label kept); ``--config.data.action_noise=0`` turns DART's corrections off.

Every random choice comes from a generator seeded by the episode's reset seed, so a style's file is a
deterministic function of (task, style, num_demos, seed, action_noise). Units: actions in robosuite's
normalised OSC_POSE space ([-1, 1]; 1 = 0.05 m or 0.5 rad per 20 Hz step), distances in metres.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np

from ebt_jax.tasks.task import Expert, NumpyExpert


@dataclasses.dataclass(frozen=True)
class DemoStyle:
  """One operator behaviour (module docstring).

  Attributes:
    varied: per-demo via point, hover height, grasp height and speed.
    pause_prob: per-step probability of starting an idle pause (0 = never).
    pause_steps: (min, max) pause length, control steps, inclusive.
    slow_prob: per-step probability of starting a slow-down.
    slow_steps: (min, max) slow-down length, control steps.
    slow_scale: (min, max) speed factor during a slow-down.
    jitter: std of the operator noise on the commanded position dims, recorded in the labels.
  """
  varied: bool = False
  pause_prob: float = 0.0
  pause_steps: tuple[int, int] = (3, 15)
  slow_prob: float = 0.0
  slow_steps: tuple[int, int] = (5, 15)
  slow_scale: tuple[float, float] = (0.2, 0.5)
  jitter: float = 0.0


STYLES = {
    "scripted": DemoStyle(),
    "varied": DemoStyle(varied=True),
    "hesitant": DemoStyle(pause_prob=0.04, slow_prob=0.03),
    "teleop": DemoStyle(varied=True, pause_prob=0.04, slow_prob=0.03, jitter=0.1),
}
DEFAULT_STYLE = "scripted"

# The ``varied`` via point (every task; the task's own draws are ``Expert.vary``).
VIA_RADIUS_M = (0.05, 0.12)  # horizontal offset of the via point from the approach point
VIA_LIFT_M = (0.02, 0.08)  # extra height of the via point
VIA_TOLERANCE_M = 0.02  # the via point counts as reached within this distance
VIA_MAX_STEPS = 40  # or after this many steps


def get_style(name: str) -> DemoStyle:
  """The style called ``name``. Raises ValueError naming the known styles."""
  if name not in STYLES:
    raise ValueError(f"unknown demo style {name!r}: use one of {sorted(STYLES)}")
  return STYLES[name]


class StyledOperator:
  """A task's scripted expert driven with a ``DemoStyle`` (numpy; one episode at a time, robosuite).

  ``reset(seed)`` before each episode; then ``operator(obs) -> action`` [7] float64 in [-1, 1], the
  action the operator commands (and the demo records as its label). The expert's config must have a
  ``pos_gain`` (action per metre): the via point is approached at the demo's own speed.
  """

  def __init__(self, expert: Expert, style: str = DEFAULT_STYLE):
    self.style_name = style
    self.style = get_style(style)
    self._expert_spec = expert
    self.reset(0)

  def reset(self, seed: int) -> None:
    """New episode: draws the per-demo choices from a generator seeded by ``seed`` (>= 0)."""
    self.rng = np.random.default_rng([seed, 0x5171E])
    s = self.style
    config = self._expert_spec.config
    self._via = None  # [3] offset from the approach point still to visit, or None
    if s.varied:
      config = self._expert_spec.vary(config, self.rng)
      angle, radius = self.rng.uniform(0, 2 * np.pi), float(self.rng.uniform(*VIA_RADIUS_M))
      self._via = np.array([radius * np.cos(angle), radius * np.sin(angle), float(self.rng.uniform(*VIA_LIFT_M))])
    self.expert = NumpyExpert(self._expert_spec, config)
    self._via_steps = self._pause = self._slow = 0
    self._slow_scale, self._gripper = 1.0, -1.0

  @property
  def phase(self) -> int:
    return self.expert.phase

  def __call__(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
    """obs: robomimic low-dim dict of one env step -> commanded action [7] float64 in [-1, 1]."""
    s = self.style
    if self._pause == 0 and s.pause_prob and self.rng.random() < s.pause_prob:
      self._pause = int(self.rng.integers(s.pause_steps[0], s.pause_steps[1] + 1))
    if self._pause > 0:  # idle: no motion, the gripper held where it was
      self._pause -= 1
      action = np.zeros(7)
      action[6] = self._gripper
      return action
    if self._via is not None:
      action = self._to_via(obs)
    else:
      action = self.expert(obs)
    if self._slow == 0 and s.slow_prob and self.rng.random() < s.slow_prob:
      self._slow = int(self.rng.integers(s.slow_steps[0], s.slow_steps[1] + 1))
      self._slow_scale = float(self.rng.uniform(*s.slow_scale))
    if self._slow > 0:
      self._slow -= 1
      action[:6] *= self._slow_scale
    if s.jitter:
      action[:3] = np.clip(action[:3] + s.jitter * self.rng.standard_normal(3), -1.0, 1.0)
    self._gripper = float(action[6])
    return action

  def _to_via(self, obs) -> np.ndarray:
    """Moves towards the via point (gripper open, no rotation) until it is reached, then hands over."""
    target = np.asarray(self._expert_spec.approach_point(self.expert.config, obs, np)) + self._via
    err = target - obs["robot0_eef_pos"]
    self._via_steps += 1
    if np.linalg.norm(err) < VIA_TOLERANCE_M or self._via_steps > VIA_MAX_STEPS:
      self._via = None
      return self.expert(obs)
    action = np.zeros(7)
    action[:3] = np.clip(self.expert.config.pos_gain * err, -1.0, 1.0)  # the demo's own speed
    action[6] = -1.0
    return action
