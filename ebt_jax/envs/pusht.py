"""Push-T in gym-pusht (pymunk physics): observations, vectorised env construction, exact state setting.

The task (Diffusion Policy, Chi et al. 2023): a circular agent (radius 15 px) pushes a T-shaped block
(120 x 120 px, two rectangles) onto a fixed goal pose (x 256, y 256, angle pi/4) in a 512 x 512 px
plane. Actions are absolute target positions of the agent in pixels, tracked by a PD controller
(kp 100, kv 20) over 10 physics steps of 0.01 s, so one env step is 0.1 s (10 Hz). The env's
``coverage`` info is the fraction of the goal's area covered by the block (shapely polygons).

Observation (``environment_state_agent_pos``, gym-pusht's low-dim observation type):

* ``environment_state`` [16] px: the 8 corners of the T's two rectangles in world coordinates,
  ``R(angle) @ corner + position`` (gym-pusht's ``get_keypoints``). Unlike the raw block angle, it has
  no wrap-around at 0 / 2 pi (91 of the 206 human demos cross it).
* ``agent_pos`` [2] px.

The Diffusion-Policy replay buffer stores ``data/state`` = (agent x, y, block x, y, angle mod 2 pi);
``observations_from_state`` computes the observation above from it, so training sees exactly what the
live env returns (``tests/test_pusht.py`` checks both against each other on dataset states).
"""

from __future__ import annotations

import functools
import os
from typing import Mapping

import numpy as np

ENV_ID = "gym_pusht/PushT-v0"
OBS_TYPE = "environment_state_agent_pos"
IMAGE_OBS_TYPE = "pixels_agent_pos"  # the image policies': 96x96 RGB frame + agent position
IMAGE_KEY = "img"  # the replay buffer's frames (data/img); gym-pusht calls its frame "pixels"
SUCCESS_COVERAGE = 0.95  # the Diffusion Policy protocol: success = max coverage >= 0.95
CONTROL_HZ = 10  # gym-pusht: one env step = 10 physics steps of 0.01 s

# The T's corners in the block frame (px), in the order pymunk's ``Poly.get_vertices`` returns them for
# gym-pusht's ``add_tee(scale=30, length=4)``: the 120 x 30 bar, then the 30 x 90 stem.
T_CORNERS = np.array([[-60.0, 0.0], [60.0, 0.0], [60.0, 30.0], [-60.0, 30.0],
                      [-15.0, 30.0], [15.0, 30.0], [15.0, 120.0], [-15.0, 120.0]])


def block_keypoints(block_pose: np.ndarray) -> np.ndarray:
  """The T's 8 corners in world pixels, flattened as gym-pusht's ``environment_state``.

  Args:
    block_pose: [..., 3] (x px, y px, angle rad): the block body's position and angle.

  Returns:
    [..., 16] float64 (x0, y0, x1, y1, ...).
  """
  pose = np.asarray(block_pose, np.float64)
  c, s = np.cos(pose[..., 2:3]), np.sin(pose[..., 2:3])
  x = c * T_CORNERS[:, 0] - s * T_CORNERS[:, 1] + pose[..., 0:1]
  y = s * T_CORNERS[:, 0] + c * T_CORNERS[:, 1] + pose[..., 1:2]
  return np.stack([x, y], axis=-1).reshape(pose.shape[:-1] + (16,))


def observations_from_state(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """The env's low-dim observation from the replay buffer's ``state`` array.

  Args:
    arrays: a mapping with ``"state"``: [N, 5] (agent x, y, block x, y px; block angle rad).

  Returns:
    ``{"environment_state": [N, 16], "agent_pos": [N, 2]}`` float64, the keys and values of
    gym-pusht's ``environment_state_agent_pos`` observation for those states.

  Raises:
    ValueError: if ``state`` is not [N, 5].
  """
  state = np.asarray(arrays["state"], np.float64)
  if state.ndim != 2 or state.shape[1] != 5:
    raise ValueError(f"Push-T 'state' has shape {state.shape}, expected [N, 5] "
                     "(agent x, agent y, block x, block y, block angle)")
  return {"environment_state": block_keypoints(state[:, 2:5]), "agent_pos": state[:, :2]}


def _import_gym_pusht():
  os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")  # gym-pusht imports pygame (drawing only)
  import gymnasium  # pylint: disable=g-import-not-at-top
  import gym_pusht  # pylint: disable=g-import-not-at-top,unused-import  # registers ENV_ID
  return gymnasium


def make_env(max_env_steps: int = 300, obs_type: str = OBS_TYPE):
  """One ``gym_pusht/PushT-v0`` env, truncated after ``max_env_steps``; ``obs_type`` the low-dim
  ``OBS_TYPE`` or ``IMAGE_OBS_TYPE`` (96x96 frames + agent position)."""
  gym = _import_gym_pusht()
  return gym.make(ENV_ID, obs_type=obs_type, max_episode_steps=max_env_steps)


def make_vector_env(num_envs: int, max_env_steps: int = 300, obs_type: str = OBS_TYPE):
  """``num_envs`` Push-T envs stepped together (gymnasium ``SyncVectorEnv``).

  Observations come batched: ``{"environment_state": [N, 16], "agent_pos": [N, 2]}`` (``IMAGE_OBS_TYPE``:
  ``{"pixels": [N, 96, 96, 3] uint8, "agent_pos": [N, 2]}``; ``observation`` renames the frame); ``info``
  holds ``coverage`` [N]. An env that terminated (coverage > 0.95) or was truncated is reset by its next
  ``step`` (gymnasium's next-step autoreset); callers mask finished episodes.
  """
  gym = _import_gym_pusht()
  return gym.vector.SyncVectorEnv([functools.partial(make_env, max_env_steps, obs_type)] * num_envs)


def observation(obs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """gym-pusht observation -> the dataset's keys: the frame ``pixels`` is called ``img`` (``IMAGE_KEY``)."""
  return {IMAGE_KEY if k == "pixels" else k: v for k, v in obs.items()}


def set_state(env, state: np.ndarray) -> None:
  """Puts the agent and block of ``env`` exactly at ``state`` (agent at rest), without a physics step.

  ``state``: [5] (agent x, y, block x, y px, block angle rad), the replay buffer's convention. The
  angle is set before the position: pymunk rotates a body about its centre of gravity, so the other
  order (gym-pusht's ``reset_to_state``) moves the block's origin. The shapes' cached geometry is
  refreshed, so a frame rendered now (``pixels_agent_pos``) shows the new state.
  """
  u = env.unwrapped
  state = np.asarray(state, np.float64)
  u.agent.position = (float(state[0]), float(state[1]))
  u.agent.velocity = (0.0, 0.0)
  u.block.angle = float(state[4])
  u.block.position = (float(state[2]), float(state[3]))
  u.block.velocity = (0.0, 0.0)
  u.block.angular_velocity = 0.0
  # Chipmunk caches each shape's world-frame geometry until the next physics step; the renderer
  # (``space.debug_draw``, the pixel observation) reads that cache, so refresh it now.
  u.space.reindex_shapes_for_body(u.agent)
  u.space.reindex_shapes_for_body(u.block)
