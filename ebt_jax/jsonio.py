"""Strict JSON for every file ebt-jax writes: non-finite numbers become ``null``, never ``NaN``.

Python's ``json`` writes ``NaN`` / ``Infinity`` by default, which is not JSON (jq, JavaScript and most
readers reject it). ``dumps`` maps non-finite floats (Python or NumPy) to ``None`` and then refuses any
that remain (``allow_nan=False``); NumPy scalars and arrays become numbers and lists.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np


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


def write(path: str, obj: Any, indent: int | None = 1) -> None:
  """Writes ``obj`` as strict JSON to ``path`` atomically (a temporary file renamed into place); creates
  the parent directory if needed."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp"
  with open(tmp, "w") as f:
    f.write(dumps(obj, indent=indent))
    f.write("\n")
  os.replace(tmp, path)


def append_line(path: str, record: dict) -> None:
  """Appends ``record`` as one strict-JSON line to ``path`` (JSON Lines)."""
  with open(path, "a") as f:
    f.write(dumps(record) + "\n")
