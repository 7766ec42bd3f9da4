"""The scripted pick-and-place expert that Can and Square share, one pure function for numpy and jax.numpy.

Eight phases, each with an eef target: approach (above the grasp point, gripper heading turned to the
grasp), descend (to the grasp point), grasp (close), lift (straight up to the carrying height, turning
the held object to its place heading where it was picked: turning it far from the robot while moving
sent the OSC astray, measured on Square), carry (the held object's reference point over the place
target), lower,
release (open), retreat (straight up). While the object is held, position errors are the object's own
(it may sit off-centre in the fingers), so the expert corrects slips; a lift or carry whose fingers
closed on nothing starts again from the approach. A task supplies its geometry as
a ``Scene`` of functions of the low-dim observation; Lift keeps its own four-phase expert
(``ebt_jax.envs.lift_expert``, shared with MJX).

Units: metres, radians, world frame. Actions: robosuite's normalised OSC_POSE deltas
[dx, dy, dz, drx, dry, drz, gripper] in [-1, 1] (1 = 0.05 m or 0.5 rad per 20 Hz step; gripper +1 closes).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping

import numpy as np
from flax import struct

from ebt_jax.tasks import geometry
from ebt_jax.tasks.task import Expert

APPROACH, DESCEND, GRASP, LIFT, CARRY, LOWER, RELEASE, RETREAT = range(8)
PHASES = ("approach", "descend", "grasp", "lift", "carry", "lower", "release", "retreat")


@dataclasses.dataclass(frozen=True)
class Scene:
  """A task's geometry, as functions of the low-dim observation ``obs`` (robomimic dict of one env step).

  Attributes:
    grasp_point: (obs, xp) -> [3] where the eef closes on the object (m).
    held_point: (obs, xp) -> [3] the object's point that must come over the place target (m).
    place_xy: (obs, xp) -> [2] the place target (m).
    grasp_turn: (obs, heading, xp) -> [] how far (rad) the gripper's heading (its x-axis about world z,
      now ``heading``) must turn for the grasp; None: the grasp takes any heading.
    place_turn: (obs, heading, xp) -> [] how far (rad) the held object must still turn about world z
      to sit at its place heading; None: it need not turn.
  """
  grasp_point: Callable[..., Any]
  held_point: Callable[..., Any]
  place_xy: Callable[..., Any]
  grasp_turn: Callable[..., Any] | None = None
  place_turn: Callable[..., Any] | None = None


@dataclasses.dataclass(frozen=True)
class ExpertConfig:
  """Heights, gains and thresholds of the pick-and-place expert (metres, world frame).

  Attributes:
    hover_height: eef height above the grasp point for the approach.
    grasp_height: where the fingers close, relative to the grasp point (negative: below it).
    carry_z: eef height while carrying.
    place_z: eef height at which the gripper opens above the place target.
    place_offset: (dx, dy) of the place target from the task's own (e.g. another spot in a bin).
    pos_gain: action per metre of position error (12: an error of 0.083 m gives a full 0.05 m step).
    carry_speed: cap on the position action while the object is held (1 = 0.05 m per step).
    rot_gain: orientation action per radian of error (1 = 0.5 rad per step).
    turn_speed: cap on the heading action (0.4 = 0.2 rad per step; faster turns drag the eef along).
    grasp_steps: control steps spent closing the gripper (0.2 of its range per step).
    release_steps: control steps spent opening it.
    max_move_steps: the descent and the lowering end after this many steps even if short of the target.
    heading_tol: the approach and the carry wait until the heading error is below this (rad).
    empty_grip_width: finger opening (m, ``robot0_gripper_qpos[0] - [1]``) below which the gripper
      holds nothing: a lift or carry with an empty gripper goes back to the approach (a missed grasp).
  """
  hover_height: float = 0.08
  grasp_height: float = 0.0
  carry_z: float = 1.04
  place_z: float = 0.94
  place_offset: tuple[float, float] = (0.0, 0.0)
  pos_gain: float = 12.0
  carry_speed: float = 1.0
  rot_gain: float = 3.0
  turn_speed: float = 0.4
  grasp_steps: int = 10
  release_steps: int = 6
  max_move_steps: int = 40
  heading_tol: float = 0.05
  empty_grip_width: float = 0.006


@struct.dataclass
class ExpertState:
  """Per-episode expert memory (add a leading batch axis for a batch of episodes).

  Attributes:
    phase: [] int, one of the phase constants.
    phase_steps: [] int, calls since the phase began.
    anchor: [3] the eef position when the phase began (m): lift and retreat hold its x, y.
  """
  phase: Any
  phase_steps: Any
  anchor: Any


def expert_init(obs: Mapping[str, Any], xp=np) -> ExpertState:
  """The expert's state for an episode whose first observation is ``obs``."""
  return ExpertState(phase=xp.asarray(APPROACH), phase_steps=xp.asarray(0), anchor=xp.asarray(obs["robot0_eef_pos"]))


def approach_point(scene: Scene, cfg: ExpertConfig, obs: Mapping[str, Any], xp=np):
  """[3] where the approach ends: above the grasp point (a demo style's via point is placed relative to it)."""
  return scene.grasp_point(obs, xp) + xp.asarray([0.0, 0.0, cfg.hover_height])


def _with_z(xy, z, xp):
  return xp.concatenate([xy, xp.reshape(xp.asarray(z, dtype=xy.dtype), (1,))])


def expert_step(scene: Scene, cfg: ExpertConfig, state: ExpertState, obs: Mapping[str, Any],
                xp=np) -> tuple[Any, ExpertState]:
  """One decision: (state, obs) -> (action [7] in [-1, 1], next state).

  Args:
    scene: the task's geometry.
    cfg: heights, gains and thresholds.
    state: from ``expert_init`` or the previous call.
    obs: robomimic low-dim dict with ``robot0_eef_pos`` [3] (m), ``robot0_eef_quat`` [4] (x, y, z, w)
      and what ``scene`` reads.
    xp: ``numpy`` or ``jax.numpy``.

  Returns:
    [dx, dy, dz, drx, dry, drz, gripper]: the rotation keeps the gripper pointing down and turns its
    heading to the grasp (approach, descent) or turns the held object to its place heading (lift, carry).
  """
  eef, quat = obs["robot0_eef_pos"], obs["robot0_eef_quat"]
  phase, steps = state.phase, state.phase_steps + 1
  heading = geometry.yaw(quat, xp)
  zero = 0.0 * heading
  grasp = scene.grasp_point(obs, xp)
  to_place = (scene.place_xy(obs, xp) + xp.asarray(cfg.place_offset)) - scene.held_point(obs, xp)[:2]
  targets = xp.stack([
      approach_point(scene, cfg, obs, xp),
      grasp + xp.asarray([0.0, 0.0, cfg.grasp_height]),
      eef,
      _with_z(state.anchor[:2], cfg.carry_z, xp),
      _with_z(eef[:2] + to_place, cfg.carry_z, xp),
      _with_z(eef[:2] + to_place, cfg.place_z, xp),
      eef,
      _with_z(state.anchor[:2], cfg.carry_z, xp),
  ])
  err = targets[phase] - eef
  grasp_turn = scene.grasp_turn(obs, heading, xp) if scene.grasp_turn is not None else zero
  place_turn = scene.place_turn(obs, heading, xp) if scene.place_turn is not None else zero
  turn = xp.where(phase <= DESCEND, grasp_turn, xp.where((phase == LIFT) | (phase == CARRY), place_turn, zero))
  done = xp.stack([
      (xp.linalg.norm(err[:2]) < 0.008) & (xp.abs(err[2]) < 0.015) & (xp.abs(turn) < cfg.heading_tol),
      (xp.linalg.norm(err) < 0.008) | (steps > cfg.max_move_steps),
      steps >= cfg.grasp_steps,
      (err[2] < 0.02) & (xp.abs(turn) < cfg.heading_tol),
      (xp.linalg.norm(err[:2]) < 0.01) & (xp.abs(turn) < cfg.heading_tol),
      (xp.abs(err[2]) < 0.01) | (steps > cfg.max_move_steps),
      steps >= cfg.release_steps,
      False,
  ])[phase]
  held = (phase >= GRASP) & (phase <= LOWER)
  speed = xp.where(held & (phase != GRASP), cfg.carry_speed, 1.0)
  pos = xp.clip(cfg.pos_gain * err, -speed, speed)
  tilt = geometry.rotation_error(geometry.top_down(heading, xp), geometry.quat_to_mat(quat, xp), xp)
  rot = xp.clip(cfg.rot_gain * tilt, -1.0, 1.0)
  rot = xp.clip(rot + xp.stack([zero, zero, xp.clip(cfg.rot_gain * turn, -cfg.turn_speed, cfg.turn_speed)]), -1.0, 1.0)
  gripper = xp.where(held, 1.0, -1.0)
  action = xp.concatenate([pos, rot, xp.reshape(gripper, (1,))])
  grip = obs["robot0_gripper_qpos"]
  missed = ((phase == LIFT) | (phase == CARRY)) & (grip[0] - grip[1] < cfg.empty_grip_width)
  next_phase = xp.where(missed, APPROACH, xp.where(done, phase + 1, phase))
  restart = done | missed
  next_state = ExpertState(phase=next_phase, phase_steps=xp.where(restart, 0, steps),
                           anchor=xp.where(restart, eef, state.anchor))
  return action, next_state


def make_expert(scene: Scene, config: ExpertConfig, vary: Callable[[ExpertConfig, np.random.Generator], ExpertConfig]) -> Expert:
  """The task ``Expert`` of this controller for ``scene``: default ``config``, the ``varied`` style's ``vary``."""
  return Expert(config=config, init=expert_init, step=functools.partial(expert_step, scene),
                approach_point=functools.partial(approach_point, scene), vary=vary)
