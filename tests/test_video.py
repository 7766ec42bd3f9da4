"""Rollout videos (``ebt_jax.evaluation.video``): frame composition, mp4 round trip, the Push-T and robosuite
evaluators writing them through ``backends.evaluate_all``, the no-GL fallback and the child renderer drawing
MJX's joint positions.

The policies are stand-ins (numpy, no compilation); one robosuite Lift env and one child renderer
(``offscreen.Renderer``, 5-20 s to start) serve every robosuite test.
"""

import dataclasses
import logging
import os
import sys
import types

import imageio.v2 as iio
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import lift as lift_config
from configs import pusht as pusht_config
from ebt_jax import paths
from ebt_jax.data.normalization import MinMax, Normalizer
from ebt_jax.envs import pusht, robosuite_env
from ebt_jax.evaluation import backends, offscreen, video
from ebt_jax.evaluation.episodes import EpisodeResult
from ebt_jax.evaluation.policy import Decision

sys.path.insert(0, os.path.dirname(__file__))
from test_paths import fake_gcs  # pylint: disable=g-import-not-at-top,wrong-import-position,unused-import

# imageio reads and writes through an ffmpeg subprocess: JAX's fork warning does not apply (exec at once).
pytestmark = pytest.mark.filterwarnings(r"ignore:os\.fork\(\) was called:RuntimeWarning")

LIFT_KEYS, LIFT_DIMS = ("object", "robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos"), (10, 3, 4, 2)
PUSHT_KEYS, PUSHT_DIMS = ("environment_state", "agent_pos"), (16, 2)


class _StandIn:
  """A policy stand-in (numpy): ``act(history) -> [B, Ta, A]``; the energy of call c is -c (a trace that moves)."""

  def __init__(self, keys, dims, action_dim, act, to=2, ta=2):
    obs_dim = sum(dims)
    self.normalizer = Normalizer(MinMax(np.zeros(obs_dim, np.float32), np.ones(obs_dim, np.float32)),
                                 MinMax(np.zeros(action_dim, np.float32), np.ones(action_dim, np.float32)), keys, dims)
    self.action_horizon, self.inference, self.cameras, self.calls = ta, "mcmc-2", (), 0
    self.model = types.SimpleNamespace(module=types.SimpleNamespace(obs_horizon=to), sweep=(), name="ebt")
    self._act = act

  def __call__(self, history, rng, inference=None, image_history=None):
    self.calls += 1
    n = len(history)
    return Decision(self._act(history, self.action_horizon), np.full(n, -float(self.calls), np.float32),
                    np.full(n, 2, np.int32))


def _panel_pixels(frame, image_width):
  return frame[:, image_width:].reshape(-1, 3)


def test_frames_show_the_energy_trace_and_the_mp4_reads_back(tmp_path):
  result = EpisodeResult(seed=0, success=False, length=7, sampler_steps=[3, 2, 1], energy=[-1.0, -3.0, -2.0])
  images = [np.full((100, 120, 3), 40 * t, np.uint8) for t in range(7)]
  frames = video.compose_episode(images, result, action_horizon=3, label="mcmc-3", episode=4, hz=20)
  assert frames.shape[0] == 7 and frames.dtype == np.uint8
  height, width = frames.shape[1:3]
  assert height % 16 == 0 and width % 16 == 0 and height >= 100 and width >= 120 + 192
  np.testing.assert_array_equal(frames[5, :100, :120], images[5])  # the env frame, untouched
  trace = np.all(_panel_pixels(frames[6], 120) == video.TRACE_COLOR, axis=-1)
  current = np.all(_panel_pixels(frames[6], 120) == video.CURRENT_COLOR, axis=-1)
  assert trace.sum() > 20 and current.sum() > 20  # the decisions so far, the current one highlighted
  first = np.all(_panel_pixels(frames[0], 120) == video.TRACE_COLOR, axis=-1)
  assert first.sum() < trace.sum()  # decision 1 of 3: no line yet
  # Frames of the same decision share the panel except for the time; another decision's panel differs.
  assert np.any(frames[0, :, 120:] != frames[3, :, 120:]) and np.any(frames[3, :, 120:] != frames[6, :, 120:])
  outcome = frames[0, -30:, 120:].reshape(-1, 3).astype(int)  # "FAILURE" in red (anti-aliased text)
  assert (np.abs(outcome - video.FAILURE_COLOR).max(axis=-1) < 60).sum() > 10
  path = tmp_path / "out" / "v.mp4"
  video.write_mp4(str(path), frames, fps=20)
  back = np.stack(iio.mimread(str(path)))
  assert back.shape == frames.shape
  assert np.abs(back.astype(int) - frames.astype(int)).mean() < 8  # lossy, but the same pictures
  with pytest.raises(ValueError, match="current=3"):
    video.compose_frame(images[0], [1.0, 2.0, 3.0], 3)


def test_recorder_failures_warn_once_and_turn_it_off(tmp_path, caplog):
  recorder = video.Recorder(str(tmp_path / "videos"), episodes=2, fps=10)
  assert recorder.wants(1) and not recorder.wants(2)
  frames = []

  def no_gl():
    raise RuntimeError("EGL: no display")

  with caplog.at_level(logging.WARNING):
    recorder.capture(no_gl, frames)
    recorder.capture(no_gl, frames)
  assert not recorder.enabled and not recorder.wants(0) and frames == []
  warnings = [r for r in caplog.records if "rollout videos off" in r.getMessage()]
  assert len(warnings) == 1 and "MUJOCO_GL=egl" in warnings[0].getMessage() and "EGL: no display" in warnings[0].getMessage()
  result = EpisodeResult(seed=0, success=True, length=1, sampler_steps=[1], energy=None)
  assert recorder.write("ddim-2", 0, [np.zeros((64, 64, 3), np.uint8)], result, 8) is None


def test_videos_go_to_a_gs_workdir(fake_gcs, tmp_path):
  """A ``gs://`` video directory: encoded locally, then one object written (the stale outcome removed)."""
  recorder = video.Recorder("gs://bucket/run/videos", episodes=1, fps=10)
  frames = [np.full((64, 64, 3), 90, np.uint8)] * 3
  failed = EpisodeResult(seed=0, success=False, length=3, sampler_steps=[4], energy=None)  # diffusion
  assert recorder.write("ddim-4", 0, frames, failed, 8) == "videos/ddim-4/episode_0_failure.mp4"
  succeeded = dataclasses.replace(failed, success=True)
  assert recorder.write("ddim-4", 0, frames, succeeded, 8) == "videos/ddim-4/episode_0_success.mp4"
  keys = [k for k in fake_gcs.store if k.startswith("/bucket/run/videos/")]
  assert keys == ["/bucket/run/videos/ddim-4/episode_0_success.mp4"] and recorder.enabled
  local = tmp_path / "copy.mp4"
  local.write_bytes(paths.path("gs://bucket/run/" + keys[0].split("/run/")[1]).read_bytes())
  assert len(iio.mimread(str(local))) == 3


def test_pusht_evaluation_writes_the_first_episodes_videos(tmp_path, rollout_videos):
  config = pusht_config.get_config()
  config.eval.update(num_episodes=2, horizon=6, video_episodes=1, video_size=(96, 96))
  policy = _StandIn(PUSHT_KEYS, PUSHT_DIMS, 2, lambda h, ta: np.repeat(h[:, -1:, 16:18] + 5.0, ta, axis=1), ta=4)
  result = backends.evaluate_all(config, policy, {}, video_dir=str(tmp_path / "videos"))
  episode = result["episodes"][0]
  name = f"videos/mcmc-2/episode_0_{'success' if episode['success'] else 'failure'}.mp4"
  assert result["videos"] == [name] and result["by_inference"]["mcmc-2"]["videos"] == [name]
  frames = iio.mimread(str(tmp_path / name))
  assert len(frames) == episode["length"] == 6  # one frame after each env step
  assert frames[0].shape[0] >= 96 and frames[0].shape[1] >= 96 + 192
  assert list((tmp_path / "videos" / "mcmc-2").iterdir()) == [tmp_path / name]  # episode 1: none
  assert pusht.CONTROL_HZ == 10 and iio.get_reader(str(tmp_path / name)).get_meta_data()["fps"] == 10


@pytest.fixture(scope="module")
def lift_env():
  """A robosuite Lift env with robomimic's settings (no renderer: the videos are drawn in a child process)."""
  return robosuite_env.make_env(robosuite_env.lift_env_args(), horizon=5)


@pytest.fixture(scope="module")
def renderer():
  """One child renderer for the module (its start-up: import robosuite, make, reset; 5-20 s)."""
  r = offscreen.Renderer(robosuite_env.lift_env_args())
  yield r
  r.close()


def _lift_run(monkeypatch, lift_env, renderer=None):  # pylint: disable=redefined-outer-name
  monkeypatch.setattr(robosuite_env, "make_env", lambda *args, **kwargs: lift_env)
  if renderer is not None:
    monkeypatch.setattr(offscreen, "Renderer", lambda env_args: renderer)
  config = lift_config.get_config()
  config.eval.update(num_episodes=2, horizon=5, video_episodes=1, video_size=(128, 128))
  policy = _StandIn(LIFT_KEYS, LIFT_DIMS, 7, lambda h, ta: np.zeros((len(h), ta, 7), np.float32))
  return config, policy


def test_robosuite_evaluation_draws_the_camera_after_each_step(tmp_path, monkeypatch, lift_env, renderer,
                                                              rollout_videos):
  config, policy = _lift_run(monkeypatch, lift_env, renderer)
  jax.jit(lambda a: jnp.tanh(a @ a.T))(jnp.ones((8, 8))).block_until_ready()  # XLA runs in this process
  result = backends.evaluate_all(config, policy, robosuite_env.lift_env_args(), video_dir=str(tmp_path / "videos"))
  assert result["videos"] == ["videos/mcmc-2/episode_0_failure.mp4"]
  frames = np.stack(iio.mimread(str(tmp_path / result["videos"][0])))
  assert frames.shape == (5, 160, 128 + 192, 3)  # 5 env steps; the 128 px frame padded to the panel's 160
  # The table seen from agentview (mean ~219 at 128 px); an EGL context sharing its process with XLA draws
  # dark noise instead (mean ~50): the reason for the child process.
  assert 180 < frames[:, :128, :128].mean() < 240 and robosuite_env.CONTROL_HZ == 20


def test_without_an_offscreen_context_the_evaluation_runs_with_one_warning(tmp_path, monkeypatch, lift_env, caplog,
                                                                         rollout_videos):
  config, policy = _lift_run(monkeypatch, lift_env)
  monkeypatch.setenv("MUJOCO_GL", "no-such-backend")  # the child renderer cannot make a GL context
  with caplog.at_level(logging.WARNING):
    result = backends.evaluate_all(config, policy, robosuite_env.lift_env_args(), video_dir=str(tmp_path / "v"))
  assert result["num_episodes"] == 2 and result["videos"] == [] and not (tmp_path / "v").exists()
  warnings = [r.getMessage() for r in caplog.records if "rollout videos off" in r.getMessage()]
  assert len(warnings) == 1 and "no-such-backend" in warnings[0] and "MUJOCO_GL=osmesa" in warnings[0], warnings


def test_mjx_trajectories_are_drawn_in_robosuite(lift_env, renderer):  # pylint: disable=redefined-outer-name
  """``Renderer.qpos``: MJX's qpos (robosuite's layout) set into robosuite's Lift; the cube rises in the frames."""
  robosuite_env.reset(lift_env, 0)
  qpos = np.repeat(np.array(lift_env.sim.data.qpos)[None], 3, axis=0)
  qpos[:, 11] += [0.0, 0.1, 0.2]  # cube z (free joint at qpos[9:16]: position, quaternion w-x-y-z)
  frames = renderer.qpos(qpos, np.full(3, 0.03), "agentview", (64, 64))
  assert frames.shape == (3, 64, 64, 3) and frames.dtype == np.uint8 and 180 < frames.mean() < 240
  assert np.abs(frames[0].astype(int) - frames[2].astype(int)).sum() > 0
  with pytest.raises(offscreen.RenderError, match="expected"):
    renderer.qpos(qpos[:, :5], None, "agentview", (64, 64))
  with pytest.raises(offscreen.CameraError, match="not a camera"):
    renderer.qpos(qpos, None, "no_camera", (64, 64))
