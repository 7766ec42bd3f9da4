"""robosuite environments built from a robomimic dataset's ``env_args``.

robomimic stores, in ``data.attrs["env_args"]``, the JSON needed to rebuild the environment a dataset
was recorded in: ``{"env_name", "type", "env_kwargs": {..., "controller_configs": ...}}``. This module
turns that into a live robosuite (>= 1.5) environment, resets it reproducibly from an integer seed and
extracts the robomimic low-dim observation dict.

Units: positions in metres, quaternions (x, y, z, w) as robosuite, control at ``control_freq`` Hz
(20 Hz for Lift: one env step = 0.05 s = 25 physics substeps of 0.002 s).
"""

from __future__ import annotations

import contextlib
import copy
import functools
from typing import Any, Iterator, Mapping

import numpy as np

# robomimic's environment type tag for robosuite environments (robomimic.envs.env_base.EnvType.ROBOSUITE_TYPE).
ROBOSUITE_ENV_TYPE = 1
CONTROL_HZ = 20  # robomimic's datasets: OSC_POSE policy steps at 20 Hz

# robosuite observation keys that robomimic renames when it writes datasets.
_ROBOMIMIC_KEY_RENAMES = {"object-state": "object"}


def _import_robosuite():
  # robosuite prints warnings about optional robot models at import; import lazily so that the
  # rest of ebt_jax (training on a given HDF5 file) works without paying for it.
  import robosuite  # pylint: disable=g-import-not-at-top
  return robosuite


def robomimic_env_args(env_name: str, horizon: int = 400) -> dict[str, Any]:
  """Environment arguments of robomimic's datasets for robosuite env ``env_name``, in robosuite 1.5 form.

  Panda arm, OSC_POSE delta control in the robot base frame (kp 150, damping ratio 1, inputs in
  [-1, 1] scaled to +-0.05 m and +-0.5 rad per 20 Hz control step), the default parallel-jaw gripper,
  dense object observations, no cameras: robosuite's own ``OSC_POSE`` defaults, the values robomimic's
  Lift, Can, Square and ToolHang datasets were recorded with (their files say ``input_ref_frame``
  "world"; the Panda's base has the world's orientation in all four, so the deltas mean the same).

  Args:
    env_name: robosuite environment, e.g. ``Lift``, ``PickPlaceCan``, ``NutAssemblySquare``, ``ToolHang``.
    horizon: episode length in control steps (robomimic evaluates Lift, Can, Square for 400, ToolHang 700).

  Returns:
    A JSON-serialisable dict with keys ``env_name``, ``type``, ``env_version`` and ``env_kwargs``.
  """
  robosuite = _import_robosuite()
  from robosuite.controllers import load_composite_controller_config, load_part_controller_config  # pylint: disable=g-import-not-at-top
  arm = load_part_controller_config(default_controller="OSC_POSE")
  controller = load_composite_controller_config(controller="BASIC", robot="Panda")
  # Keep only the arm the Panda has (BASIC also lists torso, head, base and legs parts).
  controller["body_parts"] = {"right": dict(arm, gripper={"type": "GRIP"})}
  return {
      "env_name": env_name,
      "type": ROBOSUITE_ENV_TYPE,
      "env_version": robosuite.__version__,
      "env_kwargs": {
          "robots": ["Panda"],
          "controller_configs": controller,
          "control_freq": CONTROL_HZ,
          "horizon": horizon,
          "reward_shaping": False,
          "use_object_obs": True,
          "use_camera_obs": False,
          "has_renderer": False,
          "has_offscreen_renderer": False,
          "ignore_done": True,
      },
  }


def lift_env_args(horizon: int = 400) -> dict[str, Any]:
  """``robomimic_env_args("Lift", horizon)``: robomimic's Lift datasets (the MJX port's reference)."""
  return robomimic_env_args("Lift", horizon)


def make_env(env_args: Mapping[str, Any], horizon: int | None = None, offscreen: bool = False):
  """Builds a headless robosuite env from robomimic ``env_args``.

  Accepts both robosuite <= 1.4 controller configs (a single part config with ``"type": "OSC_POSE"``,
  as in robomimic's v1.5 datasets) and robosuite 1.5 composite configs.

  Args:
    env_args: the parsed ``data.attrs["env_args"]`` JSON.
    horizon: overrides the episode length (control steps) if given.
    offscreen: create the offscreen renderer (MuJoCo's GL context: robosuite picks EGL on Linux unless
      ``MUJOCO_GL`` says osmesa or glx) so that ``render_cameras`` works; camera observables stay off.

  Returns:
    The robosuite environment (camera observations off, ``ignore_done`` on: the caller ends episodes).

  Raises:
    ValueError: if ``env_args`` is not a robosuite env description.
  """
  robosuite = _import_robosuite()
  from robosuite.controllers.composite.composite_controller_factory import refactor_composite_controller_config  # pylint: disable=g-import-not-at-top
  if env_args.get("type", ROBOSUITE_ENV_TYPE) != ROBOSUITE_ENV_TYPE or "env_name" not in env_args:
    raise ValueError(f"env_args does not describe a robosuite env (need type=1 and env_name): {env_args}")
  kwargs = copy.deepcopy(dict(env_args.get("env_kwargs", {})))
  robots = kwargs.get("robots", ["Panda"])
  robots = [robots] if isinstance(robots, str) else list(robots)
  if "controller_configs" in kwargs:
    cfg = kwargs["controller_configs"]
    if "damping" in cfg and "damping_ratio" not in cfg:  # robosuite <= 1.4 spelling
      cfg["damping_ratio"] = cfg.pop("damping")
      cfg["damping_ratio_limits"] = cfg.pop("damping_limits", [0, 10])
    if cfg.pop("control_delta", True) is False:
      cfg["input_type"] = "absolute"
    kwargs["controller_configs"] = refactor_composite_controller_config(cfg, robots[0], ["right"])
  # Keys robomimic writes that robosuite 1.5 no longer accepts.
  for key in ("camera_depths", "camera_heights", "camera_widths", "camera_names", "render_gpu_device_id"):
    if not kwargs.get("use_camera_obs", False):
      kwargs.pop(key, None)
  kwargs.update(has_renderer=False, has_offscreen_renderer=offscreen, use_camera_obs=False, ignore_done=True)
  if horizon is not None:
    kwargs["horizon"] = horizon
  return robosuite.make(env_args["env_name"], **kwargs)


@contextlib.contextmanager
def _object_sizes_from(rng: np.random.Generator) -> Iterator[None]:
  """Routes robosuite's primitive-object size draws through ``rng``.

  robosuite 1.5 reloads the model at every reset and draws e.g. Lift's cube half-sizes
  (U[0.020, 0.022]^3 m) from an *unseeded* ``np.random.default_rng()``; everything else it draws from
  ``env.rng``. Without this, an episode is not reproducible from its seed.
  """
  from robosuite.models.objects.primitive import box  # pylint: disable=g-import-not-at-top
  original = box.get_size

  @functools.wraps(original)
  def seeded_get_size(*args, rng=None, **kwargs):  # pylint: disable=redefined-outer-name
    return original(*args, rng=rng if rng is not None else default_rng, **kwargs)

  default_rng = rng
  box.get_size = seeded_get_size
  try:
    yield
  finally:
    box.get_size = original


def reset(env, seed: int) -> dict[str, np.ndarray]:
  """Resets ``env`` to the initial state determined by ``seed``.

  The same seed gives the same cube pose, cube size and robot joint noise, whatever happened before.

  Returns:
    robomimic low-dim observation dict (see ``low_dim_obs``).
  """
  rng = np.random.default_rng(seed)
  env.rng = rng  # robot joint noise and any placement sampler built from now on
  sampler = getattr(env, "placement_initializer", None)  # built once, at the first reset
  samplers = [sampler, *getattr(sampler, "samplers", {}).values()] if sampler is not None else []
  for s in samplers:
    s.rng = rng
  with _object_sizes_from(rng):
    raw = env.reset()
  return low_dim_obs(raw)


def low_dim_obs(raw_obs: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """robosuite observation dict -> robomimic low-dim observation dict.

  Keeps every 1-D numeric entry (drops images), renames ``object-state`` to ``object`` as robomimic
  does. For Lift: ``object`` [10] = cube pos (m), cube quat (x, y, z, w), cube pos - eef pos (m);
  ``robot0_eef_pos`` [3] (m, world frame); ``robot0_eef_quat`` [4] (x, y, z, w);
  ``robot0_gripper_qpos`` [2] (m); plus joint and velocity entries.
  """
  out = {}
  for key, value in raw_obs.items():
    value = np.asarray(value)
    if value.ndim != 1 or not np.issubdtype(value.dtype, np.number):
      continue
    out[_ROBOMIMIC_KEY_RENAMES.get(key, key)] = value.astype(np.float64)
  return out


def camera_name(image_key: str) -> str:
  """robomimic image key -> robosuite camera: ``agentview_image`` -> ``agentview``.

  Raises:
    ValueError: if the key does not end in ``_image``.
  """
  if not image_key.endswith("_image"):
    raise ValueError(f"image observation key {image_key!r} must end in '_image' (e.g. agentview_image)")
  return image_key[:-len("_image")]


RENDER_KEY = "ebt_jax_render"  # env_args' top-level entry for the frames' render settings (robomimic ignores it)


def render_reflections(env_args: Mapping[str, Any]) -> bool:
  """Whether frames of this dataset's env are drawn with MuJoCo's reflections (``mjRND_REFLECTION``): True
  unless ``env_args[RENDER_KEY]["reflections"]`` says otherwise (``ebt_jax.render --noreflections``
  writes it; robomimic's own image files were rendered with them)."""
  return bool(dict(env_args.get(RENDER_KEY) or {}).get("reflections", True))


def render_cameras(env, image_keys, height: int, width: int, reflections: bool = True) -> dict[str, np.ndarray]:
  """The env's current frames {image key: [height, width, 3] uint8}, upright (row 0 at the top, as
  robomimic's image datasets store them and robosuite returns with ``IMAGE_CONVENTION="opencv"``).

  ``env.sim.render`` of each key's camera (``camera_name``) flipped vertically (MuJoCo's OpenGL rows
  run bottom-up): what robosuite's camera observables compute, without rendering at every env step.
  Needs ``make_env(..., offscreen=True)``; rendering does not change the simulation. ``reflections``
  False turns off MuJoCo's reflection pass (the table's mirror image of the scene): 2.7x faster in
  software GL (Mesa llvmpipe), Lift's agentview then differs by 0.5 / 255 on average (4 % of values by
  more than 8), the eye-in-hand view by 0.07 (``python -m ebt_jax.benchmarks.render_speed``, 84x84).

  Raises:
    ValueError: a key that is not ``<camera>_image`` or names no camera of the model.
  """
  from mujoco import mjtRndFlag as mujoco_flags  # pylint: disable=g-import-not-at-top
  out = {}
  names = set(env.sim.model.camera_names)
  for key in image_keys:
    cam = camera_name(key)
    if cam not in names:
      raise ValueError(f"image key {key!r}: the env has no camera {cam!r} (cameras: {sorted(names)})")
    context = getattr(env.sim, "_render_context_offscreen", None)  # robosuite remakes it at every reset
    if context is not None:
      context.scn.flags[mujoco_flags.mjRND_REFLECTION] = int(reflections)
    frame = env.sim.render(camera_name=cam, width=width, height=height, depth=False)
    out[key] = np.ascontiguousarray(np.asarray(frame, np.uint8)[::-1])
  return out


def camera_env_args(env_args: Mapping[str, Any], image_keys, height: int, width: int,
                    reflections: bool = True) -> dict[str, Any]:
  """``env_args`` of an image dataset (as robomimic's ``dataset_states_to_obs`` writes them): camera
  names, sizes and camera observations on; frames drawn without reflections are marked so
  (``RENDER_KEY``), so that evaluation draws its frames the same way (``render_reflections``)."""
  out = copy.deepcopy(dict(env_args))
  if not reflections:
    out[RENDER_KEY] = {"reflections": False}
  kw = out.setdefault("env_kwargs", {})
  kw.update(camera_names=[camera_name(k) for k in image_keys], camera_heights=height, camera_widths=width,
            use_camera_obs=True, has_offscreen_renderer=True, camera_depths=False)
  return out


def is_success(env) -> bool:
  """robosuite's own task success (Lift: cube z above the table top + 0.04 m)."""
  return bool(env._check_success())  # pylint: disable=protected-access


def sim_state(env) -> np.ndarray:
  """Flattened MuJoCo state [1 + nq + nv (+ na)] as robomimic stores it in ``states``."""
  return np.asarray(env.sim.get_state().flatten(), dtype=np.float64)


def load_model_xml(env, model_xml: str) -> None:
  """Rebuilds ``env``'s simulation from a stored MJCF xml (robosuite's ``model_file`` attribute).

  As robomimic's ``EnvRobosuite.reset_to`` (robomimic/envs/env_robosuite.py) and robosuite's own
  ``DataCollectionWrapper._start_new_episode`` do in robosuite 1.5: rewrite the xml's asset paths for
  this robosuite install (``env.edit_model_xml``: demos recorded on another machine name its paths),
  ``env.reset_from_xml_string`` (a deterministic reset: no object placement is drawn), ``env.sim.reset()``.
  The xml round trip is not lossless: for Lift, the reloaded model's body quaternions differ from a
  freshly built env's by ~1e-7 and its inertias are recomputed (e.g. the table's mass 32 -> 70 kg);
  robosuite's collector records its demos in the reloaded model.

  Raises:
    Exception: robosuite's and MuJoCo's own errors if the xml cannot be parsed (``xml.etree`` ParseError),
      lacks an ``<asset>`` element (AttributeError), does not compile (ValueError), or lacks a body /
      site the env refers to (ValueError, KeyError).
  """
  env.reset_from_xml_string(env.edit_model_xml(model_xml))
  env.sim.reset()


def set_state(env, state: np.ndarray) -> dict[str, np.ndarray]:
  """Sets ``env`` to a flattened MuJoCo state and returns the observation computed from it.

  ``env.sim.set_state_from_flattened(state)``, ``env.sim.forward()``, then robosuite's observables with
  ``force_update``, as robomimic's ``EnvRobosuite.reset_to({"states": state})``.

  The observation is a function of the state alone (positions from forward kinematics at ``state``).
  The observations ``env.step`` returns are not quite that: robosuite's observables sample once per
  control step at a substep set by their timers (the last or the one before, depending on how many
  forced updates came since the reset), and Cartesian entries are read before that substep's
  integration. So a live step's observation lags the state stored after it by one or two of the 25
  physics substeps (0.002 s each): for Lift's scripted expert, up to 1.2 mm in ``robot0_eef_pos``,
  3e-3 rad in ``robot0_joint_pos`` (at most 0.15 of the step's own change). The ``robot0_joint_acc`` entry
  is not the live one either: accelerations depend on the applied torques, which a state does not hold.
  Each call advances the observables' timers by two substeps (two ``force_update`` passes), which moves
  the sampling phase of later ``env.step`` observations.

  Args:
    env: a robosuite env (e.g. from ``make_env``).
    state: [1 + nq + nv] flattened state (time s, qpos, qvel), as in robosuite's ``states`` datasets.

  Returns:
    robomimic low-dim observation dict (see ``low_dim_obs``).

  Raises:
    ValueError: if ``state`` is not [1 + nq + nv] for the env's current model.
  """
  state = np.asarray(state, dtype=np.float64)
  width = 1 + env.sim.model.nq + env.sim.model.nv
  if state.shape != (width,):
    raise ValueError(f"state has shape {state.shape}, expected [{width}] = 1 + nq ({env.sim.model.nq}) + "
                     f"nv ({env.sim.model.nv}) for this model")
  env.sim.set_state_from_flattened(state)
  env.sim.forward()
  # Twice: the eef-relative object entries (Can, Square, ToolHang: ``<obj>_to_robot0_eef_pos/quat``) read
  # the gripper pose another observable caches during the same pass, after them, so one forced pass
  # returns the previous pose's (measured on Can: 0.3 m off); Lift's entries do not depend on it.
  env._get_observations(force_update=True)  # pylint: disable=protected-access
  return low_dim_obs(env._get_observations(force_update=True))  # pylint: disable=protected-access


def reset_to(env, state: np.ndarray, model_xml: str | None = None) -> dict[str, np.ndarray]:
  """robomimic's ``EnvRobosuite.reset_to`` for robosuite 1.5: ``load_model_xml`` (if given), ``set_state``.

  Args:
    env: a robosuite env.
    state: [1 + nq + nv] flattened MuJoCo state.
    model_xml: the episode's MJCF xml (robosuite's ``model_file`` attribute), or None to keep the model.

  Returns:
    robomimic low-dim observation dict of ``state`` (see ``set_state`` for how it relates to ``env.step``'s).

  Raises:
    Exception: as ``load_model_xml``; ValueError: as ``set_state``.
  """
  if model_xml is not None:
    load_model_xml(env, model_xml)
  return set_state(env, state)
