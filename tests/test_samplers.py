"""Alg. 1 / Alg. 2 samplers on analytic energies, where every step can be computed by hand."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ebt_jax.samplers import SamplerConfig, langevin_sigma, mcmc_step, minimize_energy, training_chain
from ebt_jax.samplers import training as training_lib

# Plain gradient descent: no momentum, no normalisation, no energy scaling.
PLAIN = SamplerConfig(step_size=0.25, momentum=0.0, normalize_samples=False, energy_scaled_step=False,
                      grad_norm_tol=1e-3, max_steps=50)
K = 2.0  # E(y) = K/2 ||y||^2, so g = K y and y_{i+1} = (1 - step K) y_i


def quadratic(y):
  return 0.5 * K * jnp.sum(jnp.square(y), axis=(-2, -1))


def expected_steps(norm0, cfg):
  """Loop steps run while steps < N-1 and ||g|| > tau; +1 final step."""
  shrink, steps, gnorm = 1 - cfg.step_size * K, 0, np.inf
  y = norm0
  while steps < cfg.max_steps - 1 and gnorm > cfg.grad_norm_tol:
    gnorm = K * y
    y *= shrink
    steps += 1
  return steps + 1


def test_inference_stops_at_tolerance_per_sample():
  scales = jnp.array([1e-5, 1e-2, 1.0, 100.0])
  init = scales[:, None, None] * jnp.ones((4, 16, 7)) / np.sqrt(16 * 7)  # ||y_0|| = scale
  out = jax.jit(lambda y: minimize_energy(quadratic, y, PLAIN))(init)
  want = [expected_steps(float(s), PLAIN) for s in scales]
  np.testing.assert_array_equal(out.steps, want)
  assert len(set(want)) == 4, want  # every sample stopped at a different step
  # A stopped sample is frozen: it moved exactly `steps` times.
  shrink = (1 - PLAIN.step_size * K) ** np.asarray(want)
  np.testing.assert_allclose(out.actions, init * shrink[:, None, None], rtol=1e-5, atol=1e-12)
  # The reported energy (inference_energy='last_step') is where the final step evaluated E: y before it.
  np.testing.assert_allclose(out.energy, quadratic(out.actions / (1 - PLAIN.step_size * K)), rtol=1e-5)
  # Converged samples ended with a gradient norm under tau, the others hit N.
  assert np.all(out.grad_norm[:3] < PLAIN.grad_norm_tol * 1.001)


@pytest.mark.parametrize("cap", [1, 2, 4, 20])
def test_inference_never_exceeds_cap(cap):
  init = 10.0 * jax.random.normal(jax.random.PRNGKey(0), (8, 16, 7))
  cfg = dataclasses.replace(PLAIN, step_size=0.01)  # converges slowly: the cap binds
  out = jax.jit(lambda y, n: minimize_energy(quadratic, y, cfg, n))(init, cap)
  np.testing.assert_array_equal(out.steps, cap)


def test_inference_vmaps_with_per_sample_stopping():
  inits = jnp.stack([s * jnp.ones((3, 16, 7)) for s in (1e-4, 1.0)])  # [2 groups, 3, 16, 7]
  inits = inits * jnp.array([1.0, 10.0, 100.0])[None, :, None, None]
  batched = jax.jit(jax.vmap(lambda y: minimize_energy(quadratic, y, PLAIN)))(inits)
  for g in range(2):
    single = minimize_energy(quadratic, inits[g], PLAIN)
    np.testing.assert_array_equal(batched.steps[g], single.steps)
    np.testing.assert_allclose(batched.actions[g], single.actions, rtol=1e-6)
  assert len(np.unique(batched.steps)) > 2


def test_mcmc_step_matches_nesterov_and_energy_scaled_step_size():
  cfg = SamplerConfig(momentum=0.9, step_size=0.1, energy_temperature=2.0, normalize_samples=True)
  y = jax.random.normal(jax.random.PRNGKey(1), (2, 4, 3))
  v = jax.random.normal(jax.random.PRNGKey(2), (2, 4, 3))
  small = lambda a: 0.05 * jnp.sum(jnp.square(a), axis=(-2, -1))  # E stays < 20: no clipping
  out = mcmc_step(small, y, v, jnp.full((2,), 0.1), cfg, normalize=True)
  y_n = y / np.sqrt(np.mean(np.square(y), axis=-1, keepdims=True) + cfg.norm_eps)
  look = y_n + 0.9 * v
  energy = 0.05 * np.sum(np.square(look), axis=(1, 2))
  assert np.all(energy < cfg.max_log_step_scale)
  alpha = 0.1 * np.exp(energy) / 2.0
  v_new = 0.9 * v - alpha[:, None, None] * 0.1 * look
  np.testing.assert_allclose(out.velocity, v_new, rtol=1e-4)
  np.testing.assert_allclose(out.sample, y_n + v_new, rtol=1e-4)
  np.testing.assert_allclose(out.energy, energy, rtol=1e-5)


def test_energy_scaled_step_does_not_overflow():
  huge = lambda y: 1e4 + jnp.sum(y, axis=(-2, -1))  # exp(1e4) = inf in float32
  out = minimize_energy(huge, jnp.zeros((2, 16, 7)), SamplerConfig(max_steps=3))
  assert np.all(np.isfinite(out.actions))


def test_randomised_step_counts_cover_base_plus_0_to_R():
  cfg = SamplerConfig()
  n = np.asarray(training_lib.sample_num_steps(jax.random.PRNGKey(0), 4000, cfg))
  assert set(np.unique(n)) == {6, 7, 8, 9}
  np.testing.assert_allclose(np.bincount(n)[6:] / 4000, 0.25, atol=0.03)


def test_step_size_randomisation_range():
  cfg = SamplerConfig()
  a = np.asarray(training_lib.sample_step_sizes(jax.random.PRNGKey(0), (20000,), cfg))
  assert a.min() >= 1000 / 1.5 and a.max() <= 1000 * 1.5
  np.testing.assert_allclose(a.mean(), (1000 / 1.5 + 1500) / 2, rtol=0.01)


def test_langevin_noise_schedule_is_eq1():
  sig = np.asarray(langevin_sigma(jnp.arange(10), 9, 0.002, 0.2))
  np.testing.assert_allclose(sig[0], 0.2, rtol=1e-6)
  np.testing.assert_allclose(sig[9], 0.002, rtol=1e-5)
  np.testing.assert_allclose(sig[3], 0.002 + 0.099 * (1 + np.cos(np.pi * 3 / 9)), rtol=1e-5)
  assert np.all(np.diff(sig) < 0)


def test_training_chain_masks_steps_and_anneals_noise_per_sample():
  # Zero energy: the only motion is normalisation + Langevin noise, so the injected noise is visible.
  cfg = SamplerConfig(normalize_samples=False, momentum=0.0)
  zero = lambda y, key: jnp.zeros(y.shape[0])
  demo = jnp.zeros((512, 16, 7))
  out = training_chain(zero, demo, jax.random.PRNGKey(3), cfg)
  n = np.asarray(out.num_steps)
  assert set(np.unique(n)) == {6, 7, 8, 9}
  mse = np.asarray(out.mse)  # [9, B]
  for b in range(8):
    assert np.all(mse[n[b]:, b] == 0) and np.all(mse[: n[b], b] > 0)
  # With a fixed count (R = 0), y_{i+1} = y_i + sigma_i eps_i: the MSE grows by sigma_i^2 per step.
  fixed = training_chain(zero, jnp.zeros((2048, 16, 7)), jax.random.PRNGKey(4),
                         SamplerConfig(normalize_samples=False, momentum=0.0, train_extra_steps=0))
  sig = np.asarray(langevin_sigma(jnp.arange(6), 6, 0.002, 0.2))
  np.testing.assert_allclose(np.diff(np.asarray(fixed.mse).mean(1))[:3], sig[1:4] ** 2, rtol=0.15)
  np.testing.assert_allclose(out.loss, np.mean(mse.sum(0) / n), rtol=1e-6)


def _tiny_linear_energy():
  """E_w(y) = mean(w * y^2)/2 + mean(b * y): analytic, with parameters (w, b)."""
  def energy(params, y):
    return jnp.mean(params["w"] * jnp.square(y) / 2 + params["b"] * y, axis=(-2, -1))
  return energy


def _fd_check(cfg, params, energy, demo, rng):
  """-> (finite-difference, analytic) directional derivative of the chain loss."""
  loss = lambda p: training_chain(lambda y, k: energy(p, y), demo, rng, cfg).loss
  grads = jax.grad(loss)(params)
  direction = jax.tree.map(lambda x: jax.random.normal(jax.random.PRNGKey(7), x.shape, x.dtype), params)
  eps = 1e-6
  shift = lambda s: jax.tree.map(lambda p, d: p + s * eps * d, params, direction)
  fd = (loss(shift(1)) - loss(shift(-1))) / (2 * eps)
  analytic = sum(jnp.sum(g * d) for g, d in zip(jax.tree.leaves(grads), jax.tree.leaves(direction)))
  return float(fd), float(analytic), grads


def test_loss_gradient_reaches_parameters_through_the_chain():
  """d loss / d theta flows through dE/dy (second order) and exp(E) in the step size, and stops at y_i."""
  energy = _tiny_linear_energy()
  with jax.enable_x64(True):
    params = {"w": jnp.full((16, 7), 1.5), "b": 0.1 * jnp.ones((16, 7))}
    demo = 0.5 * jnp.ones((4, 16, 7))
    rng = jax.random.PRNGKey(0)
    # One MCMC step: y_0 is noise (no theta), so the chain gradient is the exact total derivative.
    one = SamplerConfig(step_size=5.0, train_steps=1, train_extra_steps=0, langevin_sigma_max=0.05)
    fd, analytic, grads = _fd_check(one, params, energy, demo, rng)
    np.testing.assert_allclose(fd, analytic, rtol=1e-6)
    # E is linear in b, so d loss / d b exists only through the differentiated MCMC gradient dE/dy = b/(Tp A).
    assert float(jnp.abs(grads["b"]).min()) > 0
    # Several steps: each step's input y_i is stop-gradient-ed (authors' code), so the chain gradient is
    # deliberately *not* the total derivative, which would also flow through y_1 .. y_{n-1}.
    many = dataclasses.replace(one, train_steps=3)
    fd, analytic, grads = _fd_check(many, params, energy, demo, rng)
    assert abs(fd - analytic) > 1e-3 * abs(fd)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


def _chain_loss_and_grads(cfg, params, energy, demo, rng):
  loss = lambda p: training_chain(lambda y, k: energy(p, y), demo, rng, cfg).loss
  return jax.value_and_grad(loss)(params)


def test_remat_gives_the_same_loss_and_gradients():
  """remat_train_steps recomputes each MCMC step in the backward pass: a memory / speed choice only."""
  energy = _tiny_linear_energy()
  with jax.enable_x64(True):
    params = {"w": jnp.full((16, 7), 1.5), "b": 0.1 * jnp.ones((16, 7))}
    demo, rng = 0.5 * jnp.ones((4, 16, 7)), jax.random.PRNGKey(0)
    cfg = SamplerConfig(step_size=5.0, langevin_sigma_max=0.05)
    plain = _chain_loss_and_grads(dataclasses.replace(cfg, remat_train_steps=False), params, energy, demo, rng)
    remat = _chain_loss_and_grads(dataclasses.replace(cfg, remat_train_steps=True), params, energy, demo, rng)
    for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(remat)):
      np.testing.assert_allclose(a, b, rtol=1e-12)


def test_truncated_chain_trains_on_the_final_step_only():
  """truncate_chain (authors' truncate_mcmc): loss = final step's MSE; earlier steps give no gradient."""
  energy = _tiny_linear_energy()
  with jax.enable_x64(True):
    params = {"w": jnp.full((16, 7), 1.5), "b": 0.1 * jnp.ones((16, 7))}
    demo, rng = 0.5 * jnp.ones((64, 16, 7)), jax.random.PRNGKey(1)
    cfg = SamplerConfig(step_size=5.0, langevin_sigma_max=0.05, truncate_chain=True)
    out = training_chain(lambda y, k: energy(params, y), demo, rng, cfg)
    n, mse = np.asarray(out.num_steps), np.asarray(out.mse)
    assert set(np.unique(n)) == {6, 7, 8, 9} and mse.shape == (9, 64)
    for b in range(64):  # every step is recorded where it ran, the final one at n_b - 1
      assert np.all(mse[: n[b], b] > 0) and np.all(mse[n[b]:, b] == 0)
    np.testing.assert_allclose(out.loss, mse[n - 1, np.arange(64)].mean(), rtol=1e-12)
    np.testing.assert_allclose(out.final_actions.shape, (64, 16, 7))
    # With a single step there is nothing to truncate: the same chain, loss and gradients as the full one.
    one = dataclasses.replace(cfg, train_steps=1, train_extra_steps=0)
    full = _chain_loss_and_grads(dataclasses.replace(one, truncate_chain=False), params, energy, demo, rng)
    trunc = _chain_loss_and_grads(one, params, energy, demo, rng)
    for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(trunc)):
      np.testing.assert_allclose(a, b, rtol=1e-12)
    # Several steps: the final step's input is a constant, so the gradient is the finite difference of the
    # final step's MSE alone, taken from that same (frozen) input state.
    fd, analytic, grads = _fd_check(dataclasses.replace(cfg, train_steps=3, train_extra_steps=0), params, energy,
                                    demo[:4], rng)
    assert abs(fd - analytic) > 1e-3 * abs(fd)  # earlier steps depend on theta but carry no gradient
    assert all(bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads))


def test_detached_step_scale_changes_only_the_gradient():
  energy = _tiny_linear_energy()
  with jax.enable_x64(True):
    params = {"w": jnp.full((16, 7), 1.5), "b": 0.1 * jnp.ones((16, 7))}
    demo, rng = 0.5 * jnp.ones((4, 16, 7)), jax.random.PRNGKey(2)
    cfg = SamplerConfig(step_size=5.0, langevin_sigma_max=0.05, train_steps=2, train_extra_steps=0)
    on = _chain_loss_and_grads(cfg, params, energy, demo, rng)
    off = _chain_loss_and_grads(dataclasses.replace(cfg, detach_step_scale=True), params, energy, demo, rng)
    np.testing.assert_allclose(on[0], off[0], rtol=1e-12)  # the same chain forward
    assert not np.allclose(on[1]["w"], off[1]["w"])  # exp(E) no longer passes gradient
    # Without energy scaling there is no exp(E) to detach.
    plain = dataclasses.replace(cfg, energy_scaled_step=False)
    a = _chain_loss_and_grads(plain, params, energy, demo, rng)
    b = _chain_loss_and_grads(dataclasses.replace(plain, detach_step_scale=True), params, energy, demo, rng)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
      np.testing.assert_allclose(x, y, rtol=1e-12)


def test_inference_energy_from_the_last_step_or_exact():
  """last_step: E at the final step's look-ahead point (free); exact: E at the returned actions."""
  y0 = jnp.full((3, 16, 7), 0.7) * jnp.arange(1, 4)[:, None, None]
  cfg = dataclasses.replace(PLAIN, max_steps=3, grad_norm_tol=0.0)
  last = minimize_energy(quadratic, y0, cfg)
  exact = minimize_energy(quadratic, y0, dataclasses.replace(cfg, inference_energy="exact"))
  np.testing.assert_array_equal(last.actions, exact.actions)
  np.testing.assert_allclose(exact.energy, quadratic(exact.actions), rtol=1e-6)
  # Plain descent: the final step starts at y = actions / (1 - step K), where that step evaluated E.
  np.testing.assert_allclose(last.energy, quadratic(last.actions / (1 - PLAIN.step_size * K)), rtol=1e-6)
  with pytest.raises(ValueError, match="inference_energy must be one of"):
    SamplerConfig(inference_energy="final")
