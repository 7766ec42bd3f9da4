"""Metric writers (ebt_jax/training/writers.py) and progress bars (ebt_jax/progress.py): TensorBoard events
read back with TensorBoard's own reader equal metrics.jsonl (also across a crash and resume), a ``gs://``
workdir gets its events at close, wandb offline keeps one run id over restarts, bars only on a terminal."""

import io
import json
import os
import sys

import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator

from ebt_jax import paths, policies, progress, validation
from ebt_jax.errors import ConfigError
from ebt_jax.training import trainer, writers

sys.path.insert(0, os.path.dirname(__file__))
from test_paths import fake_gcs  # pylint: disable=g-import-not-at-top,wrong-import-position,unused-import
from test_training import Killed, tiny_config, tiny_demos  # pylint: disable=g-import-not-at-top,wrong-import-position


def _events(logdir: str) -> event_accumulator.EventAccumulator:
  """Every scalar and histogram of ``logdir``'s event files, as TensorBoard loads them."""
  acc = event_accumulator.EventAccumulator(logdir, size_guidance={event_accumulator.SCALARS: 0,
                                                                   event_accumulator.HISTOGRAMS: 0})
  acc.Reload()
  return acc


def test_tensorboard_events_equal_metrics_jsonl_across_a_crash_and_resume(tmp_path):
  """6 steps, a record and a checkpoint every 2, an evaluation at every step, killed after step 3 (its
  evaluation written, checkpoint 2 on disk), resumed: TensorBoard shows exactly metrics.jsonl's records as
  train/<key> and eval_curve.jsonl's as eval/<label>/<key> (the first run's step-3 evaluation replaced by
  the resumed run's), and each evaluation's decision energies as a histogram. The config is
  test_training's best-checkpoint one, whose jitted step the suite has compiled already."""
  config = tiny_config(num_steps=6)
  config.eval.every_steps = 1
  workdir = str(tmp_path / "run")
  scores = {1: 0.9, 2: 0.6, 3: 0.2, 4: 0.8, 5: 0.5}  # one best checkpoint (step 1): fewer saves

  def evaluate(model, state, normalizer):
    return {"success_rate": scores[int(state.step)], "num_episodes": 2, "mean_max_coverage": None,
            "episodes": [{"energy": [0.1, 0.2, 0.3]}, {"energy": [int(state.step)]}]}

  def kill_after_3(step, state):
    if step == 3:
      raise Killed()

  with pytest.raises(Killed):
    trainer.train(config, workdir, tiny_demos(), on_step=kill_after_3, evaluate=evaluate)
  logdir = os.path.join(workdir, writers.TENSORBOARD_DIR)
  label = policies.make(config, 5, 3).inference
  first = _events(logdir)  # the writer was closed on the exception
  assert [e.step for e in first.Scalars("train/loss")] == [2]
  assert [e.step for e in first.Scalars(f"eval/{label}/success_rate")] == [1, 2, 3]
  scores[3] = 0.4  # the resumed run evaluates step 3 again
  trainer.train(config, workdir, tiny_demos(), evaluate=evaluate)

  acc = _events(logdir)
  records = [json.loads(line) for line in open(os.path.join(workdir, trainer.METRICS_FILE))]
  assert [r["step"] for r in records] == [2, 4, 6]
  keys = sorted({k for r in records for k in r if k != "step"})
  expected = {"loss", "grad_norm", "steps_per_s", "nonfinite", "train_wall_s", *policies.make(config, 5, 3).log_keys}
  assert expected <= set(keys)
  for key in keys:
    events = acc.Scalars(f"train/{key}")
    assert [e.step for e in events] == [r["step"] for r in records], key
    np.testing.assert_allclose([e.value for e in events], [r[key] for r in records], rtol=1e-6, err_msg=key)
  curve = trainer.read_curve(workdir)
  assert [(r["step"], r["success_rate"]) for r in curve] == [(1, 0.9), (2, 0.6), (3, 0.4), (4, 0.8), (5, 0.5)]
  assert [(e.step, e.value) for e in acc.Scalars(f"eval/{label}/success_rate")] == [
      (r["step"], pytest.approx(r["success_rate"])) for r in curve]
  assert f"eval/{label}/mean_max_coverage" not in acc.Tags()["scalars"]  # None: not a number
  hists = acc.Histograms(f"eval/{label}/energy")
  assert [(h.step, h.histogram_value.num) for h in hists] == [(s, 4) for s in (1, 2, 3, 4, 5)]
  assert hists[2].histogram_value.sum == pytest.approx(0.6 + 3)


def test_gs_workdir_gets_its_events_when_the_writer_closes(fake_gcs, tmp_path):
  del fake_gcs
  with writers.Writer("gs://bucket/run", active=True) as w:
    w.scalars(3, {"loss": 0.5, "step": 3, "name": "x"}, "train")
    w.evaluation(3, "ddim-10", {"success_rate": 1.0, "episodes": [{"sampler_steps": [10]}]})  # no energy
    w.evaluation(3, "mcmc-2", {"success_rate": 0.0, "episodes": [{"energy": [1.0, 2.0]}]})
    assert not paths.path("gs://bucket/run/tensorboard").exists()  # copied up at close
  remote = paths.path("gs://bucket/run/tensorboard")
  local = tmp_path / "copy"
  local.mkdir()
  for f in remote.iterdir():
    (local / f.name).write_bytes(f.read_bytes())
  acc = _events(str(local))
  assert sorted(acc.Tags()["scalars"]) == ["eval/ddim-10/success_rate", "eval/mcmc-2/success_rate", "train/loss"]
  assert acc.Tags()["histograms"] == ["eval/mcmc-2/energy"]
  assert writers.Writer("gs://bucket/other", active=False).active is False  # processes other than 0


def test_wandb_offline_writes_its_run_dir_and_a_restart_resumes_the_same_run(tmp_path, monkeypatch):
  pytest.importorskip("wandb")  # optional: requirements-wandb.txt
  monkeypatch.setenv("WANDB_SILENT", "true")
  config = tiny_config()
  config.train.wandb = "offline"
  workdir = str(tmp_path / "run")
  for step in (2, 4):  # two starts of one run
    with writers.open_run(config, workdir) as w:
      w.scalars(step, {"loss": 1.0 / step}, "train")
      w.histogram(step, "eval/mcmc-2/energy", [0.1, 0.2])
  run_id = open(os.path.join(workdir, writers.WANDB_RUN_ID_FILE)).read().strip()
  runs = sorted(os.listdir(os.path.join(workdir, "wandb")))
  offline = [r for r in runs if r.startswith("offline-run-")]
  assert len(offline) == 2 and all(r.endswith(f"-{run_id}") for r in offline), runs
  for r in offline:
    assert os.path.getsize(os.path.join(workdir, "wandb", r, f"run-{run_id}.wandb")) > 0
  assert os.listdir(os.path.join(workdir, writers.TENSORBOARD_DIR))  # TensorBoard as well


def test_train_wandb_is_validated_and_a_missing_package_names_the_field(monkeypatch):
  config = tiny_config()
  config.train.wandb = "yes"
  assert any(p.startswith("train.wandb='yes': must be one of 'disabled', 'offline', 'online'")
             for p in validation.config_problems(config, needs_data=False))
  real = writers.importlib.util.find_spec
  monkeypatch.setattr(writers.importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
  config.train.wandb = "offline"
  problems = validation.config_problems(config, needs_data=False)
  assert any("train.wandb='offline' needs the optional wandb package" in p and "requirements-wandb.txt" in p
             for p in problems), problems
  with pytest.raises(ConfigError, match="train.wandb='offline'"):
    writers.open_run(config, "/nonexistent/never/created")
  config.train.wandb = "disabled"
  assert not any("wandb" in p for p in validation.config_problems(config, needs_data=False))


class _Stream(io.StringIO):

  def __init__(self, tty: bool):
    super().__init__()
    self._tty = tty

  def isatty(self) -> bool:
    return self._tty


@pytest.mark.parametrize("tty", [False, True])
def test_progress_bars_only_on_a_terminal(monkeypatch, tty):
  monkeypatch.setattr(sys, "stderr", _Stream(tty))
  with progress.bar(10, "train", "step", initial=4) as b:
    assert bool(b.disable) is (not tty)
    progress.advance(b, 6, loss="0.1234")
    assert b.n == (6 if tty else 4)
  shown = sys.stderr.getvalue()
  assert ("6/10" in shown and "loss=0.1234" in shown) if tty else shown == ""
  with progress.bar(10, "train", "step", enabled=False) as b:  # e.g. process 1 of a multi-host run
    assert b.disable
