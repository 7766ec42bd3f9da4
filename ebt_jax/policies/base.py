"""What every policy head provides, and the inference labels ("mcmc-2", "ddim-10", "ddpm-100") that
name a sampler and its step count.

A policy model (``ebt.EBTPolicyModel``, ``diffusion.DiffusionPolicyModel``) bundles a network on the shared
``ebt_jax.models.backbone.Backbone`` with its training objective and its samplers, as pure functions:

  init(rng) -> params
  loss(params, batch, rng) -> (scalar loss, {name: scalar metric})   batch: {"obs": [B, To, obs_dim],
                                                                              "actions": [B, Tp, A]}, normalised
                                                 (+ "images": {camera: [B, To, H, W, 3] uint8} with cameras)
  sample(params, obs [B, To, obs_dim], rng, sampler: str (static), steps: int32 (may be traced),
         images=None) -> Sample

The trainer, the ``Policy`` controller and the evaluators only call these, so ``config.policy`` (ebt |
diffusion) is the one switch between EBT-Policy and the Diffusion Policy baseline.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import jax

Params = Any
Metrics = dict[str, jax.Array]


class Sample(NamedTuple):
  """One action chunk per batch element, in the normalised action space.

  Attributes:
    actions: [B, Tp, A] float32 in [-1, 1] (EBT: not clipped).
    energy: [B] float32 energy of the chunk (EBT), or None for a policy without an energy (diffusion).
    steps: [B] int32 sampler steps taken (EBT: MCMC steps used, 1..N; diffusion: denoising steps K).
  """
  actions: jax.Array
  energy: jax.Array | None
  steps: jax.Array


class PolicyModel(Protocol):
  """The interface of ``ebt.EBTPolicyModel`` and ``diffusion.DiffusionPolicyModel`` (see module docstring).

  Attributes:
    name: the ``config.policy`` value ("ebt", "diffusion").
    samplers: the sampler names ``sample`` accepts (the prefix of an inference label).
    inference: the default inference label (EBT: ``mcmc-<sampler.max_steps>``; diffusion:
      ``diffusion.inference``).
    sweep: the inference labels the evaluation also reports (``by_inference`` in eval.json).
    log_keys: loss metrics printed in the training log line (all go to metrics.jsonl).
    module: the Flax module (``obs_horizon``, ``pred_horizon``, ``action_dim``, ``attn_dropout``).
    obs_dim: width of the concatenated observation.
  """
  name: str
  samplers: tuple[str, ...]
  inference: str
  sweep: tuple[str, ...]
  log_keys: tuple[str, ...]
  module: Any
  obs_dim: int

  def init(self, rng: jax.Array) -> Params: ...

  def loss(self, params: Params, batch: dict[str, jax.Array], rng: jax.Array) -> tuple[jax.Array, Metrics]: ...

  def sample(self, params: Params, obs: jax.Array, rng: jax.Array, sampler: str, steps: jax.Array,
             images=None) -> Sample: ...


class ModelOwner:
  """The ``PolicyModel`` members both policies share: they hold a network as ``self.model`` (an
  ``EnergyModel`` or ``NoiseModel``) and cap their step counts at ``self.max_inference_steps`` (None: no cap)."""
  max_inference_steps: int | None = None

  def __post_init__(self):
    """Checks the default inference label and the sweep when the (dataclass) policy model is built, so a
    bad label fails before training, not at the evaluation after it.

    Raises:
      ValueError: naming the first bad label (``parse_inference``).
    """
    for label in (self.inference, *self.sweep):
      self.parse(label)

  @property
  def module(self):
    """The Flax module (``obs_horizon``, ``pred_horizon``, ``action_dim``, ``width``, ...)."""
    return self.model.module

  @property
  def obs_dim(self) -> int:
    return self.model.obs_dim

  def init(self, rng: jax.Array) -> Params:
    """-> the network's parameter pytree."""
    return self.model.init(rng)

  def parse(self, label: str) -> tuple[str, int]:
    """Inference label -> (sampler, steps); raises ValueError on a bad label (``parse_inference``)."""
    return parse_inference(label, self.samplers, self.max_inference_steps)


def parse_inference(label: str, samplers: tuple[str, ...], max_steps: int | None = None) -> tuple[str, int]:
  """``"<sampler>-<steps>"`` -> (sampler, steps), e.g. "ddim-10" -> ("ddim", 10).

  Raises:
    ValueError: naming the label, if it is malformed, names a sampler not in ``samplers``, or its step
      count is < 1 (or > ``max_steps`` when given).
  """
  sampler, sep, steps = str(label).rpartition("-")
  if not sep or not steps.isdigit():
    raise ValueError(f"inference {label!r}: expected '<sampler>-<steps>' with sampler in {samplers}, e.g. "
                     f"'{samplers[0]}-2'")
  if sampler not in samplers:
    raise ValueError(f"inference {label!r}: sampler {sampler!r} is not one of this policy's {samplers}")
  n = int(steps)
  if n < 1 or (max_steps is not None and n > max_steps):
    raise ValueError(f"inference {label!r}: steps must be in [1, {max_steps or 'inf'}], got {n}")
  return sampler, n


def sort_labels(labels) -> list[str]:
  """Distinct labels ordered by sampler, then step count ("mcmc-2" before "mcmc-20")."""
  def key(label):
    sampler, _, steps = label.rpartition("-")
    return sampler, int(steps)
  return sorted(set(labels), key=key)

