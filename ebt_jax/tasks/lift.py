"""robomimic Lift (robosuite ``Lift``): lift the cube off the table.

Success (robosuite ``_check_success``): the cube's centre more than 0.04 m above the table top (z > 0.84).
Observation ``object`` [10]: cube position (m), cube quaternion (x, y, z, w), cube position - eef
position (m). The scripted expert is ``ebt_jax.envs.lift_expert`` (approach, descend, grasp, lift),
which MJX shares (``ebt_jax.collect_mjx``); this module adds what the demo styles need.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ebt_jax.envs import lift_expert
from ebt_jax.tasks.task import Expert, Task

# Ranges of the ``varied`` style's per-demo draws (metres; gain: action per metre).
HOVER_HEIGHT_M = (0.03, 0.10)
GRASP_HEIGHT_M = (-0.012, 0.008)
POS_GAIN = (6.0, 14.0)


def vary(config: lift_expert.ExpertConfig, rng: np.random.Generator) -> lift_expert.ExpertConfig:
  """The ``varied`` style's draws: hover height, grasp height, position gain (speed), in this order."""
  u = lambda lo_hi: float(rng.uniform(*lo_hi))
  return dataclasses.replace(config, hover_height=u(HOVER_HEIGHT_M), grasp_height=u(GRASP_HEIGHT_M), pos_gain=u(POS_GAIN))


def approach_point(config: lift_expert.ExpertConfig, obs, xp=np):
  """[3] above the cube at the hover height (m)."""
  return obs["object"][:3] + xp.asarray([0.0, 0.0, config.hover_height])


TASK = Task(
    name="lift", env_name="Lift", horizon=400, object_dim=10,
    expert=Expert(config=lift_expert.ExpertConfig(), init=lift_expert.expert_init, step=lift_expert.expert_step,
                  approach_point=approach_point, vary=vary),
)
