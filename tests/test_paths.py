"""Work-directory files through ``ebt_jax.paths`` (etils.epath): the same functions on a local directory
and on ``gs://`` (a fake GCS: fsspec's in-memory filesystem registered for the gs / gcs protocols, which
epath uses for ``gs://`` when TensorFlow is not installed)."""

import importlib
import json
import logging
import os
import sys

import fsspec
import pytest
from absl import flags
from etils.epath import backend as epath_backend
from etils.epath import gpath
from fsspec.implementations.memory import MemoryFileSystem

from ebt_jax import cli, compare, jsonio, paths, validation
from ebt_jax.errors import CheckpointError, ConfigError
from ebt_jax.evaluation import plots
from ebt_jax.training import checkpoint, trainer, workdir as workdir_lib

sys.path.insert(0, os.path.dirname(__file__))
from test_training import tiny_config  # pylint: disable=g-import-not-at-top,wrong-import-position

PNG = b"\x89PNG\r\n\x1a\n"
READ_ONLY_BUCKET = "readonly"  # the fake refuses every write into gs://readonly/...


def _fake_gcs_class():
  """A fresh in-memory "GCS" (its own store): paths are stored without the scheme, as ``/bucket/key``."""

  class FakeGcs(MemoryFileSystem):
    protocol = ("gs", "gcs")
    store = {}
    pseudo_dirs = [""]

    @classmethod
    def _strip_protocol(cls, path):
      path = fsspec.utils.stringify_path(path)
      for prefix in ("gs://", "gcs://"):
        path = path.removeprefix(prefix)
      return super()._strip_protocol(path)

    def _open(self, path, mode="rb", **kwargs):
      if "r" not in mode and self._strip_protocol(path).startswith(f"/{READ_ONLY_BUCKET}/"):
        raise PermissionError(13, "Permission denied (fake bucket without write access)", path)
      return super()._open(path, mode, **kwargs)

  return FakeGcs


def _clear_epath_caches():
  epath_backend.fsspec_backend._get_filesystem.cache_clear()  # pylint: disable=protected-access
  gpath._is_tf_installed.cache_clear()  # pylint: disable=protected-access


@pytest.fixture
def fake_gcs(monkeypatch):
  """``gs://`` backed by a fresh in-memory filesystem for one test; the fsspec registry and epath's
  caches are restored afterwards. Yields the filesystem class (``.store``: {"/bucket/key": file})."""
  monkeypatch.setenv("EPATH_USE_TF", "false")  # epath's fsspec backend even where TensorFlow is installed
  saved = {name: fsspec.registry.get(name) for name in ("gs", "gcs")}
  fake = _fake_gcs_class()
  for name in saved:
    fsspec.register_implementation(name, fake, clobber=True)
  _clear_epath_caches()
  yield fake
  for name, cls in saved.items():
    if cls is None:
      registry = importlib.import_module("fsspec.registry")._registry  # pylint: disable=protected-access
      registry.pop(name, None)  # fsspec has no public unregister
    else:
      fsspec.register_implementation(name, cls, clobber=True)
  monkeypatch.delenv("EPATH_USE_TF")
  _clear_epath_caches()


@pytest.fixture(params=["local", "gs"])
def root(request, tmp_path):
  """A run directory that does not exist yet: under tmp_path, or ``gs://bucket/run`` on the fake GCS."""
  if request.param == "local":
    return str(tmp_path / "run")
  request.getfixturevalue("fake_gcs")
  return "gs://bucket/run"


def _join(root: str, name: str) -> str:
  return f"{root}/{name}"


def _write(path: str, text: str) -> None:
  paths.path(path).parent.mkdir(parents=True, exist_ok=True)
  paths.path(path).write_text(text)


def test_path_keeps_uris_and_makes_local_paths_absolute():
  assert str(paths.path("gs://bucket/runs/lift")) == "gs://bucket/runs/lift"
  assert str(paths.path("gs://bucket/runs/lift") / "checkpoints") == "gs://bucket/runs/lift/checkpoints"
  assert str(paths.path("workdir/lift")) == os.path.abspath("workdir/lift")
  assert paths.is_local("workdir/lift") and paths.is_local("/abs/x") and not paths.is_local("gs://b/x")
  assert paths.scheme("gs://b/x") == "gs" and paths.scheme("/a/b") is None
  with pytest.raises(ValueError, match="unsupported URI scheme 'http://'"):
    paths.path("http://example.com/run")
  assert "unsupported URI scheme" in paths.directory_problem("http://example.com/run")


def test_json_write_is_strict_and_atomic_and_lines_append(root):
  jsonio.write(_join(root, "eval.json"), {"energy": float("nan"), "rates": [0.5, 1.0]})
  assert json.loads(paths.path(_join(root, "eval.json")).read_text()) == {"energy": None, "rates": [0.5, 1.0]}
  jsonio.write(_join(root, "eval.json"), {"energy": 2.0})  # replaces the file
  assert json.loads(paths.path(_join(root, "eval.json")).read_text()) == {"energy": 2.0}
  assert sorted(p.name for p in paths.path(root).iterdir()) == ["eval.json"]  # no temporary file left
  metrics = _join(root, trainer.METRICS_FILE)
  for step in (10, 20, 30):
    jsonio.append_line(metrics, {"step": step, "loss": float("inf") if step == 20 else 0.1 * step})
  assert paths.path(metrics).read_text().splitlines() == [
      '{"step": 10, "loss": 1.0}', '{"step": 20, "loss": null}', '{"step": 30, "loss": 3.0}']
  assert [r["step"] for r in jsonio.read_lines(metrics)] == [10, 20, 30]
  assert jsonio.read_lines(_join(root, "absent.jsonl")) == []


def test_trainer_files_truncate_on_resume_and_read_back(root):
  assert trainer.train_wall_s(root) == 0.0 and trainer.read_curve(root) == []
  paths.path(root).mkdir(parents=True, exist_ok=True)  # as workdir.hold does before training
  metrics, curve = _join(root, trainer.METRICS_FILE), _join(root, trainer.CURVE_FILE)
  for step in (10, 20, 30, 40):
    trainer.append_record(metrics, {"step": step, "train_wall_s": 1.5 * step})
    trainer.append_record(curve, {"step": step, "success_rate": step / 100})
  assert trainer.train_wall_s(root) == 60.0
  trainer.truncate_records(metrics, 20)  # a run resumed from step 20
  trainer.truncate_records(curve, 20)
  assert [r["step"] for r in jsonio.read_lines(metrics)] == [10, 20]
  assert trainer.train_wall_s(root) == 30.0
  assert trainer.read_curve(root) == [{"step": 10, "success_rate": 0.1}, {"step": 20, "success_rate": 0.2}]
  assert trainer.best_evaluation(trainer.read_curve(root), "success_rate")["step"] == 20


def test_plot_is_written_as_png(root):
  target = _join(root, "plots/coverage_vs_steps.png")  # the parent directory is created
  plots.curve([{"step": 1, "success_rate": 0.2}, {"step": 2, "success_rate": 0.6}], target, ("success_rate",))
  data = paths.path(target).read_bytes()
  assert data[:8] == PNG and len(data) > 1000


def test_comparison_reads_runs_and_writes_its_files(root):
  for name, policy, rate in (("lift", "ebt", 0.9), ("lift_diffusion", "diffusion", 0.6)):
    run = _join(root, name)
    jsonio.write(_join(run, "eval.json"), {"policy": policy, "success_rate": rate, "train_steps": 100,
                                            "train_epochs": 2.0, "by_inference": {f"{policy}-1": {
                                                "success_rate": rate, "mean_sampler_steps": 1.0,
                                                "num_episodes": 10}}})
    jsonio.append_line(_join(run, "eval_curve.jsonl"), {"step": 100, "epoch": 2.0, "success_rate": rate,
                                                        "train_wall_s": 60.0})
  out = _join(root, "cmp")
  result = compare.compare([_join(root, "lift"), _join(root, "lift_diffusion")], out)
  assert [r["name"] for r in result["runs"]] == ["ebt (lift)", "diffusion (lift_diffusion)"]
  assert json.loads(paths.path(_join(out, compare.RESULT_FILE)).read_text()) == json.loads(jsonio.dumps(result))
  for png in (compare.STEPS_PLOT, compare.EPOCHS_PLOT, compare.WALL_CLOCK_PLOT):
    assert paths.path(_join(out, png)).read_bytes()[:8] == PNG


def test_hold_locks_a_local_workdir(tmp_path, caplog):
  workdir = str(tmp_path / "run")
  with caplog.at_level(logging.WARNING), workdir_lib.hold(workdir):
    text = (tmp_path / "run" / workdir_lib.LOCK_FILE).read_text()
  assert text.startswith(f"pid {os.getpid()} on ") and "local disks only" not in caplog.text


def test_hold_on_gcs_warns_and_records_the_holder(fake_gcs, caplog):
  with caplog.at_level(logging.WARNING):
    with workdir_lib.hold("gs://bucket/run"):
      with workdir_lib.hold("gs://bucket/run"):  # re-entrant, as main.run -> trainer.train
        pass
  assert caplog.text.count("local disks only") == 1 and "gs://bucket/run" in caplog.text
  assert paths.path("gs://bucket/run/run.lock").read_text().startswith(f"pid {os.getpid()} on ")
  assert "/bucket/run/run.lock" in fake_gcs.store


def test_checkpoint_paths_keep_the_uri(fake_gcs, monkeypatch, tmp_path):
  assert checkpoint.checkpoint_dir("gs://b/r") == "gs://b/r/checkpoints"
  assert checkpoint.checkpoint_dir(str(tmp_path / "r")) == str(tmp_path / "r" / "checkpoints")
  with pytest.raises(CheckpointError, match="no checkpoint in gs://bucket/run/checkpoints "):
    checkpoint.load_policy("gs://bucket/run")
  # orbax asks GCS (google-cloud-storage, not installed here) whether a gs:// bucket has a hierarchical
  # namespace before listing steps; the fake bucket has none.
  from orbax.checkpoint._src.path import gcs_utils  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(gcs_utils, "is_hierarchical_namespace_enabled", lambda path: False)
  mngr, best = checkpoint.manager("gs://bucket/run"), checkpoint.best_manager("gs://bucket/run")
  assert str(mngr.directory) == "gs://bucket/run/checkpoints"
  assert str(best.directory) == "gs://bucket/run/checkpoints/best"
  assert mngr.all_steps() == [] and "/bucket/run/checkpoints" in fake_gcs.pseudo_dirs
  mngr.close()
  best.close()
  with pytest.raises(CheckpointError, match=r"no checkpoint in gs://bucket/run/checkpoints \(steps there: \[\]\)"):
    checkpoint.load_policy("gs://bucket/run")


def test_damaged_step_is_moved_aside(root):
  step_dir = _join(root, "checkpoints/4")
  _write(_join(step_dir, "state"), "truncated")
  damaged = _join(root, checkpoint.DAMAGED_DIR)
  moved = checkpoint._move_aside(step_dir, damaged, 4)  # pylint: disable=protected-access
  assert moved == str(paths.path(damaged) / "4") and not paths.path(step_dir).exists()
  assert paths.path(_join(moved, "state")).read_text() == "truncated"
  _write(_join(step_dir, "state"), "again")
  second = checkpoint._move_aside(step_dir, damaged, 4)  # pylint: disable=protected-access
  assert second.startswith(moved + ".") and paths.path(_join(second, "state")).read_text() == "again"
  assert checkpoint._move_aside(step_dir, damaged, 4) is None  # pylint: disable=protected-access  (gone)


def test_writability_checks_of_uris(fake_gcs):
  assert paths.directory_problem("gs://bucket/run") is None
  assert not [k for k in fake_gcs.store if "write_check" in k]  # the probe object was deleted
  problem = paths.directory_problem(f"gs://{READ_ONLY_BUCKET}/run")
  assert problem.startswith(f"cannot create files in 'gs://{READ_ONLY_BUCKET}/run' (PermissionError")
  jsonio.write("gs://bucket/run/eval.json", {})
  assert paths.directory_problem("gs://bucket/run/eval.json") == (
      "'gs://bucket/run/eval.json' is a file, not a directory")
  assert paths.output_file_problem("gs://bucket/out/comparison.json") is None
  assert paths.output_file_problem("gs://bucket/run") == "'gs://bucket/run' is a directory, expected a file path"
  assert "Permission denied" in paths.output_file_problem(f"gs://{READ_ONLY_BUCKET}/x.json")
  assert paths.missing_problem("gs://bucket/run/eval.json") is None
  assert paths.missing_problem("gs://bucket/nope") == "no such file or directory"


def test_validation_accepts_a_gcs_workdir_and_refuses_a_gcs_dataset(fake_gcs, tmp_path):
  config = tiny_config()
  validation.check_config(config, "gs://bucket/run", needs_data=False)
  with pytest.raises(ConfigError, match="--workdir=gs://readonly/run: cannot create files"):
    validation.check_config(config, f"gs://{READ_ONLY_BUCKET}/run", needs_data=False)
  config.data.path = "gs://bucket/data/lift.hdf5"
  jsonio.write(config.data.path, {})  # it exists in the bucket: still refused, h5py cannot open a URI
  with pytest.raises(ConfigError) as e:
    validation.check_config(config, str(tmp_path / "run"))
  assert "data.path='gs://bucket/data/lift.hdf5': datasets are read from a local disk" in str(e.value)
  assert "gcloud storage cp" in str(e.value) and "no such file" not in str(e.value)


def test_compare_runs_flag_accepts_runs_in_a_bucket(fake_gcs):
  jsonio.write("gs://bucket/run/eval.json", {})
  flag_values = flags.FlagValues()
  flags.DEFINE_list("runs", None, "run directories", flag_values=flag_values)
  cli.existing_path("runs", flag_values, uri=True)
  flag_values(["compare", "--runs=gs://bucket/run"])
  assert flag_values.runs == ["gs://bucket/run"]
  with pytest.raises(flags.IllegalFlagValueError, match="gs://bucket/nope: no such file or directory"):
    flag_values(["compare", "--runs=gs://bucket/run,gs://bucket/nope"])
