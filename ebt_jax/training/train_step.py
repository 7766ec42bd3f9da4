"""The EBT-Policy train step: a pure function (state, batch, rng) -> (state, metrics).

loss = Alg. 1 training chain (``ebt_jax.samplers.training_chain``); AdamW with linear warm-up and
cosine decay, global-norm clipping at 1.0 (paper Sec. 3.6.2); an EMA copy of the parameters for
evaluation. A step whose loss or gradient is not finite changes nothing and is reported
(``metrics["nonfinite"] = 1``).
"""

from __future__ import annotations

from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax

from ebt_jax.models.ebt import EnergyModel
from ebt_jax.samplers import SamplerConfig, training_chain

Metrics = dict[str, jax.Array]


@flax.struct.dataclass
class TrainState:
  """Everything a resumed run needs (saved by orbax).

  Attributes:
    step: int32 scalar, optimisation steps taken.
    params: model parameters.
    ema_params: exponential moving average of ``params`` (used for evaluation).
    opt_state: optax state.
  """
  step: jax.Array
  params: Any
  ema_params: Any
  opt_state: Any


def learning_rate_schedule(cfg) -> optax.Schedule:
  """Linear warm-up from 0 over ``warmup_steps``, then cosine decay to 0 at ``num_steps``."""
  warmup = min(cfg.warmup_steps, max(cfg.num_steps - 1, 0))
  return optax.warmup_cosine_decay_schedule(0.0, cfg.learning_rate, warmup, max(cfg.num_steps, warmup + 1))


def make_optimizer(cfg) -> optax.GradientTransformation:
  """clip_by_global_norm(grad_clip_norm) -> AdamW(schedule, weight_decay) from ``config.train``."""
  return optax.chain(optax.clip_by_global_norm(cfg.grad_clip_norm),
                     optax.adamw(learning_rate_schedule(cfg), weight_decay=cfg.weight_decay))


def ema_decay(step: jax.Array, power: float, max_decay: float) -> jax.Array:
  """EMA decay warm-up 1 - (1 + step)^-power, clipped to [0, max_decay] (diffusers' EMAModel)."""
  return jnp.clip(1.0 - (1.0 + step.astype(jnp.float32)) ** -power, 0.0, max_decay)


def init_train_state(model: EnergyModel, tx: optax.GradientTransformation, rng: jax.Array) -> TrainState:
  params = model.init(rng)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, ema_params=params,
                    opt_state=tx.init(params))


def make_train_step(model: EnergyModel, sampler: SamplerConfig, tx: optax.GradientTransformation,
                    train_cfg) -> Callable[[TrainState, dict[str, jax.Array], jax.Array], tuple[TrainState, Metrics]]:
  """Returns ``train_step(state, batch, rng) -> (state, metrics)`` (not yet jitted).

  ``batch``: {"obs": [B, To, obs_dim], "actions": [B, Tp, A]} float32 in [-1, 1].
  ``rng``: PRNG key for this step (the caller folds in the step number).
  Metrics (scalars): loss, mse_first / mse_last (first / last MCMC step), energy_first / energy_last,
  mcmc_grad_norm (mean ||dE/dy||), mcmc_steps (mean n_b), grad_norm (||d loss / d theta|| before
  clipping), learning_rate, nonfinite (1 if the update was skipped).
  """
  schedule = learning_rate_schedule(train_cfg)

  def loss_fn(params, batch, rng):
    enc_rng, chain_rng = jax.random.split(rng)
    dropout = model.module.attn_dropout > 0
    tokens = model.encode(params, batch["obs"], enc_rng if dropout else None)
    energy_fn = lambda actions, key: model.energy_from_tokens(params, tokens, actions, key if dropout else None)
    out = training_chain(energy_fn, batch["actions"], chain_rng, sampler)
    return out.loss, out

  def train_step(state: TrainState, batch, rng):
    (loss, out), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch, rng)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    decay = ema_decay(state.step, train_cfg.ema_power, train_cfg.ema_max_decay)
    ema_params = optax.incremental_update(params, state.ema_params, 1.0 - decay)
    new = TrainState(step=state.step + 1, params=params, ema_params=ema_params, opt_state=opt_state)
    # Never train on a non-finite step: keep every array as it was, except the step counter.
    kept = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, state)
    kept = kept.replace(step=state.step + 1)
    batch_idx = jnp.arange(out.num_steps.shape[0])
    metrics = {
        "loss": loss,
        "mse_first": out.mse[0].mean(),
        "mse_last": out.mse[out.num_steps - 1, batch_idx].mean(),
        "energy_first": out.energy[0].mean(),
        "energy_last": out.energy[out.num_steps - 1, batch_idx].mean(),
        "mcmc_grad_norm": out.grad_norm.sum(0).mean() / out.num_steps.mean(),
        "mcmc_steps": out.num_steps.mean(),
        "grad_norm": grad_norm,
        "learning_rate": schedule(state.step),
        "nonfinite": 1 - finite.astype(jnp.int32),
    }
    return kept, metrics

  return train_step
