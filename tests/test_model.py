"""The energy model: shapes, scalar energy = mean of the per-step, per-dim head, conditioning, dropout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ebt_jax.models.ebt import EBTransformer, EnergyModel
from ebt_jax.models.layers import sincos_embedding


@pytest.fixture(scope="module")
def model_and_params():
  model = EnergyModel(EBTransformer(action_dim=7, obs_horizon=2, pred_horizon=16, width=32, num_layers=2,
                                    num_obs_layers=1, num_heads=4, attn_dropout=0.3), obs_dim=19)
  return model, model.init(jax.random.PRNGKey(0))


def test_energy_is_mean_of_per_step_per_dim_head(model_and_params):
  model, params = model_and_params
  obs = jax.random.normal(jax.random.PRNGKey(1), (3, 2, 19))
  actions = jax.random.uniform(jax.random.PRNGKey(2), (3, 16, 7), minval=-1, maxval=1)
  energy = model.energy(params, obs, actions)
  assert energy.shape == (3,) and energy.dtype == jnp.float32
  terms = model.module.apply({"params": params}, model.encode(params, obs), actions,
                             method=EBTransformer.energy_terms)
  assert terms.shape == (3, 16, 7)
  np.testing.assert_allclose(energy, terms.mean(axis=(1, 2)), rtol=1e-6)
  # Samples are independent: the energy of one sample does not depend on its batch mates.
  np.testing.assert_allclose(model.energy(params, obs[:1], actions[:1]), energy[:1], rtol=1e-5)


def test_energy_depends_on_observations_and_every_action_step(model_and_params):
  model, params = model_and_params
  obs = jax.random.normal(jax.random.PRNGKey(1), (1, 2, 19))
  actions = jnp.zeros((1, 16, 7))
  grad_a = jax.grad(lambda a: model.energy(params, obs, a).sum())(actions)
  assert np.all(np.abs(grad_a).sum(-1) > 0)  # every step of the chunk matters
  grad_o = jax.grad(lambda o: model.energy(params, o, actions).sum())(obs)
  assert np.all(np.abs(grad_o).sum(-1) > 0)  # both observation steps reach the energy (cross-attention)


def test_dropout_only_with_a_key(model_and_params):
  model, params = model_and_params
  obs = jax.random.normal(jax.random.PRNGKey(1), (2, 2, 19))
  actions = jnp.zeros((2, 16, 7))
  det = model.energy(params, obs, actions)
  np.testing.assert_array_equal(det, model.energy(params, obs, actions))
  a = model.energy(params, obs, actions, dropout_rng=jax.random.PRNGKey(3))
  b = model.energy(params, obs, actions, dropout_rng=jax.random.PRNGKey(4))
  assert not np.allclose(a, b)


def test_bad_shapes_raise(model_and_params):
  model, params = model_and_params
  with pytest.raises(AssertionError):
    model.energy(params, jnp.zeros((1, 3, 19)), jnp.zeros((1, 16, 7)))  # To = 3 instead of 2
  with pytest.raises(AssertionError):
    model.energy(params, jnp.zeros((1, 2, 19)), jnp.zeros((1, 8, 7)))  # Tp = 8 instead of 16


def test_sincos_embedding():
  emb = sincos_embedding(16, 8)
  assert emb.shape == (16, 8)
  np.testing.assert_allclose(emb[0], [0, 0, 0, 0, 1, 1, 1, 1], atol=1e-7)
  assert len({tuple(np.round(r, 5)) for r in emb}) == 16  # every position distinct
  with pytest.raises(ValueError):
    sincos_embedding(4, 5)
