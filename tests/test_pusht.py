"""Push-T: Zarr replay-buffer reader (on buffers written here), observations vs the live gym-pusht env,
the batched evaluation loop, and the main job on Push-T."""

import json
import os
import re

import gymnasium
import jax
import numcodecs
import numpy as np
import pytest
import zarr

from configs import pusht as pusht_config
from ebt_jax import main, validation
from ebt_jax.data.datasets import read_dataset
from ebt_jax.data.demos import DatasetError
from ebt_jax.errors import ConfigError
from ebt_jax.data.normalization import MinMax, Normalizer
from ebt_jax.data.windows import WindowDataset
from ebt_jax.data.zarr_replay import read_replay_buffer
from ebt_jax.envs import pusht
from ebt_jax.evaluation import episodes as episodes_lib
from ebt_jax.evaluation import pusht_eval
from ebt_jax.evaluation.policy import Decision
from ebt_jax.training.trainer import fit_normalizer

KEYS = ("environment_state", "agent_pos")
BLOSC = numcodecs.Blosc(cname="zstd", clevel=5, shuffle=2)  # the compressor of pusht_cchi_v7_replay.zarr


def write_buffer(path, ends=(5, 12), arrays=None, **overrides):
  """A Diffusion-Policy replay buffer: data/{state [N,5], action [N,2], keypoint [N,9,2]}, meta/episode_ends."""
  rng = np.random.default_rng(0)
  n = ends[-1] if len(ends) else 0
  data = {"state": np.concatenate([rng.uniform(50, 450, (n, 4)), rng.uniform(0, 2 * np.pi, (n, 1))], 1),
          "action": rng.uniform(0, 512, (n, 2)), "keypoint": rng.uniform(0, 512, (n, 9, 2))}
  data.update(arrays or {})
  data = {k: v for k, v in data.items() if v is not None}
  meta = {"episode_ends": np.asarray(ends, np.int64)}
  meta.update(overrides)
  root = zarr.open_group(str(path), mode="w", zarr_format=2)
  for group, items in (("data", data), ("meta", meta)):
    root.require_group(group)
    for key, value in items.items():
      if value is not None:
        root.create_array(f"{group}/{key}", data=np.asarray(value, np.float32 if group == "data" else None),
                          compressors=BLOSC)
  return str(path)


def test_reads_episodes_through_the_shared_windowing_path(tmp_path):
  path = write_buffer(tmp_path / "ok.zarr", ends=(5, 12, 20))
  demos = read_dataset(path, ("keypoint", "state"))
  assert [e.name for e in demos.episodes] == ["episode_0", "episode_1", "episode_2"]
  assert [len(e.actions) for e in demos.episodes] == [5, 7, 8]
  assert demos.obs_key_dims == (18, 5) and demos.obs_dim == 23 and demos.action_dim == 2 and demos.env_args == {}
  root = zarr.open_group(path, mode="r")
  np.testing.assert_array_equal(demos.episodes[1].obs[:, :18], root["data/keypoint"][5:12].reshape(7, 18))
  np.testing.assert_array_equal(demos.episodes[2].actions, root["data/action"][12:20])
  # Same normaliser / window / batch code as robomimic files: windows never cross an episode boundary.
  data = WindowDataset(demos, fit_normalizer(demos), obs_horizon=2, action_horizon=8, pred_horizon=16, seed=0)
  starts = np.array([0, 5, 12])
  episode_of = lambda rows: np.searchsorted(starts, rows, side="right") - 1
  assert (episode_of(data.index.action_idx) == episode_of(data.index.action_idx[:, :1])).all()
  batch = data.batch(0, 4)
  assert batch["obs"].shape == (4, 2, 23) and batch["actions"].shape == (4, 16, 2)
  assert np.abs(batch["actions"]).max() <= 1.0 + 1e-6


def test_derived_observations_are_the_env_formula_of_state(tmp_path):
  path = write_buffer(tmp_path / "ok.zarr")
  demos = read_dataset(path, KEYS, derived_obs="pusht")
  state = zarr.open_group(path, mode="r")["data/state"][...]
  assert demos.obs_key_dims == (16, 2)
  np.testing.assert_allclose(demos.episodes[0].obs[:, 16:], state[:5, :2])
  np.testing.assert_allclose(demos.episodes[0].obs[:, :16], pusht.block_keypoints(state[:5, 2:5]), rtol=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    (dict(arrays={"action": None}), "no action array 'data/action'"),
    (dict(episode_ends=None), "no array 'meta/episode_ends'"),
    (dict(ends=(5, 12), arrays={"state": np.zeros((11, 5))}), "'data/state' has shape (11, 5), expected [12, ...]"),
    (dict(episode_ends=[5, 11]), "ends at step 11 but 'data/action' has 12 steps"),
    (dict(ends=(7, 5, 12)), "episode_ends[1] = 5 <= episode_ends[0] = 7"),
    (dict(ends=(0, 12)), "episode_ends[0] = 0 <= 0"),
    (dict(arrays={"state": np.where(np.arange(12)[:, None] == 9, np.nan, np.ones((12, 5)))}),
     "'data/state' contains NaN or inf (first at step 9)"),
    (dict(arrays={"action": np.full((12, 2), np.inf)}), "'data/action' contains NaN or inf (first at step 0)"),
])
def test_errors_name_the_buffer_key_and_expectation(tmp_path, kwargs, message):
  kwargs = dict(kwargs)
  ends = kwargs.pop("ends", (5, 12))
  overrides = {"episode_ends": kwargs.pop("episode_ends")} if "episode_ends" in kwargs else {}
  path = write_buffer(tmp_path / "bad.zarr", ends=ends, **kwargs, **overrides)
  with pytest.raises(DatasetError) as e:
    read_replay_buffer(path, ("state",))
  assert path in str(e.value) and message in str(e.value)


def test_missing_observation_key_and_not_a_buffer(tmp_path):
  path = write_buffer(tmp_path / "ok.zarr", arrays={"state": None})
  with pytest.raises(DatasetError, match=r"no array 'data/state' \(available: \['action', 'keypoint'\]\)"):
    read_dataset(path, KEYS, derived_obs="pusht")
  with pytest.raises(DatasetError, match="no array 'data/velocity'"):
    read_dataset(path, ("velocity",))
  with pytest.raises(DatasetError, match="not a directory"):
    read_replay_buffer(str(tmp_path / "absent.zarr"), ("state",))
  with pytest.raises(DatasetError, match="no filter masks"):
    read_dataset(path, ("keypoint",), filter_key="train")
  empty = tmp_path / "empty.zarr"
  zarr.open_group(str(empty), mode="w", zarr_format=2)
  with pytest.raises(DatasetError, match=r"no 'data' group"):
    read_replay_buffer(str(empty), ("state",))


@pytest.fixture(scope="module")
def pusht_data(shared_dir):
  path = os.path.join(shared_dir, "data", "pusht", "pusht_cchi_v7_replay.zarr")
  if not os.path.isdir(path):
    pytest.skip(f"{path} not present")
  root = zarr.open_group(path, mode="r")
  return path, root["data/state"][...], root["data/action"][...], root["meta/episode_ends"][...]


def test_live_env_observation_equals_the_dataset_observation(pusht_data):
  path, state, _, _ = pusht_data
  demos = read_dataset(path, KEYS, derived_obs="pusht")
  obs = np.concatenate([e.obs for e in demos.episodes])
  env = pusht.make_env()
  env.reset(seed=0)
  rows = np.random.default_rng(0).choice(len(state), 50, replace=False)
  for row in rows:
    pusht.set_state(env, state[row])
    live = env.unwrapped.get_obs()  # what the vector env hands the policy at evaluation
    np.testing.assert_allclose(np.concatenate([live["environment_state"], live["agent_pos"]]), obs[row],
                               atol=2e-4, rtol=0)  # float32 dataset state, 512 px range
  # And gym-pusht's raw state observation is the buffer's state convention (angle mod 2 pi).
  raw = gymnasium.make(pusht.ENV_ID, obs_type="state")
  raw.reset(seed=0)
  for row in rows[:10]:
    pusht.set_state(raw, state[row])
    np.testing.assert_allclose(raw.unwrapped.get_obs(), state[row], atol=2e-4)


def test_gym_pusht_frames_equal_the_dataset_frames_for_the_same_states(pusht_data):
  """The image policies train on data/img and are evaluated on gym-pusht's pixels: for 50 dataset states
  the frames agree up to anti-aliased edges (measured: mean |diff| 0.08 of 255, 0.09 % of values off by
  more than 32). Without refreshing pymunk's shape cache in set_state the agent is drawn at its old
  position (mean |diff| 4.4)."""
  path, state, _, _ = pusht_data
  root = zarr.open_group(path, mode="r")
  env = pusht.make_env(obs_type=pusht.IMAGE_OBS_TYPE)
  env.reset(seed=0)
  diffs = []
  for row in np.random.default_rng(0).choice(len(state), 50, replace=False):
    pusht.set_state(env, state[row])
    frame = pusht.observation(env.unwrapped.get_obs())[pusht.IMAGE_KEY]
    assert frame.shape == (96, 96, 3) and frame.dtype == np.uint8
    diffs.append(np.abs(frame.astype(np.float32) - root["data/img"][int(row)]))
  diffs = np.stack(diffs)
  assert diffs.mean() < 0.3 and (diffs > 32).mean() < 0.005, (diffs.mean(), (diffs > 32).mean())


def test_replaying_a_demo_in_gym_pusht_reproduces_its_states(pusht_data):
  """The env is the one the data was recorded in: a whole human demo replays to float32 precision."""
  _, state, action, ends = pusht_data
  env = pusht.make_env()
  env.reset(seed=0)
  pusht.set_state(env, state[0])
  errors, coverage = [], []
  for t in range(ends[0]):
    u = env.unwrapped
    now = np.array([*u.agent.position, *u.block.position])
    errors.append(np.abs(now - state[t, :4]).max())
    _, _, _, _, info = env.step(action[t])
    coverage.append(info["coverage"])
  assert max(errors) < 1e-3, f"replay drifts by {max(errors):.4f} px"
  assert coverage[-1] > 0.8  # the demo pushes the T onto the goal


class _Scripted:
  """A stand-in policy: the agent stays where it is (target = current position); counts its calls."""

  def __init__(self, to=2, ta=8):
    self.normalizer = Normalizer(MinMax(np.zeros(18, np.float32), np.ones(18, np.float32)),
                                 MinMax(np.zeros(2, np.float32), np.ones(2, np.float32)), KEYS, (16, 2))
    self.action_horizon = ta
    self.model = type("M", (), {"module": type("Mod", (), {"obs_horizon": to})})
    self.inference = "mcmc-2"
    self.cameras = ()
    self.batch_sizes = []

  def __call__(self, history, rng, inference=None, image_history=None):
    self.batch_sizes.append(history.shape[0])
    agent = history[:, -1, 16:18]
    n = len(history)
    return Decision(np.repeat(agent[:, None], self.action_horizon, 1), np.arange(n, dtype=np.float32),
                    np.full(n, 2, np.int32))


def test_batched_evaluation_masks_finished_episodes():
  """Env 0 starts with the T on its goal (coverage 1: success at step 1); the others run to the cap."""
  policy = _Scripted()
  envs = pusht.make_vector_env(3, max_env_steps=20)
  goal_state = np.array([100.0, 100.0, 256.0, 256.0, np.pi / 4])
  first = envs.envs[0]
  original_reset = first.reset

  def reset_onto_goal(**kwargs):
    original_reset(**kwargs)
    pusht.set_state(first, goal_state)
    return first.unwrapped.get_obs(), {}

  first.reset = reset_onto_goal
  results = pusht_eval.run_episodes(policy, [100000, 100001, 100002], 20, jax.random.PRNGKey(0), envs=envs)
  assert policy.batch_sizes == [3, 3, 3]  # one call per decision for all envs: steps 0, 8, 16
  assert results[0].success and results[0].length == 1 and results[0].max_coverage > 0.99
  assert len(results[0].coverage) == 1 and results[0].energy == [0.0]  # nothing recorded after it ended
  for r in results[1:]:
    assert r.length == 20 and len(r.coverage) == 20 and r.energy == [r.seed - 100000.0] * 3
    assert r.max_coverage == max(r.coverage) and r.success == (r.max_coverage >= 0.95)
  # Reset seeds are the protocol's: the same seed gives the same initial state.
  again = pusht_eval.run_episodes(_Scripted(), [100001], 20, jax.random.PRNGKey(1))
  assert again[0].coverage == results[1].coverage


def test_main_job_on_pusht(tmp_path):
  """Train 4 steps on a buffer with Push-T shaped arrays, evaluate in gym-pusht; eval.json, curve and plots."""
  path = write_buffer(tmp_path / "tiny.zarr", ends=(30, 64))
  config = pusht_config.get_config()
  with config.unlocked():
    config.data.path = path
    config.model.width, config.model.num_layers, config.model.num_obs_layers = 16, 1, 1
    config.train.update(num_steps=4, batch_size=8, log_every=2, checkpoint_every=2, num_cpu_devices=1)
    config.eval.update(num_episodes=3, horizon=12, every_steps=2, max_steps_sweep=(1,))
  workdir = str(tmp_path / "run")
  result = main.run(config, workdir)
  with open(os.path.join(workdir, "eval.json")) as f:
    saved = json.load(f)
  assert saved["backend"] == "gym_pusht" and saved["num_episodes"] == 3
  assert 0 <= saved["mean_max_coverage"] <= 1 and set(saved["by_inference"]) == {"mcmc-1", "mcmc-2"}
  episode = saved["episodes"][0]
  assert len(episode["energy"]) == 2 and len(episode["coverage"]) == episode["length"] == 12  # decisions at 0, 8
  assert saved["mean_max_coverage"] == pytest.approx(np.mean([max(e["coverage"]) for e in saved["episodes"]]))
  with open(os.path.join(workdir, "eval_curve.jsonl")) as f:
    curve = [json.loads(line) for line in f]
  assert [r["step"] for r in curve] == [2, 4] and all("mean_max_coverage" in r for r in curve)
  assert curve[-1]["mean_max_coverage"] == result["mean_max_coverage"]
  for png in ("energy_vs_step.png", "coverage_vs_steps.png"):
    with open(os.path.join(workdir, png), "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  # TensorBoard (ebt_jax/training/writers.py): the in-training evaluations and the final one of every label.
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  events = event_accumulator.EventAccumulator(os.path.join(workdir, "tensorboard"),
                                              size_guidance={event_accumulator.HISTOGRAMS: 0})  # all, not 1
  events.Reload()
  coverage = {label: [(e.step, e.value) for e in events.Scalars(f"eval/{label}/mean_max_coverage")]
              for label in ("mcmc-1", "mcmc-2")}
  assert coverage["mcmc-1"] == [(4, pytest.approx(saved["by_inference"]["mcmc-1"]["mean_max_coverage"]))]
  assert coverage["mcmc-2"] == [(2, pytest.approx(curve[0]["mean_max_coverage"])),
                                (4, pytest.approx(saved["mean_max_coverage"]))]
  assert [h.step for h in events.Histograms("eval/mcmc-1/energy")] == [4]
  assert [h.histogram_value.num for h in events.Histograms("eval/mcmc-2/energy")] == [6, 6]  # 3 episodes x 2


def test_main_job_on_pusht_images(tmp_path):
  """configs/pusht.py:image (shrunk): frames from data/img in training, gym-pusht pixels at evaluation."""
  n = 40
  frames = np.random.default_rng(0).integers(0, 256, (n, 96, 96, 3)).astype(np.float32)
  path = write_buffer(tmp_path / "img.zarr", ends=(18, n), arrays={"img": frames})
  config = pusht_config.get_config("image")
  with config.unlocked():
    config.policy = "diffusion"  # a third of EBT's compile time; EBT's image model: tests/test_images.py
    config.diffusion.update(inference="ddim-2", eval_sweep=())
    config.data.path = path
    config.model.width, config.model.num_layers, config.model.num_obs_layers = 16, 1, 1
    config.model.vision.widths, config.model.vision.crop = (4, 4, 4, 8), (36, 36)
    config.train.update(num_steps=2, batch_size=8, log_every=1, checkpoint_every=2, num_cpu_devices=1)
    config.eval.update(num_episodes=2, horizon=9, every_steps=0, max_steps_sweep=(1,))
  result = main.run(config, str(tmp_path / "run"))
  assert result["num_episodes"] == 2 and result["episodes"][0]["length"] == 9
  assert len(result["episodes"][0]["sampler_steps"]) == 2 and 0 <= result["mean_max_coverage"] <= 1


def test_pusht_config_requires_a_dataset_path():
  problems = validation.config_problems(pusht_config.get_config())
  assert len(problems) == 1 and re.search("data.path is empty.*pusht_cchi_v7_replay.zarr", problems[0]), problems
  with pytest.raises(ConfigError, match="data.path is empty"):
    main.dataset_path(pusht_config.get_config())


def test_energy_coverage_spearman_is_a_rank_correlation():
  episodes = [{"energy": [e, e + 0.1], "max_coverage": c} for e, c in [(-2.5, 0.9), (-2.4, 0.5), (-2.0, 0.1), (-2.2, 0.3)]]
  assert episodes_lib.energy_coverage_spearman(episodes) == pytest.approx(-1.0)
  episodes[0]["max_coverage"] = 0.0  # the lowest-energy episode now covers least
  assert episodes_lib.energy_coverage_spearman(episodes) == pytest.approx(0.2)
  assert episodes_lib.energy_coverage_spearman(episodes[:2]) is None
