"""One run per work directory: an exclusive ``fcntl`` lock on ``<workdir>/run.lock``.

A second run on the same workdir (two terminals, a re-queued job while the first still runs) would
interleave ``metrics.jsonl`` and race orbax on the same checkpoint directory. ``hold(workdir)`` takes
a non-blocking exclusive ``flock`` on ``<workdir>/run.lock`` and writes the holder's pid, host, start
time and command line into it; a second run stops at once with a ``WorkdirError`` naming them. The
kernel releases the lock when the holder exits in any way (also ``kill -9``), so a stale lock file
never blocks a resume.

The lock is re-entrant within a process (``ebt_jax.main.run`` holds it and calls the trainer, which
takes it too). On multi-host runs only JAX process 0 locks (all hosts share one workdir).

An object-store workdir (``gs://bucket/runs/lift``) cannot be locked: ``fcntl`` locks local files only
and GCS has no lock. ``hold`` then logs a warning that the one-run-per-workdir guarantee is local-only,
and still writes the holder line into ``run.lock``, so whoever looks at the bucket sees which run wrote
it last; keeping one run per such workdir is up to the user (or the job scheduler).
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import os
import socket
import sys
from typing import Iterator

from absl import logging

from ebt_jax import paths
from ebt_jax.errors import WorkdirError

LOCK_FILE = "run.lock"
_held: dict[str, list] = {}  # realpath (or URI) of the lock file -> [file object or None, depth]


def _holder(path: str) -> str:
  try:
    with open(path) as f:
      text = f.read().strip()
  except OSError:
    text = ""
  return text or "a process that did not record its pid"


def _holder_line() -> str:
  started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
  return f"pid {os.getpid()} on {socket.gethostname()}, started {started}: {' '.join(sys.argv)}\n"


def _lock_local(path: str, workdir: str):
  """Opens and exclusively locks the local lock file ``path``, writing the holder line; -> the open file.

  The builtin ``open``, not epath: ``flock`` needs an OS file descriptor, which only a local file has."""
  f = open(path, "a+")  # pylint: disable=consider-using-with  (held until the block ends)
  try:
    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    f.close()
    raise WorkdirError(
        f"the run directory {os.path.abspath(workdir)} is in use by another run ({_holder(path)}). "
        "Wait for it to finish (or stop it), or pass another --workdir.") from None
  try:
    f.seek(0)
    f.truncate()
    f.write(_holder_line())
    f.flush()
  except BaseException:
    fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    f.close()
    raise
  return f


def _record_unlocked(path: str, workdir: str) -> None:
  """An object-store workdir: no lock exists there, so warn, and write the holder line for people to see."""
  logging.warning("the run directory %s is in an object store (%s://): the one-run-per-workdir lock works on "
                  "local disks only, so nothing stops a second run from using it at the same time; %s names "
                  "this run for people to see", workdir, paths.scheme(workdir), path)
  try:
    paths.path(path).write_text(_holder_line())
  except OSError as e:
    raise WorkdirError(f"cannot write {path} ({e.strerror or e})") from e


@contextlib.contextmanager
def hold(workdir: str, lock: bool = True) -> Iterator[None]:
  """Holds ``<workdir>/run.lock`` (creating the workdir) for the duration of the ``with`` block.

  A local workdir gets the exclusive ``fcntl`` lock. ``fcntl`` cannot lock an object store, so a
  ``gs://`` workdir is not locked: a warning is logged (absl) and ``run.lock`` still names this run.

  Args:
    workdir: the run directory, a local path or a ``gs://`` URI.
    lock: False does nothing (non-zero JAX processes of a multi-host run).

  Raises:
    WorkdirError: if another process holds the lock of a local workdir (the message names its pid, host,
      start time and command), or the workdir (object store: its ``run.lock``) cannot be written.
  """
  if not lock:
    yield
    return
  try:
    paths.path(workdir).mkdir(parents=True, exist_ok=True)
  except (OSError, ValueError) as e:
    raise WorkdirError(f"cannot create the run directory {workdir} ({getattr(e, 'strerror', None) or e})") from e
  local = paths.is_local(workdir)
  path = os.path.realpath(os.path.join(workdir, LOCK_FILE)) if local else str(paths.path(workdir) / LOCK_FILE)
  if path in _held:
    _held[path][1] += 1
    try:
      yield
    finally:
      _held[path][1] -= 1
    return
  if local:
    f = _lock_local(path, workdir)
  else:
    f = None
    _record_unlocked(path, workdir)
  try:
    _held[path] = [f, 1]
    yield
  finally:
    _held.pop(path, None)
    if f is not None:
      fcntl.flock(f.fileno(), fcntl.LOCK_UN)
      f.close()
