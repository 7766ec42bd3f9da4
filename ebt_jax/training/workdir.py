"""One run per work directory: an exclusive ``fcntl`` lock on ``<workdir>/run.lock``.

A second run on the same workdir (two terminals, a re-queued job while the first still runs) would
interleave ``metrics.jsonl`` and race orbax on the same checkpoint directory. ``hold(workdir)`` takes
a non-blocking exclusive ``flock`` on ``<workdir>/run.lock`` and writes the holder's pid, host, start
time and command line into it; a second run stops at once with a ``WorkdirError`` naming them. The
kernel releases the lock when the holder exits in any way (also ``kill -9``), so a stale lock file
never blocks a resume.

The lock is re-entrant within a process (``ebt_jax.main.run`` holds it and calls the trainer, which
takes it too). On multi-host runs only JAX process 0 locks (all hosts share one workdir).
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import os
import socket
import sys
from typing import Iterator

from ebt_jax.errors import WorkdirError

LOCK_FILE = "run.lock"
_held: dict[str, list] = {}  # realpath of the lock file -> [file object, depth]


def _holder(path: str) -> str:
  try:
    with open(path) as f:
      text = f.read().strip()
  except OSError:
    text = ""
  return text or "a process that did not record its pid"


@contextlib.contextmanager
def hold(workdir: str, lock: bool = True) -> Iterator[None]:
  """Holds ``<workdir>/run.lock`` (creating the workdir) for the duration of the ``with`` block.

  Args:
    workdir: the run directory.
    lock: False does nothing (non-zero JAX processes of a multi-host run).

  Raises:
    WorkdirError: if another process holds the lock (the message names its pid, host, start time and
      command), or the workdir cannot be created.
  """
  if not lock:
    yield
    return
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise WorkdirError(f"cannot create the run directory {workdir} ({e.strerror or e})") from e
  path = os.path.realpath(os.path.join(workdir, LOCK_FILE))
  if path in _held:
    _held[path][1] += 1
    try:
      yield
    finally:
      _held[path][1] -= 1
    return
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
    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    f.write(f"pid {os.getpid()} on {socket.gethostname()}, started {started}: {' '.join(sys.argv)}\n")
    f.flush()
    _held[path] = [f, 1]
    yield
  finally:
    _held.pop(path, None)
    fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    f.close()
