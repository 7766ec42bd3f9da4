"""robosuite's OSC_POSE delta controller and Panda gripper action mapping, as pure JAX functions.

Reimplements, for MJX data, what robosuite 1.5 runs in ``controllers/parts/arm/osc.py`` (with its
default ``osc_pose.json``), ``utils/control_utils.py`` and ``models/grippers/panda_gripper.py``:

* At each policy (control) step, ``set_goal``: the arm action [6] is clipped to [-1, 1] and scaled to
  +-0.05 m and +-0.5 rad; the goal is the *achieved* grip-site pose moved by that delta, expressed in
  the robot base frame (``input_ref_frame = "base"``, ``goal_update_mode = "achieved"``), no
  interpolator.
* At each 500 Hz physics substep, ``torques``: operational-space control with kp = 150,
  kd = 2 sqrt(kp) (damping ratio 1), position and orientation decoupled (``uncouple_pos_ori``):
  tau = J^T [Lambda_pos F; Lambda_ori T] + qfrc_bias + N^T M (10 (q0 - q) - 2 sqrt(10) qdot), where
  Lambda_* = pinv(J_* M^-1 J_*^T), N = I - (M^-1 J^T Lambda) J and q0 is the episode's initial
  (noisy) joint pose; clipped to the actuators' ctrlrange (+-80 N m joints 1-5, +-12 N m joints 6-7).
* Gripper (``PandaGripper.format_action``): a state s in [-1, 1]^2 moves by [-0.2, +0.2] * sign(a)
  each control step (reset to 0), and ``SimpleGripController`` maps it to the two finger position
  actuators' ctrl = mid + half_range * s (metres).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
from mujoco import mjx


@dataclasses.dataclass(frozen=True)
class OSCConfig:
  """robosuite's OSC_POSE defaults (``controllers/config/default/parts/osc_pose.json``).

  Attributes:
    kp: stiffness for position (N/m per unit mass) and orientation, all six axes.
    damping_ratio: kd = 2 sqrt(kp) * damping_ratio.
    pos_output_max: metres of goal displacement per unit action.
    rot_output_max: radians of goal rotation per unit action.
    nullspace_kp: joint stiffness of the nullspace pull to the initial pose; kv = 2 sqrt(kp).
    gripper_speed: change of the gripper state per control step (PandaGripper.speed).
  """
  kp: float = 150.0
  damping_ratio: float = 1.0
  pos_output_max: float = 0.05
  rot_output_max: float = 0.5
  nullspace_kp: float = 10.0
  gripper_speed: float = 0.2


class Goal(NamedTuple):
  """The OSC target set at a policy step, in the world frame.

  Attributes:
    pos: [3] desired grip-site position (m).
    rot: [3, 3] desired grip-site orientation (world from site).
  """
  pos: jax.Array
  rot: jax.Array


def axis_angle_to_matrix(rotvec: jax.Array) -> jax.Array:
  """[3] axis * angle (rad) -> [3, 3] rotation matrix (robosuite ``axisangle2quat`` then ``quat2mat``).

  Exact identity at zero rotation; differentiable elsewhere (Rodrigues' formula).
  """
  angle = jnp.linalg.norm(rotvec)
  safe = jnp.where(angle > 0, angle, 1.0)
  axis = jnp.where(angle > 0, rotvec / safe, jnp.zeros(3))
  k = jnp.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
  return jnp.eye(3) + jnp.sin(angle) * k + (1.0 - jnp.cos(angle)) * (k @ k)


def orientation_error(desired: jax.Array, current: jax.Array) -> jax.Array:
  """[3, 3], [3, 3] rotation matrices -> [3] axis-angle-like error (robosuite ``orientation_error``)."""
  return 0.5 * jnp.sum(jnp.cross(current.T, desired.T), axis=0)


def set_goal(site_pos: jax.Array, site_rot: jax.Array, arm_action: jax.Array, base_rot: jax.Array,
             cfg: OSCConfig) -> Goal:
  """OSC_POSE delta goal at a policy step.

  Args:
    site_pos: [3] grip-site position (m, world) after ``mj_step1`` of the step's first substep.
    site_rot: [3, 3] grip-site orientation.
    arm_action: [6] normalised (dx, dy, dz, drx, dry, drz); values outside [-1, 1] are clipped.
    base_rot: [3, 3] robot base orientation (deltas are given in the base frame).
    cfg: controller constants.

  Returns:
    The world-frame ``Goal``: base-frame goal = achieved pose + delta, mapped back to the world.
  """
  delta = jnp.clip(arm_action, -1.0, 1.0)
  dpos = delta[:3] * cfg.pos_output_max
  drot = axis_angle_to_matrix(delta[3:] * cfg.rot_output_max)
  # Base-frame goal R_b^T (p - p_b) + dpos, back in the world frame: p + R_b dpos.
  pos = site_pos + base_rot @ dpos
  rot = base_rot @ drot @ base_rot.T @ site_rot
  return Goal(pos=pos, rot=rot)


def torques(m: mjx.Model, d: mjx.Data, goal: Goal, initial_joint: jax.Array, site_id: int,
            arm_dofs: jax.Array, torque_limit: jax.Array, cfg: OSCConfig) -> jax.Array:
  """OSC_POSE joint torques [7] (N m) for the arm at the current substep (after ``mj_step1``).

  Args:
    m, d: MJX model and data with positions and velocities forwarded (kinematics, mass matrix,
      bias forces current).
    goal: the step's ``Goal``.
    initial_joint: [7] episode's initial arm joint pose (rad), the nullspace target.
    site_id: grip-site id (the controlled point).
    arm_dofs: [7] int dof indices of the arm joints.
    torque_limit: [7] actuator ctrlrange bound (N m); torques are clipped to +-limit.
    cfg: controller constants.
  """
  pos = d.site_xpos[site_id]
  rot = d.site_xmat[site_id].reshape(3, 3)
  jacp, jacr = mjx.jac(m, d, pos, m.site_bodyid[site_id])  # [nv, 3] each
  lin_vel, ang_vel = jacp.T @ d.qvel, jacr.T @ d.qvel
  j_pos, j_ori = jacp[arm_dofs].T, jacr[arm_dofs].T  # [3, 7]
  j_full = jnp.concatenate([j_pos, j_ori])  # [6, 7]
  mass = mjx.full_m(m, d)[arm_dofs][:, arm_dofs]  # [7, 7]
  kp = cfg.kp
  kd = 2.0 * jnp.sqrt(kp) * cfg.damping_ratio
  force = kp * (goal.pos - pos) - kd * lin_vel
  torque = kp * orientation_error(goal.rot, rot) - kd * ang_vel
  mass_inv = jnp.linalg.inv(mass)
  lambda_full = jnp.linalg.pinv(j_full @ mass_inv @ j_full.T)
  lambda_pos = jnp.linalg.pinv(j_pos @ mass_inv @ j_pos.T)
  lambda_ori = jnp.linalg.pinv(j_ori @ mass_inv @ j_ori.T)
  wrench = jnp.concatenate([lambda_pos @ force, lambda_ori @ torque])
  tau = j_full.T @ wrench + d.qfrc_bias[arm_dofs]
  j_bar = mass_inv @ j_full.T @ lambda_full
  nullspace = jnp.eye(j_full.shape[1]) - j_bar @ j_full
  q, qd = d.qpos[arm_dofs], d.qvel[arm_dofs]
  kv = 2.0 * jnp.sqrt(cfg.nullspace_kp)
  tau = tau + nullspace.T @ (mass @ (cfg.nullspace_kp * (initial_joint - q) - kv * qd))
  return jnp.clip(tau, -torque_limit, torque_limit)


def gripper_state(state: jax.Array, gripper_action: jax.Array, cfg: OSCConfig) -> jax.Array:
  """PandaGripper.format_action: state [2] in [-1, 1], action scalar (> 0 closes) -> new state [2]."""
  return jnp.clip(state + jnp.array([-1.0, 1.0]) * cfg.gripper_speed * jnp.sign(gripper_action), -1.0, 1.0)


def gripper_ctrl(state: jax.Array, ctrl_range: jax.Array) -> jax.Array:
  """SimpleGripController: state [2] -> finger actuator targets [2] (m), ctrl_range [2, 2] (low, high)."""
  mid = 0.5 * (ctrl_range[:, 1] + ctrl_range[:, 0])
  half = 0.5 * (ctrl_range[:, 1] - ctrl_range[:, 0])
  return jnp.clip(mid + half * state, ctrl_range[:, 0], ctrl_range[:, 1])
