"""Progress bars (tqdm) for the long loops: training steps, demo collection, evaluation episodes.

A bar is drawn on stderr only when stderr is a terminal (tqdm's ``disable=None``): in CI logs, under
pytest, in a SLURM or TPU-pod log file nothing is printed, and the absl log lines stay as they are.
While a bar is on screen, absl log lines are written above it (``tqdm.external_write_mode``), not
glued to its end.
"""

from __future__ import annotations

from typing import Any, IO

import tqdm
from absl import logging

_WRAPPED = "_ebt_jax_writes_between_bars"  # marks absl's handler once its emit clears the bars first


def bar(total: int | None, desc: str, unit: str, initial: int = 0, enabled: bool = True,
        file: IO[str] | None = None) -> tqdm.tqdm:
  """A tqdm bar of ``total`` ``unit``s starting at ``initial`` (a resumed run's step), shown only if
  ``enabled`` (e.g. process 0 of a multi-host run) and ``file`` (default ``sys.stderr``) is a terminal.

  Use it as a context manager (or ``close`` it) so it is closed on every exit path; ``advance`` moves it.
  """
  b = tqdm.tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=None if enabled else True,
                file=file, dynamic_ncols=True)
  if not b.disable:
    _log_between_bars()
  return b


def advance(b: tqdm.tqdm, n: int, /, **postfix: Any) -> None:
  """Moves ``b`` to ``n`` units done and shows ``postfix`` (e.g. ``loss=0.0123``) after the rate and ETA."""
  if postfix:
    b.set_postfix(postfix, refresh=False)
  b.update(n - b.n)


def _log_between_bars() -> None:
  """Makes absl's log handler clear the bars before a line and redraw them after it (once per process)."""
  handler = logging.get_absl_handler()
  if getattr(handler, _WRAPPED, False):
    return
  handle = handler.handle  # ABSLHandler.handle: the entry point (it hands the record to its Python handler)

  def handle_between_bars(record):
    with tqdm.tqdm.external_write_mode():
      return handle(record)

  handler.handle = handle_between_bars
  setattr(handler, _WRAPPED, True)
