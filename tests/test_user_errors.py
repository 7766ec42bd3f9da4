"""Bad input through the real entry points: one clear paragraph, exit status 2, no traceback, nothing on
disk lost; damaged checkpoints survived, kill -9 during a save resumed, one run per workdir."""

import concurrent.futures
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time

import h5py
import jax
import numpy as np
import pytest

from ebt_jax import cli, jsonio, validation
from ebt_jax.data.robomimic_hdf5 import RawDemo, write_demos
from ebt_jax.errors import CheckpointError, ConfigError, WorkdirError
from ebt_jax.training import checkpoint, trainer, workdir as workdir_lib

sys.path.insert(0, os.path.dirname(__file__))
from test_training import tiny_config, tiny_demos  # pylint: disable=g-import-not-at-top,wrong-import-position

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OBS_KEYS = ("object", "robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos")
TINY = ["--config.model.width=16", "--config.model.num_layers=1", "--config.model.num_obs_layers=1",
        "--config.model.num_heads=2", "--config.sampler.train_steps=2", "--config.sampler.train_extra_steps=1",
        "--config.train.batch_size=8", "--config.train.num_steps=4", "--config.train.warmup_steps=1",
        "--config.train.log_every=2", "--config.train.checkpoint_every=2", "--config.train.keep_checkpoints=3"]


def _python(*args, timeout=300) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout,
                        env=dict(os.environ, PYTHONPATH=REPO))


def _lift_like_file(path: str, env_args: dict | None, lengths=(30, 30, 30)) -> str:
  """A robomimic HDF5 file with Lift's low-dim keys and random values (training needs no simulator)."""
  rng = np.random.default_rng(0)
  widths = {"object": 10, "robot0_eef_pos": 3, "robot0_eef_quat": 4, "robot0_gripper_qpos": 2}
  demos = [RawDemo(obs={k: rng.normal(size=(n, w)) for k, w in widths.items()},
                   actions=rng.uniform(-1, 1, (n, 7)), rewards=np.zeros(n), dones=np.zeros(n, np.int64),
                   states=rng.normal(size=(n, 5))) for n in lengths]
  write_demos(path, demos, env_args or {})
  return path


def _snapshot(workdir: str) -> dict[str, str]:
  """sha256 of every file of a run directory except its lock file."""
  out = {}
  for root, _, files in os.walk(workdir):
    for name in files:
      path = os.path.join(root, name)
      if name != workdir_lib.LOCK_FILE:
        with open(path, "rb") as f:
          out[os.path.relpath(path, workdir)] = hashlib.sha256(f.read()).hexdigest()
  return out


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
  """A finished tiny run (checkpoints 2 and 4, metrics) made by the real CLI, and its dataset."""
  root = tmp_path_factory.mktemp("errors")
  data = _lift_like_file(str(root / "lift.hdf5"), {"env_name": "Lift", "type": 1, "env_kwargs": {}})
  workdir = str(root / "run")
  proc = _python("-m", "ebt_jax.main", "--config=configs/lift.py", f"--config.data.path={data}",
                 f"--workdir={workdir}", "--skip_eval", *TINY)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4"]
  return root, data, workdir


def _cases(root, data: str, workdir: str):
  """(name, argv, substrings the message must contain); every one must exit 2 before any work.

  ``WORKDIR`` in an argument stands for the case's own copy of the trained run (cases run in parallel,
  and a run that gets as far as the workdir lock would otherwise be refused for holding it)."""
  not_a_dir = str(root / "a_file")
  with open(not_a_dir, "w") as f:
    f.write("x")
  raw = str(root / "raw_robosuite.hdf5")
  with h5py.File(raw, "w") as f:  # robosuite's collector layout: states + actions, no obs
    f.create_group("data").attrs["env"] = "Lift"
    f.create_dataset("data/demo_1/states", data=np.zeros((5, 9)))
    f.create_dataset("data/demo_1/actions", data=np.zeros((5, 7)))
  no_env = _lift_like_file(str(root / "no_env_args.hdf5"), None)
  main = ["-m", "ebt_jax.main", "--config=configs/lift.py", "--workdir=WORKDIR", *TINY]
  on_data = main + [f"--config.data.path={data}"]
  bad_fields = {"--config.train.keep_checkpoints=0": "train.keep_checkpoints=0",
                "--config.train.learning_rate=-0.01": "train.learning_rate=-0.01",
                "--config.train.batch_size=0": "train.batch_size=0",
                "--config.train.checkpoint_every=0": "train.checkpoint_every=0",
                "--config.eval.backend=mujoco": "eval.backend='mujoco'",
                "--config.eval.num_episodes=0": "eval.num_episodes=0"}
  cases = [(flag.split("=")[0], on_data + [flag], [field]) for flag, field in bad_fields.items()]
  return cases + [
      ("all problems together", on_data + list(bad_fields), ["6 problems in the config", *bad_fields.values()]),
      ("typo", on_data + ["--config.train.num_step=5"], ["--config.train.num_step=5", "did you mean 'num_steps'"]),
      ("wrong type", on_data + ["--config.train.batch_size=abc"], ["--config.train.batch_size=abc"]),
      ("unknown policy", on_data + ["--config.policy=dp"], ["policy='dp'", "'ebt', 'diffusion'"]),
      ("unknown variant", ["-m", "ebt_jax.main", "--config=configs/lift.py:gpu"], ["unknown variant 'gpu'"]),
      ("horizons", on_data + ["--config.horizon.action=20"], ["horizon.action=20", "horizon.pred - horizon.obs + 1"]),
      ("batch over devices", on_data + ["--config.train.batch_size=9"], ["train.batch_size=9", "multiple of the 2 devices"]),
      ("mesh over devices", on_data + ["--config.train.mesh=(4,1)"], ["train.mesh=(4, 1)", "there are 2 devices"]),
      ("missing dataset", main + [f"--config.data.path={root}/nope.hdf5"], ["data.path=", "no such file"]),
      ("raw robosuite demos", main + [f"--config.data.path={raw}"],
       [raw, "python -m ebt_jax.convert --from=robosuite"]),
      ("no env to evaluate in", main + [f"--config.data.path={no_env}"], ["eval.backend='robosuite'", "env_args"]),
      ("env_args robosuite cannot build", on_data, ["'data' attribute 'env_args'", "robosuite cannot build this env"]),
      ("gym_pusht on Lift", on_data + ["--config.eval.backend=gym_pusht"], ["eval.backend='gym_pusht'", "derived_obs"]),
      ("workdir under a file", main[:-len(TINY) - 1] + [f"--config.data.path={data}", f"--workdir={not_a_dir}/run"],
       [f"--workdir={not_a_dir}/run", "is a file"]),
      ("resume another width", on_data + ["--config.model.width=32", "--config.train.num_steps=6", "--skip_eval"],
       ["checkpoint at step 4", "model.width: 16 in the checkpoint, 32 in this config", "another --workdir"]),
      ("resume other obs keys", on_data + ["--config.data.obs_keys=('object','robot0_eef_pos')", "--skip_eval",
                                           "--config.train.num_steps=6"],
       ["data.obs_keys", "obs_dim=19", "obs_dim=13"]),
      ("collect to an unwritable path", ["-m", "ebt_jax.collect", f"--out={not_a_dir}/x.hdf5", "--num_demos=0"],
       ["2 invalid flags", "--num_demos=0", f"--out={not_a_dir}/x.hdf5", "is a file"]),
      ("compare a run without eval.json", ["-m", "ebt_jax.compare", f"--runs={workdir}", f"--out={root}/cmp"],
       [os.path.join(workdir, "eval.json"), "no such file"]),
      ("latency with a bad label", ["-m", "ebt_jax.benchmarks.latency", "--ebt_inference=mcmc-0"],
       ["--ebt_inference", "'mcmc-0'"]),
      ("latency with bad counts", ["-m", "ebt_jax.benchmarks.latency", "--runs=0", "--batch_sizes=1,-4"],
       ["2 invalid flags", "--runs=0", "['-4'] must be integers >= 1"]),
      ("train_step with an unknown variant field", ["-m", "ebt_jax.benchmarks.train_step",
                                                    "--variant=x:sampler.nope=1", "--runs=1"],
       ["sampler.nope=1", "no field 'nope'"]),
      ("convert a missing file", ["-m", "ebt_jax.convert", "--from=robosuite", f"--in={root}/nope.hdf5",
                                  f"--out={root}/out.hdf5"], ["nope.hdf5"]),
  ]


def test_bad_inputs_exit_2_with_one_paragraph_and_lose_nothing(trained_run):
  root, data, workdir = trained_run
  before = _snapshot(workdir)
  cases = _cases(root, data, workdir)
  copies = [str(root / f"case_{k}") for k in range(len(cases))]
  for copy in copies:
    shutil.copytree(workdir, copy)

  def run(k):
    return _python(*[a.replace("WORKDIR", copies[k]) for a in cases[k][1]])

  with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
    procs = list(pool.map(run, range(len(cases))))
  failures = []
  for (name, argv, expected), proc, copy in zip(cases, procs, copies):
    expected = [e.replace("WORKDIR", copy) for e in expected]
    problems = [] if _snapshot(copy) == before else ["the run directory changed"]
    if proc.returncode != cli.EXIT_USER_ERROR:
      problems.append(f"exit status {proc.returncode}")
    if "Traceback" in proc.stderr:
      problems.append("a traceback was printed")
    problems += [f"no {e!r} in the message" for e in expected if e not in proc.stderr]
    if problems:
      failures.append(f"{name} ({' '.join(argv[1:3])} ...): {'; '.join(problems)}\n{proc.stderr[-1500:]}")
  assert not failures, "\n\n".join(failures)
  assert _snapshot(workdir) == before  # checkpoints and metrics untouched by every refused run
  assert not os.path.exists(os.path.join(root, "x.hdf5")) and not os.path.exists(os.path.join(root, "cmp"))


def test_verbose_shows_the_traceback_and_bugs_keep_theirs(trained_run):
  root, data, _ = trained_run
  proc = _python("-m", "ebt_jax.main", "--config=configs/lift.py", f"--config.data.path={data}",
                 f"--workdir={root}/verbose", "--config.train.batch_size=0", "--verbose")
  assert proc.returncode != 0 and "Traceback" in proc.stderr and "ConfigError" in proc.stderr

  def buggy(argv):
    raise RuntimeError("a bug")
  with pytest.raises(RuntimeError, match="a bug"):  # not a UserError: not swallowed
    cli.guarded(buggy)(["prog"])


def test_config_validation_reports_every_problem_in_one_error():
  config = tiny_config()
  config.train.update(batch_size=0, keep_checkpoints=0)
  config.sampler.update(momentum=1.5, langevin_sigma_min=0.5, langevin_sigma_max=0.2)
  config.model.width = 17  # odd, and not divisible by the 2 heads
  config.eval.max_steps_sweep = (1, 0)
  with pytest.raises(ConfigError) as e:
    validation.check_config(config, num_devices=2)
  message = str(e.value)
  for expected in ("7 problems", "train.batch_size=0", "train.keep_checkpoints=0", "sampler.momentum=1.5",
                   "in [0, 1)", "langevin_sigma_min=0.5", "model.width=17: must be even",
                   "model.width=17: must be divisible by model.num_heads=2",
                   "eval.max_steps_sweep=(1, 0)"):
    assert expected in message, message
  assert validation.config_problems(tiny_config(), num_devices=8) == []
  config = tiny_config()
  config.policy = "diffusion"
  config.diffusion.update(inference="ddim-200", eval_sweep=("ddpm-0",))
  problems = validation.config_problems(config)
  assert len(problems) == 2 and "steps must be in [1, 100]" in problems[0], problems


@pytest.fixture(scope="module")
def reference_and_run_to_4(tmp_path_factory):
  """An uninterrupted 6-step run (the reference) and a 4-step run with checkpoints 2 and 4 to damage."""
  root = tmp_path_factory.mktemp("damage")
  _, reference, _ = trainer.train(tiny_config(keep_checkpoints=3), str(root / "ref"), tiny_demos())
  trainer.train(tiny_config(num_steps=4, keep_checkpoints=3), str(root / "run4"), tiny_demos())
  return jax.device_get(reference), str(root / "run4")


def test_keep_checkpoints_zero_never_reaches_orbax(reference_and_run_to_4, tmp_path):
  _, run4 = reference_and_run_to_4
  workdir = str(tmp_path / "run")
  shutil.copytree(run4, workdir)
  before = _snapshot(workdir)
  with pytest.raises(ConfigError, match="train.keep_checkpoints=0"):  # orbax max_to_keep=0 deletes them all
    trainer.train(tiny_config(keep_checkpoints=0), workdir, tiny_demos())
  assert _snapshot(workdir) == before


def _truncate_arrays(step_dir):
  files = [os.path.join(r, n) for r, _, names in os.walk(os.path.join(step_dir, "state")) for n in names
           if os.sep + "d" + os.sep in os.path.join(r, n)]
  assert files
  for path in files:
    with open(path, "r+b") as f:
      f.truncate(os.path.getsize(path) // 2)


DAMAGE = {
    "truncated array files": _truncate_arrays,
    "missing state/_METADATA": lambda step_dir: os.remove(os.path.join(step_dir, "state", "_METADATA")),
    "missing normalizer item": lambda step_dir: shutil.rmtree(os.path.join(step_dir, "normalizer")),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_latest_checkpoint_is_skipped_kept_and_training_resumes(damage, reference_and_run_to_4, tmp_path,
                                                                         caplog):
  reference, run4 = reference_and_run_to_4
  workdir = str(tmp_path / "run")
  shutil.copytree(run4, workdir)
  DAMAGE[damage](os.path.join(workdir, "checkpoints", "4"))
  seen = []
  with caplog.at_level(logging.WARNING):
    _, resumed, _ = trainer.train(tiny_config(keep_checkpoints=3), workdir, tiny_demos(),
                                  on_step=lambda step, state: seen.append(step))
  assert seen == [3, 4, 5, 6]  # walked back to step 2
  log = caplog.text
  assert "checkpoint step 4" in log and "damaged" in log and "restored checkpoint step 2" in log
  kept = os.path.join(workdir, checkpoint.DAMAGED_DIR, "4")
  assert os.path.isdir(kept) and kept in log  # the damaged files are kept, out of orbax's way
  for a, b in zip(jax.tree.leaves(jax.device_get(resumed)), jax.tree.leaves(reference)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  with open(os.path.join(workdir, trainer.METRICS_FILE)) as f:
    assert [json.loads(line)["step"] for line in f] == [2, 4, 6]
  policy, _ = checkpoint.load_policy(workdir)  # the restored run reloads for evaluation
  assert policy.model.obs_dim == 5


def test_no_intact_checkpoint_is_refused_and_nothing_moved(reference_and_run_to_4, tmp_path):
  _, run4 = reference_and_run_to_4
  workdir = str(tmp_path / "run")
  shutil.copytree(run4, workdir)
  for step in ("2", "4"):
    shutil.rmtree(os.path.join(workdir, "checkpoints", step, "normalizer"))
  before = _snapshot(workdir)
  with pytest.raises(CheckpointError, match=r"no checkpoint .* can be restored \(step 4: KeyError.*step 2: KeyError"):
    trainer.train(tiny_config(keep_checkpoints=3), workdir, tiny_demos())
  assert _snapshot(workdir) == before and not os.path.exists(os.path.join(workdir, checkpoint.DAMAGED_DIR))


_KILL_DURING_SAVE = """
import os, signal, sys
import orbax.checkpoint as ocp
sys.path.insert(0, {tests!r})
from test_training import tiny_config, tiny_demos
from ebt_jax.training import trainer
finish = ocp.CheckpointManager.wait_until_finished
def kill_while_step_4_is_written(self):
  if any(n.startswith("4.") and "tmp" in n for n in os.listdir(self.directory)):
    os.kill(os.getpid(), signal.SIGKILL)  # orbax has started writing step 4 and not finished it
  finish(self)
ocp.CheckpointManager.wait_until_finished = kill_while_step_4_is_written
trainer.train(tiny_config(), {workdir!r}, tiny_demos())
"""


def test_kill_9_during_a_save_leaves_a_resumable_workdir(reference_and_run_to_4, tmp_path):
  reference, _ = reference_and_run_to_4
  workdir = str(tmp_path / "run")
  proc = _python("-c", _KILL_DURING_SAVE.format(tests=os.path.dirname(__file__), workdir=workdir))
  assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
  names = os.listdir(os.path.join(workdir, "checkpoints"))
  assert "2" in names and "4" not in names and any(n.startswith("4.") for n in names)  # died mid-save
  seen = []
  _, resumed, _ = trainer.train(tiny_config(), workdir, tiny_demos(), on_step=lambda step, state: seen.append(step))
  assert seen == [3, 4, 5, 6]
  for a, b in zip(jax.tree.leaves(jax.device_get(resumed)), jax.tree.leaves(reference)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  with open(os.path.join(workdir, trainer.METRICS_FILE)) as f:
    assert [json.loads(line)["step"] for line in f] == [2, 4, 6]


def test_a_second_run_on_the_same_workdir_stops_at_once_naming_the_first(trained_run, tmp_path):
  _, data, _ = trained_run
  workdir = str(tmp_path / "run")
  args = ["-m", "ebt_jax.main", "--config=configs/lift.py", f"--config.data.path={data}", f"--workdir={workdir}",
          "--skip_eval", *TINY]
  first = subprocess.Popen([sys.executable, *args, "--config.train.num_steps=100000"], cwd=REPO,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ, PYTHONPATH=REPO))
  try:
    metrics = os.path.join(workdir, trainer.METRICS_FILE)
    deadline = time.time() + 120
    while not os.path.exists(metrics) and time.time() < deadline:  # the first run is training
      time.sleep(0.5)
    assert os.path.exists(metrics), "the first run did not start training"
    second = _python(*args)
    assert second.returncode == cli.EXIT_USER_ERROR and "Traceback" not in second.stderr
    assert f"in use by another run (pid {first.pid} on" in second.stderr, second.stderr[-2000:]
  finally:
    first.send_signal(signal.SIGKILL)
    first.wait()
  # The kernel released the dead run's lock: the same command now resumes and finishes.
  steps = [json.loads(line)["step"] for line in open(metrics)]
  resumed = _python(*args, "--config.train.num_steps=" + str(max(steps) + 4))
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  with open(metrics) as f:
    final = [json.loads(line)["step"] for line in f]
  assert final == sorted(set(final)) and final[-1] == max(steps) + 4  # no step twice


def test_lock_is_reentrant_in_a_process_and_exclusive_across_processes(tmp_path):
  workdir = str(tmp_path)
  with workdir_lib.hold(workdir):
    with workdir_lib.hold(workdir):  # main.run holds it and calls trainer.train, which takes it too
      pass
    holder = _python("-c", "from ebt_jax.training import workdir as w\n"
                     f"with w.hold({workdir!r}): pass")
    assert holder.returncode != 0 and "WorkdirError" in holder.stderr and f"pid {os.getpid()}" in holder.stderr
  held = subprocess.Popen([sys.executable, "-c", "import time\nfrom ebt_jax.training import workdir as w\n"
                           f"with w.hold({workdir!r}):\n  print('held', flush=True)\n  time.sleep(60)"],
                          cwd=REPO, stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=REPO))
  try:
    assert held.stdout.readline().strip() == "held"
    with pytest.raises(WorkdirError, match=f"in use by another run \\(pid {held.pid} on"):
      with workdir_lib.hold(workdir):
        pass
  finally:
    held.kill()
    held.wait()
  with workdir_lib.hold(workdir):  # released by the kernel when its holder died
    pass


def _strict(line: str):
  def reject(constant):
    raise ValueError(f"non-JSON constant {constant}")
  return json.loads(line, parse_constant=reject)


def test_files_are_strict_json_with_null_for_non_finite(tmp_path):
  assert jsonio.dumps({"a": float("nan"), "b": [np.float32("inf"), 1.5], "c": np.int64(3)}) == (
      '{"a": null, "b": [null, 1.5], "c": 3}')
  metrics = str(tmp_path / trainer.METRICS_FILE)
  trainer.append_record(metrics, {"step": 50, "loss": float("nan"), "grad_norm": np.float32("inf")})
  with open(metrics) as f:
    assert _strict(f.readline()) == {"step": 50, "loss": None, "grad_norm": None}
  jsonio.write(str(tmp_path / "eval.json"), {"mean_final_energy": np.float32("nan"), "by_inference": {}})
  with open(str(tmp_path / "eval.json")) as f:
    assert _strict(f.read()) == {"mean_final_energy": None, "by_inference": {}}


def test_demos_shorter_than_the_prediction_horizon_are_named_in_a_warning(caplog):
  config = tiny_config()
  demos = tiny_demos(n=3, length=20)
  first = demos.episodes[0]
  short = dataclasses.replace(demos, episodes=(
      dataclasses.replace(first, name="demo_7", obs=first.obs[:9], actions=first.actions[:9]), *demos.episodes[1:]))
  with caplog.at_level(logging.WARNING):
    validation.check_dataset(config, short, skip_eval=True)
  assert "1 of 3 demos are shorter than the prediction horizon horizon.pred=16" in caplog.text
  assert "demo_7 (9 steps)" in caplog.text
