"""Camera frames of a dataset: where each demo's images live, and gathering them into batches.

Readers do not load images: they validate each camera's array of each demo (shape [T, H, W, 3], the
same H x W in every demo, uint8 or 0..255 floats) and record an ``ImageSource`` (file, array path, row
range). ``ImageStore`` then serves frames for training windows:

* ``in_ram``: every camera's frames of every demo read once, episode by episode (sequential chunked
  reads), into one uint8 array [N, H, W, 3] per camera. Push-T's 25,650 frames are 0.7 GB so; Zarr
  buffers always load this way (their chunks hold ~160 frames each, so random reads decompress whole
  chunks per frame).
* from the file (robomimic HDF5 only, for files larger than RAM: robomimic image files are several GB):
  each batch reads its frames from the open file, per demo in increasing row order (h5py fancy
  indexing); ``ebt_jax.data.loader`` prefetches batches on background threads so the train step does not
  wait on these reads.

Frames stay uint8 [.., H, W, 3] (0..255) up to the train step, which converts them to float.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from typing import Mapping, Sequence

import h5py
import numpy as np

from ebt_jax.errors import DatasetError

FORMATS = ("hdf5", "zarr")


@dataclasses.dataclass(frozen=True)
class ImageSource:
  """One camera's frames of one demo.

  Attributes:
    path: the dataset (robomimic ``.hdf5`` file or ``.zarr`` directory).
    key: the array inside it (``data/demo_0/obs/agentview_image``; ``data/img``).
    start: the demo's first row in that array (Zarr buffers lay episodes end to end; HDF5: 0).
    length: T, the demo's number of frames.
    height, width: H, W in pixels.
    fmt: "hdf5" or "zarr".
  """
  path: str
  key: str
  start: int
  length: int
  height: int
  width: int
  fmt: str


def check_image_array(path: str, key: str, shape: Sequence[int], dtype, length: int,
                      expected_hw: tuple[int, int] | None) -> tuple[int, int]:
  """Validates one camera array's metadata: [length, H, W, 3], uint8 or float (0..255), H x W as
  ``expected_hw`` (the demos before it) when given. Returns (H, W).

  Raises:
    DatasetError: naming ``path``, ``key``, the shape found and the one expected.
  """
  shape = tuple(int(s) for s in shape)
  if len(shape) != 4 or shape[-1] != 3:
    raise DatasetError(f"{path}: '{key}' has shape {shape}, expected [T, H, W, 3] RGB frames")
  if shape[0] != length:
    raise DatasetError(f"{path}: '{key}' has {shape[0]} frames but the demo has {length} steps")
  if not (np.dtype(dtype) == np.uint8 or np.issubdtype(dtype, np.floating)):
    raise DatasetError(f"{path}: '{key}' has dtype {np.dtype(dtype)}, expected uint8 (or floats in 0..255)")
  hw = shape[1:3]
  if expected_hw is not None and hw != tuple(expected_hw):
    raise DatasetError(f"{path}: '{key}' frames are {hw[0]}x{hw[1]}, expected {expected_hw[0]}x{expected_hw[1]} "
                       "like the demos before it")
  return hw


def to_uint8(frames: np.ndarray, where: str) -> np.ndarray:
  """uint8 frames as they are; float frames (Push-T's 0..255 float32) rounded to uint8.

  Raises:
    DatasetError: naming ``where``, for float frames outside [0, 255] or not finite.
  """
  if frames.dtype == np.uint8:
    return frames
  if not np.all(np.isfinite(frames)):
    raise DatasetError(f"{where}: image frames contain NaN or inf")
  if frames.size == 0:
    return frames.astype(np.uint8)
  lo, hi = float(frames.min()), float(frames.max())
  if lo < 0 or hi > 255:
    raise DatasetError(f"{where}: float image frames span [{lo:g}, {hi:g}], expected 0..255")
  return np.rint(frames).astype(np.uint8)


class ImageStore:
  """Frames of the demos laid end to end (row r = step r of the concatenated demos, as ``WindowDataset``).

  Args:
    sources: per camera, one ``ImageSource`` per demo in demo order.
    in_ram: load every frame now (see module docstring); False reads per batch (HDF5 only).

  Raises:
    DatasetError: a camera without demos, sources of another format than "hdf5" / "zarr", ``in_ram=False``
      for a Zarr buffer, or frames outside 0..255.
  """

  def __init__(self, sources: Mapping[str, Sequence[ImageSource]], in_ram: bool):
    self.cameras = tuple(sources)
    self.in_ram = in_ram
    self._sources = {cam: tuple(srcs) for cam, srcs in sources.items()}
    first = {cam: srcs[0] for cam, srcs in self._sources.items() if srcs}
    if len(first) != len(self.cameras):
      raise DatasetError(f"image cameras without demos: {[c for c in self.cameras if c not in first]}")
    self.shapes = {cam: (s.height, s.width) for cam, s in first.items()}
    lengths = [s.length for s in self._sources[self.cameras[0]]]
    self._offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    fmts = {s.fmt for srcs in self._sources.values() for s in srcs}
    if not fmts <= set(FORMATS):
      raise DatasetError(f"unknown image source formats {sorted(fmts - set(FORMATS))}")
    if not in_ram and "zarr" in fmts:
      raise DatasetError(f"{first[self.cameras[0]].path}: Zarr image buffers are read into RAM (their chunks "
                         "hold many frames each); set config.data.image_storage to 'ram' or 'auto'")
    self._lock = threading.Lock()  # h5py serialises reads anyway; one open file per store
    self._files: dict[str, h5py.File] = {}
    self._frames = {cam: self._load(cam) for cam in self.cameras} if in_ram else None

  @property
  def path(self) -> str:
    """The dataset the frames come from."""
    return self._sources[self.cameras[0]][0].path

  @property
  def num_frames(self) -> int:
    return int(self._offsets[-1])

  def nbytes(self) -> int:
    """Bytes of all frames as uint8 (what ``in_ram`` holds)."""
    return int(sum(self.num_frames * h * w * 3 for h, w in self.shapes.values()))

  def _file(self, path: str) -> h5py.File:
    if path not in self._files:
      self._files[path] = h5py.File(path, "r")
    return self._files[path]

  def _read(self, src: ImageSource, rows: np.ndarray | None = None) -> np.ndarray:
    """Frames of one demo (all, or ``rows``: increasing, unique, within the demo) as uint8 [n, H, W, 3]."""
    where = f"{src.path}: '{src.key}'"
    if src.fmt == "zarr":
      import zarr  # pylint: disable=g-import-not-at-top
      arr = zarr.open_group(src.path, mode="r")[src.key]
      return to_uint8(np.asarray(arr[src.start:src.start + src.length]), where)
    with self._lock:
      ds = self._file(src.path)[src.key]
      if rows is None:
        frames = ds[()]
      else:  # one contiguous read (a window's To frames are neighbours), then the rows asked for
        frames = ds[int(rows[0]):int(rows[-1]) + 1][rows - rows[0]]
    return to_uint8(np.asarray(frames), where)

  def _load(self, cam: str) -> np.ndarray:
    h, w = self.shapes[cam]
    out = np.empty((self.num_frames, h, w, 3), np.uint8)
    for k, src in enumerate(self._sources[cam]):
      out[self._offsets[k]:self._offsets[k + 1]] = self._read(src)
    return out

  def gather(self, rows: np.ndarray) -> dict[str, np.ndarray]:
    """rows [...] int (rows of the concatenated demos) -> {camera: [..., H, W, 3] uint8}."""
    rows = np.asarray(rows)
    flat = rows.reshape(-1)
    out = {}
    for cam in self.cameras:
      if self._frames is not None:
        frames = self._frames[cam][flat]
      else:
        h, w = self.shapes[cam]
        frames = np.empty((len(flat), h, w, 3), np.uint8)
        demo = np.searchsorted(self._offsets, flat, side="right") - 1
        for k in np.unique(demo):
          sel = np.flatnonzero(demo == k)
          local = flat[sel] - self._offsets[k]
          uniq, inverse = np.unique(local, return_inverse=True)
          frames[sel] = self._read(self._sources[cam][k], uniq)[inverse]
      out[cam] = frames.reshape(*rows.shape, *frames.shape[1:])
    return out

  def close(self) -> None:
    for f in self._files.values():
      f.close()
    self._files.clear()


STORAGES = ("auto", "ram", "file")  # config.data.image_storage


def store_for(demos, storage: str = "auto", ram_limit_gb: float = 8.0) -> ImageStore | None:
  """The ``ImageStore`` of ``demos`` (None without image keys). ``storage`` (``config.data.image_storage``):
  "ram", "file" (HDF5 only) or "auto" (in RAM when the frames take at most ``ram_limit_gb`` GB as uint8,
  and always for Zarr buffers).

  Raises:
    ValueError: an unknown ``storage``. DatasetError: as ``ImageStore``.
  """
  if storage not in STORAGES:
    raise ValueError(f"image storage {storage!r}: one of {STORAGES}")
  if not demos.image_keys:
    return None
  sources = {cam: [e.images[cam] for e in demos.episodes] for cam in demos.image_keys}
  in_ram = storage == "ram"
  if storage == "auto":
    every = [s for srcs in sources.values() for s in srcs]
    in_ram = (any(s.fmt == "zarr" for s in every)
              or sum(s.length * s.height * s.width * 3 for s in every) <= ram_limit_gb * 2**30)
  return ImageStore(sources, in_ram=in_ram)


def describe(store: ImageStore | None) -> str:
  """One log line: cameras, frame size, frames, GB and where they are read from."""
  if store is None:
    return "no images"
  cams = ", ".join(f"{c} {h}x{w}" for c, (h, w) in store.shapes.items())
  where = "in RAM" if store.in_ram else "read per batch from " + os.path.basename(store.path)
  return f"images {cams}: {store.num_frames} frames each, {store.nbytes() / 2**30:.2f} GB as uint8, {where}"
