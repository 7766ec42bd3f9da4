"""python -m ebt_jax.evaluate on a finished tiny run (no dataset needed), and the validation loss of held-out
demos (data.valid_filter_key / valid_fraction) in metrics.jsonl. One 4-step training serves both."""

import json
import os
import sys

import h5py
import numpy as np
import pytest

from ebt_jax import cli, evaluate, main, validation
from ebt_jax.data import datasets
from ebt_jax.data.windows import WindowDataset
from ebt_jax.envs import robosuite_env
from ebt_jax.errors import CheckpointError, ConfigError, DatasetError, WorkdirError
from ebt_jax.training import trainer

sys.path.insert(0, os.path.dirname(__file__))
from test_training import tiny_config  # pylint: disable=g-import-not-at-top,wrong-import-position
from test_user_errors import _lift_like_file, _python  # pylint: disable=g-import-not-at-top,wrong-import-position

LENGTHS = (30, 30, 30, 25)  # demo_3 is mask/valid: 25 - Tp + Ta + To - 1 = 18 windows (the others 23 each)


def _config(data: str):
  """tiny_config on the Lift-like file, validation on mask/valid; logs at step 4 only, checkpoints (and so
  validation losses, eval.every_steps being 0) at 2 and 4: step 2 gets a record of its own. Model, widths,
  batch and schedule as test_end_to_end's main job, so that the suite compiles its train step once (JAX's
  persistent compilation cache, tests/conftest.py)."""
  config = tiny_config(num_steps=4, warmup_steps=1, log_every=4, checkpoint_every=2)
  config.data.path = data
  config.data.valid_filter_key = "valid"
  config.eval.update(num_episodes=1, horizon=4, max_steps_sweep=(1,))
  return config


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  """A finished 4-step run of the main job (--skip_eval) on a file with mask/train + mask/valid, with a
  stand-in eval.json of the main job, and its dataset moved away (evaluation must not need it)."""
  root = tmp_path_factory.mktemp("evaluate")
  data = _lift_like_file(str(root / "lift.hdf5"), robosuite_env.lift_env_args(), lengths=LENGTHS)
  with h5py.File(data, "a") as f:
    f.create_dataset("mask/train", data=np.array([b"demo_0", b"demo_1", b"demo_2"]))
    f.create_dataset("mask/valid", data=np.array([b"demo_3"]))
  workdir = str(root / "run")
  main.run(_config(data), workdir, skip_eval=True)
  with open(os.path.join(workdir, main.EVAL_FILE), "w") as f:
    f.write('{"stand-in": "the main job\'s results"}')
  os.rename(data, data + ".away")
  return root, data + ".away", workdir


def test_held_out_demos_are_left_out_of_training(finished_run):
  _, data, _ = finished_run
  config = _config(data)
  demos = datasets.read_configured(config.data, data)
  assert [e.name for e in demos.episodes] == ["demo_0", "demo_1", "demo_2"]
  assert [e.name for e in demos.held_out] == ["demo_3"]
  h = config.horizon
  windows = WindowDataset(demos, trainer.fit_normalizer(demos), h.obs, h.action, h.pred, seed=0)
  assert len(windows) == 3 * 23  # demo_3's 18 windows are not among them
  # valid_fraction: a seeded share of whole episodes, the same on every read; not with a mask.
  split = datasets.read_dataset(data, config.data.obs_keys, valid_fraction=0.25)
  again = datasets.read_dataset(data, config.data.obs_keys, valid_fraction=0.25)
  assert len(split.held_out) == 1 and len(split.episodes) == 3
  assert [e.name for e in split.held_out] == [e.name for e in again.held_out]
  config.data.valid_fraction = 0.25
  assert any("data.valid_filter_key='valid' and data.valid_fraction=0.25" in p
             for p in validation.config_problems(config, needs_data=False))


def test_a_missing_validation_mask_names_the_file_and_its_masks(finished_run):
  _, data, _ = finished_run
  config = _config(data)
  config.data.valid_filter_key = "heldout"
  with pytest.raises(DatasetError, match=r"lift.hdf5.away: config.data.valid_filter_key='heldout'.*"
                                         r"no 'mask/heldout' \(its masks: \['train', 'valid'\]"):
    datasets.read_configured(config.data, data)


def test_valid_loss_is_recorded_at_every_checkpoint_and_plotted(finished_run):
  _, _, workdir = finished_run
  with open(os.path.join(workdir, trainer.METRICS_FILE)) as f:
    records = [json.loads(line) for line in f]
  assert [r["step"] for r in records] == [2, 4]
  own, merged = records
  assert set(own) == {"step", "valid_loss", "valid_windows", "train_wall_s"}  # step 2 logs nothing else
  assert {"loss", "grad_norm", "valid_loss", "valid_windows"} <= set(merged)  # the last step: one record
  assert own["valid_windows"] == merged["valid_windows"] == 18
  assert all(np.isfinite(r["valid_loss"]) and r["valid_loss"] > 0 for r in records)
  assert trainer.train_wall_s(workdir) == merged["train_wall_s"] > own["train_wall_s"] > 0
  assert os.path.getsize(os.path.join(workdir, main.LOSS_PLOT)) > 0
  with open(os.path.join(workdir, trainer.ENV_ARGS_FILE)) as f:
    assert json.load(f)["env_name"] == "Lift"


def test_evaluate_writes_its_own_file_beside_eval_json(finished_run, capsys):
  _, _, workdir = finished_run
  with open(os.path.join(workdir, main.EVAL_FILE)) as f:
    main_eval = f.read()
  result, path = evaluate.evaluate_run(workdir, "latest", ["mcmc-2", "mcmc-1"], backend="robosuite",
                                       num_episodes=1, horizon=4, name="smoke", video_episodes=0)
  assert path == os.path.join(workdir, evaluate.EVALS_DIR, "latest-4_robosuite_smoke.json")
  with open(path) as f:
    saved = json.load(f)
  assert saved["inference"] == ["mcmc-2", "mcmc-1"] and list(saved["by_inference"]) == ["mcmc-2", "mcmc-1"]
  assert saved["checkpoint"]["step"] == 4 and saved["backend"] == "robosuite" and saved["horizon"] == 4
  assert saved["env_args_source"].endswith(trainer.ENV_ARGS_FILE)  # the dataset itself is gone
  for label, summary in saved["by_inference"].items():
    assert summary["num_episodes"] == 1 and len(summary["episodes"]) == 1
    assert 1 <= summary["mean_sampler_steps"] <= int(label.split("-")[1])
  with open(os.path.join(workdir, main.EVAL_FILE)) as f:
    assert f.read() == main_eval  # the main job's results untouched
  table = evaluate.summary_table(result)
  assert table.splitlines()[0].split() == ["inference", "success_rate", "mean_sampler_steps", "mean_final_energy",
                                           "energy_failure_auroc"]
  assert [row.split()[0] for row in table.splitlines()[2:]] == ["mcmc-2", "mcmc-1"]
  assert all(row.split()[-1] == "-" for row in table.splitlines()[2:])  # one episode: no failure AUROC


def test_evaluate_refuses_what_it_cannot_evaluate(finished_run):
  root, _, workdir = finished_run
  with pytest.raises(WorkdirError, match="no such run directory"):
    evaluate.evaluate_run(str(root / "nope"))
  with pytest.raises(CheckpointError, match=r"no checkpoint of step 3; .*latest = steps \[2, 4\]"):
    evaluate.evaluate_run(workdir, "3")
  with pytest.raises(CheckpointError, match=r"'final': must be 'latest', 'best' or a step number"):
    evaluate.evaluate_run(workdir, "final")
  with pytest.raises(ConfigError, match=r"--inference: .*'ddim'.*sampler 'mcmc'.*default 'mcmc-2'"):
    evaluate.evaluate_run(workdir, "2", ["mcmc-2", "ddim-10"])
  with pytest.raises(ConfigError, match=r"eval.backend='gym_pusht' evaluates Push-T"):
    evaluate.evaluate_run(workdir, "2", backend="gym_pusht")
  with pytest.raises(ConfigError, match="never replaces"):
    evaluate.evaluate_run(workdir, "2", out=os.path.join(workdir, main.EVAL_FILE))
  # Through the command line: one paragraph, exit status 2, no traceback.
  proc = _python("-m", "ebt_jax.evaluate", f"--workdir={workdir}", "--checkpoint=best", "--num_episodes=1")
  assert proc.returncode == cli.EXIT_USER_ERROR and "Traceback" not in proc.stderr, proc.stderr[-2000:]
  assert "ebt_jax.evaluate: error:" in proc.stderr and "kept no best checkpoint" in proc.stderr
  assert "latest = steps [2, 4]" in proc.stderr


def test_valid_fraction_holds_out_whole_replay_buffer_episodes(tmp_path):
  from test_pusht import write_buffer  # pylint: disable=g-import-not-at-top
  path = write_buffer(tmp_path / "buffer.zarr", ends=(5, 12, 20, 26, 33))
  demos = datasets.read_dataset(path, ("state",), valid_fraction=0.4)
  names = [f"episode_{k}" for k in range(5)]
  assert [e.name for e in demos.held_out] == datasets.fraction_held_out(names, 0.4) and len(demos.held_out) == 2
  assert sorted(e.name for e in demos.episodes + demos.held_out) == names
  with pytest.raises(DatasetError, match=r"Zarr replay buffers have no filter masks.*valid_fraction"):
    datasets.read_dataset(path, ("state",), valid_filter_key="valid")
  with pytest.raises(DatasetError, match=r"valid_fraction=0.99 holds out all 5 episodes"):
    datasets.read_dataset(path, ("state",), valid_fraction=0.99)
