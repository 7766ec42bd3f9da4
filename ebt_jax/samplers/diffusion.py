"""Diffusion Policy's samplers as pure functions: the cosine noise schedule, the forward process, and
DDPM / DDIM reverse processes over an epsilon-prediction network, written with ``lax.scan``.

The baseline EBT-Policy is compared with (Chi et al. 2023, which uses diffusers' schedulers):

* schedule ``squaredcos_cap_v2`` (Nichol & Dhariwal 2021, Eq. 17): alpha_bar(t) = f(t) / f(0),
  f(t) = cos(((t / T + s) / (1 + s)) * pi / 2)^2, s = 0.008; beta_t = min(1 - alpha_bar(t+1) / alpha_bar(t), 0.999)
  for t = 0 .. T-1 (T = 100 training steps);
* forward process q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I) (Ho et al. 2020, Eq. 4);
* DDPM step (Ho et al. 2020, Eq. 6-7, "fixed small" variance beta~_t): predicted x_0 from epsilon, clipped
  to [-1, 1], then the posterior mean mu~_t(x_t, x_0) plus sqrt(beta~_t) z for t > 0;
* DDIM step, eta = 0 (Song et al. 2021, Eq. 12): x_prev = sqrt(alpha_bar_prev) x_0 + sqrt(1 - alpha_bar_prev) eps,
  with x_0 clipped and alpha_bar_prev = 1 past the last step (diffusers' ``set_alpha_to_one``); K inference
  steps use timesteps T - T/K, ..., T/K, 0 (diffusers' "leading" spacing).

Arrays: samples ``x`` [B, Tp, A] float32 (normalised actions in [-1, 1]); timesteps int32 in [0, T).
``eps_fn(x [B, Tp, A], t [B] int32) -> [B, Tp, A]`` is the noise-prediction network.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

EpsFn = Callable[[jax.Array, jax.Array], jax.Array]


def squaredcos_cap_v2(num_train_steps: int = 100, cosine_s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
  """betas [T] float64 of the cosine schedule (module docstring; diffusers ``squaredcos_cap_v2``).

  Raises:
    ValueError: if ``num_train_steps`` < 1.
  """
  if num_train_steps < 1:
    raise ValueError(f"num_train_steps must be >= 1, got {num_train_steps}")
  f = lambda u: np.cos((u + cosine_s) / (1 + cosine_s) * np.pi / 2) ** 2
  u = np.arange(num_train_steps + 1, dtype=np.float64) / num_train_steps
  return np.minimum(1.0 - f(u[1:]) / f(u[:-1]), max_beta)


@dataclasses.dataclass(frozen=True)
class DiffusionSchedule:
  """Per-timestep constants of a discrete diffusion process.

  Attributes:
    betas: [T] beta_t.
    alphas_cumprod: [T] alpha_bar_t = prod_{s <= t} (1 - beta_s).
    clip_sample: clip predicted x_0 to [-1, 1] (Diffusion Policy: True).
  """
  betas: np.ndarray
  alphas_cumprod: np.ndarray
  clip_sample: bool = True

  @classmethod
  def cosine(cls, num_train_steps: int = 100, clip_sample: bool = True) -> "DiffusionSchedule":
    """The ``squaredcos_cap_v2`` schedule with ``num_train_steps`` steps."""
    betas = squaredcos_cap_v2(num_train_steps)
    return cls(betas=betas, alphas_cumprod=np.cumprod(1.0 - betas), clip_sample=clip_sample)

  @property
  def num_train_steps(self) -> int:
    return len(self.betas)

  def _at(self, table: np.ndarray, t: jax.Array, ndim: int) -> jax.Array:
    """table[t] for t [B], broadcast to a [B, 1, ..., 1] array of ``ndim`` dims (float32)."""
    value = jnp.asarray(table, jnp.float32)[t]
    return value.reshape(value.shape + (1,) * (ndim - value.ndim))

  def alpha_bar(self, t: jax.Array, ndim: int) -> jax.Array:
    """alpha_bar_t for t [B] (t = -1 gives 1: the clean sample), shaped [B, 1, ..., 1]."""
    padded = np.concatenate([[1.0], self.alphas_cumprod])
    return self._at(padded, t + 1, ndim)


def add_noise(schedule: DiffusionSchedule, x0: jax.Array, noise: jax.Array, t: jax.Array) -> jax.Array:
  """Forward process sample x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) noise (Ho et al. Eq. 4).

  x0, noise: [B, ...]; t: [B] int32 in [0, T).
  """
  ab = schedule.alpha_bar(t, x0.ndim)
  return jnp.sqrt(ab) * x0 + jnp.sqrt(1.0 - ab) * noise


def predict_x0(schedule: DiffusionSchedule, x_t: jax.Array, eps: jax.Array, t: jax.Array) -> jax.Array:
  """x_0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t), clipped to [-1, 1] if the schedule clips."""
  ab = schedule.alpha_bar(t, x_t.ndim)
  x0 = (x_t - jnp.sqrt(1.0 - ab) * eps) / jnp.sqrt(ab)
  return jnp.clip(x0, -1.0, 1.0) if schedule.clip_sample else x0


def ddpm_step(schedule: DiffusionSchedule, x_t: jax.Array, eps: jax.Array, t: jax.Array,
              noise: jax.Array, t_prev: jax.Array | None = None) -> jax.Array:
  """One ancestral DDPM step x_t -> x_{t_prev} (Ho et al. Eq. 6-7, fixed-small variance).

  x_prev = c0 x_0 + ct x_t + [t_prev >= 0] sqrt(beta~_t) noise, with x_0 from ``predict_x0``,
  beta_t = 1 - alpha_bar_t / alpha_bar_prev, c0 = sqrt(alpha_bar_prev) beta_t / (1 - alpha_bar_t),
  ct = sqrt(1 - beta_t) (1 - alpha_bar_prev) / (1 - alpha_bar_t), beta~_t = (1 - alpha_bar_prev) / (1 - alpha_bar_t) beta_t.
  With t_prev = t - 1 (the default) this is Ho et al.'s step; a larger stride is diffusers' DDPMScheduler
  with fewer inference steps. t_prev = -1 (from t = 0 with stride 1) is the clean sample: no noise added.

  x_t, eps, noise: [B, ...]; t, t_prev: [B] int32, 0 <= t < T, -1 <= t_prev < t.
  """
  nd = x_t.ndim
  t_prev = t - 1 if t_prev is None else t_prev
  ab, ab_prev = schedule.alpha_bar(t, nd), schedule.alpha_bar(t_prev, nd)
  beta = 1.0 - ab / ab_prev
  x0 = predict_x0(schedule, x_t, eps, t)
  mean = (jnp.sqrt(ab_prev) * beta * x0 + jnp.sqrt(1.0 - beta) * (1.0 - ab_prev) * x_t) / (1.0 - ab)
  variance = jnp.maximum((1.0 - ab_prev) / (1.0 - ab) * beta, 1e-20)
  return mean + jnp.where(t_prev.reshape(ab.shape) >= 0, jnp.sqrt(variance), 0.0) * noise


def ddim_step(schedule: DiffusionSchedule, x_t: jax.Array, eps: jax.Array, t: jax.Array,
              t_prev: jax.Array) -> jax.Array:
  """One deterministic DDIM step (eta = 0) x_t -> x_{t_prev} (Song et al. Eq. 12).

  x_prev = sqrt(alpha_bar_prev) x_0 + sqrt(1 - alpha_bar_prev) eps, x_0 from ``predict_x0`` (clipped; eps is
  the network's, as in diffusers); t_prev = -1 means the clean sample (alpha_bar = 1).

  x_t, eps: [B, ...]; t, t_prev: [B] int32.
  """
  ab_prev = schedule.alpha_bar(t_prev, x_t.ndim)
  x0 = predict_x0(schedule, x_t, eps, t)
  return jnp.sqrt(ab_prev) * x0 + jnp.sqrt(1.0 - ab_prev) * eps


def ddim_timesteps(num_train_steps: int, num_inference_steps: int) -> np.ndarray:
  """[K] int32 timesteps, descending, diffusers' "leading" spacing: (K-1)*r, ..., r, 0 with r = T // K.

  Raises:
    ValueError: unless 1 <= K <= T.
  """
  if not 1 <= num_inference_steps <= num_train_steps:
    raise ValueError(f"need 1 <= num_inference_steps <= {num_train_steps}, got {num_inference_steps}")
  ratio = num_train_steps // num_inference_steps
  return (np.arange(num_inference_steps)[::-1] * ratio).astype(np.int32)


def num_inference_steps_of(schedule: DiffusionSchedule, num_inference_steps) -> jax.Array:
  """The K the samplers run: int32; a Python int is checked (1 <= K <= T), a traced one is clipped into
  that range.

  Raises:
    ValueError: if a Python-int K is not in [1, T].
  """
  if isinstance(num_inference_steps, (int, np.integer)):
    ddim_timesteps(schedule.num_train_steps, int(num_inference_steps))  # raises on a bad K
  return jnp.clip(jnp.asarray(num_inference_steps, jnp.int32), 1, schedule.num_train_steps)


def _reverse_process(step_fn, schedule: DiffusionSchedule, x_T: jax.Array, num_inference_steps) -> jax.Array:
  """Runs ``step_fn(i, x, t [B], t_prev [B]) -> x`` for i = 0 .. K-1 over the leading-spaced timesteps
  t_i = (K-1-i) r, t_prev = t_i - r (r = T // K; -1 .. -r mean the clean sample) in one ``lax.fori_loop``."""
  k = num_inference_steps_of(schedule, num_inference_steps)
  ratio = schedule.num_train_steps // k
  batch = x_T.shape[0]

  def body(i, x):
    t = (k - 1 - i) * ratio
    t_prev = jnp.maximum(t - ratio, -1)
    return step_fn(i, x, jnp.full((batch,), t, jnp.int32), jnp.full((batch,), t_prev, jnp.int32))

  return jax.lax.fori_loop(0, k, body, x_T)


def ddpm_sample(eps_fn: EpsFn, schedule: DiffusionSchedule, x_T: jax.Array, rng: jax.Array,
                num_inference_steps: int | jax.Array | None = None) -> jax.Array:
  """Ancestral DDPM sampling (Ho et al. Alg. 2): x_T [B, ...] ~ N(0, I) -> x_0 [B, ...].

  K = ``num_inference_steps`` network calls (default T: every timestep, Diffusion Policy's 100-step
  sampler; K < T strides the timesteps as diffusers' DDPMScheduler). K may be a traced int32 (one
  ``lax.fori_loop``: no recompilation per K). The noise of loop step i is ``normal(fold_in(rng, i))``.

  Raises:
    ValueError: if a Python-int K is not in [1, T].
  """
  k = schedule.num_train_steps if num_inference_steps is None else num_inference_steps

  def step(i, x, t, t_prev):
    noise = jax.random.normal(jax.random.fold_in(rng, i), x.shape, x.dtype)
    return ddpm_step(schedule, x, eps_fn(x, t), t, noise, t_prev)

  return _reverse_process(step, schedule, x_T, k)


def ddim_sample(eps_fn: EpsFn, schedule: DiffusionSchedule, x_T: jax.Array,
                num_inference_steps: int | jax.Array) -> jax.Array:
  """Deterministic DDIM sampling (eta = 0) with K = ``num_inference_steps`` network calls: x_T -> x_0.

  Timesteps as ``ddim_timesteps``; K may be a traced int32 (one ``lax.fori_loop``).

  Raises:
    ValueError: if a Python-int K is not in [1, T].
  """
  step = lambda i, x, t, t_prev: ddim_step(schedule, x, eps_fn(x, t), t, t_prev)
  return _reverse_process(step, schedule, x_T, num_inference_steps)


def diffusion_loss(eps_fn: EpsFn, schedule: DiffusionSchedule, x0: jax.Array, rng: jax.Array) -> tuple[jax.Array, dict]:
  """DDPM training objective (Ho et al. Alg. 1, "simple" loss): E ||eps - eps_fn(x_t, t)||^2.

  Args:
    eps_fn: the noise-prediction network, (x_t [B, Tp, A], t [B] int32) -> [B, Tp, A].
    schedule: the noise schedule (T training steps).
    x0: [B, Tp, A] demo action chunks, normalised to [-1, 1].
    rng: PRNG key for t ~ U{0..T-1} per sample and eps ~ N(0, I).

  Returns:
    (loss: scalar mean squared error over batch, steps and dims; metrics {"mse_by_t_low", "mse_by_t_high"}:
    the error on samples with t < T/2 and t >= T/2, for logging).
  """
  t_rng, n_rng = jax.random.split(rng)
  t = jax.random.randint(t_rng, (x0.shape[0],), 0, schedule.num_train_steps, jnp.int32)
  noise = jax.random.normal(n_rng, x0.shape, x0.dtype)
  err = jnp.mean((eps_fn(add_noise(schedule, x0, noise, t), t) - noise) ** 2, axis=tuple(range(1, x0.ndim)))
  low = t < schedule.num_train_steps // 2
  mean_where = lambda m: jnp.sum(jnp.where(m, err, 0.0)) / jnp.maximum(jnp.sum(m), 1)
  return err.mean(), {"mse_by_t_low": mean_where(low), "mse_by_t_high": mean_where(~low)}
