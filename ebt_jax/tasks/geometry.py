"""Rotation helpers the scripted experts share, written against an array namespace ``xp`` (numpy or jax.numpy).

Quaternions are (x, y, z, w) as robosuite's observations; rotation matrices map body to world frame;
angles in radians. Orientation actions are robosuite OSC_POSE axis-angle deltas in the world frame
(the Panda's base frame has the world's orientation in every robomimic task).
"""

from __future__ import annotations

import numpy as np


def quat_to_mat(q, xp=np):
  """[4] unit quaternion (x, y, z, w) -> [3, 3] rotation matrix."""
  x, y, z, w = q[0], q[1], q[2], q[3]
  return xp.stack([
      xp.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)]),
      xp.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)]),
      xp.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]),
  ])


def yaw(q, xp=np):
  """Heading (rad) of a frame's x-axis projected on the world xy-plane; q [4] (x, y, z, w)."""
  x, y, z, w = q[0], q[1], q[2], q[3]
  return xp.arctan2(2.0 * (x * y + z * w), 1.0 - 2.0 * (y * y + z * z))


def wrap(angle, period, xp=np):
  """``angle`` wrapped into [-period / 2, period / 2) (rad)."""
  return xp.mod(angle + period / 2, period) - period / 2


def top_down(heading, xp=np):
  """[3, 3] gripper orientation pointing straight down (tool z-axis = -world z) with its x-axis at
  ``heading`` (rad) about world z: Rz(heading) @ diag(1, -1, -1), the Panda's pose at reset."""
  c, s = xp.cos(heading), xp.sin(heading)
  return xp.stack([xp.stack([c, s, 0.0 * c]), xp.stack([s, -c, 0.0 * c]), xp.stack([0.0 * c, 0.0 * c, -1.0 + 0.0 * c])])


def rotation_error(target, current, xp=np):
  """[3] world-frame rotation vector that turns ``current`` [3, 3] towards ``target`` [3, 3]:
  sin(theta) * axis of target @ current^T (exact direction, magnitude sin(theta); theta <= 90 deg)."""
  r = target @ current.T
  return 0.5 * xp.stack([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]])
