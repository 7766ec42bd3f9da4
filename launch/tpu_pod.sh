#!/usr/bin/env bash
# Train EBT-Policy on every host of a Cloud TPU VM pod slice (multi-host data parallelism).
#
#   TPU_NAME=my-v4-32 ZONE=us-central2-b DATA=/mnt/data/lift/ph/low_dim_v15.hdf5 \
#   WORKDIR=/mnt/runs/lift_paper bash launch/tpu_pod.sh [extra --config.* flags]
#
# Every host runs the same command (big_vision style); `--distributed` calls
# jax.distributed.initialize(), the batch is sharded over all chips of all hosts, and each host
# feeds its own slice. DATA and WORKDIR must be visible to every host at the same path (e.g. a shared
# filesystem or a copy on each host); the repository must already be checked out at ~/ebt-jax.
# Evaluation in robosuite runs on CPU, so pods train with --skip_eval; evaluate a checkpoint on one host.
set -euo pipefail
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}" "${DATA:?set DATA}" "${WORKDIR:?set WORKDIR}"
CONFIG=${CONFIG:-configs/lift.py:paper}
extra=$(printf ' %q' "$@")
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all --command "
  cd ~/ebt-jax &&
  pip install -q -r requirements.txt 'jax[tpu]' && pip install -q --no-deps -r requirements-nodeps.txt &&
  python -m ebt_jax.main --config=$CONFIG --distributed --skip_eval \
    --workdir=$WORKDIR --config.data.path=$DATA $extra"
