"""Alg. 1, the EBT-Policy training chain: randomised MCMC unrolled inside the loss.

From y_0 ~ N(0, I), each sample takes n_b = ``train_steps`` + U{0..``train_extra_steps``} MCMC steps
(``mcmc.mcmc_step``; n_b drawn per sample, or once for the batch with ``train_steps_draw="per_batch"``
as the authors do) with a randomised step size U[alpha/c, alpha*c] (drawn per sample and per step),
Langevin noise sigma_i of Eq. 1 with T = n_b, and the pre-sample RMSNorm (``presample_norm``) before
every step, the last one only with ``norm_final_step``. The loss is the mean over a sample's steps of
the MSE between y_{i+1} and the demo chunk (Alg. 1 line 7, divided by n_b as the authors do), averaged
over the batch.

The chain is a ``jax.lax.scan`` over the largest possible step count with per-sample masks, so the
randomised counts need no recompilation and no Python loop; with a per-batch count each scan step past
n is a ``lax.cond`` branch that computes nothing. With ``remat_train_steps`` (default) each
scan step is a ``jax.checkpoint``: the backward pass recomputes that step instead of reading its
activations from buffers stacked over all steps (same numbers; on CPU the stacking costs more than the
recomputation, README "What an EBT step costs").

What carries gradient to theta (as in the authors' code, commit c5f5464):
  * each step's input y_i is ``stop_gradient``-ed: no backpropagation through earlier samples;
  * the gradient g = dE/dy is differentiated (second order, "create_graph"): d loss / d theta flows
    through -a * g of the current step;
  * the Nesterov velocity v is *not* stopped, so earlier steps' a * g terms still reach theta;
  * the energy inside the energy-scaled step size exp(E) is not stopped either
    (``detach_step_scale=True`` stops it);
  * the random step size, the Langevin noise and y_0 carry no gradient.

``truncate_chain=True`` (the authors' later ``truncate_mcmc``): the first n_b - 1 steps of a sample run
without any gradient to theta (a scan under ``stop_gradient``, sample and velocity detached), then
every sample takes its final step n_b - 1 (RMSNorm only with ``norm_final_step``, Langevin sigma_{n_b - 1}), the only step
differentiated, and the loss is that step's MSE alone. One second-order step instead of n_b.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from ebt_jax.samplers import mcmc

# energy_fn(actions [B, Tp, A], dropout_rng) -> energy [B].
StochasticEnergyFn = Callable[[jax.Array, jax.Array], jax.Array]


class ChainOutput(NamedTuple):
  """Loss and diagnostics of one training chain.

  Attributes:
    loss: scalar, mean over samples of (1/n_b) sum_i MSE(y_{i+1}, demo); with ``truncate_chain``
      the mean of MSE(y_{n_b}, demo).
    num_steps: [B] int32, n_b.
    mse: [M, B] per-step MSE (0 where step i >= n_b); M = train_steps + train_extra_steps.
    energy: [M, B] energy at each step's look-ahead point (0 where inactive).
    grad_norm: [M, B] ||dE/dy||_2 per step (0 where inactive).
    final_actions: [B, Tp, A] y_{n_b}.
  """
  loss: jax.Array
  num_steps: jax.Array
  mse: jax.Array
  energy: jax.Array
  grad_norm: jax.Array
  final_actions: jax.Array


def sample_num_steps(rng: jax.Array, batch: int, cfg: mcmc.SamplerConfig) -> jax.Array:
  """n_b = train_steps + U{0..train_extra_steps}: [B] int32 (Sec. 3.6.1, Table 1); one value for every
  sample with ``train_steps_draw="per_batch"`` (the authors' ``6 + random.randint(0, 3 + 1)``)."""
  if cfg.train_steps_draw == "per_batch":
    return jnp.full((batch,), cfg.train_steps + jax.random.randint(rng, (), 0, cfg.train_extra_steps + 1))
  return cfg.train_steps + jax.random.randint(rng, (batch,), 0, cfg.train_extra_steps + 1)


def sample_step_sizes(rng: jax.Array, shape: tuple[int, ...], cfg: mcmc.SamplerConfig) -> jax.Array:
  """Step-size randomisation: U[alpha/c, alpha*c] of the given shape (Sec. 3.6.1)."""
  c = cfg.step_size_randomization
  return jax.random.uniform(rng, shape, minval=cfg.step_size / c, maxval=cfg.step_size * c)


def training_chain(energy_fn: StochasticEnergyFn, demo_actions: jax.Array, rng: jax.Array,
                   cfg: mcmc.SamplerConfig) -> ChainOutput:
  """Runs Alg. 1 for one batch and returns the loss to differentiate w.r.t. theta.

  Args:
    energy_fn: (actions [B, Tp, A], dropout_rng) -> energy [B]; closes over params and obs tokens.
    demo_actions: y, [B, Tp, A] float32 in [-1, 1] (normalised demo chunk).
    rng: PRNG key for y_0, the step counts, step sizes, Langevin noise and dropout.
    cfg: sampler settings (``truncate_chain``, ``remat_train_steps`` and ``detach_step_scale`` pick
      the gradient path, module docstring).

  Returns:
    ``ChainOutput`` (with ``truncate_chain`` the loss is the final step's MSE; ``mse`` / ``energy`` /
    ``grad_norm`` still hold every step, the earlier ones computed without gradient).
  """
  batch = demo_actions.shape[0]
  max_steps = cfg.train_steps + cfg.train_extra_steps
  init_rng, count_rng, chain_rng = jax.random.split(rng, 3)
  num_steps = sample_num_steps(count_rng, batch, cfg)
  init = cfg.init_std * jax.random.normal(init_rng, demo_actions.shape, demo_actions.dtype)
  keys = jax.random.split(chain_rng, max_steps)

  def step(sample, velocity, i, key, final):
    """MCMC step i ([] or [B] int) of every sample; ``final`` [B] bool: the sample's last step (RMSNorm
    only with ``norm_final_step``)."""
    noise_rng, size_rng, dropout_rng = jax.random.split(key, 3)
    sigma = mcmc.langevin_sigma(i, num_steps, cfg.langevin_sigma_min, cfg.langevin_sigma_max)
    noise = sigma[:, None, None] * jax.random.normal(noise_rng, sample.shape, sample.dtype)
    out = mcmc.mcmc_step(lambda a: energy_fn(a, dropout_rng), jax.lax.stop_gradient(sample), velocity,
                         sample_step_sizes(size_rng, (batch,), cfg), cfg, normalize=~final | cfg.norm_final_step, noise=noise,
                         detach_step_scale=cfg.detach_step_scale)
    return out, jnp.mean(jnp.square(out.sample - demo_actions), axis=(-2, -1))

  def masked_body(carry, xs, last_index):
    """One scan step; samples with i > last_index[b] keep their state and record zeros."""
    sample, velocity = carry
    i, key = xs
    on = i <= last_index
    out, mse = step(sample, velocity, i, key, final=i >= num_steps - 1)
    keep = lambda new, old: jnp.where(on[:, None, None], new, old)
    zero_off = lambda x: jnp.where(on, x, 0.0)
    return ((keep(out.sample, sample), keep(out.velocity, velocity)),
            (zero_off(mse), zero_off(out.energy), zero_off(out.grad_norm)))

  def body(carry, xs, last_index):
    """``masked_body``; with one step count for the batch, steps past it skip the computation."""
    if cfg.train_steps_draw != "per_batch":
      return masked_body(carry, xs, last_index)
    idle = lambda carry, xs: (carry, (jnp.zeros((batch,), jnp.float32),) * 3)
    return jax.lax.cond(xs[0] <= last_index[0], functools.partial(masked_body, last_index=last_index), idle,
                        carry, xs)

  start = (init, jnp.zeros_like(init))
  if not cfg.truncate_chain:
    scan_body = functools.partial(body, last_index=num_steps - 1)
    if cfg.remat_train_steps:
      scan_body = jax.checkpoint(scan_body, prevent_cse=False)
    (final, _), (mse, energy, grad_norm) = jax.lax.scan(scan_body, start, (jnp.arange(max_steps), keys))
    loss = jnp.mean(mse.sum(axis=0) / num_steps)
    return ChainOutput(loss=loss, num_steps=num_steps, mse=mse, energy=energy, grad_norm=grad_norm,
                       final_actions=final)

  # Truncated: steps 0 .. n_b - 2 without gradient, then the final step n_b - 1 of every sample.
  if max_steps > 1:
    (sample, velocity), (mse, energy, grad_norm) = jax.lax.stop_gradient(jax.lax.scan(
        functools.partial(body, last_index=num_steps - 2), start, (jnp.arange(max_steps - 1), keys[:-1])))
  else:
    sample, velocity = start
    mse = energy = grad_norm = jnp.zeros((0, batch), jnp.float32)
  out, final_mse = step(sample, jax.lax.stop_gradient(velocity), num_steps - 1, keys[-1],
                        final=jnp.ones((batch,), bool))  # normalised only with norm_final_step
  rows = jnp.arange(batch)
  place = lambda per_step, last: jnp.concatenate([per_step.astype(last.dtype), jnp.zeros((1, batch), last.dtype)]).at[
      num_steps - 1, rows].set(last)
  return ChainOutput(loss=jnp.mean(final_mse), num_steps=num_steps, mse=place(mse, final_mse),
                     energy=place(energy, out.energy), grad_norm=place(grad_norm, out.grad_norm),
                     final_actions=out.sample)
