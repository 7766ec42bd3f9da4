"""A trained policy as a controller: raw observation history -> raw action chunk.

The whole decision is one jitted pure function of (params, obs, rng, steps): normalise the observations,
sample a Tp-step chunk with the policy model's sampler (EBT: energy minimisation, Alg. 2; diffusion: DDPM /
DDIM), keep the executed part ``[To-1, To-1+Ta)`` and map it back to raw action units. Which sampler and
how many steps is an inference label ("mcmc-2", "ddim-10", "ddpm-100"; ``ebt_jax.policies.base``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ebt_jax import compile_options
from ebt_jax.data.normalization import Normalizer
from ebt_jax.models import vision
from ebt_jax.policies import PolicyModel


class Decision(NamedTuple):
  """One policy decision for a batch of B environments.

  Attributes:
    actions: [B, Ta, A] raw actions to execute, in order (Lift: OSC_POSE deltas in [-1, 1], gripper;
      Push-T: agent target position, px).
    energy: [B] energy of the chosen (normalised) chunk; None for a policy without an energy (diffusion).
    steps: [B] int32 sampler steps taken (EBT: MCMC steps used, 1..N; diffusion: denoising steps K).
  """
  actions: jax.Array
  energy: jax.Array | None
  steps: jax.Array


@dataclasses.dataclass(frozen=True)
class Policy:
  """A trained policy: policy model + parameters + the normaliser it was trained with.

  Attributes:
    model: the policy model (``ebt_jax.policies``: EBT or diffusion).
    params: its (EMA) parameters.
    normalizer: observation / action min-max statistics of the training demos.
    action_horizon: Ta, actions executed per decision.
    inference: the default inference label (``model.inference`` unless overridden).
  """
  model: PolicyModel
  params: Any
  normalizer: Normalizer
  action_horizon: int
  inference: str
  _jitted: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)

  @classmethod
  def from_config(cls, config, model: PolicyModel, params: Any, normalizer: Normalizer) -> "Policy":
    """The policy of a run config (``config.horizon.action``, the model's default inference) around trained parameters."""
    return cls(model=model, params=params, normalizer=normalizer, action_horizon=config.horizon.action,
               inference=model.inference)

  def parse(self, inference: str | None = None) -> tuple[str, int]:
    """Inference label (default ``self.inference``) -> (sampler, steps); raises ValueError on a bad label."""
    return self.model.parse(self.inference if inference is None else inference)

  @property
  def cameras(self) -> tuple[str, ...]:
    """The RGB observation keys the policy sees (empty: low-dim only)."""
    return vision.cameras_of(self.model.module.vision)

  def decide(self, sampler: str) -> Callable[..., Decision]:
    """The pure decision function of ``sampler``: ``(params, obs [B, To, obs_dim] raw, rng, steps, images)
    -> Decision``; ``images`` {camera: [B, To, H, W, 3] uint8} for a policy with cameras, else None.

    ``steps`` (EBT: the cap N; diffusion: K) is an int32 that may be traced. Not jitted, so that it can
    be traced inside a larger jitted function (``mjx_eval``'s rollout).
    """
    model, norm = self.model, self.normalizer
    to, ta = model.module.obs_horizon, self.action_horizon

    def decide(params, obs, rng, steps, images=None):
      out = model.sample(params, norm.obs.normalize(obs, xp=jnp), rng, sampler, steps, images=images)
      chunk = jax.lax.dynamic_slice_in_dim(out.actions, to - 1, ta, axis=1)
      return Decision(norm.actions.unnormalize(chunk, xp=jnp), out.energy, out.steps)

    return decide

  def __call__(self, obs_history: np.ndarray, rng: jax.Array, inference: str | None = None,
               image_history: dict[str, np.ndarray] | None = None) -> Decision:
    """obs_history: [B, To, obs_dim] raw observations (oldest first); image_history (a policy with
    cameras): {camera: [B, To, H, W, 3] uint8}, the same steps -> ``Decision``.

    ``inference`` (e.g. "mcmc-4", "ddim-10") defaults to ``self.inference``; one compilation per
    sampler, none per step count (compiled with ``compile_options.decision()``).

    Raises:
      ValueError: if ``obs_history`` is not [B, To, obs_dim], the policy's cameras are missing from
        ``image_history`` or not [B, To, H, W, 3] uint8, or the inference label is not one of this
        policy's samplers.
    """
    obs_history = np.asarray(obs_history, np.float32)
    expected = (self.model.module.obs_horizon, self.model.obs_dim)
    if obs_history.ndim != 3 or obs_history.shape[1:] != expected:
      raise ValueError(f"obs_history has shape {obs_history.shape}, expected [B, {expected[0]}, {expected[1]}]")
    images = None
    if self.cameras:
      missing = [c for c in self.cameras if c not in (image_history or {})]
      if missing:
        raise ValueError(f"this policy sees cameras {list(self.cameras)}; image_history lacks {missing}")
      images = {c: np.asarray(image_history[c]) for c in self.cameras}
      for c, v in images.items():
        if v.dtype != np.uint8 or v.ndim != 5 or v.shape[:2] != obs_history.shape[:2] or v.shape[-1] != 3:
          raise ValueError(f"image_history['{c}'] has shape {v.shape} dtype {v.dtype}, expected "
                           f"[{obs_history.shape[0]}, {expected[0]}, H, W, 3] uint8")
    sampler, steps = self.parse(inference)
    if sampler not in self._jitted:
      self._jitted[sampler] = compile_options.jit_decision(self.decide(sampler))
    return self._jitted[sampler](self.params, obs_history, rng, np.int32(steps), images)
