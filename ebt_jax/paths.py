"""Paths of a run's files, local or in an object store (``gs://``), and checks that they can be written.

Every file a run reads or writes in its work directory (metrics, evaluation curve, eval.json, plots,
``run.lock``, checkpoints, ``compare`` outputs) goes through ``path``: an ``etils.epath.Path`` (the
library orbax uses), so ``--workdir=gs://bucket/runs/lift`` works like a local directory. A local path
is made absolute (as ``os.path.abspath`` did); a URI of an object store epath supports (``gs://``,
``s3://``, ``az://``, ``hf://``) is kept as a URI. Without TensorFlow installed, epath reaches object
stores through fsspec (``gs://`` needs ``gcsfs``). Datasets stay local files (h5py / zarr read them):
``is_local`` tells the validation which paths it must refuse.

A directory is writable if a file can actually be created in it: ``os.access`` is not enough (root
passes it on a read-only mount). Nothing is created by the check except a temporary file, removed at
once, in the nearest existing ancestor (an object store: in the directory itself, which has no
directory objects to leave behind); so a refused run leaves no empty directory behind.
"""

from __future__ import annotations

import os
import re
import tempfile
import uuid
from typing import Callable

import filelock
from etils import epath

# The object stores epath reaches (through fsspec: gcsfs, s3fs, adlfs, huggingface_hub).
URI_SCHEMES = ("gs", "s3", "az", "hf")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def scheme(p: epath.PathLike) -> str | None:
  """The URI scheme of ``p`` ("gs" for ``gs://bucket/x``); None for a local path."""
  match = _SCHEME.match(os.fspath(p))
  return match.group(1).lower() if match else None


def is_local(p: epath.PathLike) -> bool:
  """True for a local file-system path (relative or absolute), False for a URI such as ``gs://bucket/x``."""
  return scheme(p) is None


def path(p: epath.PathLike) -> epath.Path:
  """``p`` as an ``epath.Path``: a local path made absolute (``os.path.abspath``), a ``gs://`` (``s3://``,
  ``az://``, ``hf://``) URI kept as that URI.

  Raises:
    ValueError: for a URI of another scheme (e.g. ``http://``), which epath would take for a local
      directory named ``http:``.
  """
  found = scheme(p)
  if found is None:
    return epath.Path(os.path.abspath(os.fspath(p)))
  if found not in URI_SCHEMES:
    raise ValueError(f"'{os.fspath(p)}': unsupported URI scheme '{found}://' (a local path or one of "
                     f"{', '.join(s + '://' for s in URI_SCHEMES)})")
  return epath.Path(os.fspath(p))


def make_once(file: str, make: Callable[[], None]) -> str:
  """``file`` (a local path), calling ``make()`` to write it first if it does not exist yet; returns ``file``.

  Callers in several processes or threads make it once: ``make`` runs while ``<file>.lock`` (``filelock``)
  is held, and a caller that waited on the lock finds the file the first one wrote. ``make`` must write
  ``file`` atomically (e.g. a temporary file renamed), so that a killed maker leaves none; the OS drops a
  killed process's lock. The parent directory is created.

  Raises:
    whatever ``make`` raises (the lock is released).
  """
  if os.path.exists(file):
    return file
  os.makedirs(os.path.dirname(os.path.abspath(file)), exist_ok=True)
  with filelock.FileLock(file + ".lock"):
    if not os.path.exists(file):
      make()
  return file


def write_atomic(p: epath.PathLike, text: str) -> None:
  """Writes ``text`` to the file ``p`` (local path or URI) so that readers see the old or the new
  contents, never a part: locally a temporary file ``<p>.tmp`` renamed over ``p`` (``os.replace``); in
  an object store one object write, which is atomic there (an object becomes visible only when its
  upload completes). The parent directory must exist (object stores: nothing needed).

  Raises:
    OSError (or the object store client's error): if the file cannot be written.
  """
  target = path(p)
  if not is_local(p):
    target.write_text(text)
    return
  tmp = target.parent / f"{target.name}.tmp"
  tmp.write_text(text)
  tmp.replace(target)


def missing_problem(p: epath.PathLike) -> str | None:
  """None if the file or directory ``p`` (local path or URI) exists; else why not: "no such file or
  directory", or the object store client's error (no credentials, gcsfs not installed). Never raises."""
  try:
    return None if path(p).exists() else "no such file or directory"
  except Exception as e:  # pylint: disable=broad-except  (as in _uri_directory_problem)
    return f"cannot look it up ({type(e).__name__}: {e})"


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

  ``path``: a local directory, or a URI (``gs://bucket/runs/lift``: a probe object is written there
  through epath and deleted). Returns e.g. "'/data/run' is a file, not a directory" or "cannot create
  files in '/ro' (Read-only file system)". Never raises.
  """
  if not path:
    return "the path is empty"
  if not is_local(path):
    return _uri_directory_problem(path)
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
  """Why the file ``path`` (local path or URI such as ``gs://bucket/out.json``) cannot be written (its
  directory, existing or to be created); None if it can. Never raises."""
  if not path:
    return "the path is empty"
  if not is_local(path):
    return _uri_file_problem(path)
  if os.path.isdir(path):
    return f"'{path}' is a directory, expected a file path"
  return directory_problem(os.path.dirname(os.path.abspath(path)))


def _uri_directory_problem(uri: str) -> str | None:
  """``directory_problem`` of a URI: a probe object written and deleted in it through epath.

  Any exception counts as "cannot write" (a missing bucket, no permission, no credentials, gcsfs not
  installed): each client raises its own types, and the reason is shown to the user either way."""
  try:
    directory = path(uri)
  except ValueError as e:
    return str(e)
  try:
    if directory.exists() and not directory.is_dir():
      return f"'{uri}' is a file, not a directory"
    probe = directory / f".ebt_jax_write_check_{uuid.uuid4().hex}"
    probe.write_bytes(b"")
    probe.unlink()
  except Exception as e:  # pylint: disable=broad-except
    return f"cannot create files in '{uri}' ({type(e).__name__}: {e})"
  return None


def _uri_file_problem(uri: str) -> str | None:
  """``output_file_problem`` of a URI: not a directory, and its parent writable."""
  try:
    target = path(uri)
    if target.is_dir():
      return f"'{uri}' is a directory, expected a file path"
  except ValueError as e:
    return str(e)
  except Exception as e:  # pylint: disable=broad-except  (as in _uri_directory_problem)
    return f"cannot read '{uri}' ({type(e).__name__}: {e})"
  return _uri_directory_problem(str(target.parent))
