"""robosuite frames (rollout videos, a camera policy's observations, ``ebt_jax.render`` dataset frames),
drawn in a child process that never runs JAX.

Why a child process: on this machine (Mesa EGL, jaxlib 0.10 on CPU), the XLA computations a process runs
after it created an EGL context leave that context drawing garbage. Measured on robosuite Lift's
agentview (mean pixel 219 on a correct frame): one jitted multiply after the context's creation, and every
later frame of that context has mean ~50, with Mesa's llvmpipe or softpipe alike; a context created after
the first computation survives small programs but not a policy decision. The child imports robosuite
only: it makes the env once with the offscreen renderer and draws the states the evaluation sends.

* robosuite episodes (``Renderer.states``): the episode's model XML (robosuite's ``env.model.get_xml()``
  after the reset: the cube size of that episode) and its flattened MuJoCo state after each env step;
  the child loads the XML (``robosuite_env.load_model_xml``) and sets each state, ``mj_forward``, renders.
* MJX episodes (``Renderer.qpos``): joint positions (MJX's layout is robosuite's) and the cube's half-sizes.

Protocol: ``multiprocessing.connection`` messages (length-prefixed pickles) over the child's stdin and a
duplicate of its stdout; the child's fd 1 is pointed at its stderr, so prints of MuJoCo or robosuite never
corrupt the stream. Requests ``(name, *args)``; replies ``("ok", value)`` or ``("error", message)``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import warnings
import weakref
from multiprocessing import connection
from typing import Any, Mapping

import numpy as np

INIT_TIMEOUT_S = 900.0  # import robosuite + make + reset on a loaded 2-core CPU (measured 94 s worst)
FRAME_TIMEOUT_S = 5.0  # per frame, on top of a fixed minute


class RenderError(RuntimeError):
  """The child renderer failed: no offscreen GL context, a crash or a timeout (the message says which)."""


class CameraError(RenderError, ValueError):
  """The camera to render is not one of the env's."""


def render_states(env, states: np.ndarray, camera: str, size: tuple[int, int], model_xml: str | None = None,
                  reflections: bool = True) -> np.ndarray:
  """Frames of flattened MuJoCo states: [T, 1 + nq + nv] -> [T, H, W, 3] uint8 (in this process).

  ``model_xml``: the episode's model, loaded first (``robosuite_env.load_model_xml``); None keeps the
  env's. Each state is set (``set_state_from_flattened``), ``sim.forward()``, ``camera`` rendered
  (``reflections``: ``robosuite_env.render_cameras``).

  Raises:
    ValueError: states of another width than the model's, or no such camera.
  """
  from ebt_jax.envs import robosuite_env  # pylint: disable=g-import-not-at-top
  if model_xml is not None:
    robosuite_env.load_model_xml(env, model_xml)
  sim = env.sim
  states = np.asarray(states, np.float64)
  width = 1 + sim.model.nq + sim.model.nv
  if states.ndim != 2 or states.shape[1] != width:
    raise ValueError(f"states have shape {states.shape}, expected [T, {width}] for this model")
  key, frames = f"{camera}_image", []
  for state in states:
    sim.set_state_from_flattened(state)
    sim.forward()
    frames.append(robosuite_env.render_cameras(env, (key,), *size, reflections=reflections)[key])
  return np.stack(frames) if frames else np.zeros((0, size[0], size[1], 3), np.uint8)


def render_qpos(env, qpos: np.ndarray, cube_half_size: np.ndarray | None, camera: str,
                size: tuple[int, int], reflections: bool = True) -> np.ndarray:
  """Frames of joint positions [T, nq] (e.g. MJX Lift's ``Rollouts.qpos``) -> [T, H, W, 3] uint8 (in this
  process). ``cube_half_size`` [3] (m) is set on Lift's cube geoms first (collision and visual); velocities
  are zero. The env must have been reset once (a model loaded).

  Raises:
    ValueError: qpos not [T, nq] for the env's model, or no such camera.
  """
  from ebt_jax.envs import lift_mjcf, robosuite_env  # pylint: disable=g-import-not-at-top
  sim = env.sim
  qpos = np.asarray(qpos, np.float64)
  if qpos.ndim != 2 or qpos.shape[1] != sim.model.nq:
    raise ValueError(f"qpos has shape {qpos.shape}, expected [T, {sim.model.nq}] for this env")
  if cube_half_size is not None:
    for name in (lift_mjcf.CUBE_GEOM, f"{lift_mjcf.CUBE_GEOM}_vis"):
      if name in sim.model.geom_names:
        sim.model.geom_size[sim.model.geom_name2id(name)] = np.asarray(cube_half_size, np.float64)
  key, frames = f"{camera}_image", []
  for q in qpos:
    sim.data.qpos[:] = q
    sim.data.qvel[:] = 0.0
    sim.forward()
    frames.append(robosuite_env.render_cameras(env, (key,), *size, reflections=reflections)[key])
  return np.stack(frames) if frames else np.zeros((0, size[0], size[1], 3), np.uint8)


class Renderer:
  """The child process holding a robosuite env with the offscreen renderer.

  Construction starts the child and returns at once (it imports robosuite and makes the env meanwhile);
  the first request waits for it. The child exits when ``close`` is called or this object is collected.

  Attributes:
    env_args: robomimic env description of the env the child makes (the dataset's ``env_args``; its
      render settings, ``robosuite_env.render_reflections``, apply to every frame).
  """

  def __init__(self, env_args: Mapping[str, Any]):
    self.env_args = dict(env_args)
    self._stderr = tempfile.TemporaryFile()
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    with warnings.catch_warnings():  # JAX warns at every fork of its process; the child execs at once
      warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
      self._proc = subprocess.Popen([sys.executable, "-m", "ebt_jax.evaluation.offscreen"], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=self._stderr, env=env)
    self._send = connection.Connection(os.dup(self._proc.stdin.fileno()), readable=False)
    self._recv = connection.Connection(os.dup(self._proc.stdout.fileno()), writable=False)
    self._proc.stdin.close()
    self._proc.stdout.close()
    self._finalizer = weakref.finalize(self, _shut_down, self._proc, self._send, self._recv, self._stderr)
    self._send.send(("init", self.env_args))
    self._cameras: list[str] | None = None

  @property
  def cameras(self) -> list[str]:
    """The env's camera names (waits for the child's start-up).

    Raises:
      RenderError: the child could not make the env with the offscreen renderer (its error message).
    """
    if self._cameras is None:
      self._cameras = self._reply(INIT_TIMEOUT_S)
    return self._cameras

  def states(self, model_xml: str | None, states: np.ndarray, camera: str, size: tuple[int, int]) -> np.ndarray:
    """``render_states`` in the child: [T, 1 + nq + nv] -> [T, H, W, 3] uint8.

    Raises:
      RenderError: as ``cameras``, the child's error / crash / timeout; CameraError: an unknown camera.
    """
    self._check_camera(camera)
    return self._request(("states", np.asarray(states, np.float64), camera, tuple(size), model_xml),
                         60.0 + FRAME_TIMEOUT_S * len(states))

  def qpos(self, qpos: np.ndarray, cube_half_size: np.ndarray | None, camera: str, size: tuple[int, int]) -> np.ndarray:
    """``render_qpos`` in the child: [T, nq] -> [T, H, W, 3] uint8 (raises as ``states``)."""
    self._check_camera(camera)
    half = None if cube_half_size is None else np.asarray(cube_half_size, np.float64)
    return self._request(("qpos", np.asarray(qpos, np.float64), half, camera, tuple(size)),
                         60.0 + FRAME_TIMEOUT_S * len(qpos))

  def close(self) -> None:
    """Ends the child (idempotent)."""
    self._finalizer()

  def _check_camera(self, camera: str) -> None:
    if camera not in self.cameras:
      raise CameraError(f"eval.video_camera={camera!r} is not a camera of {self.env_args.get('env_name')} "
                        f"(cameras: {self.cameras})")

  def _request(self, message: tuple, timeout_s: float):
    try:
      self._send.send(message)
    except OSError as e:  # the child is gone
      self._proc.poll()
      raise RenderError(f"the renderer process ended (exit status {self._proc.returncode}): "
                        f"{self._stderr_tail()}") from e
    return self._reply(timeout_s)

  def _reply(self, timeout_s: float):
    try:
      if not self._recv.poll(timeout_s):
        raise RenderError(f"the renderer process did not answer within {timeout_s:.0f} s")
      status, value = self._recv.recv()
    except (EOFError, OSError) as e:
      self._proc.poll()
      raise RenderError(f"the renderer process ended (exit status {self._proc.returncode}): "
                        f"{self._stderr_tail()}") from e
    if status != "ok":
      raise RenderError(value)
    return value

  def _stderr_tail(self, limit: int = 600) -> str:
    self._stderr.seek(0)
    lines = [l for l in self._stderr.read().decode(errors="replace").splitlines() if l.strip()]
    return " | ".join(lines)[-limit:] or "no output"


def _shut_down(proc, send, recv, stderr) -> None:
  try:
    send.send(("close",))
  except OSError:
    pass
  for conn in (send, recv):
    conn.close()
  try:
    proc.wait(timeout=10)
  except subprocess.TimeoutExpired:
    proc.kill()
    proc.wait()
  stderr.close()


def _serve(requests: connection.Connection, replies: connection.Connection) -> None:
  """The child's loop: one reply per request until "close" or the end of the stream."""
  env, reflections = None, True
  while True:
    try:
      request = requests.recv()
    except EOFError:
      return
    name, args = request[0], request[1:]
    if name == "close":
      return
    try:
      if name == "init":
        from ebt_jax.envs import robosuite_env  # pylint: disable=g-import-not-at-top
        env = robosuite_env.make_env(args[0], offscreen=True)
        reflections = robosuite_env.render_reflections(args[0])
        robosuite_env.reset(env, 0)  # a model loaded (MJX's qpos requests draw into it)
        value = list(env.sim.model.camera_names)
      elif env is None:
        raise RenderError("the renderer's env was not made")
      elif name == "states":
        states, camera, size, model_xml = args
        value = render_states(env, states, camera, size, model_xml, reflections)
      elif name == "qpos":
        value = render_qpos(env, *args, reflections=reflections)
      else:
        raise ValueError(f"unknown request {name!r}")
      replies.send(("ok", value))
    except Exception as e:  # pylint: disable=broad-except  (reported to the parent, which decides)
      replies.send(("error", f"{type(e).__name__}: {e}"))
      if name == "init":
        return


if __name__ == "__main__":
  _out = os.dup(1)
  os.dup2(2, 1)  # prints of the libraries go to stderr; the replies have their own descriptor
  sys.stdout = sys.stderr
  _serve(connection.Connection(os.dup(0), writable=False), connection.Connection(_out, readable=False))
