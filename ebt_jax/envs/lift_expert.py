"""Scripted expert for Lift under OSC_POSE delta control, one definition for robosuite and MJX.

A four-phase controller driven by the low-dim observation only: approach above the cube with the
gripper yaw aligned to the nearest cube face, descend, close, lift. Actions are in robosuite's
normalised OSC_POSE space: [dx, dy, dz, drx, dry, drz, gripper] in [-1, 1], where 1 = 0.05 m or
0.5 rad per 20 Hz control step and gripper +1 closes.

``expert_step`` is a pure function of (config, expert state, observation) written against an array
namespace ``xp``: ``numpy`` (float64, the robosuite collector, through ``ebt_jax.tasks.NumpyExpert``) or
``jax.numpy`` (jittable, vmapped over thousands of MJX environments in ``ebt_jax.collect_mjx``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np
from flax import struct

APPROACH, DESCEND, GRASP, LIFT = range(4)


@dataclasses.dataclass(frozen=True)
class ExpertConfig:
  """Gains and thresholds of the scripted expert.

  Attributes:
    hover_height: height above the cube centre for the approach, metres.
    lift_height: how far to lift the cube above its start, metres (success needs > 0.04).
    pos_gain: action per metre of position error (12 -> a 0.083 m error gives a full 0.05 m step).
    yaw_gain: action per radian of yaw error.
    grasp_steps: control steps spent closing the gripper (robosuite's gripper moves 0.2 of its
      range per step, so 10 steps close it fully).
    max_descend_steps: the descent ends after this many steps even if the target is not reached.
    grasp_height: where the fingers close, metres above the cube centre (negative: below it).
  """
  hover_height: float = 0.06
  lift_height: float = 0.12
  pos_gain: float = 12.0
  yaw_gain: float = 4.0
  grasp_steps: int = 12
  max_descend_steps: int = 40
  grasp_height: float = -0.005


@struct.dataclass
class ExpertState:
  """Per-episode expert memory (add a leading batch axis for a batch of episodes).

  Attributes:
    phase: [] int: APPROACH, DESCEND, GRASP or LIFT.
    phase_steps: [] int: calls since the phase began.
    cube_start: [3] cube position (m) at the episode's first call.
  """
  phase: Any
  phase_steps: Any
  cube_start: Any


def expert_init(obs: Mapping[str, Any], xp=np) -> ExpertState:
  """The expert's state for an episode whose first observation is ``obs`` (robomimic low-dim dict)."""
  return ExpertState(phase=xp.asarray(APPROACH), phase_steps=xp.asarray(0), cube_start=xp.asarray(obs["object"][:3]))


def expert_step(cfg: ExpertConfig, state: ExpertState, obs: Mapping[str, Any], xp=np) -> tuple[Any, ExpertState]:
  """One decision: (state, obs) -> (action [7] in [-1, 1], next state).

  Args:
    cfg: gains and thresholds.
    state: from ``expert_init`` or the previous call.
    obs: robomimic low-dim dict with ``robot0_eef_pos`` [3], ``robot0_eef_quat`` [4] (x, y, z, w) and
      ``object`` [10] (cube pos, cube quat x-y-z-w, ...), metres.
    xp: ``numpy`` or ``jax.numpy``.
  """
  eef = obs["robot0_eef_pos"]
  cube = obs["object"][:3]
  yaw_err = _yaw_error(obs["robot0_eef_quat"], obs["object"][3:7], xp)
  steps = state.phase_steps + 1
  phase = state.phase
  approach_target = cube + xp.asarray([0.0, 0.0, cfg.hover_height])
  approach_err = approach_target - eef
  approach_done = ((xp.linalg.norm(approach_err[:2]) < 0.006) & (xp.abs(approach_err[2]) < 0.015)
                   & (xp.abs(yaw_err) < 0.05))
  descend_target = cube + xp.asarray([0.0, 0.0, cfg.grasp_height])
  descend_done = (xp.linalg.norm(descend_target - eef) < 0.008) | (steps > cfg.max_descend_steps)
  grasp_done = steps >= cfg.grasp_steps
  lift_target = xp.stack([cube[0], cube[1], state.cube_start[2] + cfg.lift_height])
  target = xp.where(phase == APPROACH, approach_target,
                    xp.where(phase == DESCEND, descend_target, xp.where(phase == GRASP, eef, lift_target)))
  advance = xp.where(phase == APPROACH, approach_done,
                     xp.where(phase == DESCEND, descend_done, (phase == GRASP) & grasp_done))
  next_phase = xp.where(advance, phase + 1, phase)
  gripper = xp.where(phase >= GRASP, 1.0, -1.0)
  # Yaw is corrected while approaching or descending, judged on the phase *after* this call's advance.
  yaw = xp.where(next_phase <= DESCEND, xp.clip(cfg.yaw_gain * yaw_err, -1.0, 1.0), 0.0)
  pos = xp.clip(cfg.pos_gain * (target - eef), -1.0, 1.0)
  zeros = xp.zeros_like(pos[:2])
  action = xp.concatenate([pos, zeros, xp.reshape(yaw, (1,)), xp.reshape(gripper, (1,))])
  next_state = ExpertState(phase=next_phase, phase_steps=xp.where(advance, 0, steps), cube_start=state.cube_start)
  return action, next_state


def _yaw(quat_xyzw, xp):
  """Heading (rad) of a frame's x-axis projected on the world xy-plane."""
  x, y, z, w = quat_xyzw[0], quat_xyzw[1], quat_xyzw[2], quat_xyzw[3]
  r00 = 1.0 - 2.0 * (y * y + z * z)  # first column of the rotation matrix
  r10 = 2.0 * (x * y + z * w)
  return xp.arctan2(r10, r00)


def _yaw_error(eef_quat, cube_quat, xp):
  """Yaw (rad) to turn the gripper about world z to face the nearest cube side, in [-pi/4, pi/4)."""
  diff = _yaw(cube_quat, xp) - _yaw(eef_quat, xp)
  return xp.mod(diff + np.pi / 4, np.pi / 2) - np.pi / 4
