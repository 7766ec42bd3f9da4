"""Multi-process JAX (TPU pods, multi-node GPU clusters): start-up, topology, the shared-workdir check.

Every host runs the same command with ``--distributed`` (big_vision style). Where the cluster tells JAX
its topology (Cloud TPU, SLURM, Open MPI, Kubernetes) nothing more is needed; anywhere else the three
values come from flags (``--coordinator_address``, ``--num_processes``, ``--process_id``) or, for a flag
left unset, from ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``. The resolved
topology is logged on every host.

All hosts must see one work directory (a ``gs://`` URI or a shared filesystem): orbax writes a
checkpoint from every host into it and waits for all of them, so per-host copies of the workdir hang the
first save. ``check_shared_workdir`` finds that out before training.
"""

from __future__ import annotations

import os
import secrets
import socket
from typing import Mapping

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from ebt_jax import paths
from ebt_jax.errors import ConfigError, WorkdirError

ENV_VARS = {"coordinator_address": "JAX_COORDINATOR_ADDRESS", "num_processes": "JAX_NUM_PROCESSES",
            "process_id": "JAX_PROCESS_ID"}
_PROBE_DIR = ".hosts_check"  # <workdir>/.hosts_check/<token>: written by process 0, read by every host


def resolve(coordinator_address: str | None = None, num_processes: int | None = None,
            process_id: int | None = None, environ: Mapping[str, str] = os.environ) -> dict:
  """The arguments for ``jax.distributed.initialize``: each flag, or its ``ENV_VARS`` variable if the flag
  is unset; what neither gives stays None (JAX's auto-detection).

  Returns:
    {"coordinator_address": str | None, "num_processes": int | None, "process_id": int | None}.

  Raises:
    ConfigError: a variable that is not an integer, ``process_id`` outside [0, num_processes), or only
      one of ``num_processes`` / ``process_id`` given (JAX needs both or neither).
  """
  given = {"coordinator_address": coordinator_address, "num_processes": num_processes, "process_id": process_id}
  out = {}
  for name, value in given.items():
    source = f"--{name}"
    if value in (None, ""):
      value, source = environ.get(ENV_VARS[name]) or None, ENV_VARS[name]
    if value is not None and name != "coordinator_address":
      try:
        value = int(value)
      except ValueError:
        raise ConfigError(f"{source}={value!r}: must be an integer") from None
    out[name] = value
  n, k = out["num_processes"], out["process_id"]
  if (n is None) != (k is None):
    raise ConfigError(f"--num_processes ({ENV_VARS['num_processes']}) and --process_id ({ENV_VARS['process_id']}) "
                      f"come together: got num_processes={n}, process_id={k}")
  if n is not None and (n < 1 or not 0 <= k < n):
    raise ConfigError(f"--process_id={k} with --num_processes={n}: needs num_processes >= 1 and "
                      "0 <= process_id < num_processes")
  return out


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, environ: Mapping[str, str] = os.environ) -> dict:
  """``jax.distributed.initialize`` with ``resolve``'s arguments; logs and returns ``topology()``.

  Must run before anything touches a JAX backend.

  Raises:
    ConfigError: bad arguments (``resolve``), or JAX could neither auto-detect the cluster nor was told
      its topology (the message says which flags / variables to set).
  """
  args = resolve(coordinator_address, num_processes, process_id, environ)
  try:
    jax.distributed.initialize(**{k: v for k, v in args.items() if v is not None})
  except (ValueError, RuntimeError) as e:
    if any(v is not None for v in args.values()):
      raise
    raise ConfigError(
        f"--distributed: JAX found no cluster to auto-detect (Cloud TPU, SLURM, Open MPI, Kubernetes) and no "
        f"topology was given ({e}). Pass --coordinator_address=<host of process 0>:<port> --num_processes=N "
        f"--process_id=K on every host, or set {', '.join(ENV_VARS.values())}.") from e
  info = topology()
  logging.info("distributed: process %d of %d on %s, %d local / %d global %s devices, coordinator %s",
               info["process_index"], info["process_count"], info["host"], info["local_devices"],
               info["global_devices"], info["platform"], args["coordinator_address"] or "auto-detected")
  return info


def topology() -> dict:
  """{process_index, process_count, host, local_devices, global_devices, platform} of this process."""
  return {"process_index": jax.process_index(), "process_count": jax.process_count(), "host": socket.gethostname(),
          "local_devices": jax.local_device_count(), "global_devices": jax.device_count(),
          "platform": jax.devices()[0].platform}


def check_shared_workdir(workdir: str) -> None:
  """Multi-process runs: every host must see the same ``workdir`` (local path or ``gs://`` URI).

  Process 0 writes a random token file under ``<workdir>/.hosts_check``; the token is broadcast, each host
  looks for the file, and all hosts learn who could not see it before any of them raises (so none is
  left waiting in a collective). One process: nothing to check.

  Raises:
    WorkdirError: on every host, if some host does not see process 0's file (the message lists them).
  """
  if jax.process_count() == 1:
    return
  probe_dir = paths.path(workdir) / _PROBE_DIR
  name = lambda token: "-".join(f"{int(v) & 0xFFFFFFFF:08x}" for v in np.asarray(token))
  token = np.frombuffer(secrets.token_bytes(8), np.int32)  # int32: what JAX broadcasts without x64
  if jax.process_index() == 0:
    probe_dir.mkdir(parents=True, exist_ok=True)
    (probe_dir / name(token)).write_text(socket.gethostname())
  token = multihost_utils.broadcast_one_to_all(token)  # a collective: process 0 has written by now
  seen = np.asarray([(probe_dir / name(token)).exists()])
  everyone = np.asarray(multihost_utils.process_allgather(seen)).reshape(-1)
  if jax.process_index() == 0:
    (probe_dir / name(token)).unlink()
  blind = [int(i) for i in np.flatnonzero(~everyone)]
  if blind:
    raise WorkdirError(
        f"the work directory {workdir} is not shared: process(es) {blind} do not see the file process 0 wrote "
        "there. Every host of a multi-host run must use one location (a gs:// URI or a shared filesystem); "
        "per-host copies make the first checkpoint save wait forever.")


def on_process_zero() -> bool:
  """True on JAX process 0 (the one that writes metrics, eval files and plots, and evaluates)."""
  return jax.process_index() == 0


def host_copy(tree):
  """``tree``'s arrays as NumPy values on this host (a collective on multi-process runs: every process must
  call it); one process: ``tree`` unchanged. What process-0-only evaluation needs, since a multi-host
  array (replicated or FSDP-sharded) lives partly on devices of other hosts."""
  if jax.process_count() == 1:
    return tree
  return multihost_utils.process_allgather(tree, tiled=True)  # a global array's full value on every host


def wait_for_all(name: str) -> None:
  """A barrier over every process (``multihost_utils.sync_global_devices``); nothing on one process."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)
