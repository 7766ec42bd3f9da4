"""Checks that output paths can be written, before any work that would be lost if they cannot.

A directory is writable if a file can actually be created in it: ``os.access`` is not enough (root
passes it on a read-only mount). Nothing is created by the check except a temporary file, removed at
once, in the nearest existing ancestor; so a refused run leaves no empty directory behind.
"""

from __future__ import annotations

import os
import tempfile


def _nearest_existing(path: str) -> str:
  path = os.path.abspath(path)
  while not os.path.exists(path):
    parent = os.path.dirname(path)
    if parent == path:
      break
    path = parent
  return path


def directory_problem(path: str) -> str | None:
  """Why ``path`` cannot be used as (or created as) an output directory; None if it can.

  Returns e.g. "'/data/run' is a file, not a directory" or "cannot create files in '/ro' (Read-only file system)".
  """
  if not path:
    return "the path is empty"
  if os.path.exists(path) and not os.path.isdir(path):
    return f"'{path}' is a file, not a directory"
  existing = _nearest_existing(path)
  if not os.path.isdir(existing):
    return f"'{existing}' is a file, so '{path}' cannot be created under it"
  try:
    with tempfile.TemporaryFile(dir=existing, prefix=".ebt_jax_write_check_"):
      pass
  except OSError as e:
    return f"cannot create files in '{existing}' ({e.strerror or e})"
  return None


def output_file_problem(path: str) -> str | None:
  """Why the file ``path`` cannot be written (its directory, existing or to be created); None if it can."""
  if not path:
    return "the path is empty"
  if os.path.isdir(path):
    return f"'{path}' is a directory, expected a file path"
  return directory_problem(os.path.dirname(os.path.abspath(path)))
