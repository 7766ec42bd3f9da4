"""robosuite Lift in MJX: a pure-function environment (mujoco_playground / brax style).

  env = MjxLift.create()
  state = jax.jit(env.reset)(rng)            # or env.reset_to(qpos, cube_half_size)
  state = jax.jit(env.step)(state, action)   # action [7]: OSC_POSE delta (6) + gripper, in [-1, 1]

Everything is a pure function of an explicit ``State`` (a ``flax.struct`` dataclass); ``reset`` and
``step`` ``vmap`` over a batch of states. The task is robosuite's, to the substep:

* physics: ``lift_mjcf``'s edit of robosuite's own Lift model; one control step (20 Hz, 0.05 s) is
  25 substeps of 0.002 s, each ``mj_step1`` (positions, velocities) -> OSC torques -> ``mj_step2``
  (actuation, acceleration, constraint solve, Euler), robosuite's ``lite_physics``. So, as in
  robosuite, the body and site poses in the observation are those of the last substep's ``mj_step1``
  (one substep stale) while joint positions are fresh.
* control: ``osc`` (OSC_POSE delta in the base frame, goal set at the first substep) and the Panda
  gripper's stateful action mapping.
* observations (``observation``): robosuite's low-dim keys with robomimic's ``object`` name.
* reset (``reset``): robosuite Lift's distribution: arm default pose + N(0, 0.02^2) rad joint noise,
  fingers at their default opening, cube half-sizes U[0.020, 0.022]^3 m, cube centre uniform in
  +-0.03 m around the table centre at 0.01 m above the table top, yaw uniform in [0, 2 pi).
* success (``success``): cube centre above table top + 0.04 m (robosuite ``Lift._check_success``).

The cube's size changes per episode in robosuite (the model is reloaded at each reset), so each
``State`` carries its cube half-sizes and ``model_for`` rewrites the cube's size-dependent model
fields (geom size and bounds, body mass, inertia, inverse weights) per environment.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from flax import struct
from mujoco import mjx

from ebt_jax.envs import lift_mjcf, osc

ACTION_DIM = 7
NUM_ARM_JOINTS = 7
CUBE_HALF_SIZE_RANGE = (0.020, 0.022)  # m, robosuite Lift's BoxObject size_min / size_max
CUBE_XY_RANGE = 0.03  # m, UniformRandomSampler x_range / y_range around the table centre
CUBE_Z_OFFSET = 0.01  # m, above the table top
JOINT_NOISE_STD = 0.02  # rad, robosuite initialization_noise "gaussian" magnitude
SUCCESS_HEIGHT = 0.04  # m above the table top


@struct.dataclass
class State:
  """One Lift environment (add a leading batch axis to every leaf for a batch).

  Attributes:
    data: MJX physics data (qpos [16]: 7 arm joints, 2 fingers, cube free joint pos + quat w-x-y-z).
    obs: robomimic low-dim observation dict (see ``observation``).
    cube_half_size: [3] cube half-sizes (m) of this episode.
    initial_joint: [7] initial arm joint pose (rad), the OSC nullspace target.
    gripper_state: [2] Panda gripper action state in [-1, 1] (0 at reset).
    success: [] bool, the task's success at the current state.
    steps: [] int32 control steps taken since reset.
  """
  data: mjx.Data
  obs: dict[str, jax.Array]
  cube_half_size: jax.Array
  initial_joint: jax.Array
  gripper_state: jax.Array
  success: jax.Array
  steps: jax.Array


def _step1(m: mjx.Model, d: mjx.Data) -> mjx.Data:
  """MuJoCo ``mj_step1``: positions (kinematics, inertia, collisions, constraints) and velocities."""
  return mjx.fwd_velocity(m, mjx.fwd_position(m, d))


def _step2(m: mjx.Model, d: mjx.Data) -> mjx.Data:
  """MuJoCo ``mj_step2`` for the Euler integrator: actuation, acceleration, constraint solve, integrate."""
  d = mjx.fwd_acceleration(m, mjx.fwd_actuation(m, d))
  return mjx.euler(m, mjx.solve(m, d))


def _xyzw(quat_wxyz: jax.Array) -> jax.Array:
  return jnp.concatenate([quat_wxyz[1:], quat_wxyz[:1]])


@dataclasses.dataclass(frozen=True)
class MjxLift:
  """The Lift task on an MJX model. Build with ``MjxLift.create()``; methods are pure and jittable.

  Attributes:
    model: the robosuite-derived ``lift_mjcf.LiftModel`` (host-side ids and constants).
    mjx_model: ``mjx.put_model`` of ``model.mj_model``.
    osc_config: controller constants (robosuite's defaults).
    substeps: physics substeps per control step (25: 20 Hz control over 500 Hz physics).
  """
  model: lift_mjcf.LiftModel
  mjx_model: mjx.Model
  osc_config: osc.OSCConfig
  substeps: int

  @classmethod
  def create(cls, model: lift_mjcf.LiftModel | None = None, osc_config: osc.OSCConfig | None = None,
             control_freq: float = 20.0) -> "MjxLift":
    """Builds the env; ``model`` defaults to ``lift_mjcf.default_model()`` (needs robosuite).

    Raises:
      ValueError: if ``1 / control_freq`` is not a whole number of physics timesteps.
    """
    model = model if model is not None else lift_mjcf.default_model()
    substeps = (1.0 / control_freq) / model.mj_model.opt.timestep
    if abs(substeps - round(substeps)) > 1e-6:
      raise ValueError(f"control period 1/{control_freq} s is not a multiple of the timestep "
                       f"{model.mj_model.opt.timestep} s")
    return cls(model=model, mjx_model=mjx.put_model(model.mj_model), osc_config=osc_config or osc.OSCConfig(),
               substeps=int(round(substeps)))

  # ---------------------------------------------------------------- per-environment cube
  def model_for(self, cube_half_size: jax.Array) -> mjx.Model:
    """The MJX model with the cube resized: [3] half-sizes (m) -> model with its geom size, bounding
    radius and box, body mass (density x volume), diagonal inertia, subtree mass and inverse weights
    (``mj_setConst`` values of a free box: 1/m and the mean of 1/I) rewritten."""
    lm, m = self.model, self.mjx_model
    g, b, dof = lm.cube_geom, lm.cube_body, lm.cube_dof_adr
    h = cube_half_size
    mass = lm.cube_density * 8.0 * h[0] * h[1] * h[2]
    sq = h * h
    inertia = mass / 3.0 * jnp.stack([sq[1] + sq[2], sq[0] + sq[2], sq[0] + sq[1]])
    inv_rot = jnp.mean(1.0 / inertia)
    invweight = jnp.stack([1.0 / mass, inv_rot])
    aabb = m.geom_aabb[g].at[3:].set(h)
    return m.replace(
        geom_size=m.geom_size.at[g].set(h),
        geom_rbound=m.geom_rbound.at[g].set(jnp.linalg.norm(h)),
        geom_aabb=m.geom_aabb.at[g].set(aabb),
        body_mass=m.body_mass.at[b].set(mass),
        body_inertia=m.body_inertia.at[b].set(inertia),
        body_subtreemass=m.body_subtreemass.at[b].set(mass).at[0].add(mass - m.body_mass[b]),
        body_invweight0=m.body_invweight0.at[b].set(invweight),
        dof_invweight0=m.dof_invweight0.at[dof:dof + 3].set(1.0 / mass).at[dof + 3:dof + 6].set(inv_rot),
    )

  # ---------------------------------------------------------------- observations, success
  def observation(self, d: mjx.Data) -> dict[str, jax.Array]:
    """robomimic low-dim observation dict from MJX data (robosuite's conventions).

    Keys: ``object`` [10] = cube pos (m), cube quat (x, y, z, w), cube pos - eef pos;
    ``robot0_eef_pos`` [3] grip site (m, world); ``robot0_eef_quat`` [4] right-hand *body*
    orientation (x, y, z, w), as robosuite <= 1.5; ``robot0_eef_quat_site`` [4] the grip site's;
    ``robot0_gripper_qpos`` [2], ``robot0_gripper_qvel`` [2] (m, m/s); ``robot0_joint_pos`` [7],
    ``robot0_joint_pos_cos`` [7], ``robot0_joint_pos_sin`` [7] (rad), ``robot0_joint_vel`` [7] (rad/s).
    """
    lm = self.model
    eef_pos = d.site_xpos[lm.grip_site]
    cube_pos = d.xpos[lm.cube_body]
    cube_quat = _xyzw(d.xquat[lm.cube_body])
    site_quat = mjx_mat2quat(d.site_xmat[lm.grip_site].reshape(3, 3))
    q = d.qpos[:NUM_ARM_JOINTS]
    return {
        "object": jnp.concatenate([cube_pos, cube_quat, cube_pos - eef_pos]),
        "robot0_eef_pos": eef_pos,
        "robot0_eef_quat": _xyzw(d.xquat[lm.eef_body]),
        "robot0_eef_quat_site": _xyzw(site_quat),
        "robot0_gripper_qpos": d.qpos[NUM_ARM_JOINTS:NUM_ARM_JOINTS + 2],
        "robot0_gripper_qvel": d.qvel[NUM_ARM_JOINTS:NUM_ARM_JOINTS + 2],
        "robot0_joint_pos": q,
        "robot0_joint_pos_cos": jnp.cos(q),
        "robot0_joint_pos_sin": jnp.sin(q),
        "robot0_joint_vel": d.qvel[:NUM_ARM_JOINTS],
    }

  def success(self, d: mjx.Data) -> jax.Array:
    """[] bool: cube centre height > table top + 0.04 m (robosuite ``Lift._check_success``)."""
    return d.xpos[self.model.cube_body, 2] > self.model.table_top_z + SUCCESS_HEIGHT

  # ---------------------------------------------------------------- reset
  def reset_to(self, qpos: jax.Array, cube_half_size: jax.Array) -> State:
    """State at rest at ``qpos`` [16] with a cube of half-sizes [3] (m); e.g. robosuite's reset state.

    The arm's nullspace target is ``qpos[:7]`` and the gripper state 0, as after a robosuite reset.
    """
    m = self.model_for(cube_half_size)
    d = mjx.make_data(m)
    d = d.replace(qpos=jnp.asarray(qpos, d.qpos.dtype))
    d = _step1(m, d)  # robosuite calls sim.forward() at the end of a reset
    return State(data=d, obs=self.observation(d), cube_half_size=jnp.asarray(cube_half_size, d.qpos.dtype),
                 initial_joint=d.qpos[:NUM_ARM_JOINTS], gripper_state=jnp.zeros(2, d.qpos.dtype),
                 success=self.success(d), steps=jnp.zeros((), jnp.int32))

  def sample_initial_qpos(self, rng: jax.Array) -> tuple[jax.Array, jax.Array]:
    """robosuite Lift's reset distribution -> (qpos [16], cube_half_size [3]); see the module docstring."""
    lm = self.model
    k_noise, k_size, k_xy, k_yaw = jax.random.split(rng, 4)
    arm = jnp.asarray(lm.init_qpos) + JOINT_NOISE_STD * jax.random.normal(k_noise, (NUM_ARM_JOINTS,))
    half = jax.random.uniform(k_size, (3,), minval=CUBE_HALF_SIZE_RANGE[0], maxval=CUBE_HALF_SIZE_RANGE[1])
    xy = jax.random.uniform(k_xy, (2,), minval=-CUBE_XY_RANGE, maxval=CUBE_XY_RANGE)
    yaw = jax.random.uniform(k_yaw, (), minval=0.0, maxval=2 * jnp.pi)
    cube_pos = jnp.concatenate([xy, jnp.array([lm.table_top_z + CUBE_Z_OFFSET]) + half[2:]])
    cube_quat = jnp.stack([jnp.cos(yaw / 2), 0.0, 0.0, jnp.sin(yaw / 2)])
    qpos = jnp.concatenate([arm, jnp.asarray(lm.gripper_init_qpos), cube_pos, cube_quat])
    return qpos.astype(jnp.float32), half.astype(jnp.float32)

  def reset(self, rng: jax.Array) -> State:
    """A random initial state (robosuite Lift's distribution, drawn from ``rng``)."""
    return self.reset_to(*self.sample_initial_qpos(rng))

  # ---------------------------------------------------------------- step
  def step(self, state: State, action: jax.Array) -> State:
    """One 20 Hz control step.

    Args:
      state: the current ``State``.
      action: [7] float: OSC_POSE delta [6] in [-1, 1] (clipped; 1 = 0.05 m or 0.5 rad in the base
        frame) and gripper [1] (> 0 closes, < 0 opens, 0 holds).

    Returns:
      The next ``State`` (``steps`` + 1, observation and success of the new state).
    """
    lm, cfg = self.model, self.osc_config
    m = self.model_for(state.cube_half_size)
    arm_dofs = jnp.arange(NUM_ARM_JOINTS)
    torque_limit = jnp.asarray(lm.mj_model.actuator_ctrlrange[:NUM_ARM_JOINTS, 1], state.data.qpos.dtype)
    grip_range = jnp.asarray(lm.mj_model.actuator_ctrlrange[NUM_ARM_JOINTS:NUM_ARM_JOINTS + 2], state.data.qpos.dtype)
    action = jnp.asarray(action, state.data.qpos.dtype)
    gripper_state = osc.gripper_state(state.gripper_state, action[6], cfg)
    grip_ctrl = osc.gripper_ctrl(gripper_state, grip_range)

    d = _step1(m, state.data)
    goal = osc.set_goal(d.site_xpos[lm.grip_site], d.site_xmat[lm.grip_site].reshape(3, 3), action[:6],
                        jnp.asarray(lm.base_rot, d.qpos.dtype), cfg)

    def substep(_, d):
      d = _step1(m, d)  # recomputed at the first substep: a pure function of (qpos, qvel)
      tau = osc.torques(m, d, goal, state.initial_joint, lm.grip_site, arm_dofs, torque_limit, cfg)
      return _step2(m, d.replace(ctrl=jnp.concatenate([tau, grip_ctrl])))

    d = jax.lax.fori_loop(0, self.substeps, substep, d)
    return state.replace(data=d, obs=self.observation(d), gripper_state=gripper_state, success=self.success(d),
                         steps=state.steps + 1)


def mjx_mat2quat(mat: jax.Array) -> jax.Array:
  """[3, 3] rotation matrix -> [4] unit quaternion (w, x, y, z) with w >= 0 (MuJoCo ``mju_mat2Quat``)."""
  m00, m11, m22 = mat[0, 0], mat[1, 1], mat[2, 2]
  trace = m00 + m11 + m22
  candidates = jnp.stack([
      jnp.stack([1.0 + trace, mat[2, 1] - mat[1, 2], mat[0, 2] - mat[2, 0], mat[1, 0] - mat[0, 1]]),
      jnp.stack([mat[2, 1] - mat[1, 2], 1.0 + m00 - m11 - m22, mat[0, 1] + mat[1, 0], mat[0, 2] + mat[2, 0]]),
      jnp.stack([mat[0, 2] - mat[2, 0], mat[0, 1] + mat[1, 0], 1.0 - m00 + m11 - m22, mat[1, 2] + mat[2, 1]]),
      jnp.stack([mat[1, 0] - mat[0, 1], mat[0, 2] + mat[2, 0], mat[1, 2] + mat[2, 1], 1.0 - m00 - m11 + m22]),
  ])
  best = jnp.argmax(jnp.stack([trace, m00, m11, m22]))
  q = candidates[best]
  q = q / jnp.linalg.norm(q)
  return q * jnp.where(q[0] < 0, -1.0, 1.0)


def initial_state_of(env) -> dict[str, Any]:
  """A robosuite Lift env's current (reset) state as ``reset_to`` arguments: {qpos [16], cube_half_size [3]}."""
  sim = env.sim
  geom = sim.model.geom_name2id(lift_mjcf.CUBE_GEOM)
  return {"qpos": np.array(sim.data.qpos, np.float64), "cube_half_size": np.array(sim.model.geom_size[geom], np.float64)}
