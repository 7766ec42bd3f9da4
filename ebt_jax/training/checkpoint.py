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


def restore_metadata(mngr: ocp.CheckpointManager, step: int) -> tuple[Normalizer, dict]:
  """The normaliser and config dict saved at ``step`` (cheap: JSON only)."""
  restored = mngr.restore(step, args=ocp.args.Composite(normalizer=ocp.args.JsonRestore(),
                                                        config=ocp.args.JsonRestore()))
  return Normalizer.from_dict(restored["normalizer"]), restored["config"]


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


def load_policy(workdir: str, step: int | None = None, use_ema: bool = True):
  """The trained policy of a run directory, without its dataset: -> (``Policy``, ConfigDict).

  Rebuilds the policy model (``config.policy``: ebt or diffusion) from the config and normaliser saved
  with the checkpoint and restores its (EMA) parameters.

  Args:
    workdir: run directory with ``checkpoints/`` (written by ``ebt_jax.main``).
    step: checkpoint step (default: latest).
    use_ema: the EMA parameters (as evaluation uses) or the raw ones.

  Raises:
    FileNotFoundError: if ``<workdir>/checkpoints`` holds no checkpoint.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  from ebt_jax.evaluation.policy import Policy  # pylint: disable=g-import-not-at-top
  from ebt_jax import policies  # pylint: disable=g-import-not-at-top
  from ebt_jax.training.train_step import init_train_state, make_optimizer  # pylint: disable=g-import-not-at-top

  mngr = manager(workdir, max_to_keep=None)
  step = mngr.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"no checkpoint in {os.path.join(os.path.abspath(workdir), 'checkpoints')}")
  normalizer, config_dict = restore_metadata(mngr, step)
  config = ml_collections.ConfigDict(config_dict)
  model = policies.make(config, sum(normalizer.obs_key_dims), len(normalizer.actions.low))
  tx = make_optimizer(config.train)
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])  # whatever topology it was saved on
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                          jax.eval_shape(lambda: init_train_state(model, tx, jax.random.PRNGKey(0))))
  _, state, _, _ = restore(mngr, abstract, step)
  mngr.close()
  return Policy.from_config(config, model, state.ema_params if use_ema else state.params, normalizer), config
