"""EBT-Policy as a controller: raw observation history -> raw action chunk, by energy minimisation.

The whole decision is one jitted pure function of (params, obs, rng, max_steps): normalise the
observations, encode them, run Alg. 2 (``ebt_jax.samplers.minimize_energy``) from Gaussian noise, keep
the executed part ``[To-1, To-1+Ta)`` of the Tp-step chunk and map it back to raw action units.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ebt_jax.data.normalization import Normalizer
from ebt_jax.models.ebt import EnergyModel
from ebt_jax.samplers import SamplerConfig, minimize_energy


class Decision(NamedTuple):
  """One policy decision for a batch of B environments.

  Attributes:
    actions: [B, Ta, A] raw actions to execute, in order (Lift: OSC_POSE deltas in [-1, 1], gripper).
    energy: [B] energy of the chosen (normalised) chunk.
    mcmc_steps: [B] int32 MCMC steps used (1..max_steps).
  """
  actions: jax.Array
  energy: jax.Array
  mcmc_steps: jax.Array


@dataclasses.dataclass(frozen=True)
class Policy:
  """A trained policy: model + parameters + the normaliser it was trained with."""
  model: EnergyModel
  params: Any
  normalizer: Normalizer
  sampler: SamplerConfig
  action_horizon: int

  @classmethod
  def from_config(cls, config, model: EnergyModel, params: Any, normalizer: Normalizer) -> "Policy":
    """The policy of a run config (``config.sampler``, ``config.horizon.action``) around trained parameters."""
    return cls(model=model, params=params, normalizer=normalizer, sampler=SamplerConfig.from_config(config.sampler),
               action_horizon=config.horizon.action)

  @functools.cached_property
  def decide(self):
    """The pure decision function ``(params, obs [B, To, obs_dim] raw, rng, max_steps) -> Decision``.

    Not jitted, so that it can be traced inside a larger jitted function (``mjx_eval``'s rollout).
    """
    model, norm, sampler = self.model, self.normalizer, self.sampler
    to, tp = model.module.obs_horizon, model.module.pred_horizon
    ta, a_dim = self.action_horizon, model.module.action_dim

    def decide(params, obs, rng, max_steps):
      obs = norm.obs.normalize(obs, xp=jnp)
      tokens = model.encode(params, obs)
      init = sampler.init_std * jax.random.normal(rng, (obs.shape[0], tp, a_dim))
      result = minimize_energy(lambda y: model.energy_from_tokens(params, tokens, y), init, sampler, max_steps)
      chunk = jax.lax.dynamic_slice_in_dim(result.actions, to - 1, ta, axis=1)
      return Decision(norm.actions.unnormalize(chunk, xp=jnp), result.energy, result.steps)

    return decide

  @functools.cached_property
  def _decide(self):
    return jax.jit(self.decide)

  def __call__(self, obs_history: np.ndarray, rng: jax.Array, max_steps: int | None = None) -> Decision:
    """obs_history: [B, To, obs_dim] raw observations (oldest first) -> ``Decision``.

    ``max_steps`` (N of Alg. 2) defaults to ``sampler.max_steps``; changing it does not recompile.

    Raises:
      ValueError: if ``obs_history`` is not [B, To, obs_dim].
    """
    obs_history = np.asarray(obs_history, np.float32)
    expected = (self.model.module.obs_horizon, self.model.obs_dim)
    if obs_history.ndim != 3 or obs_history.shape[1:] != expected:
      raise ValueError(f"obs_history has shape {obs_history.shape}, expected [B, {expected[0]}, {expected[1]}]")
    n = self.sampler.max_steps if max_steps is None else max_steps
    return self._decide(self.params, obs_history, rng, jnp.int32(n))
