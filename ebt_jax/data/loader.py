"""Training batches prefetched on background threads (grain), in step order.

``batches(dataset, start, stop, batch_size)`` yields ``dataset.batch(step, batch_size)`` for
``step = start .. stop - 1``, computed ahead by ``num_threads`` grain worker threads into a buffer of
``prefetch`` batches, so that gathering a batch (image frames read from an HDF5 file, fancy indexing of
uint8 frames) overlaps the previous train step. Every batch is still a pure function of (seed, step)
(``ebt_jax.data.windows.WindowDataset``), so prefetching changes nothing a run computes and a resumed
run starts at its checkpoint's step.
"""

from __future__ import annotations

from typing import Iterator

import grain


def batches(dataset, start: int, stop: int, batch_size: int, num_threads: int = 2,
            prefetch: int = 4, shard: tuple[int, int] = (0, 1)) -> Iterator[dict]:
  """-> iterator of ``dataset.batch(step, batch_size, shard)`` for step in [start, stop), in order.

  Args:
    dataset: anything with ``batch(step, batch_size, shard)`` (``WindowDataset``).
    start, stop: the step range.
    batch_size: samples per global batch.
    num_threads: grain read threads (0: batches computed in the calling thread, no prefetch).
    prefetch: batches computed ahead.
    shard: (this host's index, number of hosts): each batch holds this host's rows only.
  """
  if stop <= start:
    return iter(())
  steps = grain.MapDataset.range(start, stop).map(lambda step: dataset.batch(int(step), batch_size, shard))
  return iter(steps.to_iter_dataset(grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)))
