"""Strict JSON for every file ebt-jax writes: non-finite numbers become ``null``, never ``NaN``.

Python's ``json`` writes ``NaN`` / ``Infinity`` by default, which is not JSON (jq, JavaScript and most
readers reject it). ``dumps`` maps non-finite floats (Python or NumPy) to ``None`` and then refuses any
that remain (``allow_nan=False``); NumPy scalars and arrays become numbers and lists. Files are local
paths or object-store URIs (``gs://``), read and written through ``ebt_jax.paths``.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
from etils import epath

from ebt_jax import paths


def jsonable(obj: Any) -> Any:
  """``obj`` with non-finite floats as None, NumPy scalars / arrays as Python numbers / lists, tuples as lists."""
  if isinstance(obj, dict):
    return {str(k): jsonable(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [jsonable(v) for v in obj]
  if isinstance(obj, np.ndarray):
    return jsonable(obj.tolist())
  if isinstance(obj, np.generic):
    obj = obj.item()
  if isinstance(obj, float) and not math.isfinite(obj):
    return None
  return obj


def dumps(obj: Any, **kwargs) -> str:
  """``json.dumps`` of ``jsonable(obj)`` with ``allow_nan=False`` (kwargs: e.g. ``indent``)."""
  return json.dumps(jsonable(obj), allow_nan=False, **kwargs)


def write(path: epath.PathLike, obj: Any, indent: int | None = 1) -> None:
  """Writes ``obj`` as strict JSON to ``path`` (local path or URI such as ``gs://bucket/run/eval.json``)
  atomically, creating the parent directory if needed: ``paths.write_atomic`` (locally a temporary file
  renamed into place; in an object store a single object write, already atomic there).

  Raises:
    OSError (or the object store client's error): if the file cannot be written.
  """
  paths.path(path).parent.mkdir(parents=True, exist_ok=True)
  paths.write_atomic(path, dumps(obj, indent=indent) + "\n")


def append_line(path: epath.PathLike, record: dict) -> None:
  """Appends ``record`` as one strict-JSON line to ``path`` (JSON Lines; local path or URI).

  Locally an append (``open(path, "a")``). An object store has no append (a GCS object is immutable
  once written), so there the file is read and written back whole with the new line, one object write
  that readers see complete or not at all: O(file size) per call, which suits the few-hundred-KB
  metrics and curve files of a run written by their single writer (JAX process 0); two concurrent
  writers would lose lines (``training.workdir`` does not lock an object store).

  Raises:
    OSError (or the object store client's error): if the file cannot be read or written.
  """
  line = dumps(record) + "\n"
  target = paths.path(path)
  if paths.is_local(path):
    with target.open("a") as f:
      f.write(line)
    return
  paths.write_atomic(path, (target.read_text() if target.exists() else "") + line)


def read_lines(path: epath.PathLike) -> list[dict]:
  """The records of the JSON Lines file ``path`` (local path or URI) in file order, blank lines skipped;
  [] if there is no such file.

  Raises:
    json.JSONDecodeError: a line that is not JSON.
  """
  target = paths.path(path)
  if not target.exists():
    return []
  return [json.loads(line) for line in target.read_text().splitlines() if line.strip()]
