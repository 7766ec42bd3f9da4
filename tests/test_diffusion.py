"""Diffusion Policy samplers: the cosine schedule against its published formula, the forward process,
DDPM and DDIM steps on known values, and full samplers with an oracle noise predictor."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ebt_jax.samplers import diffusion

T = 100


def test_squaredcos_cap_v2_matches_nichol_dhariwal_eq17():
  """alpha_bar_t = f(t)/f(0) with f(t) = cos(((t/T + s)/(1 + s)) pi/2)^2, s = 0.008, betas capped at 0.999."""
  schedule = diffusion.DiffusionSchedule.cosine(T)
  f = lambda t: math.cos(((t / T + 0.008) / 1.008) * math.pi / 2) ** 2
  for t in (0, 1, 10, 50, 90, 98):  # alpha_bar after step t = f(t + 1) / f(0) while no beta is capped
    assert schedule.alphas_cumprod[t] == pytest.approx(f(t + 1) / f(0), rel=1e-12)
  assert schedule.betas[0] == pytest.approx(1 - f(1) / f(0), rel=1e-12)
  assert schedule.betas[0] == pytest.approx(6.3128e-4, rel=1e-4)  # 1 - cos(0.02805)^2 / cos(0.01247)^2
  assert schedule.betas[-1] == 0.999  # f(T) = cos(pi/2)^2 ~ 0: the cap
  assert np.all(np.diff(schedule.betas) > 0) and schedule.alphas_cumprod[-1] < 1e-6


def test_forward_process_and_x0_prediction():
  schedule = diffusion.DiffusionSchedule.cosine(T)
  x0 = jnp.array([[[0.5, -0.25]], [[-1.0, 1.0]]])
  noise = jnp.array([[[1.0, 2.0]], [[-0.5, 0.0]]])
  t = jnp.array([0, 60], jnp.int32)
  xt = diffusion.add_noise(schedule, x0, noise, t)
  for b in range(2):
    ab = schedule.alphas_cumprod[int(t[b])]
    np.testing.assert_allclose(xt[b], math.sqrt(ab) * x0[b] + math.sqrt(1 - ab) * noise[b], rtol=1e-5)
  np.testing.assert_allclose(diffusion.predict_x0(schedule, xt, noise, t), x0, atol=1e-5)
  # A wrong noise guess is clipped into [-1, 1].
  assert jnp.abs(diffusion.predict_x0(schedule, xt, -10 * noise, t)).max() <= 1.0


def test_ddpm_step_is_the_posterior_mean_plus_fixed_small_noise():
  schedule = diffusion.DiffusionSchedule.cosine(T)
  x0, noise = jnp.full((1, 3, 2), 0.3), jnp.linspace(-1, 1, 6).reshape(1, 3, 2)
  z = jnp.ones((1, 3, 2))
  t = 40
  tt = jnp.array([t], jnp.int32)
  xt = diffusion.add_noise(schedule, x0, noise, tt)
  ab, ab_prev, beta = schedule.alphas_cumprod[t], schedule.alphas_cumprod[t - 1], schedule.betas[t]
  mean = (math.sqrt(ab_prev) * beta / (1 - ab)) * x0 + (math.sqrt(1 - beta) * (1 - ab_prev) / (1 - ab)) * xt
  sigma = math.sqrt((1 - ab_prev) / (1 - ab) * beta)
  np.testing.assert_allclose(diffusion.ddpm_step(schedule, xt, noise, tt, z), mean + sigma * z, rtol=1e-5)
  # The last step adds no noise and returns the (clipped) x_0 prediction.
  t0 = jnp.array([0], jnp.int32)
  x1 = diffusion.add_noise(schedule, x0, noise, t0)
  np.testing.assert_allclose(diffusion.ddpm_step(schedule, x1, noise, t0, z), x0, atol=1e-5)


def test_ddim_step_with_the_true_noise_moves_along_the_forward_process():
  schedule = diffusion.DiffusionSchedule.cosine(T)
  x0, noise = jnp.full((2, 4, 2), -0.4), jax.random.normal(jax.random.PRNGKey(0), (2, 4, 2))
  t, t_prev = jnp.array([90, 30], jnp.int32), jnp.array([80, -1], jnp.int32)
  xt = diffusion.add_noise(schedule, x0, noise, t)
  prev = diffusion.ddim_step(schedule, xt, noise, t, t_prev)
  np.testing.assert_allclose(prev[0], diffusion.add_noise(schedule, x0, noise, t_prev)[0], atol=1e-5)
  np.testing.assert_allclose(prev[1], x0[1], atol=1e-5)  # t_prev = -1: alpha_bar = 1, the clean sample


def test_ddim_timesteps_leading_spacing():
  np.testing.assert_array_equal(diffusion.ddim_timesteps(100, 10), [90, 80, 70, 60, 50, 40, 30, 20, 10, 0])
  np.testing.assert_array_equal(diffusion.ddim_timesteps(100, 1), [0])
  with pytest.raises(ValueError, match="num_inference_steps"):
    diffusion.ddim_timesteps(100, 101)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_samplers_recover_the_target_with_an_oracle_noise_predictor(sampler):
  """eps_fn returns the exact noise that separates x_t from a fixed target: both samplers must land on it."""
  schedule = diffusion.DiffusionSchedule.cosine(T)
  target = jnp.linspace(-0.9, 0.9, 2 * 16 * 2).reshape(2, 16, 2)
  calls = []

  def oracle(x, t):
    calls.append(t.shape)
    ab = schedule.alpha_bar(t, x.ndim)
    return (x - jnp.sqrt(ab) * target) / jnp.sqrt(1 - ab)

  x_T = jax.random.normal(jax.random.PRNGKey(1), target.shape)
  if sampler == "ddpm":
    out = jax.jit(lambda x, r: diffusion.ddpm_sample(oracle, schedule, x, r))(x_T, jax.random.PRNGKey(2))
  else:
    out = jax.jit(lambda x: diffusion.ddim_sample(oracle, schedule, x, 10))(x_T)
  np.testing.assert_allclose(out, target, atol=1e-4)
  assert calls == [(2,)]  # traced once: the loop is a lax.scan, not Python
