"""robosuite's Lift MJCF, edited only as far as MJX needs: the physics model of ``mjx_lift``.

The model is exported from a live robosuite Lift environment (Panda, default gripper, table arena,
``env.model.get_xml()``) and edited with ``mujoco.MjSpec``. Every edit, and why:

1. **Visual geoms removed** (``contype == conaffinity == 0``): they never collide and MJX would still
   carry them. Bodies keep their explicit ``<inertial>`` so masses and inertias are unchanged
   (``tests/test_mjx_lift.py`` checks ``body_mass``/``body_inertia`` against robosuite's model).
2. **Collisions of geoms that cannot touch the cube or the table top removed**: the Panda's link 0-7
   collision meshes and the fixed mount's pedestal/feet/controller box. In Lift the only contacts are
   gripper (hand, finger meshes, finger pads) against the cube and the table, and the cube against the
   table; ``mjx.put_model`` also rejects robosuite's cylinder-vs-mesh pairs (pedestal vs arm), so
   these geoms must go. They are deleted (they carry no mass: see 1).
3. **Floor collides with the cube only** (floor ``contype = 2, conaffinity = 0``, cube
   ``conaffinity = 1 | 2``): the floor keeps catching a cube pushed off the table, but the gripper
   against the floor (1 m below the table top) is not checked. All other collision bits are
   robosuite's, so the remaining 15 geom pairs are exactly robosuite's pairs among the kept geoms:
   table-{cube, hand, finger meshes, pads}, floor-cube, cube-{hand, finger meshes, pads},
   pad-pad and pad-other-finger mesh.
4. **Sensors, textures and the meshes no kept geom uses removed** (the gripper force-torque sensor is
   not a low-dim observation; textures are ~20 MB of images).

Solver options (timestep 0.002 s, Euler, elliptic cones, impratio 20, Newton 100/50 iterations,
air density 1.2 and viscosity 2e-5), joint damping/armature/friction loss, actuators and contact
parameters are robosuite's, untouched.

The cube's half-sizes are drawn per episode by robosuite; this model carries the sizes of the episode
it was exported from, and ``mjx_lift`` overrides the cube's size-dependent fields per environment.
"""

from __future__ import annotations

import dataclasses
import functools
import re

import mujoco
import numpy as np

# Names in robosuite's Lift model (robosuite 1.5, Panda with its default gripper).
CUBE_BODY = "cube_main"
CUBE_GEOM = "cube_g0"
CUBE_JOINT = "cube_joint0"
FLOOR_GEOM = "floor"
GRIP_SITE = "gripper0_right_grip_site"  # robot0_eef_pos, and the OSC reference point
EEF_BODY = "robot0_right_hand"  # robot0_eef_quat (a *body* quaternion in robosuite <= 1.5)
BASE_BODY = "robot0_base"  # OSC input frame ("base")
_NO_COLLISION_PREFIXES = ("robot0_link", "fixed_mount0_")


@dataclasses.dataclass(frozen=True)
class LiftModel:
  """The edited MuJoCo model plus the ids and constants ``mjx_lift`` needs.

  Attributes:
    mj_model: the MJX-ready ``mujoco.MjModel``.
    cube_body, cube_geom, grip_site, eef_body: ids in ``mj_model``.
    cube_qpos_adr: index of the cube's free joint in qpos (7 values: pos, quat w-x-y-z).
    cube_dof_adr: index of its 6 dofs in qvel.
    cube_density: kg/m^3 (robosuite's BoxObject default, 1000).
    base_pos: [3] robot base position (m, world), the OSC frame origin.
    base_rot: [3, 3] robot base orientation (world from base).
    init_qpos: [7] robot's default arm joint pose (rad) before reset noise.
    gripper_init_qpos: [2] finger joint positions at reset (m).
    table_top_z: table surface height (m).
    robosuite_xml: robosuite's unedited model XML (what robomimic stores as a demo's ``model_file``).
  """
  mj_model: mujoco.MjModel
  cube_body: int
  cube_geom: int
  grip_site: int
  eef_body: int
  cube_qpos_adr: int
  cube_dof_adr: int
  cube_density: float
  base_pos: np.ndarray
  base_rot: np.ndarray
  init_qpos: np.ndarray
  gripper_init_qpos: np.ndarray
  table_top_z: float
  robosuite_xml: str


def robosuite_lift_env():
  """A headless robosuite Lift env with robomimic's settings (see ``robosuite_env.lift_env_args``)."""
  from ebt_jax.envs import robosuite_env  # pylint: disable=g-import-not-at-top
  return robosuite_env.make_env(robosuite_env.lift_env_args())


def edit_spec(spec: mujoco.MjSpec) -> mujoco.MjSpec:
  """Applies the edits listed in the module docstring to robosuite's Lift spec, in place."""
  for geom in list(spec.geoms):
    visual = geom.contype == 0 and geom.conaffinity == 0
    if visual or geom.name.startswith(_NO_COLLISION_PREFIXES):
      spec.delete(geom)
  spec.geom(FLOOR_GEOM).contype, spec.geom(FLOOR_GEOM).conaffinity = 2, 0
  spec.geom(CUBE_GEOM).conaffinity = 1 | 2
  for sensor in list(spec.sensors):
    spec.delete(sensor)
  for material in spec.materials:
    material.textures = [""] * len(material.textures)
  for texture in list(spec.textures):
    spec.delete(texture)
  used = {g.meshname for g in spec.geoms if g.type == mujoco.mjtGeom.mjGEOM_MESH}
  for mesh in list(spec.meshes):
    if mesh.name not in used:
      spec.delete(mesh)
  return spec


def build(env=None) -> LiftModel:
  """Exports robosuite's Lift model from ``env`` (a fresh one if None) and edits it for MJX.

  Args:
    env: a robosuite Lift env (after a reset); its current cube size becomes the model's default.

  Raises:
    ValueError: if the env is not robosuite's single-Panda Lift (a named body/geom/site is missing).
  """
  env = env if env is not None else robosuite_lift_env()
  original = env.sim.model._model  # pylint: disable=protected-access
  xml = env.model.get_xml()
  spec = edit_spec(mujoco.MjSpec.from_string(xml))
  m = spec.compile()
  ids = {}
  for kind, name in (("body", CUBE_BODY), ("geom", CUBE_GEOM), ("site", GRIP_SITE), ("body", EEF_BODY),
                     ("body", BASE_BODY), ("joint", CUBE_JOINT)):
    obj_id = mujoco.mj_name2id(m, getattr(mujoco.mjtObj, f"mjOBJ_{kind.upper()}"), name)
    if obj_id < 0:
      raise ValueError(f"robosuite Lift model has no {kind} named '{name}'")
    ids[name] = obj_id
  if m.nq != original.nq or m.nv != original.nv or m.nu != original.nu:
    raise ValueError("editing changed the model's degrees of freedom or actuators")
  d = mujoco.MjData(m)
  mujoco.mj_forward(m, d)
  cube_geom = ids[CUBE_GEOM]
  cube_body = ids[CUBE_BODY]
  volume = 8.0 * float(np.prod(m.geom_size[cube_geom]))
  robot = env.robots[0]
  return LiftModel(
      mj_model=m,
      cube_body=cube_body,
      cube_geom=cube_geom,
      grip_site=ids[GRIP_SITE],
      eef_body=ids[EEF_BODY],
      cube_qpos_adr=int(m.jnt_qposadr[ids[CUBE_JOINT]]),
      cube_dof_adr=int(m.jnt_dofadr[ids[CUBE_JOINT]]),
      cube_density=float(m.body_mass[cube_body]) / volume,
      base_pos=np.array(d.xpos[ids[BASE_BODY]]),
      base_rot=np.array(d.xmat[ids[BASE_BODY]]).reshape(3, 3),
      init_qpos=np.array(robot.init_qpos, dtype=np.float64),
      gripper_init_qpos=np.array(robot.gripper["right"].init_qpos, dtype=np.float64),
      table_top_z=float(env.model.mujoco_arena.table_offset[2]),
      robosuite_xml=xml,
  )


def xml_with_cube_size(xml: str, half_size) -> str:
  """robosuite's Lift XML with the cube's collision and visual box half-sizes set to ``half_size`` [3] (m).

  Raises:
    ValueError: if the XML has no ``cube_g0`` box geom.
  """
  size = " ".join(repr(float(h)) for h in half_size)
  pattern = re.compile(r'(<geom\b[^>]*?\bsize=")[^"]*("[^>]*\bname="%s(?:_vis)?")' % CUBE_GEOM)
  out, count = pattern.subn(lambda m: m.group(1) + size + m.group(2), xml)
  if count == 0:
    raise ValueError(f"robosuite Lift XML has no geom named '{CUBE_GEOM}' with a size attribute")
  return out


@functools.lru_cache(maxsize=1)
def default_model() -> LiftModel:
  """``build()`` of a fresh robosuite Lift env, cached per process (building takes ~2 s)."""
  return build()
