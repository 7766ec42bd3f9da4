"""Test set-up: 8 CPU devices (for the sharding tests) before any JAX backend starts; a persistent
compilation cache."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_use_fusion_emitters=false")
# JAX's persistent compilation cache: the many tiny training runs of the suite (and the subprocesses the
# CLI tests start, which inherit the variable) compile the same programs; reusing them saves minutes.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".pytest_cache", "jax_compilation_cache"))

import jax  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top

jax.config.update("jax_num_cpu_devices", 8)


@pytest.fixture(scope="session")
def shared_dir():
  """The repository's sibling ``shared/`` folder (tests may read it; the product never needs it)."""
  return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared")


@pytest.fixture(autouse=True)
def _no_rollout_videos(request, monkeypatch):
  """The tests' main jobs evaluate without rollout videos: ``eval.video_episodes`` (2 by default) would add
  seconds to each (robosuite, MJX: a child renderer process, 5-20 s to start here, ~0.1 s per frame). Tests
  that take the ``rollout_videos`` fixture (tests/test_video.py) keep them; the CLI runs of
  tests/test_distributed.py pass ``--config.eval.video_episodes=0``."""
  if "rollout_videos" not in request.fixturenames:
    from ebt_jax.evaluation import video  # pylint: disable=g-import-not-at-top
    monkeypatch.setattr(video, "recorder_of", lambda *args, **kwargs: None)


@pytest.fixture
def rollout_videos():
  """Rollout videos stay on in this test (see ``_no_rollout_videos``)."""
