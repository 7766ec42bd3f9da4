#!/usr/bin/env bash
# Train EBT-Policy on every host of a Cloud TPU VM pod slice (multi-host data parallelism), from your
# own machine, through gcloud:
#
#   export TPU_NAME=ebt-v4-32 ZONE=us-central2-b              # required by every subcommand
#   bash launch/tpu_pod.sh create                            # the TPU VM (or reuse an existing one)
#   bash launch/tpu_pod.sh setup                             # repository + Python 3.11 env on all workers
#   WORKDIR=gs://my-bucket/runs/lift_paper DATA=gs://my-bucket/lift/ph/low_dim_v15.hdf5 \
#     bash launch/tpu_pod.sh train --config.train.steps=200000
#   bash launch/tpu_pod.sh logs [-f] [WORKER]                # tail the per-worker logs
#   bash launch/tpu_pod.sh status                            # TPU state, job alive per worker
#   bash launch/tpu_pod.sh stop                              # SIGTERM (checkpoint, exit 0) on all workers
#
# Every worker runs the same command (`--distributed`: jax.distributed.initialize() auto-detects the
# pod); the job runs detached (setsid + nohup) so a dropped ssh connection does not kill it, and each
# worker logs to ~/ebt-jax-logs/<run>/worker-<hostname>.log (pid next to it). `bash launch/tpu_pod.sh help`
# lists every variable. Needs bash and gcloud on your machine; the workers need nothing preinstalled
# beyond the TPU VM image (python3 + pip to bootstrap uv, which installs Python 3.11).
set -euo pipefail

PROG=${0##*/}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() {
  cat <<EOF
usage: $PROG SUBCOMMAND [ARGS...]

subcommands (all act on every worker of TPU_NAME unless a worker is named):
  create [GCLOUD_FLAGS...]   create the TPU VM if it does not exist (else reuse it); extra flags go to
                             'gcloud compute tpus tpu-vm create' (e.g. --spot, --network=NET)
  setup                      copy this working tree (tracked + untracked files, .gitignore'd ones,
                             .git, workdir/ and caches left out) to every worker and create the Python
                             \$PYTHON_VERSION env with uv; the env is rebuilt only when requirements*.txt,
                             the jax[tpu] pin or the Python version change
  train [--config.X=V ...]   start the training job, detached, on every worker (the flags are appended)
  logs [-f] [WORKER]         last \$LOG_LINES lines of each worker's log (-f: follow; WORKER: 0, 1, ...)
  status                     the TPU VM's state and, per worker, whether the job runs + its last line
  stop                       SIGTERM to the job on every worker (it saves a checkpoint and exits 0),
                             SIGKILL after \$STOP_TIMEOUT_S seconds; 'train' again resumes
  delete                     delete the TPU VM (gcloud asks for confirmation)
  help                       this text

required:   TPU_NAME, ZONE (every subcommand); WORKDIR (train)
variables (default):
  PROJECT            gcloud project (gcloud's configured one)
  ACCELERATOR_TYPE   create: TPU type (v4-32)
  RUNTIME_VERSION    create: TPU software version (from ACCELERATOR_TYPE: v4 and older
                     tpu-ubuntu2204-base, v5litepod v2-alpha-tpuv5-lite, v5p v2-alpha-tpuv5,
                     v6e v2-alpha-tpuv6e)
  INTERNAL_IP        1: ssh/scp over the internal IP (--internal-ip), from a machine in the VPC (0)
  WORKDIR            train: gs://bucket/path (checkpoints through orbax) or an absolute path of a
                     filesystem every worker mounts; one location for all workers
  DATA               train: --config.data.path; gs://... is copied once to ~/ebt-jax-data/ on every
                     worker, an absolute path must exist on every worker (unset: the config's own)
  CONFIG             train: config file[:variant], relative to the repository (configs/lift.py:paper)
  SKIP_EVAL          train: 1 passes --skip_eval (0: evaluate on process 0 after training)
  RUN                run name: log folder ~/ebt-jax-logs/RUN on the workers (train: WORKDIR's last
                     component; logs/status/stop: the run last started)
  REMOTE_DIR         repository on the workers, relative to their home (ebt-jax)
  VENV_DIR           Python env on the workers, relative to their home (ebt-jax-venv)
  PYTHON_VERSION     Python of that env (3.11)
  UV_VERSION         uv bootstrapped with 'python3 -m pip install --user' if a worker has none (0.13.8)
  EXTRA_PACKAGES     setup: more pip install arguments, space-separated (-r requirements-cloud.txt: gcsfs and
                     google-cloud-storage, which a gs:// WORKDIR needs; '' for none)
  LOG_LINES          logs: lines per worker (100)
  STOP_TIMEOUT_S     stop: seconds between SIGTERM and SIGKILL (300)
  START_CHECK_S      train: seconds after the start to check the job is still alive (10)
EOF
}

fail() {  # fail MESSAGE [EXIT_STATUS]
  printf '%s: error: %s\n' "$PROG" "$1" >&2
  exit "${2:-1}"
}

require() {  # require VAR WHAT EXAMPLE
  if [[ -z ${!1:-} ]]; then
    fail "$1 is not set: $2 (e.g. export $1=$3)" 2
  fi
}

default_runtime() {
  case $1 in
    v6e*) echo v2-alpha-tpuv6e ;;
    v5p*) echo v2-alpha-tpuv5 ;;
    v5litepod* | v5e*) echo v2-alpha-tpuv5-lite ;;
    *) echo tpu-ubuntu2204-base ;;
  esac
}

# --- settings -------------------------------------------------------------------------------------
ACCELERATOR_TYPE=${ACCELERATOR_TYPE:-v4-32}
RUNTIME_VERSION=${RUNTIME_VERSION:-$(default_runtime "$ACCELERATOR_TYPE")}
CONFIG=${CONFIG:-configs/lift.py:paper}
SKIP_EVAL=${SKIP_EVAL:-0}
REMOTE_DIR=${REMOTE_DIR:-ebt-jax}
VENV_DIR=${VENV_DIR:-ebt-jax-venv}
PYTHON_VERSION=${PYTHON_VERSION:-3.11}
UV_VERSION=${UV_VERSION:-0.13.8}
EXTRA_PACKAGES=${EXTRA_PACKAGES--r requirements-cloud.txt}
LOG_LINES=${LOG_LINES:-100}
STOP_TIMEOUT_S=${STOP_TIMEOUT_S:-300}
START_CHECK_S=${START_CHECK_S:-10}
REMOTE_TARBALL=ebt-jax-src.tar.gz  # in the workers' home; no spaces (scp's remote path)

# --- gcloud ---------------------------------------------------------------------------------------
gcloud_tpu() {  # gcloud compute tpus tpu-vm ARGS... --zone=ZONE [--project=PROJECT]
  gcloud compute tpus tpu-vm "$@" --zone="$ZONE" ${PROJECT:+"--project=$PROJECT"}
}

ip_flag() {  # prints --internal-ip when INTERNAL_IP=1 (one word or nothing)
  if [[ ${INTERNAL_IP:-0} == 1 ]]; then echo --internal-ip; fi
}

remote() {  # remote WORKER SCRIPT: run a bash script on one worker (0, 1, ...) or on all of them
  local worker=$1 script=$2 ip
  ip=$(ip_flag)
  # The worker's login shell (bash on the TPU VM images) parses the command; printf %q quotes the
  # whole script as one word for `bash -c`, so paths with spaces or quotes survive.
  gcloud_tpu ssh "$TPU_NAME" "--worker=$worker" ${ip:+"$ip"} \
    "--command=bash -c $(printf '%q' "$script")"
}

assign() {  # assign NAME VALUE ...: bash assignments for the top of a remote script
  while (($# >= 2)); do
    printf '%s=%q\n' "$1" "$2"
    shift 2
  done
}

# Shared by every remote script: absolute paths under the worker's home, this worker's files.
# shellcheck disable=SC2016  # expanded on the worker, not here
REMOTE_PRELUDE='set -euo pipefail
cd "$HOME"
abs() { if [[ $1 == /* ]]; then printf "%s" "$1"; else printf "%s" "$HOME/$1"; fi; }
repo=$(abs "$repo"); venv=$(abs "$venv"); logroot=$HOME/ebt-jax-logs
host=$(hostname)
say() { printf "[%s] %s\n" "$host" "$*"; }
pick_run() {  # RUN as given, else the run last started on this worker
  if [[ -z $run ]]; then
    if [[ -f $logroot/LATEST ]]; then run=$(cat "$logroot/LATEST"); else say "no run started here yet"; exit 1; fi
  fi
  logdir=$logroot/$run; log=$logdir/worker-$host.log; pidfile=$logdir/worker-$host.pid
}
is_job() {  # is_job PID: alive and an ebt_jax.main process (not a reused pid)
  [[ -n $1 ]] && kill -0 "$1" 2>/dev/null && tr "\0" " " <"/proc/$1/cmdline" 2>/dev/null | grep -q "ebt_jax.main"
}
'

# --- subcommands ----------------------------------------------------------------------------------
cmd_create() {
  local state
  if state=$(gcloud_tpu describe "$TPU_NAME" --format='value(state)' 2>/dev/null); then
    echo "TPU VM $TPU_NAME exists in $ZONE (state: ${state:-unknown}): reusing it"
    if [[ $state != READY ]]; then
      echo "note: not READY; a STOPPED one starts with: gcloud compute tpus tpu-vm start $TPU_NAME --zone=$ZONE"
    fi
    return 0
  fi
  echo "creating TPU VM $TPU_NAME ($ACCELERATOR_TYPE, runtime $RUNTIME_VERSION) in $ZONE"
  gcloud_tpu create "$TPU_NAME" --accelerator-type="$ACCELERATOR_TYPE" --version="$RUNTIME_VERSION" "$@"
}

make_tarball() {  # make_tarball OUT: this working tree as .tar.gz (what `git status` would show + tracked)
  local out=$1
  (
    cd "$ROOT"
    if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
      # Tracked and untracked files, minus .gitignore'd ones, deleted ones, run outputs and caches.
      git ls-files -z --cached --others --exclude-standard |
        while IFS= read -r -d '' f; do
          case $f in
            workdir/* | .venv/* | shared/* | .benchmarks/* | */__pycache__/* | __pycache__/* | .pytest_cache/*) ;;
            *) if [[ -f $f ]]; then printf '%s\0' "$f"; fi ;;
          esac
        done |
        tar -czf "$out" --null -T -
    else
      tar --exclude=./.git --exclude=./workdir --exclude=./.venv --exclude=./shared --exclude=./.benchmarks \
        --exclude=__pycache__ --exclude=.pytest_cache -czf "$out" .
    fi
  )
}

cmd_setup() {
  local jax_version tmp ip script
  jax_version=$(sed -n 's/^jax==\([0-9][0-9.]*\).*/\1/p' "$ROOT/requirements.txt")
  [[ -n $jax_version ]] || fail "no 'jax==VERSION' line in $ROOT/requirements.txt"
  tmp=$(mktemp -d)
  # shellcheck disable=SC2064  # expand now: the folder of this call
  trap "rm -rf -- $(printf '%q' "$tmp")" EXIT
  make_tarball "$tmp/src.tar.gz"
  echo "copying $(du -h "$tmp/src.tar.gz" | cut -f1) of $ROOT to every worker of $TPU_NAME"
  ip=$(ip_flag)
  gcloud_tpu scp "$tmp/src.tar.gz" "$TPU_NAME:$REMOTE_TARBALL" --worker=all ${ip:+"$ip"}
  script=$(
    assign repo "$REMOTE_DIR" venv "$VENV_DIR" run "" tarball "$REMOTE_TARBALL" \
      python_version "$PYTHON_VERSION" uv_version "$UV_VERSION" jax_spec "jax[tpu]==$jax_version" \
      extra_packages "$EXTRA_PACKAGES"
    printf '%s\n' "$REMOTE_PRELUDE"
    cat <<'EOF'
# The new tree replaces the old one whole (files deleted here disappear there too).
new=$repo.new.$$
rm -rf -- "$new" && mkdir -p -- "$new"
tar -xzf "$tarball" -C "$new"
rm -f -- "$tarball"
if [[ -e $repo ]]; then rm -rf -- "$repo.old" && mv -- "$repo" "$repo.old"; fi
mv -- "$new" "$repo"
rm -rf -- "$repo.old"
say "repository in $repo"
cd -- "$repo"
read -ra extra_pkgs <<<"$extra_packages"
want=$({ cat requirements.txt requirements-nodeps.txt requirements-cloud.txt; printf 'python=%s\n%s\n%s\n' "$python_version" "$jax_spec" "$extra_packages"; } | sha256sum | cut -d" " -f1)
stamp=$venv/.ebt-jax-requirements.sha256
if [[ -x $venv/bin/python && -f $stamp && $(cat "$stamp") == "$want" ]]; then
  say "Python env $venv up to date (requirements hash $want)"
  exit 0
fi
export PATH=$HOME/.local/bin:$PATH
if ! command -v uv >/dev/null; then
  say "installing uv $uv_version"
  python3 -m pip install --user --quiet "uv==$uv_version"
fi
say "creating the Python $python_version env $venv"
uv python install "$python_version"
rm -rf -- "$venv"
uv venv --python "$python_version" "$venv"
uv pip install --python "$venv/bin/python" -r requirements.txt "$jax_spec" "${extra_pkgs[@]}"
uv pip install --python "$venv/bin/python" --no-deps -r requirements-nodeps.txt
"$venv/bin/python" -c 'import sys, jax; print("python", sys.version.split()[0], "jax", jax.__version__)'
printf '%s\n' "$want" >"$stamp"
say "Python env ready"
EOF
  )
  remote all "$script"
}

sanitize() {  # a run name from a path: last component, only [A-Za-z0-9._-]
  local name=${1%/}
  name=${name##*/}
  name=${name//[^A-Za-z0-9._-]/_}
  printf '%s' "${name:-run}"
}

cmd_train() {
  require WORKDIR "one location every worker sees: a gs:// URI or a shared filesystem's absolute path" \
    gs://my-bucket/runs/lift_paper
  case $WORKDIR in
    gs://* | /*) ;;
    *) fail "WORKDIR=$WORKDIR is relative: every worker must see the same location (gs://bucket/path or an absolute path on a shared filesystem); separate local workdirs make the first checkpoint hang" 2 ;;
  esac
  case ${DATA:-} in
    "" | gs://* | /*) ;;
    *) fail "DATA=$DATA is relative: give a gs:// URI (copied to every worker) or an absolute path that exists on every worker" 2 ;;
  esac
  local run=${RUN:-$(sanitize "$WORKDIR")} script
  script=$(
    assign repo "$REMOTE_DIR" venv "$VENV_DIR" run "$run" workdir "$WORKDIR" config "$CONFIG" \
      data "${DATA:-}" skip_eval "$SKIP_EVAL" start_check_s "$START_CHECK_S"
    printf 'extra=('
    if (($# > 0)); then printf ' %q' "$@"; fi
    printf ' )\n'
    printf '%s\n' "$REMOTE_PRELUDE"
    cat <<'EOF'
pick_run
[[ -x $venv/bin/python ]] || { say "no Python env at $venv: run 'launch/tpu_pod.sh setup' first"; exit 1; }
[[ -f $repo/ebt_jax/main.py ]] || { say "no repository at $repo: run 'launch/tpu_pod.sh setup' first"; exit 1; }
# The TPU chips take one job at a time: refuse while any run's job is alive on this worker.
for f in "$logroot"/*/worker-"$host".pid; do
  [[ -f $f ]] || continue
  if is_job "$(cat "$f")"; then say "a job is already running (pid $(cat "$f"), $f): launch/tpu_pod.sh stop"; exit 1; fi
done
if [[ $data == gs://* ]]; then
  local_data=$HOME/ebt-jax-data/$(basename "$data")
  if [[ ! -e $local_data ]]; then
    mkdir -p -- "$HOME/ebt-jax-data"
    say "copying $data to $local_data"
    rm -rf -- "$local_data.part"
    gcloud storage cp --recursive "$data" "$local_data.part"
    mv -- "$local_data.part" "$local_data"
  fi
  data=$local_data
fi
if [[ -n $data && ! -e $data ]]; then say "DATA $data does not exist on this worker"; exit 1; fi
cmd=("$venv/bin/python" -m ebt_jax.main "--config=$config" "--workdir=$workdir" --distributed)
if [[ -n $data ]]; then cmd+=("--config.data.path=$data"); fi
if [[ $skip_eval == 1 ]]; then cmd+=(--skip_eval); fi
cmd+=("${extra[@]}")
mkdir -p -- "$logdir"
cd -- "$repo"
{ printf '==== %s %s: started on %s:' "$(date -u +%FT%TZ)" "$run" "$host"; printf ' %q' "${cmd[@]}"; printf '\n'; } >>"$log"
# setsid: own session, so the ssh connection's end (SIGHUP) does not reach it; nohup for good measure.
setsid nohup "${cmd[@]}" >>"$log" 2>&1 </dev/null &
pid=$!
printf '%s\n' "$pid" >"$pidfile"
printf '%s\n' "$run" >"$logroot/LATEST"
sleep "$start_check_s"
if ! kill -0 "$pid" 2>/dev/null; then
  say "the job exited within ${start_check_s}s; its log $log ends with:"
  tail -n 30 -- "$log" | sed "s/^/[$host]   /"
  exit 1
fi
say "started run $run: pid $pid, log $log"
EOF
  )
  remote all "$script"
  echo "follow it with: bash launch/tpu_pod.sh logs -f 0    (stop: bash launch/tpu_pod.sh stop)"
}

cmd_logs() {
  local follow=0 worker=all script
  while (($# > 0)); do
    case $1 in
      -f | --follow) follow=1 ;;
      all | [0-9]*) worker=$1 ;;
      *) fail "logs: unknown argument '$1' (usage: $PROG logs [-f] [WORKER])" 2 ;;
    esac
    shift
  done
  script=$(
    assign repo "$REMOTE_DIR" venv "$VENV_DIR" run "${RUN:-}" follow "$follow" lines "$LOG_LINES"
    printf '%s\n' "$REMOTE_PRELUDE"
    cat <<'EOF'
pick_run
[[ -f $log ]] || { say "no log $log"; exit 1; }
if [[ $follow == 1 ]]; then
  tail -n "$lines" -F -- "$log" | sed -u "s/^/[$host] /"
else
  tail -n "$lines" -- "$log" | sed "s/^/[$host] /"
fi
EOF
  )
  remote "$worker" "$script"
}

cmd_status() {
  local script
  gcloud_tpu describe "$TPU_NAME" --format='table(name.basename(),state,acceleratorType,health)'
  script=$(
    assign repo "$REMOTE_DIR" venv "$VENV_DIR" run "${RUN:-}"
    printf '%s\n' "$REMOTE_PRELUDE"
    cat <<'EOF'
pick_run
pid=$(cat "$pidfile" 2>/dev/null || true)
if is_job "$pid"; then state="running (pid $pid)"; else state="not running"; fi
last=$(tail -n 1 -- "$log" 2>/dev/null || true)
say "run $run: $state; log $log: ${last:-<empty>}"
EOF
  )
  remote all "$script"
}

cmd_stop() {
  local script
  script=$(
    assign repo "$REMOTE_DIR" venv "$VENV_DIR" run "${RUN:-}" timeout "$STOP_TIMEOUT_S"
    printf '%s\n' "$REMOTE_PRELUDE"
    cat <<'EOF'
pick_run
pid=$(cat "$pidfile" 2>/dev/null || true)
if ! is_job "$pid"; then say "run $run: no job running"; rm -f -- "$pidfile"; exit 0; fi
# The job leads its own process group (setsid): signal the group. SIGTERM = save a checkpoint, exit 0.
say "run $run: SIGTERM to pid $pid (checkpoint, then exit)"
kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
for ((i = 0; i < timeout; i++)); do
  kill -0 "$pid" 2>/dev/null || break
  sleep 1
done
if kill -0 "$pid" 2>/dev/null; then
  say "still running after ${timeout}s: SIGKILL"
  kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid"
fi
rm -f -- "$pidfile"
say "run $run stopped; its log: $log"
EOF
  )
  remote all "$script"
}

cmd_delete() {
  gcloud_tpu delete "$TPU_NAME"
}

main() {
  if (($# == 0)); then
    usage >&2
    exit 2
  fi
  local sub=$1
  shift
  case $sub in
    help | -h | --help)
      usage
      return 0
      ;;
    create | train | logs) ;;
    setup | status | stop | delete)
      if (($# > 0)); then fail "$sub takes no arguments (got: $*)" 2; fi
      ;;
    *)
      printf '%s: unknown subcommand: %s\n\n' "$PROG" "$sub" >&2
      usage >&2
      exit 2
      ;;
  esac
  require TPU_NAME "the TPU VM's name" ebt-v4-32
  require ZONE "the TPU VM's zone" us-central2-b
  command -v gcloud >/dev/null || fail "gcloud not found on PATH: install the Google Cloud CLI (https://cloud.google.com/sdk/docs/install)"
  case $sub in
    create) cmd_create "$@" ;;
    setup) cmd_setup "$@" ;;
    train) cmd_train "$@" ;;
    logs) cmd_logs "$@" ;;
    status) cmd_status "$@" ;;
    stop) cmd_stop "$@" ;;
    delete) cmd_delete "$@" ;;
  esac
}

main "$@"
