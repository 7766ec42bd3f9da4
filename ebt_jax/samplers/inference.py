"""Alg. 2, EBT-Policy dynamic inference: energy descent that stops per sample.

Each sample takes normalised MCMC steps (``mcmc.mcmc_step``) while it has taken fewer than N - 1 of
them and the gradient norm of its last step is above tau; then every sample takes one final step,
normalised only with ``norm_final_step`` (the authors' code normalises it too; ebt-jax's default does
not), so a sample uses between 1 and N steps. The RMS is per sample or per prediction step, never
shared by the batch (``SamplerConfig.inference_presample_norm``). A sample that
has stopped keeps its sample and velocity while the others continue: the loop is a single
``jax.lax.while_loop`` over the whole batch that ends when no sample is active.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ebt_jax.samplers import mcmc


class InferenceResult(NamedTuple):
  """Output of ``minimize_energy``.

  Attributes:
    actions: [B, Tp, A] float32, the minimised action chunk (normalised action space).
    energy: [B] float32; ``cfg.inference_energy`` "last_step": E(z, y + mu v) at the final MCMC step's
      look-ahead point (computed by that step, no extra pass); "exact": E(z, actions) at the
      returned actions (one extra forward pass).
    steps: [B] int32, MCMC steps used, in [1, N].
    grad_norm: [B] float32, ||dE/dy||_2 at the last step taken.
  """
  actions: jax.Array
  energy: jax.Array
  steps: jax.Array
  grad_norm: jax.Array


def minimize_energy(energy_fn: mcmc.EnergyFn, init: jax.Array, cfg: mcmc.SamplerConfig,
                    max_steps: int | jax.Array | None = None) -> InferenceResult:
  """Alg. 2: y_0 = ``init``; descend E until ||g||_2 <= tau or N steps, per sample.

  Args:
    energy_fn: actions [B, Tp, A] -> energy [B] (observation context closed over).
    init: y_0 [B, Tp, A], e.g. ``cfg.init_std * N(0, I)`` (Alg. 2 line 1).
    cfg: sampler settings; uses step_size (alpha, no randomisation), momentum, energy scaling,
      normalisation (``presample_norm`` per sample, ``norm_final_step``), grad_norm_tol (tau),
      max_steps (N) and inference_energy.
    max_steps: overrides ``cfg.max_steps``; may be a traced int32 (no recompilation per cap).

  Returns:
    ``InferenceResult``. Jittable and vmappable; no Python loop over steps or samples.
  """
  n = cfg.max_steps if max_steps is None else max_steps
  batch = init.shape[0]
  alpha = jnp.full((batch,), cfg.step_size, jnp.float32)
  norm_over = cfg.inference_presample_norm

  def active(state):
    _, _, steps, grad_norm = state
    return (steps < n - 1) & (grad_norm > cfg.grad_norm_tol)

  def cond(state):
    return jnp.any(active(state))

  def body(state):
    sample, velocity, steps, grad_norm = state
    on = active(state)
    out = mcmc.mcmc_step(energy_fn, sample, velocity, alpha, cfg, normalize=True, norm_over=norm_over)
    keep = lambda new, old: jnp.where(on.reshape((-1,) + (1,) * (new.ndim - 1)), new, old)
    return (keep(out.sample, sample), keep(out.velocity, velocity), steps + on.astype(jnp.int32),
            keep(out.grad_norm, grad_norm))

  state = (init, jnp.zeros_like(init), jnp.zeros((batch,), jnp.int32), jnp.full((batch,), jnp.inf))
  sample, velocity, steps, _ = jax.lax.while_loop(cond, body, state)
  final = mcmc.mcmc_step(energy_fn, sample, velocity, alpha, cfg, normalize=cfg.norm_final_step, norm_over=norm_over)
  energy = energy_fn(final.sample) if cfg.inference_energy == "exact" else final.energy
  return InferenceResult(actions=final.sample, energy=energy, steps=steps + 1, grad_norm=final.grad_norm)
