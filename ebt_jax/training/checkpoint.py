"""Checkpoints with orbax: train state + normaliser statistics + config, in ``<workdir>/checkpoints``.

Layout: ``checkpoints/<step>/{state, normalizer, config}``; the latest complete step is restored on
start-up, so a killed run resumes where its last checkpoint left it.
"""

from __future__ import annotations

import os
from typing import Any

import orbax.checkpoint as ocp

from ebt_jax.data.normalization import Normalizer


def manager(workdir: str, max_to_keep: int | None = 2) -> ocp.CheckpointManager:
  """The run's checkpoint manager (creates ``<workdir>/checkpoints``)."""
  directory = os.path.join(os.path.abspath(workdir), "checkpoints")
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
  return ocp.CheckpointManager(directory, options=options, item_names=("state", "normalizer", "config"))


def save(mngr: ocp.CheckpointManager, step: int, state: Any, normalizer: Normalizer, config_dict: dict) -> None:
  """Saves (blocking until written) the state pytree, normaliser and config at ``step``."""
  mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                          normalizer=ocp.args.JsonSave(normalizer.to_dict()),
                                          config=ocp.args.JsonSave(config_dict)))
  mngr.wait_until_finished()


def restore_normalizer(mngr: ocp.CheckpointManager, step: int) -> Normalizer:
  """The normaliser saved at ``step`` (cheap: JSON only)."""
  restored = mngr.restore(step, args=ocp.args.Composite(normalizer=ocp.args.JsonRestore()))
  return Normalizer.from_dict(restored["normalizer"])


def restore(mngr: ocp.CheckpointManager, abstract_state: Any, step: int | None = None):
  """-> (step, state, normalizer, config dict) of ``step`` (default: latest), or None if none exists.

  ``abstract_state``: a pytree of the same structure (arrays or ``jax.ShapeDtypeStruct`` with
  shardings) that tells orbax where to put each restored array.
  """
  step = mngr.latest_step() if step is None else step
  if step is None:
    return None
  restored = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                                        normalizer=ocp.args.JsonRestore(),
                                                        config=ocp.args.JsonRestore()))
  return step, restored["state"], Normalizer.from_dict(restored["normalizer"]), restored["config"]
