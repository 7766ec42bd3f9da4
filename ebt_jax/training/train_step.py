"""The train step of every policy: a pure function (state, batch, rng) -> (state, metrics).

loss = the policy model's objective (EBT: Alg. 1 training chain; diffusion: DDPM noise prediction,
``ebt_jax.policies``); AdamW with linear warm-up and
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

from ebt_jax.policies import PolicyModel

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
  """Linear warm-up from 0 over ``warmup_steps``, then cosine decay to 0 at ``decay_steps`` (0 or
  missing: ``num_steps``). The authors' cosine spans 900k steps (300 epochs x 3000 steps configured),
  so over any run that stops long before it their rate stays near the peak: ``decay_steps=900_000``."""
  decay = cfg.get("decay_steps", 0) or cfg.num_steps
  warmup = min(cfg.warmup_steps, max(decay - 1, 0))
  return optax.warmup_cosine_decay_schedule(0.0, cfg.learning_rate, warmup, max(decay, warmup + 1))


def make_optimizer(cfg) -> optax.GradientTransformation:
  """clip_by_global_norm(grad_clip_norm) -> AdamW(schedule, weight_decay) from ``config.train``."""
  return optax.chain(optax.clip_by_global_norm(cfg.grad_clip_norm),
                     optax.adamw(learning_rate_schedule(cfg), weight_decay=cfg.weight_decay))


def ema_decay(step: jax.Array, power: float, max_decay: float) -> jax.Array:
  """EMA decay warm-up 1 - (1 + step)^-power, clipped to [0, max_decay] (diffusers' EMAModel)."""
  return jnp.clip(1.0 - (1.0 + step.astype(jnp.float32)) ** -power, 0.0, max_decay)


def init_train_state(model: PolicyModel, tx: optax.GradientTransformation, rng: jax.Array) -> TrainState:
  params = model.init(rng)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, ema_params=params,
                    opt_state=tx.init(params))


def apply_gradients(state: TrainState, grads, tx: optax.GradientTransformation, train_cfg) -> TrainState:
  """One AdamW update of ``state.params`` with ``grads`` (a pytree like the params) and the EMA of the
  result (decay ``ema_decay(state.step, ...)``); -> the new state, step + 1. No finiteness check."""
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  decay = ema_decay(state.step, train_cfg.ema_power, train_cfg.ema_max_decay)
  ema_params = optax.incremental_update(params, state.ema_params, 1.0 - decay)
  return TrainState(step=state.step + 1, params=params, ema_params=ema_params, opt_state=opt_state)


def make_train_step(model: PolicyModel, tx: optax.GradientTransformation,
                    train_cfg) -> Callable[[TrainState, dict[str, jax.Array], jax.Array], tuple[TrainState, Metrics]]:
  """Returns ``train_step(state, batch, rng) -> (state, metrics)`` (not yet jitted).

  ``batch``: {"obs": [B, To, obs_dim], "actions": [B, Tp, A]} float32 in [-1, 1].
  ``rng``: PRNG key for this step (the caller folds in the step number).
  Metrics (scalars): loss, the policy model's loss metrics (EBT: mse_first / mse_last, energy_first /
  energy_last, mcmc_grad_norm, mcmc_steps; diffusion: mse_by_t_low / mse_by_t_high), grad_norm
  (||d loss / d theta|| before clipping), learning_rate, nonfinite (1 if the update was skipped).
  """
  schedule = learning_rate_schedule(train_cfg)

  def train_step(state: TrainState, batch, rng):
    (loss, aux), grads = jax.value_and_grad(model.loss, has_aux=True)(state.params, batch, rng)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    new = apply_gradients(state, grads, tx, train_cfg)
    # Never train on a non-finite step: keep every array as it was, except the step counter.
    kept = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, state)
    kept = kept.replace(step=state.step + 1)
    metrics = {"loss": loss, **aux, "grad_norm": grad_norm, "learning_rate": schedule(state.step),
               "nonfinite": 1 - finite.astype(jnp.int32)}
    return kept, metrics

  return train_step
