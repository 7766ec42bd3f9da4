"""Rollout videos with the policy's energy drawn beside each frame (``<video_dir>/<label>/episode_<k>_<outcome>.mp4``).

One video frame = the env's image after an env step + a panel to its right: the inference label and
episode, the time, and the trace of the decisions so far (EBT: the energy of each decision's chosen
chunk; diffusion, which has no energy: its sampler steps per decision), the current decision
highlighted, and the episode's outcome. The axes span the whole episode's values, so they stay put
while the trace grows. Frames are drawn with Pillow (no matplotlib per frame) and written as H.264 mp4
with imageio's ffmpeg plugin, at the control rate (robosuite 20 Hz, Push-T 10 Hz): real time.

The evaluators render only the first ``eval.video_episodes`` episodes (``Recorder.wants``), after each
env step (MJX: afterwards, on the host, from the recorded joint positions). A failure to render or
write (no offscreen GL context on a headless machine, ffmpeg missing) logs one warning and turns the
recorder off; the evaluation itself goes on.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
import warnings
from typing import Callable, Sequence

import numpy as np
from absl import logging
from PIL import Image, ImageDraw, ImageFont

from ebt_jax import paths
from ebt_jax.evaluation.episodes import EpisodeResult

TRACE_COLOR = (31, 119, 180)  # the decisions so far (line and points)
CURRENT_COLOR = (230, 60, 20)  # the current decision
SUCCESS_COLOR = (20, 150, 60)
FAILURE_COLOR = (200, 30, 30)
PANEL_BACKGROUND = (250, 250, 250)
AXES_COLOR = (150, 150, 150)
TEXT_COLOR = (30, 30, 30)
MACRO_BLOCK = 16  # H.264 frame sides are padded to a multiple of this (ffmpeg would resize otherwise)
GL_HINT = ("set MUJOCO_GL=egl (EGL libraries, e.g. Mesa's libegl1, or an NVIDIA driver) or "
           "MUJOCO_GL=osmesa PYOPENGL_PLATFORM=osmesa (apt-get install libosmesa6)")


@functools.lru_cache(maxsize=8)
def _font(size: int):
  try:
    return ImageFont.load_default(size=size)  # Pillow's bundled FreeType font
  except (TypeError, ValueError, OSError):  # Pillow without FreeType: the fixed bitmap font
    return ImageFont.load_default()


def trace_of(result: EpisodeResult) -> tuple[np.ndarray, str]:
  """The per-decision values a video plots: (energy [D], "energy") for EBT, else (sampler steps [D],
  "sampler steps") for a policy without an energy (diffusion)."""
  if result.energy is not None:
    return np.asarray(result.energy, np.float64), "energy"
  return np.asarray(result.sampler_steps, np.float64), "sampler steps"


def _round_up(x: int, m: int = MACRO_BLOCK) -> int:
  return -(-x // m) * m


def compose_frame(image: np.ndarray, values: Sequence[float], current: int, *, name: str = "energy",
                  label: str = "", episode: int = 0, step: int = 0, hz: float = 20.0,
                  success: bool | None = None, sampler_steps: Sequence[int] | None = None) -> np.ndarray:
  """One video frame: ``image`` with the trace panel to its right.

  Args:
    image: [H, W, 3] uint8 env frame (row 0 at the top).
    values: [D] the episode's value per decision (energy, or sampler steps); all D fix the axes.
    current: index of the decision whose actions are executing (0 <= current < D); decisions
      ``0..current`` are drawn, ``current`` highlighted.
    name: what ``values`` are ("energy", "sampler steps").
    label: inference label, e.g. "mcmc-2".
    episode: the episode's index in the evaluation.
    step: env steps taken so far (the frame shows the state after it).
    hz: control rate (time = step / hz s).
    success: the episode's outcome (None: not drawn).
    sampler_steps: [D] sampler steps per decision (drawn as text for the current decision), optional.

  Returns:
    [H', W + P, 3] uint8: H' = H rounded up to a multiple of 16, the panel P (>= 192 px wide) making
    the width a multiple of 16; padding is the panel's background.

  Raises:
    ValueError: ``image`` not [H, W, 3] uint8, ``values`` empty, or ``current`` out of range.
  """
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
    raise ValueError(f"image has shape {image.shape} dtype {image.dtype}, expected [H, W, 3] uint8")
  values = np.asarray(values, np.float64)
  if values.ndim != 1 or not len(values):
    raise ValueError(f"values must be a non-empty [D] sequence, got shape {values.shape}")
  if not 0 <= current < len(values):
    raise ValueError(f"current={current} is not a decision index of {len(values)} decisions")
  h, w, _ = image.shape
  height = _round_up(max(h, 160))
  width = _round_up(w + max(192, w))
  canvas = Image.new("RGB", (width, height), PANEL_BACKGROUND)
  canvas.paste(Image.fromarray(image), (0, 0))
  draw = ImageDraw.Draw(canvas)
  fs = max(10, height // 21)
  font, x0 = _font(fs), w + 8
  line = lambda row: 4 + row * (fs + 3)  # pylint: disable=unnecessary-lambda-assignment
  value = values[current]
  text = f"{name} {value:.3f}" if name == "energy" else f"{name} {value:g}"
  if sampler_steps is not None and name == "energy":
    text += f", {int(sampler_steps[current])} steps"
  draw.text((x0, line(0)), f"{label}  episode {episode}", fill=TEXT_COLOR, font=font)
  draw.text((x0, line(1)), f"t {step / hz:.2f} s (step {step})", fill=TEXT_COLOR, font=font)
  draw.text((x0, line(2)), f"decision {current + 1}/{len(values)}", fill=TEXT_COLOR, font=font)
  draw.text((x0, line(3)), text, fill=CURRENT_COLOR, font=font)
  # The plot box: decisions on x (all D slots), the episode's value range on y.
  left, right = x0 + 4, width - 8
  top, bottom = line(4) + 4, height - (2 * fs + 14)
  lo, hi = float(values.min()), float(values.max())
  if not np.isfinite([lo, hi]).all():
    lo, hi = -1.0, 1.0
  pad = 0.1 * (hi - lo) if hi > lo else 1.0
  lo, hi = lo - pad, hi + pad
  draw.rectangle((left, top, right, bottom), outline=AXES_COLOR)
  small = _font(max(8, fs - 3))
  draw.text((left + 3, top + 2), f"{hi - pad:.3g}", fill=AXES_COLOR, font=small)  # the value range
  draw.text((left + 3, bottom - fs), f"{lo + pad:.3g}", fill=AXES_COLOR, font=small)
  draw.text((left, bottom + 2), f"{name} per decision", fill=AXES_COLOR, font=small)
  slot = (right - left) / len(values)
  xs = [left + (i + 0.5) * slot for i in range(len(values))]
  finite = np.where(np.isfinite(values), values, lo)
  ys = [bottom - (v - lo) / (hi - lo) * (bottom - top) for v in finite]
  draw.line([(xs[current], top + 1), (xs[current], bottom - 1)], fill=(235, 215, 205), width=1)
  if current > 0:
    draw.line(list(zip(xs[:current + 1], ys[:current + 1])), fill=TRACE_COLOR, width=2)
  r = max(2, fs // 5)
  for x, y in zip(xs[:current], ys[:current]):
    draw.ellipse((x - r, y - r, x + r, y + r), fill=TRACE_COLOR)
  r = max(4, fs // 3)
  draw.ellipse((xs[current] - r, ys[current] - r, xs[current] + r, ys[current] + r), fill=CURRENT_COLOR)
  if success is not None:
    draw.text((x0, height - fs - 6), "SUCCESS" if success else "FAILURE",
              fill=SUCCESS_COLOR if success else FAILURE_COLOR, font=_font(fs + 2))
  return np.asarray(canvas, np.uint8)


def compose_episode(frames: Sequence[np.ndarray], result: EpisodeResult, action_horizon: int, *,
                    label: str = "", episode: int = 0, hz: float = 20.0) -> np.ndarray:
  """The frames of one episode's video.

  Frame t (0-based) shows the state after env step t + 1, reached by an action of decision
  ``t // action_horizon`` (capped at the last decision).

  Args:
    frames: [T, H, W, 3] uint8 env frames, one after each env step (T = ``result.length``, or fewer).
    result: the episode's record (energy or sampler steps per decision, outcome).
    action_horizon: Ta, env steps per decision.
    label, episode, hz: as ``compose_frame``.

  Returns:
    [T, H', W', 3] uint8 (``compose_frame``'s sizes).
  """
  values, name = trace_of(result)
  out = []
  for t, image in enumerate(frames):
    out.append(compose_frame(image, values, min(t // action_horizon, len(values) - 1), name=name, label=label,
                             episode=episode, step=t + 1, hz=hz, success=result.success,
                             sampler_steps=result.sampler_steps))
  return np.stack(out)


def write_mp4(path: str, frames: np.ndarray, fps: float) -> None:
  """Writes [T, H, W, 3] uint8 frames (H, W multiples of 16) as an H.264 mp4 at ``fps`` frames/s.

  ``path``: a local path or a URI (``gs://...``, through ``paths``): the video is encoded into a local
  temporary file, then moved (local) or copied (object store) there; parent directories are created.

  Raises:
    ValueError: frames not [T, H, W, 3] uint8 with T >= 1.
    OSError / RuntimeError: the ffmpeg encoder's or the file system's errors.
  """
  import imageio.v2 as iio  # pylint: disable=g-import-not-at-top  (only videos need it)
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or not len(frames):
    raise ValueError(f"frames have shape {frames.shape} dtype {frames.dtype}, expected [T >= 1, H, W, 3] uint8")
  fd, tmp = tempfile.mkstemp(suffix=".mp4", prefix="ebt_jax_video_")
  os.close(fd)
  try:
    with warnings.catch_warnings():
      # JAX warns at every fork of its (multithreaded) process; imageio's subprocess execs ffmpeg at once.
      warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
      with iio.get_writer(tmp, format="FFMPEG", mode="I", fps=fps, codec="libx264", pixelformat="yuv420p",
                          macro_block_size=MACRO_BLOCK, quality=7) as writer:
        for frame in frames:
          writer.append_data(frame)
    target = paths.path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if paths.is_local(path):
      shutil.move(tmp, os.fspath(target))
    else:
      with open(tmp, "rb") as f:
        target.write_bytes(f.read())
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


class Recorder:
  """Which episodes of an evaluation get a video, and writing them under ``<video_dir>/<label>/``.

  Shared by all labels of one evaluator; the first failure (rendering, encoding, writing) logs one
  warning and turns it off for good (``enabled``), so an evaluation never stops for a video.

  Attributes:
    video_dir: local directory or URI the videos go under (main job: ``<workdir>/videos``).
    episodes: the first this many episodes of each evaluation are recorded.
    fps: frames per second (the control rate: robosuite 20, Push-T 10).
    size: (H, W) of the rendered env frames (px).
    camera: robosuite camera to render ("agentview"; Push-T and MJX ignore / reuse it).
    enabled: False after a failure.
  """

  def __init__(self, video_dir: str, episodes: int, fps: float, size: tuple[int, int] = (256, 256),
               camera: str = "agentview"):
    self.video_dir, self.episodes, self.fps = os.fspath(video_dir), int(episodes), float(fps)
    self.size, self.camera = (int(size[0]), int(size[1])), camera
    self.enabled = self.episodes > 0

  def wants(self, episode: int) -> bool:
    """Whether episode ``episode`` (its index in the evaluation) is to be recorded."""
    return self.enabled and episode < self.episodes

  def disable(self, why: str, error: BaseException | None = None, hint: str = "") -> None:
    """Turns the recorder off with one warning: ``why`` (+ the error, + how to fix it)."""
    if not self.enabled:
      return
    self.enabled = False
    detail = f" ({type(error).__name__}: {error})" if error is not None else ""
    logging.warning("rollout videos off: %s%s%s; the evaluation continues without videos",
                    why, detail, f"; to get them, {hint}" if hint else "")

  def render(self, draw: Callable[[], np.ndarray], hint: str = GL_HINT) -> np.ndarray | None:
    """``draw()`` as uint8 (frames), or None if the recorder is off or it fails (then it turns off with one
    warning, ``hint`` saying how to fix it)."""
    if not self.enabled:
      return None
    try:
      return np.asarray(draw(), np.uint8)
    except Exception as e:  # pylint: disable=broad-except  (GL / pygame errors of many types)
      self.disable("cannot render the env frames", e, "" if isinstance(e, ValueError) else hint)  # ValueError: a bad camera
      return None

  def capture(self, draw: Callable[[], np.ndarray], frames: list, hint: str = GL_HINT) -> None:
    """Appends ``draw()`` ([H, W, 3] uint8) to ``frames`` (``render``; nothing when off or on failure)."""
    frame = self.render(draw, hint)
    if frame is not None:
      frames.append(frame)

  def relative_path(self, label: str, episode: int, success: bool) -> str:
    """``<basename(video_dir)>/<label>/episode_<k>_<success|failure>.mp4``: relative to the parent of
    ``video_dir`` (the workdir, in the main job)."""
    name = f"episode_{episode}_{'success' if success else 'failure'}.mp4"
    return "/".join((os.path.basename(self.video_dir.rstrip("/")), label, name))

  def write(self, label: str, episode: int, frames: Sequence[np.ndarray], result: EpisodeResult,
            action_horizon: int) -> str | None:
    """Composes (``compose_episode``) and writes one episode's video; -> its ``relative_path``, or None
    if the recorder is off or this fails (then it warns once and turns off). A video of the other outcome
    for the same episode (an earlier evaluation's) is removed."""
    if not self.enabled or not len(frames):
      return None
    rel = self.relative_path(label, episode, result.success)
    directory = paths.path(self.video_dir) / label
    try:
      video = compose_episode(frames, result, action_horizon, label=label, episode=episode, hz=self.fps)
      write_mp4(str(directory / os.path.basename(rel)), video, self.fps)
      stale = directory / os.path.basename(self.relative_path(label, episode, not result.success))
      if stale.exists():
        stale.unlink()
    except Exception as e:  # pylint: disable=broad-except  (ffmpeg, file system, object store clients)
      self.disable(f"cannot write {directory / os.path.basename(rel)}", e)
      return None
    return rel


def recorder_of(config, video_dir: str | None, fps: float) -> Recorder | None:
  """The ``Recorder`` of ``config.eval`` (``video_episodes``, ``video_size``, ``video_camera``) writing
  under ``video_dir``; None when ``video_dir`` is None or ``eval.video_episodes`` is 0."""
  e = config.eval
  episodes = int(e.get("video_episodes", 0))
  if video_dir is None or episodes <= 0:
    return None
  return Recorder(video_dir, episodes, fps, tuple(e.get("video_size", (256, 256))), e.get("video_camera", "agentview"))
