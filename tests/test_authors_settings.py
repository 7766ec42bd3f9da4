"""The authors' choices as config fields (issue 13): pre-sample RMSNorm variants, per-batch step counts,
the trunk's masks / learned positions / head bias, raw data, the long cosine, and the :authors variants."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import lift, pusht
from ebt_jax import validation
from ebt_jax.data.robomimic_hdf5 import Demos, Episode
from ebt_jax.errors import ConfigError
from ebt_jax.models import backbone
from ebt_jax.models.ebt import EBTransformer, EnergyModel
from ebt_jax.samplers import SamplerConfig, minimize_energy, training_chain
from ebt_jax.samplers import mcmc, training as training_lib
from ebt_jax.training import trainer
from ebt_jax.training.train_step import learning_rate_schedule


def test_presample_rms_norm_groups():
  y = jax.random.normal(jax.random.PRNGKey(0), (3, 16, 7)) * jnp.arange(1, 8)  # dims of different scales
  rms = lambda x, axes: np.sqrt(np.mean(np.square(x), axis=axes))
  np.testing.assert_allclose(rms(mcmc.rms_normalize(y, 0.0, "per_step"), -1), 1.0, rtol=1e-5)
  per_sample = mcmc.rms_normalize(y, 0.0, "per_sample")
  np.testing.assert_allclose(rms(per_sample, (1, 2)), 1.0, rtol=1e-5)
  assert np.std(rms(per_sample, -1)) > 0.01  # time steps keep their relative scale
  per_batch = mcmc.rms_normalize(y, 0.0, "per_batch")
  np.testing.assert_allclose(rms(per_batch, None), 1.0, rtol=1e-5)
  assert np.ptp(rms(per_batch, (1, 2))) > 0.01  # samples keep their relative scale
  np.testing.assert_allclose(per_batch, y / np.sqrt(np.mean(np.square(y))), rtol=1e-5)


def _bowl(target):
  return lambda a: 0.5 * jnp.sum(jnp.square(a - target), axis=(-2, -1))


def test_per_batch_norm_is_per_sample_at_inference():
  """Episodes evaluated together never share an RMS: a batch's decisions are each sample's own."""
  cfg = SamplerConfig(presample_norm="per_batch", norm_final_step=True, max_steps=4, step_size=0.3,
                      energy_scaled_step=False)
  target = jnp.full((16, 7), 0.3)
  init = jax.random.normal(jax.random.PRNGKey(1), (4, 16, 7)) * jnp.array([0.1, 1.0, 3.0, 10.0])[:, None, None]
  together = minimize_energy(_bowl(target), init, cfg).actions
  alone = jnp.concatenate([minimize_energy(_bowl(target), init[i:i + 1], cfg).actions for i in range(4)])
  np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-6)
  per_sample = minimize_energy(_bowl(target), init, dataclasses.replace(cfg, presample_norm="per_sample")).actions
  np.testing.assert_allclose(together, per_sample, rtol=1e-6)


@pytest.mark.parametrize("norm_final_step", [False, True])
def test_norm_final_step(norm_final_step):
  """A one-step chain with a vanishing step size returns its normalised or raw start."""
  cfg = SamplerConfig(train_steps=1, train_extra_steps=0, step_size=1e-9, step_size_randomization=1.0,
                      energy_scaled_step=False, langevin_sigma_max=0.0, langevin_sigma_min=0.0,
                      presample_norm="per_sample", norm_final_step=norm_final_step, momentum=0.0)
  demo = jnp.zeros((2, 16, 7))
  out = training_chain(lambda a, key: _bowl(0.0)(a), demo, jax.random.PRNGKey(0), cfg)
  init = jax.random.normal(jax.random.split(jax.random.PRNGKey(0), 3)[0], demo.shape)
  want = mcmc.rms_normalize(init, cfg.norm_eps, "per_sample") if norm_final_step else init
  np.testing.assert_allclose(out.final_actions, want, rtol=1e-4, atol=1e-6)
  decision = minimize_energy(_bowl(0.0), init, dataclasses.replace(cfg, max_steps=1)).actions
  np.testing.assert_allclose(decision, want, rtol=1e-4, atol=1e-6)


def test_per_batch_step_count_is_one_draw_covering_6_to_10():
  cfg = SamplerConfig(train_extra_steps=4, train_steps_draw="per_batch")
  draws = np.stack([training_lib.sample_num_steps(jax.random.PRNGKey(k), 8, cfg) for k in range(200)])
  assert np.all(draws == draws[:, :1])  # one count per batch
  assert set(draws[:, 0]) == {6, 7, 8, 9, 10}


def test_per_batch_chain_skips_steps_exactly_like_masking(monkeypatch):
  """The lax.cond that skips steps past a per-batch count gives the masked chain's loss and gradients."""
  cfg = SamplerConfig(train_steps=2, train_extra_steps=3, train_steps_draw="per_batch", step_size=0.5,
                      energy_scaled_step=True)
  demo = jax.random.uniform(jax.random.PRNGKey(3), (4, 16, 7), minval=-1, maxval=1)

  def loss(theta, cfg):
    energy = lambda a, key: 0.5 * jnp.sum(jnp.square(a - theta), axis=(-2, -1)) / 50
    out = training_chain(energy, demo, jax.random.PRNGKey(5), cfg)
    return out.loss, out

  theta = jnp.full((16, 7), 0.2)
  (l_skip, out_skip), g_skip = jax.value_and_grad(loss, has_aux=True)(theta, cfg)
  n = int(out_skip.num_steps[0])
  assert 2 <= n < 5  # some steps were skipped
  masked = dataclasses.replace(cfg, train_steps_draw="per_sample")
  monkeypatch.setattr(training_lib, "sample_num_steps", lambda rng, b, c: jnp.full((b,), n))
  (l_mask, out_mask), g_mask = jax.value_and_grad(loss, has_aux=True)(theta, masked)
  np.testing.assert_allclose(l_skip, l_mask, rtol=1e-6)
  np.testing.assert_allclose(g_skip, g_mask, rtol=1e-5, atol=1e-8)
  np.testing.assert_allclose(out_skip.mse, out_mask.mse, rtol=1e-6)
  assert np.all(np.asarray(out_skip.mse)[n:] == 0)


def _model(**kw):
  module = EBTransformer(action_dim=3, obs_horizon=3, pred_horizon=4, width=16, num_layers=1, num_obs_layers=2,
                         num_heads=2, **kw)
  model = EnergyModel(module, obs_dim=5)
  return model, model.init(jax.random.PRNGKey(0))


def test_obs_causal_mask_hides_later_observations():
  obs = jax.random.normal(jax.random.PRNGKey(1), (2, 3, 5))
  later = obs.at[:, 2].add(1.0)
  for causal in (True, False):
    model, params = _model(obs_causal_mask=causal)
    a, b = model.encode(params, obs), model.encode(params, later)
    same_early = np.allclose(a[:, :2], b[:, :2], atol=1e-6)
    assert same_early == causal
    assert not np.allclose(a[:, 2], b[:, 2])


def test_cross_attention_mask_rows_see_obs_up_to_their_index():
  mask = backbone.cross_attention_mask(pred_horizon=4, num_cond=3, obs_horizon=3)
  np.testing.assert_array_equal(mask, [[1, 0, 0], [1, 1, 0], [1, 1, 1], [1, 1, 1]])
  with_prefix = backbone.cross_attention_mask(pred_horizon=2, num_cond=3, obs_horizon=2)  # diffusion: time token
  np.testing.assert_array_equal(with_prefix, [[1, 1, 0], [1, 1, 1]])
  with pytest.raises(ValueError, match="cannot hold"):
    backbone.cross_attention_mask(4, 1, 2)
  # One decoder block: self-attention (actions only), then cross-attention, then a per-token MLP, so
  # action token 0's energy terms see obs token 0 alone when the mask is on.
  tokens = jax.random.normal(jax.random.PRNGKey(2), (1, 3, 16))
  moved = tokens.at[:, 1:].add(1.0)
  actions = jax.random.normal(jax.random.PRNGKey(3), (1, 4, 3))
  for masked in (True, False):
    model, params = _model(cross_attn_mask=masked)
    terms = lambda t: model.module.apply({"params": params}, t, actions, method=EBTransformer.energy_terms)
    a, b = terms(tokens), terms(moved)
    assert np.allclose(a[:, 0], b[:, 0], atol=1e-6) == masked
    assert not np.allclose(a[:, 2], b[:, 2])


def test_learned_obs_positions_start_at_zero_and_head_bias():
  model, params = _model(obs_pos_emb="learned", head_bias=True)
  np.testing.assert_array_equal(params["backbone"]["obs_pos_emb"], np.zeros((3, 16)))
  assert "bias" in params["head"]["Dense_1"]
  _, plain = _model()
  assert "obs_pos_emb" not in plain["backbone"] and "bias" not in plain["head"]["Dense_1"]
  with pytest.raises(ValueError, match="obs_pos_emb"):
    _model(obs_pos_emb="rope")


def test_raw_data_uses_the_identity_normaliser():
  rng = np.random.default_rng(0)
  demos = Demos("memory", (Episode("demo_0", rng.normal(size=(20, 4)).astype(np.float32) * 5,
                                   rng.uniform(-0.5, 0.5, (20, 2)).astype(np.float32)),),
                ("a",), (4,), {})
  raw = trainer.fit_normalizer(demos, normalize_obs=False, normalize_actions=False)
  x = demos.episodes[0].obs
  np.testing.assert_array_equal(raw.obs.normalize(x), x)
  np.testing.assert_array_equal(raw.actions.unnormalize(demos.episodes[0].actions), demos.episodes[0].actions)
  fitted = trainer.fit_normalizer(demos)
  assert np.abs(fitted.actions.normalize(demos.episodes[0].actions)).max() == pytest.approx(1.0)


def test_raw_actions_outside_unit_range_are_refused():
  c = lift.get_config()
  c.data.normalize_actions = False
  pixels = Demos("/data/pusht.zarr", (Episode("episode_0", np.zeros((20, 4), np.float32),
                                              np.full((20, 2), 300.0, np.float32)),), ("a",), (4,), {})
  with pytest.raises(ConfigError, match=r"/data/pusht.zarr: 'actions' span \[300, 300\]"):
    validation.check_dataset(c, pixels, skip_eval=True)
  c.data.normalize_actions = True
  validation.check_dataset(c, pixels, skip_eval=True)


def test_long_cosine_keeps_the_rate_near_its_peak():
  c = lift.get_config("authors").train
  schedule = learning_rate_schedule(c)
  assert float(schedule(c.num_steps)) == pytest.approx(1e-4, rel=1e-3)  # 2000 of 900k steps
  default = lift.get_config().train
  assert float(learning_rate_schedule(default)(default.num_steps)) == pytest.approx(0.0, abs=1e-9)


def test_authors_variants_select_every_authors_choice_and_validate():
  for name in ("authors", "paper_authors"):
    c = lift.get_config(name)
    assert (c.sampler.presample_norm, c.sampler.norm_final_step) == ("per_batch", True)
    assert (c.data.normalize_actions, c.data.normalize_obs) == (False, False)
    assert (c.sampler.train_steps, c.sampler.train_extra_steps, c.sampler.train_steps_draw) == (6, 4, "per_batch")
    assert (c.model.obs_pos_emb, c.model.obs_causal_mask, c.model.cross_attn_mask, c.model.head_bias) == (
        "learned", True, True, True)
    assert c.eval.horizon == 700 and c.eval.every_steps > 0
    assert (c.train.learning_rate, c.train.warmup_steps, c.train.decay_steps) == (1e-4, 500, 900_000)
    assert validation.config_problems(c, needs_data=False) == []
  assert lift.get_config("paper_authors").model.width == 256 and lift.get_config("authors").model.width == 64
  p = pusht.get_config("authors")
  assert p.sampler.presample_norm == "per_batch" and p.model.cross_attn_mask
  assert p.data.normalize_actions and p.eval.horizon == 300  # pixel actions; Push-T's own horizon
  assert p.eval.best_metric == "mean_max_coverage" and validation.config_problems(p, needs_data=False) == []
  with pytest.raises(ValueError, match="unknown variant"):
    lift.get_config("author")


def test_new_fields_are_validated():
  c = lift.get_config()
  c.sampler.presample_norm = "per_token"
  c.sampler.train_steps_draw = "per_epoch"
  c.model.obs_pos_emb = "rope"
  c.train.decay_steps = -1
  c.data.demo_style = "robot"
  c.eval.best_metric = "reward"
  problems = "\n".join(validation.config_problems(c, needs_data=False))
  for field in ("sampler.presample_norm='per_token'", "sampler.train_steps_draw='per_epoch'",
                "model.obs_pos_emb='rope'", "train.decay_steps=-1", "data.demo_style='robot'",
                "eval.best_metric='reward'"):
    assert field in problems, problems
  c = lift.get_config()
  c.data.demo_style, c.data.collect_backend = "teleop", "mjx"
  assert any("MJX collector runs the 'scripted' expert only" in p
             for p in validation.config_problems(c, needs_data=False))
