"""Metric writers: TensorBoard event files (always) and Weights & Biases (``train.wandb``), a thin layer.

``metrics.jsonl``, ``eval_curve.jsonl`` and ``eval.json`` stay the source of truth: the trainer and the
main job write them first and hand the same numbers to a ``Writer``, which copies them to viewers::

  <workdir>/tensorboard/events.out.tfevents.*    tensorboardX (no TensorFlow), every run:
      train/<key>           each metrics.jsonl record (loss, grad_norm, steps_per_s, the policy's log_keys, ...)
      eval/<label>/<key>    each evaluation summary (success_rate, mean_final_energy, mean_max_coverage, ...):
                            in-training ones (the default inference label) and the final one (every label)
      eval/<label>/energy   histogram of the energies of every decision of that evaluation (EBT)
  Weights & Biases (train.wandb = "offline" | "online"; requirements-wandb.txt): the same scalars and
      histograms against the x axis "step"; the run id is kept in <workdir>/wandb_run_id and a restarted
      run resumes it (``resume="allow"``); wandb's files go to <workdir>/wandb/ (an offline run:
      ``wandb sync <workdir>/wandb/offline-run-*``), for a gs:// workdir to wandb's default ($WANDB_DIR or ./wandb).

Process 0 alone writes (multi-host runs); the others get an inactive writer whose methods do nothing.
The event file is created by the first record, so a run refused before its first logged step leaves its
workdir as it was (with wandb enabled, wandb's run starts with the writer: a refused login stops the job
before any work).

A ``gs://`` workdir: tensorboardX reaches buckets only through TensorFlow, which ebt-jax does not need, so
the events are written to a local temporary directory and copied to ``<workdir>/tensorboard/`` by
``close`` (on every exit of the trainer and the main job, preemption and errors included; a run killed
with -9 loses its events, not its metrics.jsonl).

A resumed run marks its restart (``restart``: TensorBoard's SessionLog START at the step after the
checkpoint), so TensorBoard drops the events an earlier run wrote past that checkpoint, as metrics.jsonl
drops their records; wandb keeps both (its x axis is a logged value, not wandb's own step).
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import tempfile
import time
from typing import Any, Iterable, Mapping

import jax
import numpy as np
import tensorboardX
from absl import logging
from tensorboardX.proto import event_pb2

from ebt_jax import paths
from ebt_jax.errors import ConfigError

TENSORBOARD_DIR = "tensorboard"
WANDB_RUN_ID_FILE = "wandb_run_id"
WANDB_MODES = ("disabled", "offline", "online")  # config.train.wandb
WANDB_PROJECT = "ebt-jax"  # unless $WANDB_PROJECT names another
FLUSH_SECS = 10  # events reach the file at least this often (tensorboardX's default: 120)


def wandb_problem(mode: str) -> str | None:
  """Why ``train.wandb=mode`` cannot run here (None if it can): the optional wandb package is missing."""
  if mode != "disabled" and importlib.util.find_spec("wandb") is None:
    return (f"train.wandb={mode!r} needs the optional wandb package: pip install -r requirements-wandb.txt "
            "(or --config.train.wandb=disabled)")
  return None


def _number(v: Any) -> bool:
  return isinstance(v, (bool, int, float, np.integer, np.floating, np.bool_))


class Writer:
  """TensorBoard (and optionally wandb) scalars and histograms of one run; use as a context manager.

  Args:
    workdir: the run directory (local path or ``gs://`` URI).
    wandb_mode: one of ``WANDB_MODES``.
    config: the run's config as a dict (wandb's run config).
    active: write at all (default: on process 0 only).

  Raises:
    ConfigError: naming ``train.wandb`` if wandb is requested but not installed, or wandb refuses to start
      (e.g. "online" without credentials).
  """

  def __init__(self, workdir: str, wandb_mode: str = "disabled", config: Mapping[str, Any] | None = None,
               active: bool | None = None):
    self.active = jax.process_index() == 0 if active is None else active  # False once closed
    self._workdir = workdir
    self._tb, self._wandb, self._upload, self._restart = None, None, None, 0
    problem = wandb_problem(wandb_mode) if self.active else None
    if problem:
      raise ConfigError(problem)
    if self.active and wandb_mode != "disabled":  # at once: a refused login stops the run before its work
      self._wandb = _wandb_run(workdir, wandb_mode, dict(config or {}))

  def _open(self) -> tensorboardX.SummaryWriter:
    """The event file, made on the first write."""
    if self._tb is None:
      local = paths.is_local(self._workdir)
      logdir = (str(paths.path(self._workdir) / TENSORBOARD_DIR) if local
                else tempfile.mkdtemp(prefix="ebt_jax_tb_"))
      if not local:
        self._upload = (logdir, paths.path(self._workdir) / TENSORBOARD_DIR)
      # Event files are named by the second and the host; the suffix keeps two writers of one second apart
      # (and in creation order, which is the order TensorBoard reads them in).
      self._tb = tensorboardX.SummaryWriter(logdir, flush_secs=FLUSH_SECS, filename_suffix=f".{time.time_ns()}")
      if self._restart:
        self._session_start(self._restart + 1)
    return self._tb

  def _session_start(self, step: int) -> None:
    event = event_pb2.Event(session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START))
    self._tb._get_file_writer().add_event(event, step)  # pylint: disable=protected-access  (no public API)

  def scalars(self, step: int, values: Mapping[str, Any], prefix: str) -> None:
    """Logs every number of ``values`` (a metrics.jsonl record, an evaluation summary) as
    ``<prefix>/<key>`` at ``step``; the key ``step`` itself, None, strings and lists are skipped."""
    if not self.active:
      return
    numbers = {f"{prefix}/{k}": float(v) for k, v in values.items() if k != "step" and _number(v)}
    if not numbers:
      return
    tb = self._open()
    for tag, v in numbers.items():
      tb.add_scalar(tag, v, int(step))
    if self._wandb is not None:
      self._wandb.log({**numbers, "step": int(step)})

  def histogram(self, step: int, tag: str, values: Iterable[float]) -> None:
    """Logs the distribution of the finite ``values`` as histogram ``tag`` at ``step`` (nothing if none)."""
    if not self.active:
      return
    x = np.asarray(list(values), np.float64)
    x = x[np.isfinite(x)]
    if not x.size:
      return
    self._open().add_histogram(tag, x, int(step))
    if self._wandb is not None:
      import wandb  # pylint: disable=g-import-not-at-top  (optional)
      self._wandb.log({tag: wandb.Histogram(x), "step": int(step)})

  def evaluation(self, step: int, label: str, summary: Mapping[str, Any]) -> None:
    """One evaluation summary (``episodes.summarize``) of inference ``label``: its numbers as
    ``eval/<label>/<key>``, and, with episodes that carry energies (EBT), their per-decision energies as the
    histogram ``eval/<label>/energy``."""
    self.scalars(step, {k: v for k, v in summary.items() if k != "episodes"}, f"eval/{label}")
    episodes = summary.get("episodes") or ()
    self.histogram(step, f"eval/{label}/energy", (e for ep in episodes for e in (ep.get("energy") or ())))

  def restart(self, step: int) -> None:
    """Marks a run resumed from the checkpoint at ``step``: TensorBoard drops the events of every tag that
    earlier runs wrote past it (their metrics.jsonl records were dropped too): TensorBoard's SessionLog
    START at ``step + 1`` (the first event of this writer's file, unless it has written already)."""
    if step <= 0 or not self.active:
      return
    if self._tb is None:
      self._restart = int(step)
    else:
      self._session_start(int(step) + 1)

  def flush(self) -> None:
    """Writes pending events to the event file now."""
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    """Closes the event file (a ``gs://`` workdir: copies it to ``<workdir>/tensorboard/``) and finishes the
    wandb run; idempotent."""
    self.active = False
    if self._wandb is not None:
      run, self._wandb = self._wandb, None
      run.finish()
    if self._tb is None:
      return
    tb, self._tb = self._tb, None
    tb.close()
    if self._upload is not None:
      local, remote = self._upload
      remote.mkdir(parents=True, exist_ok=True)
      for name in sorted(os.listdir(local)):
        with open(os.path.join(local, name), "rb") as f:
          (remote / name).write_bytes(f.read())
      shutil.rmtree(local, ignore_errors=True)
      logging.info("TensorBoard events copied to %s", remote)

  def __enter__(self) -> "Writer":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def open_run(config, workdir: str) -> Writer:
  """The ``Writer`` of a run config: TensorBoard, plus wandb in ``config.train.wandb`` mode (default
  "disabled"); inactive on processes other than 0."""
  mode = config.train.get("wandb", "disabled")
  return Writer(workdir, mode, json.loads(config.to_json_best_effort()) if mode != "disabled" else None)


def _wandb_run(workdir: str, mode: str, config: dict):
  """``wandb.init`` of the run of ``workdir``: the id in ``<workdir>/wandb_run_id`` (written on the first
  start), resumed by every later start."""
  import wandb  # pylint: disable=g-import-not-at-top  (optional: requirements-wandb.txt)
  id_file = paths.path(workdir) / WANDB_RUN_ID_FILE
  run_id = id_file.read_text().strip() if id_file.exists() else ""
  if not run_id:
    run_id = secrets.token_hex(4)  # 8 characters of [0-9a-f], as wandb's own ids
    id_file.parent.mkdir(parents=True, exist_ok=True)
    paths.write_atomic(id_file, run_id + "\n")
  local = paths.is_local(workdir)
  name = os.path.basename(os.fspath(workdir).rstrip("/")) or None
  try:
    run = wandb.init(mode=mode, id=run_id, resume="allow", project=os.environ.get("WANDB_PROJECT", WANDB_PROJECT),
                     name=name, config=config, dir=str(paths.path(workdir)) if local else None)
  except wandb.errors.Error as e:
    raise ConfigError(f"train.wandb={mode!r}: wandb did not start: {e} (online: `wandb login` or $WANDB_API_KEY; "
                      "or --config.train.wandb=offline)") from e
  run.define_metric("step")
  run.define_metric("*", step_metric="step")
  logging.info("wandb run %s (%s), id in %s", run_id, mode, id_file)
  return run
