"""One validation pass over a run config, before any work: every problem at once, each naming its field.

``check_config(config)`` runs when ``ebt_jax.main`` has loaded the config (after ml_collections has
already refused unknown fields and values of the wrong type), before demos are collected, a work
directory is created or anything is compiled. Every field with a valid range or set is checked here,
in one table (``FIELDS``) plus the few rules that relate several fields (``_cross_field_problems``);
all problems are reported together in one ``ConfigError``::

  3 problems in the config:
    - train.batch_size=0: must be an integer >= 1
    - train.learning_rate=-0.01: must be a number > 0
    - eval.backend='mujoco': must be one of 'robosuite', 'mjx', 'gym_pusht'

``check_dataset(config, demos)`` adds the checks that need the demonstrations (the env to evaluate in,
action width of the evaluation env), right after reading them and still before training; it warns
about demos shorter than the prediction horizon.

Fields missing from a config (e.g. a config saved by an older version) are not checked: the code that
reads them falls back to its default.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Sequence

import numpy as np
from absl import logging

from ebt_jax import collect, paths, tasks
from ebt_jax.data import images
from ebt_jax.data.datasets import DERIVED_OBS
from ebt_jax.data.demos import Demos
from ebt_jax.data.robomimic_hdf5 import read_step
from ebt_jax.tasks import styles
from ebt_jax.training import sharding, writers
from ebt_jax.errors import ConfigError, DatasetError
from ebt_jax.evaluation.backends import EVAL_BACKENDS, MJX_INITIAL_STATES
from ebt_jax.policies import POLICIES
from ebt_jax.policies.base import parse_inference
from ebt_jax.models.backbone import OBS_POS_EMBS
from ebt_jax.samplers.mcmc import INFERENCE_ENERGIES, PRESAMPLE_NORMS, TRAIN_STEPS_DRAWS

SIM_BACKENDS = ("robosuite", "mjx")  # evaluate in the env described by the dataset's env_args
# data.builtin: what an empty data.path means ("" = nothing): a task's scripted demos (tasks.BUILTIN).
BUILTIN_DATASETS = ("", *tasks.BUILTIN)
DIFFUSION_SAMPLERS = ("ddpm", "ddim")
BEST_METRICS = ("success_rate", "mean_max_coverage", "mean_max_score")  # eval.json fields to rank checkpoints by
RAW_ACTION_TOLERANCE = 1e-3  # raw actions may exceed [-1, 1] by this much (float32 rounding of stored data)
PUSHT_ACTION_DIM = 2  # gym-pusht: agent target (x, y) in px


@dataclasses.dataclass(frozen=True)
class Field:
  """The valid values of one config field.

  Attributes:
    path: dotted field path, e.g. ``"train.batch_size"``.
    kind: ``int``, ``float`` (ints accepted), ``bool``, ``str`` or ``"ints"`` (a sequence of ints).
    low, high: bounds (None = unbounded); ``low_open`` / ``high_open`` exclude them.
    choices: the allowed values (for ``str`` fields).
    when: the field is checked only if ``when(config)`` (e.g. sampler fields for EBT only).
    why: appended to the message (what an invalid value would do).
  """
  path: str
  kind: Any
  low: float | None = None
  high: float | None = None
  low_open: bool = False
  high_open: bool = False
  choices: tuple[Any, ...] | None = None
  when: Callable[[Any], bool] | None = None
  why: str = ""

  def expectation(self) -> str:
    if self.choices is not None:
      return "one of " + ", ".join(repr(c) for c in self.choices)
    what = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
            "ints": "a list of integers"}[self.kind]
    if self.kind == "ints":
      what += " each"
    if self.low is not None and self.high is not None:
      lo, hi = ("(" if self.low_open else "["), (")" if self.high_open else "]")
      return f"{what} in {lo}{_num(self.low)}, {_num(self.high)}{hi}"
    if self.low is not None:
      return f"{what} {'>' if self.low_open else '>='} {_num(self.low)}"
    if self.high is not None:
      return f"{what} {'<' if self.high_open else '<='} {_num(self.high)}"
    return what

  def problem(self, value: Any) -> str | None:
    """None if ``value`` is valid, else "must be <expectation>"."""
    values = value if self.kind == "ints" else (value,)
    if self.kind == "ints" and not isinstance(value, (list, tuple)):
      return f"must be {self.expectation()}{self.why}"
    for v in values:
      if not self._valid(v):
        return f"must be {self.expectation()}{self.why}"
    return None

  def _valid(self, v: Any) -> bool:
    kind = int if self.kind == "ints" else self.kind
    if kind is bool:
      return isinstance(v, bool)
    if kind is int and (isinstance(v, bool) or not isinstance(v, int)):
      return False
    if kind is float and (isinstance(v, bool) or not isinstance(v, (int, float)) or v != v):
      return False
    if kind is str and not isinstance(v, str):
      return False
    if self.choices is not None and v not in self.choices:
      return False
    if self.low is not None and (v < self.low or (self.low_open and v == self.low)):
      return False
    if self.high is not None and (v > self.high or (self.high_open and v == self.high)):
      return False
    return True


def _num(x: float) -> str:
  return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _ebt(config) -> bool:
  return config.get("policy", "ebt") == "ebt"


def _diffusion(config) -> bool:
  return config.get("policy", "ebt") == "diffusion"


def _collects(config) -> bool:
  """The built-in demos are used (an empty data.path): their collection fields matter."""
  return not config.data.get("path", "") and bool(config.data.get("builtin", ""))


def _mjx_eval(config) -> bool:
  return config.eval.get("backend", "") == "mjx"


def _images(config) -> bool:
  """The policy sees cameras (``data.image_keys``)."""
  return bool(config.data.get("image_keys", ()))


_I, _F, _B, _S = int, float, bool, str
FIELDS: tuple[Field, ...] = (
    Field("seed", _I, low=0),
    Field("policy", _S, choices=tuple(POLICIES)),
    Field("data.builtin", _S, choices=BUILTIN_DATASETS),
    Field("data.filter_key", _S),
    Field("data.valid_filter_key", _S, why=" (a robomimic mask of validation demos, e.g. 'valid'; '' = none)"),
    Field("data.valid_fraction", _F, low=0, high=1, high_open=True,
          why=" (the share of whole episodes held out for the validation loss; 0 = none)"),
    Field("data.derived_obs", _S, choices=tuple(DERIVED_OBS)),
    Field("data.action_key", _S),
    Field("data.num_demos", _I, low=1, when=_collects),
    Field("data.collect_seed", _I, low=0, when=_collects),
    Field("data.action_noise", _F, low=0, high=1, when=_collects),
    Field("data.collect_backend", _S, choices=collect.BACKENDS, when=_collects),
    Field("data.demo_style", _S, choices=tuple(sorted(styles.STYLES)), when=_collects),
    Field("data.normalize_actions", _B),
    Field("data.normalize_obs", _B),
    Field("data.image_size", "ints", low=8, when=_images),
    Field("data.image_storage", _S, choices=images.STORAGES),
    Field("data.image_ram_limit_gb", _F, low=0),
    Field("horizon.obs", _I, low=1),
    Field("horizon.action", _I, low=1),
    Field("horizon.pred", _I, low=1),
    Field("model.width", _I, low=4),
    Field("model.num_layers", _I, low=1),
    Field("model.num_obs_layers", _I, low=0),
    Field("model.num_heads", _I, low=1),
    Field("model.mlp_ratio", _F, low=0, low_open=True),
    Field("model.attn_dropout", _F, low=0, high=1, high_open=True),
    Field("model.obs_pos_emb", _S, choices=OBS_POS_EMBS),
    Field("model.obs_causal_mask", _B),
    Field("model.cross_attn_mask", _B),
    Field("model.head_bias", _B),
    Field("model.vision.widths", "ints", low=1, when=_images),
    Field("model.vision.num_keypoints", _I, low=1, when=_images),
    Field("model.vision.features", _I, low=1, when=_images),
    Field("model.vision.crop", "ints", low=1, when=_images),
    Field("sampler.step_size", _F, low=0, low_open=True, when=_ebt),
    Field("sampler.step_size_randomization", _F, low=1, when=_ebt),
    Field("sampler.energy_scaled_step", _B, when=_ebt),
    Field("sampler.energy_temperature", _F, low=0, low_open=True, when=_ebt),
    Field("sampler.max_log_step_scale", _F, low=0, low_open=True, high=88, when=_ebt),
    Field("sampler.momentum", _F, low=0, high=1, high_open=True, when=_ebt),
    Field("sampler.normalize_samples", _B, when=_ebt),
    Field("sampler.presample_norm", _S, choices=PRESAMPLE_NORMS, when=_ebt),
    Field("sampler.norm_final_step", _B, when=_ebt),
    Field("sampler.norm_eps", _F, low=0, low_open=True, when=_ebt),
    Field("sampler.init_std", _F, low=0, low_open=True, when=_ebt),
    Field("sampler.train_steps", _I, low=1, when=_ebt),
    Field("sampler.train_extra_steps", _I, low=0, when=_ebt),
    Field("sampler.train_steps_draw", _S, choices=TRAIN_STEPS_DRAWS, when=_ebt),
    Field("sampler.langevin_sigma_max", _F, low=0, when=_ebt),
    Field("sampler.langevin_sigma_min", _F, low=0, when=_ebt),
    Field("sampler.max_steps", _I, low=1, when=_ebt),
    Field("sampler.grad_norm_tol", _F, low=0, when=_ebt),
    Field("sampler.remat_train_steps", _B, when=_ebt),
    Field("sampler.truncate_chain", _B, when=_ebt),
    Field("sampler.detach_step_scale", _B, when=_ebt),
    Field("sampler.inference_energy", _S, choices=INFERENCE_ENERGIES, when=_ebt),
    Field("diffusion.num_train_steps", _I, low=1, when=_diffusion),
    Field("diffusion.clip_sample", _B, when=_diffusion),
    Field("train.batch_size", _I, low=1),
    Field("train.num_steps", _I, low=1),
    Field("train.learning_rate", _F, low=0, low_open=True, why=" (the peak of the warm-up + cosine schedule)"),
    Field("train.warmup_steps", _I, low=0),
    Field("train.decay_steps", _I, low=0, why=" (0: the cosine ends at train.num_steps)"),
    Field("train.weight_decay", _F, low=0),
    Field("train.grad_clip_norm", _F, low=0, low_open=True),
    Field("train.ema_power", _F, low=0, low_open=True),
    Field("train.ema_max_decay", _F, low=0, high=1, high_open=True),
    Field("train.max_consecutive_nonfinite", _I, low=1),
    Field("train.log_every", _I, low=1),
    Field("train.checkpoint_every", _I, low=1),
    Field("train.keep_checkpoints", _I, low=1,
          why=" (0 would make orbax delete every checkpoint, those already on disk included)"),
    Field("train.num_cpu_devices", _I, low=1),
    Field("train.fsdp_min_size", _I, low=1, why=" (elements; smaller state leaves stay replicated)"),
    Field("train.loader_threads", _I, low=0),
    Field("train.prefetch_batches", _I, low=1),
    Field("train.wandb", _S, choices=writers.WANDB_MODES, why=" (Weights & Biases logging; TensorBoard always)"),
    Field("eval.backend", _S, choices=EVAL_BACKENDS),
    Field("eval.mjx_initial_states", _S, choices=MJX_INITIAL_STATES, when=_mjx_eval),
    Field("eval.mjx_batch_size", _I, low=0, when=_mjx_eval),
    Field("eval.num_episodes", _I, low=1),
    Field("eval.horizon", _I, low=1),
    Field("eval.seed", _I, low=0),
    Field("eval.max_steps_sweep", "ints", low=1, when=_ebt),
    Field("eval.use_ema", _B),
    Field("eval.every_steps", _I, low=0),
    Field("eval.plot_episodes", _I, low=0),
    Field("eval.best_metric", _S, choices=BEST_METRICS),
    Field("eval.video_episodes", _I, low=0, why=" (rollout videos of the final evaluation's first episodes; 0 = none)"),
    Field("eval.video_size", "ints", low=64, why=" (px, (height, width) of the rendered frames)"),
    Field("eval.video_camera", _S),
)


def _get(config, path: str) -> tuple[bool, Any]:
  node = config
  for part in path.split("."):
    if not hasattr(node, "get") or part not in node:
      return False, None
    node = node[part]
  return True, node


def _cross_field_problems(config, workdir: str | None, num_devices: int | None, needs_data: bool) -> list[str]:
  """Rules that relate several fields (or the config and the machine / file system)."""
  out = []
  name = config.get("name", "run")
  if not isinstance(name, str) or not name or os.sep in name or name in (".", ".."):
    out.append(f"name={name!r}: must be a non-empty string without '{os.sep}' (it names the run directory)")
  data = config.data
  keys = data.get("obs_keys", ())
  if (not isinstance(keys, (list, tuple)) or not keys or not all(isinstance(k, str) and k for k in keys)
      or len(set(keys)) != len(keys)):
    out.append(f"data.obs_keys={tuple(keys) if isinstance(keys, (list, tuple)) else keys!r}: must be a non-empty "
               "list of distinct observation key names, e.g. ('object', 'robot0_eef_pos')")
  path = data.get("path", "") if needs_data else "unused"
  if needs_data and path and not paths.is_local(path):
    out.append(f"data.path={path!r}: datasets are read from a local disk (h5py / zarr open them by file name), "
               f"not a {paths.scheme(path)}:// URI; copy it to a local directory first (e.g. gcloud storage cp -r "
               f"{path} /tmp/) and pass that path (only --workdir may be in a bucket)")
  elif needs_data and path and not os.path.exists(path):
    out.append(f"data.path={path!r}: no such file or directory")
  if not path and not data.get("builtin", ""):
    out.append("data.path is empty and this config has no built-in dataset: pass --config.data.path=<dataset> "
               "(Push-T: the pusht_cchi_v7_replay.zarr directory from "
               "https://diffusion-policy.cs.columbia.edu/data/training/pusht.zip; a robomimic task such as "
               "ToolHang: its <task>/ph/low_dim_v15.hdf5 from https://huggingface.co/datasets/amandlek/robomimic)")
  if needs_data and _collects(config):
    cache_dir = data.get("cache_dir", "") or collect.default_cache_dir()
    problem = (f"h5py writes them to a local disk, not a {paths.scheme(cache_dir)}:// URI; pass a local "
               "directory" if not paths.is_local(cache_dir) else paths.directory_problem(cache_dir))
    if problem:
      out.append(f"data.cache_dir={data.get('cache_dir', '')!r} (the built-in demos are collected into "
                 f"{cache_dir}): {problem}")
  style_problem = collect.style_backend_problem(data.get("demo_style", styles.DEFAULT_STYLE),
                                               data.get("collect_backend", "robosuite"),
                                               tasks.BUILTIN.get(data.get("builtin", ""), "lift"))
  if _collects(config) and style_problem:
    out.append(f"data.collect_backend={data.collect_backend!r} with data.demo_style={data.demo_style!r}: "
               f"{style_problem}; use data.collect_backend='robosuite'")
  if data.get("valid_filter_key", "") and data.get("valid_fraction", 0.0):
    out.append(f"data.valid_filter_key={data.valid_filter_key!r} and data.valid_fraction={data.valid_fraction!r}: "
               "both select validation demos (a robomimic mask, or a seeded share of episodes): set only one")
  h = config.horizon
  if all(isinstance(h.get(k), int) and h.get(k) >= 1 for k in ("obs", "action", "pred")) and (
      h.action > h.pred - h.obs + 1):
    out.append(f"horizon.action={h.action}: must be <= horizon.pred - horizon.obs + 1 = {h.pred - h.obs + 1} "
               f"(Ta executed actions from the To-th of Tp predicted ones; To={h.obs}, Tp={h.pred})")
  m = config.model
  if isinstance(m.get("width"), int) and isinstance(m.get("num_heads"), int) and m.num_heads >= 1:
    if m.width % 2:
      out.append(f"model.width={m.width}: must be even (sin-cos position embeddings)")
    if m.width % m.num_heads:
      out.append(f"model.width={m.width}: must be divisible by model.num_heads={m.num_heads}")
  s = config.get("sampler")
  if _ebt(config) and s is not None:
    lo, hi = s.get("langevin_sigma_min"), s.get("langevin_sigma_max")
    if isinstance(lo, (int, float)) and isinstance(hi, (int, float)) and lo > hi:
      out.append(f"sampler.langevin_sigma_min={lo:g}: must be <= sampler.langevin_sigma_max={hi:g}")
  d = config.get("diffusion")
  if _diffusion(config) and d is not None:
    steps = d.get("num_train_steps", 100)
    cap = steps if isinstance(steps, int) and steps >= 1 else None
    for field in ("inference", "eval_sweep"):
      labels = d.get(field, ())
      for label in ((labels,) if field == "inference" else tuple(labels)):
        try:
          parse_inference(label, DIFFUSION_SAMPLERS, cap)
        except ValueError as e:
          out.append(f"diffusion.{field}: {e}")
  t = config.train
  if num_devices and isinstance(t.get("batch_size"), int) and t.batch_size >= 1 and t.batch_size % num_devices:
    out.append(f"train.batch_size={t.batch_size}: must be a multiple of the {num_devices} devices it is split "
               "over (both axes of train.mesh; CPU: train.num_cpu_devices)")
  if "mesh" in t:  # (data, fsdp): each >= 1 or -1 (not a FIELDS range), and together the devices
    problem = sharding.mesh_shape_problem(t.mesh, num_devices or None)
    if problem:
      shown = tuple(t.mesh) if isinstance(t.mesh, (list, tuple)) else t.mesh
      out.append(f"train.mesh={shown!r}: {problem}")
  wandb_mode = t.get("wandb", "disabled")
  if wandb_mode in writers.WANDB_MODES and writers.wandb_problem(wandb_mode):  # the package, before any work
    out.append(writers.wandb_problem(wandb_mode))
  e = config.get("eval")
  out += _image_problems(config)
  video_size = e.get("video_size", (256, 256)) if e is not None else (256, 256)
  if isinstance(video_size, (list, tuple)) and len(video_size) != 2:
    out.append(f"eval.video_size={tuple(video_size)}: must be (height, width)")
  if e is not None and e.get("backend") == "gym_pusht" and data.get("derived_obs", "") != "pusht":
    out.append("eval.backend='gym_pusht' evaluates Push-T, but data.derived_obs is not 'pusht': the policy "
               "would not see gym-pusht's observations (use configs/pusht.py)")
  if workdir is not None:
    problem = paths.directory_problem(workdir)
    if problem:
      out.append(f"--workdir={workdir}: {problem}")
  return out


def _image_problems(config) -> list[str]:
  """Camera keys, the crop against the frame size, the vision widths and the evaluation backend."""
  data, out = config.data, []
  keys = data.get("image_keys", ())
  if not isinstance(keys, (list, tuple)) or not all(isinstance(k, str) and k for k in keys) or len(set(keys)) != len(keys):
    return [f"data.image_keys={keys!r}: must be a list of distinct camera observation keys, e.g. "
            "('agentview_image', 'robot0_eye_in_hand_image')"]
  if not keys:
    return out
  e, v = config.get("eval"), config.model.get("vision")
  if e is not None and e.get("backend") == "mjx":
    out.append(f"eval.backend='mjx' with data.image_keys={tuple(keys)}: MJX has no renderer on CPU, so image "
               "policies evaluate in robosuite (eval.backend='robosuite')")
  if e is not None and e.get("backend") == "gym_pusht" and tuple(keys) != ("img",):
    out.append(f"data.image_keys={tuple(keys)}: gym-pusht renders one frame, the replay buffer's 'img' "
               "(use ('img',))")
  if e is not None and e.get("backend") == "robosuite":
    bad = [k for k in keys if not k.endswith("_image")]
    if bad:
      out.append(f"data.image_keys: {bad} name no robosuite camera (robomimic image keys are <camera>_image, "
                 "e.g. agentview_image)")
  if v is None:
    return out + ["data.image_keys is set but the config has no model.vision block (configs/robomimic.py "
                  "vision_config)"]
  size, crop = tuple(data.get("image_size", ())), tuple(v.get("crop", ()))
  if len(size) != 2 or len(crop) != 2:
    out.append(f"data.image_size={size} and model.vision.crop={crop}: each must be (height, width)")
  elif crop[0] > size[0] or crop[1] > size[1]:
    out.append(f"model.vision.crop={crop}: must fit in data.image_size={size} (the crop is cut from each frame)")
  widths = tuple(v.get("widths", ()))
  if len(widths) != 4:
    out.append(f"model.vision.widths={widths}: must hold 4 stage widths (ResNet-18: 64, 128, 256, 512)")
  jitter = tuple(v.get("color_jitter", ()))
  if len(jitter) != 4 or min(jitter, default=-1) < 0 or (len(jitter) == 4 and jitter[3] > 0.5):
    out.append(f"model.vision.color_jitter={jitter}: must be (brightness, contrast, saturation, hue), each "
               ">= 0 and hue <= 0.5 (zeros: no jitter)")
  return out


def config_problems(config, workdir: str | None = None, num_devices: int | None = None,
                    needs_data: bool = True) -> list[str]:
  """Every problem of ``config`` (empty if none), one line each naming field, value and valid range.

  Args:
    config: a run config (configs/lift.py, configs/pusht.py, or one restored from a checkpoint).
    workdir: the run directory, checked to be creatable / writable (None: not checked).
    num_devices: devices the batch is split over (None: not checked).
    needs_data: False for tools that use the config without its dataset (the latency benchmark):
      ``data.path`` and the built-in demos' cache are then not checked.
  """
  out = []
  for field in FIELDS:
    found, value = _get(config, field.path)
    if not found or (field.when is not None and not field.when(config)):
      continue
    problem = field.problem(value)
    if problem:
      out.append(f"{field.path}={value!r}: {problem}")
  return out + _cross_field_problems(config, workdir, num_devices, needs_data)


def config_warnings(config) -> list[str]:
  """Settings that are valid but probably not meant (logged as warnings, the run goes on)."""
  out = []
  t = config.train
  if isinstance(t.get("warmup_steps"), int) and isinstance(t.get("num_steps"), int) and (
      t.warmup_steps >= t.num_steps >= 1):
    out.append(f"train.warmup_steps={t.warmup_steps} >= train.num_steps={t.num_steps}: the learning-rate warm-up "
               f"is shortened to {max(t.num_steps - 1, 0)} steps, so the schedule peaks at the last step")
  return out


def check_config(config, workdir: str | None = None, num_devices: int | None = None, needs_data: bool = True) -> None:
  """Raises ``ConfigError`` listing every problem of ``config`` (``config_problems``); returns if none.
  Logs ``config_warnings``."""
  for warning in config_warnings(config):
    logging.warning("%s", warning)
  problems = config_problems(config, workdir, num_devices, needs_data)
  if problems:
    raise ConfigError(format_problems(problems, "config"))


def format_problems(problems: Sequence[str], what: str) -> str:
  """"N problems in the <what>:" followed by one indented line per problem."""
  head = f"{len(problems)} problem{'s' if len(problems) > 1 else ''} in the {what}:"
  return "\n".join([head, *(f"  - {p}" for p in problems)])


def check_dataset(config, demos: Demos, skip_eval: bool = False) -> None:
  """Checks what needs the demonstrations, after reading them and before training.

  Logs a warning naming the demos shorter than the prediction horizon Tp (their chunks are padded by
  repeating the last action: fine for a few, a sign of a wrong dataset or horizon for many).

  Raises:
    ConfigError: image frames of another size than ``data.image_size``; ``data.normalize_actions``
      false on actions outside [-1, 1]; ``eval.backend``
      robosuite / mjx on a dataset without ``env_args`` (nothing to evaluate
      in), MJX on a task other than Lift, gym_pusht on a dataset whose actions are not 2-D.
    DatasetError: robosuite cannot build the env the dataset's ``env_args`` describe, or its action width
      differs from the demos' (built once here, seconds, instead of failing after training).
  """
  pred = config.horizon.pred
  short = [(e.name, len(e.actions)) for e in demos.episodes if len(e.actions) < pred]
  if short:
    listed = ", ".join(f"{n} ({k} steps)" for n, k in short[:10]) + (f" and {len(short) - 10} more" if len(short) > 10 else "")
    logging.warning("%s: %d of %d demos are shorter than the prediction horizon horizon.pred=%d; their action "
                    "chunks are padded with the last action: %s", demos.path, len(short), len(demos.episodes), pred,
                    listed)
  if demos.image_keys:
    want = tuple(config.data.get("image_size", (84, 84)))
    bad = {cam: hw for cam, hw in demos.image_shapes.items() if tuple(hw) != want}
    if bad:
      raise ConfigError(f"{demos.path}: image frames are {bad} (H, W), but data.image_size={want} (the size "
                        "evaluation renders at); set --config.data.image_size to the dataset's")
  if not config.data.get("normalize_actions", True):
    lo = min(float(e.actions.min()) for e in demos.episodes)
    hi = max(float(e.actions.max()) for e in demos.episodes)
    if lo < -1 - RAW_ACTION_TOLERANCE or hi > 1 + RAW_ACTION_TOLERANCE:
      raise ConfigError(f"data.normalize_actions=False trains on raw actions, which must already lie in [-1, 1] "
                        f"(the space both policies sample in), but {demos.path}: "
                        f"'actions' span [{lo:g}, {hi:g}]; set data.normalize_actions=True")
  if skip_eval:
    return
  backend = config.eval.backend
  problems = backend_problems(config, demos.env_args, demos.action_dim, demos.path,
                              "run with --skip_eval, or use a dataset recorded with its env_args")
  if problems:
    raise ConfigError(format_problems(problems, "config for this dataset"))
  if backend in SIM_BACKENDS:
    _check_env_args(demos, config.eval.horizon)


def backend_problems(config, env_args: dict, action_dim: int, source: str, no_env_hint: str) -> list[str]:
  """What keeps ``config.eval.backend`` from evaluating a policy of ``action_dim``-D actions in the env of
  ``env_args`` (robomimic's, {} for none): robosuite / mjx without env_args, mjx on a task other than
  Lift or with cameras, gym_pusht for a policy not trained on Push-T (``data.derived_obs``, 2-D actions).

  Args:
    config: the run config (``eval.backend``, ``data.derived_obs``, ``data.image_keys``).
    env_args: the dataset's env_args.
    action_dim: the policy's action width.
    source: where ``env_args`` came from, named in the messages (the dataset file, a run's env_args.json).
    no_env_hint: what to do when there are no env_args (appended in parentheses).

  Returns:
    One line per problem (empty: the backend can evaluate it).
  """
  backend, data, out = config.eval.backend, config.data, []
  if backend in SIM_BACKENDS and not env_args:
    out.append(f"eval.backend={backend!r}: {source} records no env_args (robomimic's 'data' attribute), so there "
               f"is no env to evaluate in ({no_env_hint})")
  elif backend == "mjx" and env_args.get("env_name") != "Lift":
    out.append(f"eval.backend='mjx' implements robosuite Lift only, but {source} was recorded in "
               f"{env_args.get('env_name')!r} (use eval.backend='robosuite')")
  if backend == "mjx" and data.get("image_keys", ()):
    out.append(f"eval.backend='mjx' with data.image_keys={tuple(data.image_keys)}: MJX has no renderer on CPU, "
               "so image policies evaluate in robosuite (eval.backend='robosuite')")
  if backend == "gym_pusht" and (action_dim != PUSHT_ACTION_DIM or data.get("derived_obs", "") != "pusht"):
    out.append(f"eval.backend='gym_pusht' evaluates Push-T: it needs {PUSHT_ACTION_DIM}-D actions (agent target "
               f"x, y) and data.derived_obs='pusht' (gym-pusht's observations), but {source} has action_dim "
               f"{action_dim} and data.derived_obs={data.get('derived_obs', '')!r}")
  return out


def _check_env_args(demos: Demos, horizon: int) -> None:
  """Builds the robosuite env of ``demos.env_args`` once; DatasetError if it fails or its actions differ."""
  from ebt_jax.envs import robosuite_env  # pylint: disable=g-import-not-at-top  (robosuite: only when evaluating there)
  where = f"{demos.path}: 'data' attribute 'env_args' (env_name {demos.env_args.get('env_name')!r})"
  try:
    env = robosuite_env.make_env(demos.env_args, horizon=horizon)
  except Exception as e:  # pylint: disable=broad-except  (robosuite's own errors for arguments it does not take)
    raise DatasetError(f"{where}: robosuite cannot build this env, so the policy could not be evaluated after "
                       f"training ({type(e).__name__}: {e}); run with --skip_eval, or fix env_args") from e
  try:
    if env.action_dim != demos.action_dim:
      raise DatasetError(f"{where}: the env takes {env.action_dim}-D actions but the demos' 'actions' are "
                         f"{demos.action_dim}-D")
    _check_obs_layout(demos, env)
  finally:
    env.close()


# Replaying a stored state gives the observation one or two physics substeps after the live one
# (robosuite_env.set_state: <= ~1.2 mm, ~3e-3 rad on Lift); a layout or sign that differs is >> this.
OBS_LAYOUT_TOLERANCE = 0.02
OBS_LAYOUT_STEP = 1  # step 0 of robomimic's v1.5 files has zeros in the eef-relative object entries


def _check_obs_layout(demos: Demos, env) -> None:
  """DatasetError if the env computes the file's observations differently (another width, order or
  sign: e.g. ``object`` of robosuite <= 1.4, which put the world pose first and Lift's cube-to-eef
  vector the other way round), judged by replaying step ``OBS_LAYOUT_STEP`` of the first demo."""
  from ebt_jax.envs import robosuite_env  # pylint: disable=g-import-not-at-top  (as _check_env_args)
  episode = demos.episodes[0].name
  step = read_step(demos.path, episode, OBS_LAYOUT_STEP, demos.obs_keys)
  if step is None:
    logging.info("%s: demo %s stores no states or model_file; its observation layout is not checked", demos.path, episode)
    return
  state, model_file, stored = step
  try:
    live = robosuite_env.reset_to(env, state, model_file)
  except Exception as e:  # pylint: disable=broad-except  (robosuite's / MuJoCo's own errors)
    logging.warning("%s: demo %s: its state %d could not be replayed in this env (%s: %s); its observation "
                    "layout is not checked", demos.path, episode, OBS_LAYOUT_STEP, type(e).__name__, e)
    return
  for key in demos.obs_keys:
    where = f"{demos.path}: demo '{episode}' key 'obs/{key}'"
    if key not in live:
      raise DatasetError(f"{where}: the env {demos.env_args.get('env_name')!r} has no observation {key!r} "
                         f"(it has {sorted(live)}); the policy could not be evaluated there")
    if live[key].shape != stored[key].shape:
      raise DatasetError(f"{where} is {stored[key].shape[0]}-D but robosuite {_robosuite_version()} computes it "
                         f"{live[key].shape[0]}-D for this env: the file was written by another robosuite version "
                         "or env; regenerate its observations from its states in this robosuite "
                         "(robomimic's dataset_states_to_obs.py)")
    diff = np.abs(live[key] - stored[key])
    if diff.max() > OBS_LAYOUT_TOLERANCE:
      bad = np.flatnonzero(diff > OBS_LAYOUT_TOLERANCE)
      raise DatasetError(
          f"{where}: replaying its state {OBS_LAYOUT_STEP} in robosuite {_robosuite_version()} gives other values "
          f"(entries {bad.tolist()[:8]} differ by up to {diff.max():.3g}; stored {np.round(stored[key][bad[:4]], 3).tolist()}, "
          f"env {np.round(live[key][bad[:4]], 3).tolist()}): the file's observations were computed another way, "
          "e.g. by robosuite <= 1.4 (robomimic's v1.4.1 files: 'object' lists the world pose first, Lift's "
          "cube-to-eef vector has the other sign), and a policy trained on them would see different inputs "
          "when evaluated here; use robomimic's v1.5 files or regenerate the observations from the states "
          "in this robosuite (robomimic's dataset_states_to_obs.py)")


def _robosuite_version() -> str:
  import robosuite  # pylint: disable=g-import-not-at-top
  return robosuite.__version__
