"""Preemption: a SIGTERM makes the training loop save a checkpoint and stop, so a rerun resumes there.

Preemptible TPUs, spot VMs and SLURM (``--signal``, requeue) announce the end of a job with SIGTERM a
little before killing it. ``Watch`` turns that notice into "stop after this step":

- one process: a Python SIGTERM handler sets a flag (installed for the ``with`` block only, in the main
  thread; the previous handler comes back afterwards);
- several processes: JAX's preemption service (``jax.distributed.initialize`` starts it; it catches
  SIGTERM itself) makes every host agree on one step, read through orbax's
  ``CheckpointManager.reached_preemption(step)``, so that all of them save the same step.

The trainer then saves that step (unless it just did), closes its checkpoint managers and raises
``Preempted``; ``ebt_jax.main`` logs it and exits with status 0 without evaluating. The signal is seen
between train steps (a step is well under a second on CPU for the default configs), not during an
evaluation or a checkpoint write, which finish first.
"""

from __future__ import annotations

import signal
import threading

import jax
from absl import logging


class Preempted(Exception):
  """Training stopped at ``step`` on a preemption notice, after saving that step's checkpoint."""

  def __init__(self, step: int, checkpoint_dir: str):
    super().__init__(f"preempted: checkpoint of step {step} saved in {checkpoint_dir}; rerun the same command "
                     "to resume from it")
    self.step = step
    self.checkpoint_dir = checkpoint_dir


class Watch:
  """``with Watch() as w: ... if w.reached(step, mngr): save, raise Preempted``.

  ``reached(step, mngr)`` must be called at every step on every process (the multi-host protocol
  counts steps)."""

  def __init__(self):
    self._requested = False
    self._previous = None
    self._installed = False

  def __enter__(self) -> "Watch":
    multi = jax.process_count() > 1
    if not multi and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
      self._installed = True
    return self

  def __exit__(self, *exc) -> None:
    if self._installed:
      signal.signal(signal.SIGTERM, self._previous)
      self._installed = False

  def _on_sigterm(self, signum, frame) -> None:  # pylint: disable=unused-argument
    if not self._requested:
      logging.warning("SIGTERM: saving a checkpoint after the current train step, then stopping")
    self._requested = True

  def reached(self, step: int, mngr) -> bool:
    """True at the step the run must save and stop at (the same step on every host)."""
    if jax.process_count() > 1:
      return bool(mngr.reached_preemption(step))
    return self._requested
