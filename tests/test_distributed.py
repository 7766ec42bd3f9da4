"""Multi-process training and preemption through the real CLI: two JAX processes on 127.0.0.1 (gloo
collectives) train, checkpoint, resume and evaluate on process 0 exactly as one process does; a SIGTERM
saves the current step and exits 0, and the rerun resumes without losing or repeating a step."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from ebt_jax.envs import robosuite_env
from ebt_jax.errors import ConfigError
from ebt_jax.training import distributed, trainer

sys.path.insert(0, os.path.dirname(__file__))
from test_user_errors import REPO, TINY, _lift_like_file  # pylint: disable=g-import-not-at-top,wrong-import-position

LIFT_ENV = robosuite_env.lift_env_args()
# One decision-free episode is enough to show who evaluates (robosuite Lift, 4 env steps, no sweep).
TINY_EVAL = ["--config.eval.num_episodes=1", "--config.eval.horizon=4", "--config.eval.max_steps_sweep=()",
             "--config.eval.video_episodes=0"]  # no rollout videos: their renderer process takes seconds to start


def test_resolve_takes_flags_then_environment_then_auto_detection():
  env = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "3"}
  assert distributed.resolve(environ=env) == {"coordinator_address": "10.0.0.1:1234", "num_processes": 4,
                                              "process_id": 3}
  assert distributed.resolve("h:1", 2, 0, environ=env) == {"coordinator_address": "h:1", "num_processes": 2,
                                                           "process_id": 0}
  assert distributed.resolve(environ={}) == {"coordinator_address": None, "num_processes": None, "process_id": None}
  with pytest.raises(ConfigError, match="JAX_NUM_PROCESSES='four': must be an integer"):
    distributed.resolve(environ={"JAX_NUM_PROCESSES": "four", "JAX_PROCESS_ID": "0"})
  with pytest.raises(ConfigError, match="come together"):
    distributed.resolve(num_processes=2, environ={})
  with pytest.raises(ConfigError, match="0 <= process_id < num_processes"):
    distributed.resolve("h:1", 2, 2, environ={})


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env() -> dict:
  env = dict(os.environ, PYTHONPATH=REPO)
  for name in list(env):  # no cluster auto-detection from the machine the tests run on
    if name.startswith(("SLURM_", "OMPI_", "JAX_COORDINATOR", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")):
      del env[name]
  return env


def _main_args(data: str, workdir: str, *extra: str) -> list[str]:
  return [sys.executable, "-m", "ebt_jax.main", "--config=configs/lift.py", f"--config.data.path={data}",
          f"--workdir={workdir}", *TINY, "--config.train.log_every=1",
          "--config.train.decay_steps=1000", *extra]  # the schedule does not depend on num_steps


def _run_processes(commands: list[list[str]], timeout: float = 400) -> list[tuple[int, str]]:
  """Starts every command at once, waits for all (killing them all past ``timeout``); -> (rc, stderr)."""
  procs = [subprocess.Popen(c, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
           for c in commands]
  try:
    deadline = time.time() + timeout
    out = []
    for p in procs:
      _, err = p.communicate(timeout=max(deadline - time.time(), 1))
      out.append((p.returncode, err))
    return out
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()


def _losses(workdir: str) -> dict[int, float]:
  with open(os.path.join(workdir, trainer.METRICS_FILE)) as f:
    return {r["step"]: r["loss"] for r in map(json.loads, f)}


def test_two_processes_train_resume_and_evaluate_on_process_zero_like_one_process(tmp_path):
  data = _lift_like_file(str(tmp_path / "lift.hdf5"), LIFT_ENV)
  single = str(tmp_path / "single")
  multi = str(tmp_path / "multi")

  def both(*extra, beside=()):
    port = _free_port()
    return _run_processes([
        _main_args(data, multi, "--config.train.num_cpu_devices=1", "--distributed",
                   f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={k}", *extra)
        for k in (0, 1)] + list(beside))

  # The one-process reference runs beside the first multi-process leg (compilation is mostly one thread:
  # overlapping the three processes saves a sequential start-up and compile on the 2-core CI machine).
  reference = _main_args(data, single, "--config.train.num_cpu_devices=2", *TINY_EVAL)
  *legs, (rc, err) = both("--config.train.num_steps=2", "--skip_eval", beside=[reference])  # then stopped
  assert rc == 0, err[-3000:]
  for rc, err in legs:
    assert rc == 0, err[-3000:]
  assert sorted(os.listdir(os.path.join(multi, "checkpoints"))) == ["2"]
  (rc0, err0), (rc1, err1) = both(*TINY_EVAL)  # resumed to step 4, then evaluated
  assert rc0 == 0 and rc1 == 0, (err0[-3000:], err1[-3000:])
  assert "Resumed from" in err0 and "Resumed from" in err1
  assert "process 1 of 2" in err1 and "process 0 of 2" in err0  # the topology, logged on every host
  assert "process 1: evaluation runs on process 0" in err1 and "robosuite eval" not in err1
  assert "robosuite eval" in err0

  # The same global batches (WindowDataset's shard), so the same losses at every step and the same result.
  one, two = _losses(single), _losses(multi)
  assert sorted(two) == [1, 2, 3, 4] == sorted(one)
  np.testing.assert_allclose([two[s] for s in sorted(two)], [one[s] for s in sorted(one)], rtol=1e-5)
  with open(os.path.join(single, "eval.json")) as f1, open(os.path.join(multi, "eval.json")) as f2:
    r1, r2 = json.load(f1), json.load(f2)
  assert r2["train_steps"] == r1["train_steps"] == 4
  np.testing.assert_allclose(r2["episodes"][0]["energy"], r1["episodes"][0]["energy"], rtol=1e-4)


def test_sigterm_saves_the_current_step_exits_0_and_the_rerun_resumes_exactly(tmp_path):
  data = _lift_like_file(str(tmp_path / "lift.hdf5"), LIFT_ENV)
  workdir = str(tmp_path / "run")
  long_run = _main_args(data, workdir, "--skip_eval", "--config.train.num_steps=100000",
                        "--config.train.checkpoint_every=100000")
  proc = subprocess.Popen(long_run, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  try:
    metrics = os.path.join(workdir, trainer.METRICS_FILE)
    deadline = time.time() + 300
    while time.time() < deadline and (not os.path.exists(metrics) or len(open(metrics).readlines()) < 3):
      time.sleep(0.2)
    assert os.path.exists(metrics), "the run did not start training"
    proc.send_signal(signal.SIGTERM)
    t_signal = time.time()
    _, err = proc.communicate(timeout=60)
    stop_s = time.time() - t_signal
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  assert proc.returncode == 0, err[-3000:]
  assert stop_s < 30, f"took {stop_s:.1f} s from SIGTERM to exit"  # 5.4 s here with two trainings beside it
  saved = [int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit()]
  assert len(saved) == 1 and "preempted: checkpoint of step" in err
  stopped = saved[0]
  assert max(_losses(workdir)) == stopped  # every step up to the saved one is logged, none after it

  final = stopped + 3
  reference = str(tmp_path / "uninterrupted")  # runs beside the resumed run
  (rc, err), (rc_ref, err_ref) = _run_processes([
      _main_args(data, workdir, "--skip_eval", f"--config.train.num_steps={final}"),
      _main_args(data, reference, "--skip_eval", f"--config.train.num_steps={final}")])
  assert rc == 0 and f"at step {stopped}" in err, err[-3000:]
  assert rc_ref == 0, err_ref[-3000:]
  resumed, straight = _losses(workdir), _losses(reference)
  assert sorted(resumed) == list(range(1, final + 1)) == sorted(straight)
  np.testing.assert_allclose([resumed[s] for s in sorted(resumed)], [straight[s] for s in sorted(straight)],
                             rtol=1e-6)
