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
  """eps_fn returns the exact noise that separates x_t from a fixed target: both samplers must land on it,
  for every step count K, with K traced (one compilation for all K)."""
  schedule = diffusion.DiffusionSchedule.cosine(T)
  target = jnp.linspace(-0.9, 0.9, 2 * 16 * 2).reshape(2, 16, 2)
  calls = []

  def oracle(x, t):
    calls.append(t.shape)
    ab = schedule.alpha_bar(t, x.ndim)
    return (x - jnp.sqrt(ab) * target) / jnp.sqrt(1 - ab)

  x_T = jax.random.normal(jax.random.PRNGKey(1), target.shape)
  if sampler == "ddpm":
    run = jax.jit(lambda x, k: diffusion.ddpm_sample(oracle, schedule, x, jax.random.PRNGKey(2), k))
  else:
    run = jax.jit(lambda x, k: diffusion.ddim_sample(oracle, schedule, x, k))
  for k in (100, 10, 3, 1):
    np.testing.assert_allclose(run(x_T, jnp.int32(k)), target, atol=1e-4, err_msg=f"K={k}")
  assert calls == [(2,)]  # traced once: the loop is a lax.fori_loop, not Python, and K is not static
  with pytest.raises(ValueError, match="num_inference_steps"):
    diffusion.ddim_sample(oracle, schedule, x_T, 0)


def test_strided_ddpm_step_matches_diffusers_fewer_step_formula():
  """K < T: prev_t = t - T/K, beta_t = 1 - alpha_bar_t / alpha_bar_prev (diffusers' DDPMScheduler.step)."""
  schedule = diffusion.DiffusionSchedule.cosine(T)
  x0, noise, z = jnp.full((1, 2, 2), -0.2), jnp.array([[[0.3, -1.0], [0.5, 2.0]]]), jnp.full((1, 2, 2), 0.7)
  t, t_prev = jnp.array([50], jnp.int32), jnp.array([40], jnp.int32)
  xt = diffusion.add_noise(schedule, x0, noise, t)
  ab, ab_prev = schedule.alphas_cumprod[50], schedule.alphas_cumprod[40]
  beta = 1 - ab / ab_prev
  mean = (math.sqrt(ab_prev) * beta / (1 - ab)) * x0 + (math.sqrt(1 - beta) * (1 - ab_prev) / (1 - ab)) * xt
  sigma = math.sqrt((1 - ab_prev) / (1 - ab) * beta)
  np.testing.assert_allclose(diffusion.ddpm_step(schedule, xt, noise, t, z, t_prev), mean + sigma * z, rtol=1e-5)


def _models(obs_dim=5, action_dim=3):
  from ebt_jax.models.diffusion import DiffusionTransformer, NoiseModel  # pylint: disable=g-import-not-at-top
  from ebt_jax.models.ebt import EBTransformer, EnergyModel  # pylint: disable=g-import-not-at-top
  kw = dict(action_dim=action_dim, obs_horizon=2, pred_horizon=16, width=16, num_layers=1, num_obs_layers=1,
            num_heads=2)
  return EnergyModel(EBTransformer(**kw), obs_dim), NoiseModel(DiffusionTransformer(**kw), obs_dim)


def test_diffusion_policy_shares_the_energy_models_backbone():
  from ebt_jax.models.backbone import Backbone  # pylint: disable=g-import-not-at-top
  energy, noise = _models()
  pe, pn = energy.init(jax.random.PRNGKey(0)), noise.init(jax.random.PRNGKey(0))
  shapes = lambda tree: jax.tree.map(lambda x: x.shape, tree)
  assert shapes(pe["backbone"]) == shapes(pn["backbone"])  # the same trunk, parameter for parameter
  assert set(pe) - {"backbone"} == {"head", "head_norm"} and set(pn) - {"backbone"} == {"head", "head_norm", "time_in", "time_out"}
  # One definition: the trunk is the Backbone module, bound in both.
  assert type(energy.module.bind({"params": pe}).backbone) is Backbone
  assert type(noise.module.bind({"params": pn}).backbone) is Backbone
  # The backbone parameters of one model drive the other's trunk identically.
  obs = jax.random.normal(jax.random.PRNGKey(1), (2, 2, 5))
  tok_e = energy.encode(pe, obs)
  tok_n = noise.encode({**pn, "backbone": pe["backbone"]}, obs)
  np.testing.assert_allclose(tok_e, tok_n, rtol=1e-6)


def test_noise_prediction_is_conditioned_on_timestep_and_observation():
  _, noise = _models()
  params = noise.init(jax.random.PRNGKey(0))
  obs = jax.random.normal(jax.random.PRNGKey(1), (2, 2, 5))
  x_t = jax.random.normal(jax.random.PRNGKey(2), (2, 16, 3))
  tokens = noise.encode(params, obs)
  eps = noise.predict_noise(params, tokens, x_t, jnp.array([5, 5]))
  assert eps.shape == (2, 16, 3) and eps.dtype == jnp.float32
  assert not np.allclose(eps, noise.predict_noise(params, tokens, x_t, jnp.array([60, 60])), atol=1e-4)
  assert not np.allclose(eps, noise.predict_noise(params, noise.encode(params, obs[::-1]), x_t, jnp.array([5, 5])),
                         atol=1e-4)


def test_diffusion_loss_is_zero_for_the_true_noise_and_one_for_zero_prediction():
  schedule = diffusion.DiffusionSchedule.cosine(T)
  x0 = jnp.zeros((512, 16, 2))
  loss, _ = diffusion.diffusion_loss(lambda x, t: jnp.zeros_like(x), schedule, x0, jax.random.PRNGKey(0))
  assert loss == pytest.approx(1.0, abs=0.02)  # E[eps^2]
  oracle = lambda x, t: x / jnp.sqrt(1 - schedule.alpha_bar(t, x.ndim))  # x0 = 0: x_t = sqrt(1 - ab) eps
  loss, _ = diffusion.diffusion_loss(oracle, schedule, x0, jax.random.PRNGKey(0))
  assert loss < 1e-8


def test_tiny_diffusion_policy_learns_one_chunk_and_ddim_recovers_it():
  """Model + objective + sampler together: fitted to a single (obs, chunk), DDIM-10 lands near the chunk."""
  import optax  # pylint: disable=g-import-not-at-top
  _, noise = _models(obs_dim=5, action_dim=2)
  schedule = diffusion.DiffusionSchedule.cosine(T)
  obs = jnp.ones((1, 2, 5)) * 0.5
  chunk = jnp.stack([jnp.linspace(-0.8, 0.8, 16), jnp.linspace(0.5, -0.5, 16)], -1)[None]
  params = noise.init(jax.random.PRNGKey(0))
  tx = optax.adam(3e-3)
  opt = tx.init(params)

  def loss_fn(p, rng):
    tokens = noise.encode(p, jnp.repeat(obs, 64, 0))
    return diffusion.diffusion_loss(lambda x, t: noise.predict_noise(p, tokens, x, t), schedule,
                                    jnp.repeat(chunk, 64, 0), rng)[0]

  @jax.jit
  def step(p, o, rng):
    loss, g = jax.value_and_grad(loss_fn)(p, rng)
    u, o = tx.update(g, o, p)
    return optax.apply_updates(p, u), o, loss

  for i in range(600):
    params, opt, loss = step(params, opt, jax.random.PRNGKey(i))
  tokens = noise.encode(params, jnp.repeat(obs, 8, 0))
  sample = diffusion.ddim_sample(lambda x, t: noise.predict_noise(params, tokens, x, t), schedule,
                                 jax.random.normal(jax.random.PRNGKey(7), (8, 16, 2)), 10)
  assert float(loss) < 0.1
  assert float(jnp.mean((sample - chunk) ** 2)) < 0.01
