"""The MCMC step shared by training (Alg. 1) and inference (Alg. 2) of EBT-Policy.

One MCMC step on a sample y [B, Tp, A] with Nesterov velocity v (zeros at the start):

  y'   = RMSNorm(y)                    pre-sample normalisation (Sec. 3.6.2; Alg. 1 l.5, Alg. 2 l.6)
  y'   = y' + N(0, sigma_i^2)          Langevin noise, training only (Eq. 1)
  look = y' + mu * v                   Nesterov look-ahead (Sec. 3.6.1)
  g    = dE(z, look)/d look            one backward pass through the energy model
  a    = eta * exp(E(z, look)) / T     energy-scaled step size (Eq. 2); eta ~ U[alpha/c, alpha*c] in training
  v    = mu * v - a * g
  y    = y' + v                        Alg. 1/2 line 6/8

Defaults are the authors' (Table 1 and their code): alpha = 1000, c = 1.5, T = 1, mu = 0.9,
sigma 0.2 -> 0.002, 6 + U{0..3} training steps, inference capped at 2 steps (Table 1: max 20),
gradient-norm tolerance tau = 1e-3.

Pre-sample RMSNorm (``presample_norm``, ``norm_final_step``): which elements share one RMS, and
whether a chain's final step is normalised too. ebt-jax's default ("per_step", final step skipped)
divides each prediction step's A action dims by their own RMS and leaves the last step free to reach
the demo's scale. The authors' code (``F.rms_norm(x, x.shape)``, commit c5f5464) takes **one RMS over
the whole sample tensor** and applies it at **every** step including the last: in training that
tensor is the whole batch ("per_batch"); in their rollouts it is one sample ("per_sample", B = 1),
which is what "per_batch" means at inference here too, so that parallel episodes never share a norm.

Cost settings (``ebt_jax.samplers.training``, ``ebt_jax.samplers.inference``; measured in README
"What an EBT step costs"): ``remat_train_steps`` (recompute each training step in the backward pass
instead of storing it: the same numbers), ``truncate_chain`` (the authors' later ``truncate_mcmc``:
only the final training step is differentiated), ``detach_step_scale`` (no gradient through exp(E)
in the step size) and ``inference_energy`` (which energy a decision reports).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

# energy_fn(actions [B, Tp, A]) -> energy [B]; the observation context is closed over.
EnergyFn = Callable[[jax.Array], jax.Array]


# Which elements of the sample tensor [B, Tp, A] share one RMS (module docstring).
PRESAMPLE_NORMS = ("per_step", "per_sample", "per_batch")
# How training draws its MCMC step count n = train_steps + U{0..train_extra_steps}.
TRAIN_STEPS_DRAWS = ("per_sample", "per_batch")

# What ``InferenceResult.energy`` is: E at the last step's look-ahead point (free) or at the returned actions.
INFERENCE_ENERGIES = ("last_step", "exact")


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
  """Every knob of the EBT-Policy sampler (mirrors ``config.sampler`` in configs/*.py).

  Attributes:
    step_size: base step size alpha (eta_b in Table 1).
    step_size_randomization: c; in training each sample's step size is drawn from U[alpha/c, alpha*c]
      at every MCMC step (authors' code). 1 disables it. Inference always uses alpha.
    energy_scaled_step: multiply the step size by exp(E) / T (Eq. 2).
    energy_temperature: T in alpha * exp(E) / T.
    max_log_step_scale: E is clipped to at most this before exp(), so exp(E) cannot overflow float32
      (exp(88) does); default 20 (a step multiplier of 4.9e8 is already degenerate).
    momentum: Nesterov momentum mu; 0 gives plain gradient descent.
    normalize_samples: pre-sample RMSNorm (no learned scale) before each MCMC step (Alg. 1 l.5,
      Alg. 2 l.6); False: never.
    presample_norm: which elements share one RMS: "per_step" (default: each prediction step's A
      action dims), "per_sample" (one RMS over a sample's whole [Tp, A] chunk) or "per_batch" (one
      RMS over the whole [B, Tp, A] tensor in training, the authors' ``F.rms_norm(x, x.shape)``;
      per sample at inference, their B = 1 rollouts).
    norm_final_step: also normalise before a chain's final step (authors: yes; default: no, so the
      final step can move the sample to the demo's scale).
    norm_eps: RMSNorm epsilon.
    init_std: y_0 ~ N(0, init_std^2 I) (Alg. 1/2 line 1).
    train_steps: base number of MCMC steps in training (Table 1: 6).
    train_extra_steps: R; each training chain takes train_steps + U{0..R} steps (Table 1: 3; the
      authors' code draws ``randint(0, 3 + 1)``, inclusive, so R = 4 there).
    train_steps_draw: "per_sample" (default: each sample of a batch draws its own count) or
      "per_batch" (the authors: one draw for the whole batch; steps past it are skipped, not masked).
    langevin_sigma_max: sigma at the first training step (Eq. 1).
    langevin_sigma_min: sigma at the last training step.
    max_steps: N, the inference step cap (Alg. 2); Table 1 uses up to 20, the authors run 2.
    grad_norm_tol: tau; a sample stops once ||g||_2 over its [Tp, A] gradient falls below it (Alg. 2).
    truncate_chain: training differentiates only each sample's final MCMC step, and the loss is that
      step's MSE alone (the authors' ``truncate_mcmc`` of their later ToolHang config, with the
      velocity detached as on their later commit); the earlier steps run without any gradient to
      theta. False (default, their c5f5464 and the paper): the loss averages every step's MSE and
      each step is differentiated (second order through dE/dy).
    detach_step_scale: stop the gradient through exp(E) in the energy-scaled step size during
      training (the authors never do; an option to cut one second-order path).
    remat_train_steps: ``jax.checkpoint`` each training MCMC step, so the backward pass recomputes a
      step's activations instead of storing them for every step: the same loss and gradients, less
      memory; on the 2-core CPU also ~2x faster (README), since storing them costs more there.
    inference_energy: which energy a decision reports (``InferenceResult.energy``). "last_step"
      (default): E at the final MCMC step's look-ahead point, which that step computes anyway (the
      authors report nothing and run no extra pass); "exact": E at the returned actions, one extra
      forward pass of the energy model per decision.
  """
  step_size: float = 1000.0
  step_size_randomization: float = 1.5
  energy_scaled_step: bool = True
  energy_temperature: float = 1.0
  max_log_step_scale: float = 20.0
  momentum: float = 0.9
  normalize_samples: bool = True
  presample_norm: str = "per_step"
  norm_final_step: bool = False
  norm_eps: float = 1e-6
  init_std: float = 1.0
  train_steps: int = 6
  train_extra_steps: int = 3
  train_steps_draw: str = "per_sample"
  langevin_sigma_max: float = 0.2
  langevin_sigma_min: float = 0.002
  max_steps: int = 2
  grad_norm_tol: float = 1e-3
  truncate_chain: bool = False
  detach_step_scale: bool = False
  remat_train_steps: bool = True
  inference_energy: str = "last_step"

  def __post_init__(self):
    if self.max_steps < 1 or self.train_steps < 1 or self.train_extra_steps < 0:
      raise ValueError(f"need max_steps >= 1, train_steps >= 1, train_extra_steps >= 0: {self}")
    if self.step_size_randomization < 1:
      raise ValueError(f"step_size_randomization must be >= 1, got {self.step_size_randomization}")
    if self.presample_norm not in PRESAMPLE_NORMS:
      raise ValueError(f"presample_norm must be one of {PRESAMPLE_NORMS}, got {self.presample_norm!r}")
    if self.train_steps_draw not in TRAIN_STEPS_DRAWS:
      raise ValueError(f"train_steps_draw must be one of {TRAIN_STEPS_DRAWS}, got {self.train_steps_draw!r}")
    if self.inference_energy not in INFERENCE_ENERGIES:
      raise ValueError(f"inference_energy must be one of {INFERENCE_ENERGIES}, got {self.inference_energy!r}")

  @classmethod
  def from_config(cls, cfg) -> "SamplerConfig":
    """From an ml_collections ConfigDict with (a subset of) the fields above."""
    fields = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in cfg.items() if k in fields})


  @property
  def inference_presample_norm(self) -> str:
    """The norm a decision uses: "per_batch" becomes "per_sample" (parallel episodes never share an RMS)."""
    return "per_sample" if self.presample_norm == "per_batch" else self.presample_norm


_NORM_AXES = {"per_step": (-1,), "per_sample": (-2, -1), "per_batch": None}


def rms_normalize(y: jax.Array, eps: float, over: str = "per_step") -> jax.Array:
  """Pre-sample RMSNorm (no learned scale): y [B, Tp, A] -> same shape, y / sqrt(mean(y^2) + eps).

  ``over`` (``PRESAMPLE_NORMS``): the mean runs over the A action dims of each prediction step
  ("per_step"), over each sample's [Tp, A] ("per_sample") or over the whole tensor ("per_batch";
  the authors' ``F.rms_norm(x, x.shape)``). Raises KeyError for another value.
  """
  return y * jax.lax.rsqrt(jnp.mean(jnp.square(y), axis=_NORM_AXES[over], keepdims=True) + eps)


def langevin_sigma(step: jax.Array, num_steps: jax.Array, sigma_min: float, sigma_max: float) -> jax.Array:
  """Cosine-annealed Langevin noise std, Eq. 1: sigma_min + (max-min)/2 (1 + cos(pi step / num_steps))."""
  step = jnp.asarray(step, jnp.float32)
  return sigma_min + 0.5 * (sigma_max - sigma_min) * (1.0 + jnp.cos(jnp.pi * step / num_steps))


def energy_and_grad(energy_fn: EnergyFn, y: jax.Array) -> tuple[jax.Array, jax.Array]:
  """-> (energy [B], dE/dy [B, Tp, A]). Samples do not interact, so grad of the sum is per sample."""
  (_, energy), grad = jax.value_and_grad(functools.partial(_sum_aux, energy_fn), has_aux=True)(y)
  return energy, grad


def _sum_aux(energy_fn: EnergyFn, y: jax.Array):
  energy = energy_fn(y)
  return energy.sum(), energy


class StepOut(NamedTuple):
  """Result of one MCMC step; shapes [B, Tp, A] for samples, [B] for the rest."""
  sample: jax.Array
  velocity: jax.Array
  energy: jax.Array  # E at the look-ahead point
  grad_norm: jax.Array  # ||dE/dy||_2 per sample


def mcmc_step(energy_fn: EnergyFn, sample: jax.Array, velocity: jax.Array, base_step_size: jax.Array,
              cfg: SamplerConfig, normalize: jax.Array | bool, noise: jax.Array | None = None,
              detach_step_scale: bool = False, norm_over: str | None = None) -> StepOut:
  """One Nesterov MCMC step (module docstring). ``base_step_size``: [B] (alpha or a random draw);
  ``normalize``: bool or [B] bool (RMSNorm this sample first); ``norm_over``: which elements share one
  RMS (default ``cfg.presample_norm``; decisions pass ``cfg.inference_presample_norm``); ``noise``:
  [B, Tp, A] Langevin noise already scaled by sigma, or None at inference; ``detach_step_scale``: no
  gradient through exp(E) in the step size (training option ``SamplerConfig.detach_step_scale``)."""
  if cfg.normalize_samples:
    normed = rms_normalize(sample, cfg.norm_eps, norm_over or cfg.presample_norm)
    sample = jnp.where(jnp.reshape(normalize, (-1, 1, 1)), normed, sample)
  if noise is not None:
    sample = sample + noise
  look = sample + cfg.momentum * velocity
  energy, grad = energy_and_grad(energy_fn, look)
  step_size = base_step_size
  if cfg.energy_scaled_step:
    scale_energy = jax.lax.stop_gradient(energy) if detach_step_scale else energy
    step_size = step_size * jnp.exp(jnp.minimum(scale_energy, cfg.max_log_step_scale)) / cfg.energy_temperature
  velocity = cfg.momentum * velocity - step_size[:, None, None] * grad
  grad_norm = jnp.sqrt(jnp.sum(jnp.square(grad), axis=(-2, -1)))
  return StepOut(sample + velocity, velocity, energy, grad_norm)
