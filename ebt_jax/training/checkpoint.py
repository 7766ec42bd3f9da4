"""Checkpoints with orbax: train state + normaliser statistics + config, in ``<workdir>/checkpoints``.

Layout: ``checkpoints/<step>/{state, normalizer, config}``; runs that evaluate during training also keep
the best-scoring one in ``checkpoints/best/<step>/`` (``best_manager``; the paper keeps the best
checkpoint and reports its success). orbax writes a step into
``<step>.orbax-checkpoint-tmp*`` and renames it when complete, so a run killed during a save (even
``kill -9``) leaves the previous steps as they were and the partial one is never "latest".

Restoring walks back from the latest step to the newest one that restores: a step whose files are
damaged (truncated, a missing item, unreadable metadata) is logged with the reason, and, when a
training run resumes, moved to ``<workdir>/checkpoints_damaged/<step>`` (kept, not deleted) so that
training can write that step again. A checkpoint of another model (``ARCH_FIELDS``) is refused with
the differing fields listed. If no step restores, nothing is moved and a ``CheckpointError`` lists
each step and why.

The workdir may be a ``gs://`` URI: every path here goes through ``ebt_jax.paths`` (kept as the URI,
never made "absolute" into ``/cwd/gs:/...``) and orbax takes it as an ``epath.Path``. orbax writes its
metadata through epath and the arrays through tensorstore's GCS driver; only the path handling is
tested here (a fake in-memory ``gs://``), the array writes to a real bucket are not.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable, NamedTuple

import orbax.checkpoint as ocp
from absl import logging

from ebt_jax import paths
from ebt_jax.data.normalization import Normalizer
from ebt_jax.errors import CheckpointError, ConfigError

DAMAGED_DIR = "checkpoints_damaged"
BEST_DIR = "best"  # checkpoints/best/<step>: the checkpoint with the highest evaluation score
# Config fields that decide the parameter tree and what the parameters mean; a checkpoint is only
# resumed by a run whose config agrees on every one of them.
ARCH_FIELDS = ("policy", "horizon.obs", "horizon.pred", "data.obs_keys", "data.image_keys", "model")
# What a field absent from an older checkpoint's config meant (it predates the field).
ABSENT_MEANS = {"policy": "ebt", "data.image_keys": []}


class Restored(NamedTuple):
  """A restored checkpoint: its step, ``TrainState`` (or whatever pytree was saved), normaliser, config dict."""
  step: int
  state: Any
  normalizer: Normalizer
  config: dict


def checkpoint_dir(workdir: str) -> str:
  """``<workdir>/checkpoints``: absolute for a local ``workdir``, the same URI for a ``gs://`` one
  (``gs://b/r`` -> ``gs://b/r/checkpoints``; ``paths.path``)."""
  return str(paths.path(workdir) / "checkpoints")


def manager(workdir: str, max_to_keep: int | None = 2) -> ocp.CheckpointManager:
  """The run's checkpoint manager (creates ``<workdir>/checkpoints``).

  Args:
    workdir: run directory, a local path or a ``gs://`` URI (orbax takes it as an ``epath.Path``).
    max_to_keep: newest checkpoints kept (>= 1), or None for all.

  Raises:
    ConfigError: ``max_to_keep`` < 1 (orbax would then delete every checkpoint, old ones included).
  """
  if max_to_keep is not None and max_to_keep < 1:
    raise ConfigError(f"train.keep_checkpoints={max_to_keep}: must be an integer >= 1 (0 would delete every "
                      "checkpoint of the run, including those already on disk)")
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
  return ocp.CheckpointManager(paths.path(checkpoint_dir(workdir)), options=options,
                               item_names=("state", "normalizer", "config"))


def best_manager(workdir: str) -> ocp.CheckpointManager:
  """The manager of ``<workdir>/checkpoints/best`` (one step kept: the best-scoring checkpoint so far).

  The main manager ignores this directory (its name is not a step number). ``workdir``: a local path or
  a ``gs://`` URI."""
  options = ocp.CheckpointManagerOptions(max_to_keep=1, create=True)
  return ocp.CheckpointManager(paths.path(checkpoint_dir(workdir)) / BEST_DIR, options=options,
                               item_names=("state", "normalizer", "config"))


def save(mngr: ocp.CheckpointManager, step: int, state: Any, normalizer: Normalizer, config_dict: dict) -> None:
  """Saves (blocking until written and renamed into place) the state pytree, normaliser and config at ``step``."""
  mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                          normalizer=ocp.args.JsonSave(normalizer.to_dict()),
                                          config=ocp.args.JsonSave(config_dict)))
  mngr.wait_until_finished()


def restore_metadata(mngr: ocp.CheckpointManager, step: int) -> tuple[Normalizer, dict]:
  """The normaliser and config dict saved at ``step`` (cheap: JSON only)."""
  restored = mngr.restore(step, args=ocp.args.Composite(normalizer=ocp.args.JsonRestore(),
                                                        config=ocp.args.JsonRestore()))
  return Normalizer.from_dict(restored["normalizer"]), restored["config"]


def restore(mngr: ocp.CheckpointManager, abstract_state: Any, step: int) -> Restored:
  """-> ``Restored`` of ``step`` exactly (no walking back; orbax's exception if it is damaged).

  ``abstract_state``: a pytree of the same structure (arrays or ``jax.ShapeDtypeStruct`` with
  shardings) that tells orbax where to put each restored array.
  """
  restored = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                                        normalizer=ocp.args.JsonRestore(),
                                                        config=ocp.args.JsonRestore()))
  return Restored(step, restored["state"], Normalizer.from_dict(restored["normalizer"]), restored["config"])


def _reason(error: BaseException) -> str:
  text = " ".join(str(error).split())
  return f"{type(error).__name__}: {text[:300]}{'...' if len(text) > 300 else ''}"


def restore_latest(mngr: ocp.CheckpointManager, abstract_state: Any,
                   check: Callable[[int, Normalizer, dict], None] | None = None,
                   damaged_dir: str | None = None) -> Restored | None:
  """The newest checkpoint that restores, walking back over damaged ones; None if there is none.

  Args:
    mngr: the run's manager.
    abstract_state: as for ``restore``, or a function ``(normalizer, config_dict) -> abstract state`` of
      each step's own metadata (``load_policy``: the model is rebuilt from the checkpoint's config).
    check: called as ``check(step, normalizer, config_dict)`` on the newest step whose metadata reads,
      before its arrays are restored; raises (e.g. ``CheckpointError``) to refuse the run.
    damaged_dir: if given, each damaged step newer than the restored one is moved into
      ``<damaged_dir>/<step>`` (a suffix is added if that exists), out of orbax's way.

  Raises:
    CheckpointError: if checkpoints exist but none restores (nothing is moved then); the message
      lists each step and its error.
  """
  steps = sorted(mngr.all_steps(), reverse=True)
  if not steps:
    return None
  damaged: list[tuple[int, str]] = []
  checked = False
  for step in steps:
    try:
      normalizer, config = restore_metadata(mngr, step)
    except Exception as e:  # pylint: disable=broad-except  (any unreadable checkpoint is skipped, and reported)
      damaged.append((step, _reason(e)))
      continue
    if check is not None and not checked:
      check(step, normalizer, config)
      checked = True
    try:
      abstract = abstract_state(normalizer, config) if callable(abstract_state) else abstract_state
      restored = restore(mngr, abstract, step)
    except Exception as e:  # pylint: disable=broad-except
      damaged.append((step, _reason(e)))
      continue
    for bad, reason in damaged:
      where = str(paths.path(mngr.directory) / str(bad))
      moved = _move_aside(where, damaged_dir, bad) if damaged_dir else None
      logging.warning("checkpoint step %d (%s) is damaged and was skipped: %s%s", bad, where, reason,
                      f"; moved to {moved}" if moved else "")
    if damaged and damaged_dir:
      mngr.reload()
    if damaged:
      logging.warning("restored checkpoint step %d, the newest intact one", step)
    return restored
  listing = "; ".join(f"step {s}: {r}" for s, r in damaged)
  raise CheckpointError(
      f"no checkpoint in {mngr.directory} can be restored ({listing}). Nothing was changed on disk; move "
      f"{mngr.directory} away (or pass another --workdir) to start a fresh run.")


def _move_aside(path: str, damaged_dir: str, step: int) -> str | None:
  """Moves a damaged step directory into ``damaged_dir`` (multi-host: process 0 only); -> new path.

  Both are local paths (a rename within the workdir) or URIs (``gs://``: epath renames through fsspec,
  i.e. copies each object and deletes the original, not atomic; a crash midway leaves the step in both
  places)."""
  import jax  # pylint: disable=g-import-not-at-top
  source = paths.path(path)
  if jax.process_index() != 0 or not source.exists():
    return None
  paths.path(damaged_dir).mkdir(parents=True, exist_ok=True)
  target = paths.path(damaged_dir) / str(step)
  if target.exists():
    target = target.parent / f"{target.name}.{int(time.time())}"
  source.rename(target)
  return str(target)


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
  if isinstance(tree, dict):
    out = {}
    for k, v in tree.items():
      out.update(_flat(v, f"{prefix}{k}."))
    return out
  return {prefix[:-1]: tree}


def _field(config_dict: dict, path: str) -> dict[str, Any]:
  node = config_dict
  for part in path.split("."):
    if not isinstance(node, dict) or part not in node:
      return {path: None}
    node = node[part]
  return _flat(node, path + ".") if isinstance(node, dict) else {path: node}


def architecture_differences(saved: dict, current: dict) -> list[str]:
  """The ``ARCH_FIELDS`` on which two config dicts (JSON form) differ, as "field: A in the checkpoint, B
  in this config" lines. A field absent from an older checkpoint's config takes its ``ABSENT_MEANS``
  value (``policy='ebt'``, no image keys); other absent fields count as different only if the current
  config has them. The image encoder's settings (``model.vision``) count only when a config has cameras."""
  out = []
  has_cameras = any(_field(c, "data.image_keys")["data.image_keys"] for c in (saved, current))
  for path in ARCH_FIELDS:
    a, b = _field(saved, path), _field(current, path)
    if path in ABSENT_MEANS and a.get(path, 0) is None:
      a = {path: ABSENT_MEANS[path]}
    for key in sorted(set(a) | set(b)):
      if key.startswith("model.vision.") and not has_cameras:
        continue
      va, vb = a.get(key), b.get(key)
      norm = lambda v: json.loads(json.dumps(v))  # tuples and lists compare equal
      if norm(va) != norm(vb):
        out.append(f"{key}: {va!r} in the checkpoint, {vb!r} in this config")
  return out


CHECKPOINT_NAMES = ("latest", "best")  # what ``load_checkpoint`` takes besides a step number


class Loaded(NamedTuple):
  """A trained policy restored by ``load_checkpoint``.

  Attributes:
    policy: the ``ebt_jax.evaluation.policy.Policy`` (EMA or raw parameters, normaliser of the checkpoint).
    config: the run's ConfigDict, as saved with the checkpoint (unlocked: callers may override fields).
    step: the checkpoint's training step.
    directory: the checkpoint's directory (``<workdir>/checkpoints[/best]/<step>``).
    best: True if it came from ``checkpoints/best``.
  """
  policy: Any
  config: Any
  step: int
  directory: str
  best: bool


def checkpoint_steps(workdir: str) -> dict[str, list[int]]:
  """{"latest": the steps in ``<workdir>/checkpoints``, "best": those in ``checkpoints/best``}, sorted ([]
  where none); read-only (no directory is created). ``workdir``: a local path or a ``gs://`` URI."""
  root = paths.path(checkpoint_dir(workdir))
  steps = lambda d: sorted(int(p.name) for p in d.iterdir() if p.name.isdigit() and p.is_dir()) if d.is_dir() else []
  return {"latest": steps(root), "best": steps(root / BEST_DIR)}


def load_checkpoint(workdir: str, which: str | int = "latest", use_ema: bool | None = None) -> Loaded:
  """The trained policy of checkpoint ``which`` of a run directory, without its dataset.

  Args:
    workdir: run directory with ``checkpoints/`` (written by ``ebt_jax.main``), a local path or a
      ``gs://`` URI.
    which: ``"latest"`` (the newest intact checkpoint: damaged newer ones are logged and skipped, not
      moved), ``"best"`` (``checkpoints/best``: the best in-training evaluation, runs with
      ``eval.every_steps``), or a step number (int or digits), looked up in ``checkpoints/`` and then in
      ``checkpoints/best``.
    use_ema: the EMA or the raw parameters; None: the run's ``eval.use_ema`` (default True), as the main
      job evaluates.

  Raises:
    CheckpointError: no checkpoint at all, ``which`` is none of the names above, or names a checkpoint
      that is not there (the message lists the steps there, of ``checkpoints/`` and ``checkpoints/best``),
      or none restores.
  """
  steps = checkpoint_steps(workdir)
  listing = (f"checkpoints there: latest = steps {steps['latest'] or 'none'} in {checkpoint_dir(workdir)}, "
             f"best = steps {steps['best'] or 'none'} in {paths.path(checkpoint_dir(workdir)) / BEST_DIR}")
  if not steps["latest"] and not steps["best"]:
    raise CheckpointError(f"{workdir}: no checkpoint in {checkpoint_dir(workdir)} (not a run directory of "
                          "ebt_jax.main, or it has not saved a checkpoint yet)")
  text = str(which)
  if text not in CHECKPOINT_NAMES and not text.isdigit():
    raise CheckpointError(f"checkpoint {text!r}: must be 'latest', 'best' or a step number ({listing})")
  if text == "best" and not steps["best"]:
    raise CheckpointError(f"{workdir}: the run kept no best checkpoint (only runs that evaluate during training, "
                          f"eval.every_steps > 0, keep one); {listing}")
  if text.isdigit() and int(text) not in steps["latest"] + steps["best"]:
    raise CheckpointError(f"{workdir}: no checkpoint of step {int(text)}; {listing}")
  best = text == "best" or (text.isdigit() and int(text) not in steps["latest"])
  step = int(text) if text.isdigit() else None
  policy, config, step = _load(workdir, step, use_ema, best)
  root = paths.path(checkpoint_dir(workdir))
  return Loaded(policy, config, step, str((root / BEST_DIR if best else root) / str(step)), best)


def load_policy(workdir: str, step: int | None = None, use_ema: bool = True, best: bool = False):
  """The trained policy of a run directory, without its dataset: -> (``Policy``, ConfigDict).

  Rebuilds the policy model (``config.policy``: ebt or diffusion) from the config and normaliser saved
  with the checkpoint and restores its (EMA) parameters. With ``step`` None, the newest intact
  checkpoint (damaged newer ones are logged and skipped, not moved).

  Args:
    workdir: run directory with ``checkpoints/`` (written by ``ebt_jax.main``), a local path or a
      ``gs://`` URI.
    step: checkpoint step (default: the newest intact one).
    use_ema: the EMA parameters (as evaluation uses) or the raw ones.
    best: the best-scoring checkpoint (``checkpoints/best``, runs with ``eval.every_steps``) instead.

  Raises:
    CheckpointError: if ``<workdir>/checkpoints`` (or ``checkpoints/best``) holds no checkpoint, ``step``
      is not one of them, or none restores.
  """
  policy, config, _ = _load(workdir, step, use_ema, best)
  return policy, config


def _load(workdir: str, step: int | None, use_ema: bool | None, best: bool):
  """``load_policy``'s work: -> (``Policy``, ConfigDict, the step restored). ``use_ema`` None: the run's
  ``eval.use_ema``."""
  import jax  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  from ebt_jax.evaluation.policy import Policy  # pylint: disable=g-import-not-at-top
  from ebt_jax import policies  # pylint: disable=g-import-not-at-top
  from ebt_jax.training.train_step import init_train_state, make_optimizer  # pylint: disable=g-import-not-at-top

  if not paths.path(checkpoint_dir(workdir)).is_dir():
    raise CheckpointError(f"no checkpoint in {checkpoint_dir(workdir)} (not a run directory of ebt_jax.main?)")
  mngr = best_manager(workdir) if best else manager(workdir, max_to_keep=None)
  steps = mngr.all_steps()
  if not steps or (step is not None and step not in steps):
    raise CheckpointError(f"no checkpoint{'' if step is None else f' of step {step}'} in {mngr.directory} "
                          f"(steps there: {sorted(steps)})")
  models = {}

  def abstract_for(normalizer: Normalizer, config_dict: dict):
    config = ml_collections.ConfigDict(config_dict)
    model = policies.make(config, sum(normalizer.obs_key_dims), len(normalizer.actions.low))
    tx = make_optimizer(config.train)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])  # whatever topology it was saved on
    models["config"], models["model"] = config, model
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                        jax.eval_shape(lambda: init_train_state(model, tx, jax.random.PRNGKey(0))))

  if step is not None:
    try:
      normalizer, config_dict = restore_metadata(mngr, step)
      restored = restore(mngr, abstract_for(normalizer, config_dict), step)
    except Exception as e:  # pylint: disable=broad-except  (orbax's errors for a damaged step, named)
      raise CheckpointError(f"checkpoint step {step} in {mngr.directory} does not restore ({_reason(e)}); "
                            "pick another step, or 'latest' (walks back to the newest intact one)") from e
  else:
    restored = restore_latest(mngr, abstract_for)
  mngr.close()
  state, config = restored.state, models["config"]
  if use_ema is None:
    use_ema = config.eval.get("use_ema", True) if "eval" in config else True
  return Policy.from_config(config, models["model"], state.ema_params if use_ema else state.params,
                            restored.normalizer), config, restored.step
