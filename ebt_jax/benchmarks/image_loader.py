r"""How fast training batches with camera frames come off a dataset, and whether the train step waits.

  python -m ebt_jax.benchmarks.image_loader --data=lift_image84.hdf5 \
      [--image_keys=agentview_image,robot0_eye_in_hand_image] [--batch_size=64] [--steps=40]
  python -m ebt_jax.benchmarks.image_loader --data=pusht_cchi_v7_replay.zarr --image_keys=img \
      --obs_keys=agent_pos --derived_obs=pusht

For each frame storage (``ram``: all frames loaded once; ``file``: read per batch from the HDF5 file,
as for files larger than RAM) it reports the one-off load time, batches/s and frames/s of
``WindowDataset.batch`` in the calling thread, and the same through the prefetching loader
(``ebt_jax.data.loader``, grain threads) while the main thread sleeps ``--step_ms`` per batch as a
stand-in train step: ``wait_fraction`` is the share of that loop spent waiting for the next batch
(0 = the train step never waits on input). Prints JSON (and writes it with ``--out``).
"""

from __future__ import annotations

import time

import numpy as np
from absl import flags

from ebt_jax import cli, jsonio
from ebt_jax.benchmarks.common import device_description
from ebt_jax.data import datasets, loader
from ebt_jax.data.windows import WindowDataset
from ebt_jax.training.trainer import fit_normalizer

def define_flags():
  """Defines this benchmark's flags (called under ``__main__`` only, so that importing the module beside
  other command-line modules, as the test suite does, defines nothing)."""
  global _DATA, _IMAGE_KEYS, _OBS_KEYS, _DERIVED, _STORAGES, _BATCH, _STEPS, _THREADS, _STEP_MS, _OUT
  _DATA = flags.DEFINE_string("data", None, "Image dataset (robomimic .hdf5 with obs/<camera>_image, or a Zarr buffer).",
                              required=True)
  _IMAGE_KEYS = flags.DEFINE_list("image_keys", ["agentview_image", "robot0_eye_in_hand_image"], "Camera keys.")
  _OBS_KEYS = flags.DEFINE_list("obs_keys", ["object", "robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos"],
                                "Low-dim keys.")
  _DERIVED = flags.DEFINE_string("derived_obs", "", "config.data.derived_obs (Push-T: pusht).")
  _STORAGES = flags.DEFINE_list("storages", ["ram", "file"], "Frame storages to time (file: HDF5 only).")
  _BATCH = flags.DEFINE_integer("batch_size", 64, "Windows per batch.")
  _STEPS = flags.DEFINE_integer("steps", 40, "Batches timed per setting.")
  _THREADS = flags.DEFINE_integer("threads", 2, "Loader threads.")
  _STEP_MS = flags.DEFINE_float("step_ms", 250.0, "Stand-in train step (ms) for the prefetch measurement.")
  _OUT = flags.DEFINE_string("out", "", "Also write the JSON here.")


def measure(demos, storage: str, batch_size: int, steps: int, threads: int, step_ms: float) -> dict:
  """One storage's load time, direct and prefetched throughput (module docstring)."""
  t0 = time.perf_counter()
  data = WindowDataset(demos, fit_normalizer(demos), 2, 8, 16, seed=0, image_storage=storage)
  load_s = time.perf_counter() - t0
  frames_per_batch = batch_size * 2 * len(demos.image_keys)
  t0 = time.perf_counter()
  for step in range(steps):
    data.batch(step, batch_size)
  direct_s = time.perf_counter() - t0
  it = loader.batches(data, 0, steps, batch_size, threads, prefetch=4)
  next(it)  # the first batch has no train step to hide behind
  wait, t0 = 0.0, time.perf_counter()
  for _ in range(steps - 1):
    time.sleep(step_ms / 1e3)
    t1 = time.perf_counter()
    next(it)
    wait += time.perf_counter() - t1
  loop_s = time.perf_counter() - t0
  return {"storage": storage, "load_s": load_s, "gigabytes_in_ram": data.images.nbytes() / 2**30 if data.images.in_ram else 0.0,
          "direct_batches_per_s": steps / direct_s, "direct_frames_per_s": steps * frames_per_batch / direct_s,
          "prefetch_threads": threads, "stand_in_step_ms": step_ms, "wait_fraction": wait / loop_s}


def main(argv):
  del argv
  demos = datasets.read_dataset(_DATA.value, _OBS_KEYS.value, derived_obs=_DERIVED.value, image_keys=_IMAGE_KEYS.value)
  rows = [measure(demos, s, _BATCH.value, _STEPS.value, _THREADS.value, _STEP_MS.value) for s in _STORAGES.value]
  out = {"device": device_description(), "data": _DATA.value, "image_keys": list(demos.image_keys),
         "image_shapes": {k: list(v) for k, v in demos.image_shapes.items()}, "num_frames": demos.num_samples,
         "batch_size": _BATCH.value, "results": rows}
  print(jsonio.dumps(out, indent=1))
  if _OUT.value:
    jsonio.write(_OUT.value, out)


if __name__ == "__main__":
  define_flags()
  cli.at_least("batch_size", 1)
  cli.at_least("steps", 2)
  cli.run(main)
