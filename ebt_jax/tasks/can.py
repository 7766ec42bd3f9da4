"""robomimic Can (robosuite ``PickPlaceCan``): pick the can out of bin 1 and place it in its compartment of bin 2.

Scene (robosuite 1.5.2, measured): the can (radius 0.025 m, ~0.08 m tall, body at z 0.86 when standing)
starts anywhere in bin 1 (centre (0.10, -0.25, 0.80); x in [-0.02, 0.22], y in [-0.42, -0.08], any yaw).
The bins' walls and bin 2's dividers reach z 0.90. Success (robosuite ``_check_success``): the can's
body inside the +x/+y quarter of bin 2 (x in (0.10, 0.295), y in (0.28, 0.525), z in (0.80, 0.90)) and
the gripper more than ~0.042 m from it (released).

Observation ``object`` [14] (robosuite 1.5 order): can position in the eef frame [0:3] (m), can
orientation in the eef frame [3:7], can position in the world [7:10] (m), can quaternion [10:14]
(x, y, z, w). The relative entries are zero in an episode's first observation (robosuite's observable
cache is empty after a reset), so the expert reads the world entries only.

Scripted expert: ``pick_place`` with the can's centre as grasp and held point; the can is a cylinder, so
the gripper keeps its heading. It places the can 4 and 5 cm from the compartment's centre towards the
robot: pointing down, the Panda does not reach the centre at carrying height (measured: it stalls at
x 0.164, y 0.382).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ebt_jax.tasks import pick_place
from ebt_jax.tasks.task import Task

ENV_NAME = "PickPlaceCan"
HORIZON = 400  # robomimic's rollout horizon for can/ph (robomimic/__init__.py DATASET_REGISTRY)
OBJECT_DIM = 14
CAN_POS = slice(7, 10)
TARGET_XY = (0.1975, 0.4025)  # the can's compartment centre in bin 2 (robosuite target_bin_placements[3])

SCENE = pick_place.Scene(
    grasp_point=lambda obs, xp=np: obs["object"][CAN_POS],
    held_point=lambda obs, xp=np: obs["object"][CAN_POS],
    place_xy=lambda obs, xp=np: xp.asarray(TARGET_XY),
)
EXPERT_CONFIG = pick_place.ExpertConfig(grasp_height=0.012, carry_z=1.04, place_z=0.94, place_offset=(-0.04, -0.05))

# Ranges of the ``varied`` style's per-demo draws (metres; gain: action per metre). The place offsets
# keep the can inside its compartment (x in (0.135, 0.265), y > 0.315 for its 0.025 m radius) and
# within the Panda's top-down reach.
HOVER_HEIGHT_M = (0.05, 0.12)
GRASP_HEIGHT_M = (0.0, 0.025)
CARRY_Z_M = (1.0, 1.08)
PLACE_Z_M = (0.92, 0.97)
PLACE_DX_M = (-0.06, -0.02)
PLACE_DY_M = (-0.075, -0.035)
POS_GAIN = (6.0, 14.0)


def vary(config: pick_place.ExpertConfig, rng: np.random.Generator) -> pick_place.ExpertConfig:
  """The ``varied`` style's draws: hover, grasp, carry and place heights, place spot, speed."""
  u = lambda lo_hi: float(rng.uniform(*lo_hi))
  return dataclasses.replace(config, hover_height=u(HOVER_HEIGHT_M), grasp_height=u(GRASP_HEIGHT_M),
                             carry_z=u(CARRY_Z_M), place_z=u(PLACE_Z_M), place_offset=(u(PLACE_DX_M), u(PLACE_DY_M)),
                             pos_gain=u(POS_GAIN))


TASK = Task(name="can", env_name=ENV_NAME, horizon=HORIZON, object_dim=OBJECT_DIM,
            expert=pick_place.make_expert(SCENE, EXPERT_CONFIG, vary))
