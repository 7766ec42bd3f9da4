"""Scripted expert for robosuite Lift under OSC_POSE delta control.

A four-phase controller driven by the low-dim observation only (so the same logic can later run in
MJX): approach above the cube with the gripper yaw aligned to the nearest cube face, descend, close,
lift. Actions are in robosuite's normalised OSC_POSE space: [dx, dy, dz, drx, dry, drz, gripper] in
[-1, 1], where 1 = 0.05 m or 0.5 rad per 20 Hz control step and gripper +1 closes.
"""

from __future__ import annotations

import dataclasses

import numpy as np

APPROACH, DESCEND, GRASP, LIFT = range(4)

_POS_SCALE = 0.05  # metres per unit action (OSC_POSE output_max)
_ROT_SCALE = 0.5  # radians per unit action


@dataclasses.dataclass
class LiftExpert:
  """Stateful scripted Lift expert; one instance per episode (call ``reset`` between episodes).

  Attributes:
    hover_height: height above the cube centre for the approach, metres.
    lift_height: how far to lift the cube above its start, metres (success needs > 0.04).
    pos_gain: action per metre of position error (10 -> a 0.1 m error gives a full 0.05 m step).
    yaw_gain: action per radian of yaw error.
    grasp_steps: control steps spent closing the gripper (robosuite's gripper moves 0.2 of its
      range per step, so 10 steps close it fully).
  """
  hover_height: float = 0.06
  lift_height: float = 0.12
  pos_gain: float = 12.0
  yaw_gain: float = 4.0
  grasp_steps: int = 12
  phase: int = APPROACH
  _phase_steps: int = 0
  _cube_start: np.ndarray | None = None

  def reset(self) -> None:
    self.phase, self._phase_steps, self._cube_start = APPROACH, 0, None

  def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
    """obs: robomimic low-dim dict of one env step -> action [7] float64 in [-1, 1]."""
    eef = obs["robot0_eef_pos"]
    cube = obs["object"][:3]
    if self._cube_start is None:
      self._cube_start = cube.copy()
    yaw_err = _yaw_error(obs["robot0_eef_quat"], obs["object"][3:7])
    self._phase_steps += 1
    gripper = -1.0
    target = cube
    if self.phase == APPROACH:
      target = cube + np.array([0.0, 0.0, self.hover_height])
      err = target - eef
      if np.linalg.norm(err[:2]) < 0.006 and abs(err[2]) < 0.015 and abs(yaw_err) < 0.05:
        self._advance(DESCEND)
    elif self.phase == DESCEND:
      target = cube + np.array([0.0, 0.0, -0.005])
      if np.linalg.norm(target - eef) < 0.008 or self._phase_steps > 40:
        self._advance(GRASP)
    elif self.phase == GRASP:
      target = eef
      gripper = 1.0
      if self._phase_steps >= self.grasp_steps:
        self._advance(LIFT)
    else:  # LIFT
      target = np.array([cube[0], cube[1], self._cube_start[2] + self.lift_height])
      gripper = 1.0
    action = np.zeros(7)
    action[:3] = np.clip(self.pos_gain * (target - eef), -1.0, 1.0)
    if self.phase in (APPROACH, DESCEND):
      action[5] = np.clip(self.yaw_gain * yaw_err, -1.0, 1.0)
    action[6] = gripper
    return action

  def _advance(self, phase: int) -> None:
    self.phase, self._phase_steps = phase, 0


def _yaw(quat_xyzw: np.ndarray) -> float:
  """Heading (rad) of a frame's x-axis projected on the world xy-plane."""
  x, y, z, w = quat_xyzw
  # First column of the rotation matrix.
  r00 = 1.0 - 2.0 * (y * y + z * z)
  r10 = 2.0 * (x * y + z * w)
  return float(np.arctan2(r10, r00))


def _yaw_error(eef_quat: np.ndarray, cube_quat: np.ndarray) -> float:
  """Yaw (rad) to turn the gripper about world z to face the nearest cube side, in [-pi/4, pi/4]."""
  diff = _yaw(cube_quat) - _yaw(eef_quat)
  return float((diff + np.pi / 4) % (np.pi / 2) - np.pi / 4)
