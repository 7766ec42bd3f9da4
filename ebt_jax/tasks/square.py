"""robomimic Square (robosuite ``NutAssemblySquare``): pick the square nut up by its handle and drop it onto the square peg.

Scene (robosuite 1.5.2, measured): the nut (a square ring, outer half-width 0.044 m, hole 0.0455 m,
0.02 m thick; a handle bar from 0.029 to 0.079 m along its local x, 0.032 m wide) starts at x in
[-0.115, -0.110], y in [0.11, 0.225], any yaw, and settles at z 0.83 within ~5 steps. The square peg
(0.032 m wide) stands at (0.23, 0.10) with its top at z 0.95. Success (robosuite ``_check_success``,
``on_peg``): the nut's centre within 0.03 m of the peg's axis in x and y, below z 0.87 (down the peg),
and the gripper more than ~0.042 m from the nut's centre.

Observation ``object`` [14] (robosuite 1.5 order): nut position in the eef frame [0:3] (m), nut
orientation in the eef frame [3:7], nut centre in the world [7:10] (m), nut quaternion [10:14]
(x, y, z, w). The expert reads the world entries (the relative ones are zero after a reset).

Scripted expert: ``pick_place`` grasping the handle 8 mm out from its centre (nut centre + R(nut)
[0.062, 0, 0]; the handle site is at 0.054, where the fingers, closing from the gripper's one side, land
on the ring's wall when the handle points at the robot: 5 of 20 seeds failed so) across its width, carrying the nut's centre over the peg turned so that its handle points
at the robot (nut yaw pi: the eef then works at x 0.176; pointing down, the Panda reaches x <= ~0.24
at these heights, measured), lowering it around the peg and letting go.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ebt_jax.tasks import geometry, pick_place
from ebt_jax.tasks.task import Task

ENV_NAME = "NutAssemblySquare"
HORIZON = 400  # robomimic's rollout horizon for square/ph
OBJECT_DIM = 14
NUT_POS = slice(7, 10)
NUT_QUAT = slice(10, 14)
HANDLE_OFFSET = (0.062, 0.0, 0.0)  # grasp point in the nut's frame, m (the handle site is at 0.054)
PEG_XY = (0.23, 0.10)  # peg1 (square) in the world, m


def handle_point(obs, xp=np):
  """[3] the handle's grasp point in the world (m) from the nut's pose in ``object``."""
  return obs["object"][NUT_POS] + geometry.quat_to_mat(obs["object"][NUT_QUAT], xp) @ xp.asarray(HANDLE_OFFSET)


# Panda joint 7 (the flange) turns the gripper's heading: heading + q7 stays constant while only the
# wrist turns (measured: +0.43 rad of heading, -0.60 rad of q7 over 11 steps; the other joints
# take the rest). Its range is +-2.8973 rad; headings are chosen to keep the predicted q7 inside this.
Q7_LIMIT = 2.6


def _q7_after(obs, turn):
  """Joint 7's angle (rad) predicted after the gripper's heading turns by ``turn`` (rad)."""
  return obs["robot0_joint_pos"][6] - turn


def _turns_to_place(obs, xp):
  """[3] the turns (rad) about world z that bring the nut from its yaw to pi (handle at the robot):
  the shortest one and the ones a full turn either side."""
  need = geometry.wrap(np.pi - geometry.yaw(obs["object"][NUT_QUAT], xp), 2 * np.pi, xp)
  return need + xp.asarray([-2 * np.pi, 0.0, 2 * np.pi])


def grasp_turn(obs, heading, xp=np):
  """[] heading change (rad) for the grasp: the fingers close across the handle (gripper x-axis along
  the nut's, either way) and, of the headings that do, the nearest one from which the grasp and a
  later place turn (``place_turn``) both keep joint 7 inside +-Q7_LIMIT."""
  nut_yaw = geometry.yaw(obs["object"][NUT_QUAT], xp)
  turns = geometry.wrap(nut_yaw - heading, np.pi, xp) + np.pi * xp.asarray([-2.0, -1.0, 0.0, 1.0, 2.0])
  q7_grasp = _q7_after(obs, turns)
  q7_place = q7_grasp[:, None] - _turns_to_place(obs, xp)[None, :]  # the gripper turns as the nut does
  place_ok = xp.any(xp.abs(q7_place) < Q7_LIMIT, axis=1)
  cost = xp.abs(turns) + 100.0 * ((xp.abs(q7_grasp) >= Q7_LIMIT) | ~place_ok)
  return turns[xp.argmin(cost)]


def place_turn(obs, heading, xp=np):
  """[] how far (rad) the held nut must still turn for its handle to point at the robot (nut yaw pi),
  the shortest way that keeps joint 7 inside +-Q7_LIMIT."""
  del heading
  turns = _turns_to_place(obs, xp)
  cost = xp.abs(turns) + 100.0 * (xp.abs(_q7_after(obs, turns)) >= Q7_LIMIT)
  return turns[xp.argmin(cost)]


SCENE = pick_place.Scene(
    grasp_point=handle_point,
    held_point=lambda obs, xp=np: obs["object"][NUT_POS],
    place_xy=lambda obs, xp=np: xp.asarray(PEG_XY),
    grasp_turn=grasp_turn,
    place_turn=place_turn,
)
EXPERT_CONFIG = pick_place.ExpertConfig(grasp_height=0.0, carry_z=1.06, place_z=0.90)

# Ranges of the ``varied`` style's per-demo draws (metres; gain: action per metre). The nut's bottom must
# clear the peg's top (0.95) while carried and sit below it when let go.
HOVER_HEIGHT_M = (0.05, 0.12)
CARRY_Z_M = (1.04, 1.10)
PLACE_Z_M = (0.89, 0.93)
POS_GAIN = (6.0, 14.0)


def vary(config: pick_place.ExpertConfig, rng: np.random.Generator) -> pick_place.ExpertConfig:
  """The ``varied`` style's draws: hover, carry and place heights, speed."""
  u = lambda lo_hi: float(rng.uniform(*lo_hi))
  return dataclasses.replace(config, hover_height=u(HOVER_HEIGHT_M), carry_z=u(CARRY_Z_M), place_z=u(PLACE_Z_M),
                             pos_gain=u(POS_GAIN))


TASK = Task(name="square", env_name=ENV_NAME, horizon=HORIZON, object_dim=OBJECT_DIM,
            expert=pick_place.make_expert(SCENE, EXPERT_CONFIG, vary))
