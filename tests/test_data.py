"""robomimic HDF5 reader (on files written here with h5py), windows and normalisation."""

import json

import h5py
import numpy as np
import pytest

from ebt_jax.data.normalization import MinMax
from ebt_jax.data.robomimic_hdf5 import DatasetError, read_demos
from ebt_jax.data.windows import WindowDataset, window_index
from ebt_jax.training.trainer import fit_normalizer

KEYS = ("object", "robot0_eef_pos")
ENV_ARGS = {"env_name": "Lift", "type": 1, "env_kwargs": {"robots": ["Panda"]}}


def write_file(path, lengths=(5, 3), obs_dims=(10, 3), action_dim=7, mask=None, mutate=None):
  """A robomimic-layout file: data/demo_k/{obs/<key>, actions, rewards, dones, states}, mask/<key>."""
  rng = np.random.default_rng(0)
  with h5py.File(path, "w") as f:
    data = f.create_group("data")
    data.attrs["env_args"] = json.dumps(ENV_ARGS)
    data.attrs["total"] = sum(lengths)
    for k, n in enumerate(lengths):
      g = data.create_group(f"demo_{k}")
      g.attrs["num_samples"] = n
      for key, d in zip(KEYS, obs_dims):
        g.create_dataset(f"obs/{key}", data=rng.normal(size=(n, d)) + 100 * k)
      g.create_dataset("actions", data=rng.uniform(-1, 1, size=(n, action_dim)))
      g.create_dataset("rewards", data=np.zeros(n))
      g.create_dataset("dones", data=np.zeros(n, np.int64))
      g.create_dataset("states", data=rng.normal(size=(n, 32)))
    for key, names in (mask or {}).items():
      f.create_dataset(f"mask/{key}", data=np.array([s.encode() for s in names]))
    if mutate is not None:
      mutate(f)
  return str(path)


def test_reads_demos_in_key_order(tmp_path):
  path = write_file(tmp_path / "ok.hdf5", lengths=(5, 3, 4), mask={"train": ["demo_2", "demo_0"]})
  demos = read_demos(path, KEYS)
  assert [e.name for e in demos.episodes] == ["demo_0", "demo_1", "demo_2"]
  assert demos.obs_dim == 13 and demos.action_dim == 7 and demos.num_samples == 12
  assert demos.env_args == ENV_ARGS
  with h5py.File(path) as f:
    want = np.concatenate([f["data/demo_1/obs/object"][()], f["data/demo_1/obs/robot0_eef_pos"][()]], 1)
  np.testing.assert_allclose(demos.episodes[1].obs, want, rtol=1e-6)
  train = read_demos(path, KEYS, filter_key="train")
  assert [e.name for e in train.episodes] == ["demo_0", "demo_2"]


def _drop(key):
  return lambda f: f.__delitem__(key)


def _replace(key, value):
  def mutate(f):
    del f[key]
    f.create_dataset(key, data=value)
  return mutate


@pytest.mark.parametrize("mutate, filter_key, words", [
    (_drop("data/demo_1/obs/robot0_eef_pos"), None, ["demo_1", "robot0_eef_pos", "available"]),
    (_drop("data/demo_0/actions"), None, ["demo_0", "actions"]),
    (_drop("data/demo_0/obs"), None, ["demo_0", "'obs'"]),
    (_replace("data/demo_1/obs/object", np.zeros((2, 10))), None, ["demo_1", "obs/object", "2 steps", "3"]),
    (_replace("data/demo_1/actions", np.zeros((3, 6))), None, ["demo_1", "actions", "[T, 7]"]),
    (_replace("data/demo_0/actions", np.zeros(5)), None, ["demo_0", "actions", "[T, A]"]),
    (_replace("data/demo_1/obs/object", np.zeros((3, 9))), None, ["demo_1", "obs/object", "width 9", "10"]),
    (_replace("data/demo_1/obs/object", np.full((3, 10), np.nan)), None, ["demo_1", "obs/object", "NaN"]),
    (_replace("data/demo_0/actions", np.full((5, 7), np.inf)), None, ["demo_0", "actions", "inf"]),
    (_replace("data/demo_1/actions", np.zeros((0, 7))), None, ["demo_1", "empty"]),
    (None, "valid", ["mask/valid", "available"]),
    (_drop("data"), None, ["'data'"]),
])
def test_broken_files_raise_errors_naming_file_demo_and_key(tmp_path, mutate, filter_key, words):
  path = write_file(tmp_path / "bad.hdf5", mutate=mutate)
  with pytest.raises(DatasetError) as err:
    read_demos(path, KEYS, filter_key=filter_key)
  message = str(err.value)
  assert message.startswith(path)
  for word in words:
    assert word in message, (word, message)


def test_missing_and_non_hdf5_files(tmp_path):
  with pytest.raises(DatasetError, match="file not found"):
    read_demos(tmp_path / "nope.hdf5", KEYS)
  junk = tmp_path / "junk.hdf5"
  junk.write_text("not hdf5")
  with pytest.raises(DatasetError, match="not a readable HDF5 file"):
    read_demos(junk, KEYS)


def test_mask_naming_missing_demo(tmp_path):
  path = write_file(tmp_path / "m.hdf5", mask={"train": ["demo_0", "demo_9"]})
  with pytest.raises(DatasetError, match="demo_9"):
    read_demos(path, KEYS, filter_key="train")


def test_windows_edge_pad_like_diffusion_policy():
  # One episode of T=5, To=2, Ta=2, Tp=4: starts -1 .. T-Tp+Ta-1 = 2.
  idx = window_index([5], obs_horizon=2, action_horizon=2, pred_horizon=4)
  np.testing.assert_array_equal(idx.obs_idx, [[0, 0], [0, 1], [1, 2], [2, 3]])
  np.testing.assert_array_equal(idx.action_idx, [[0, 0, 1, 2], [0, 1, 2, 3], [1, 2, 3, 4], [2, 3, 4, 4]])
  # Second episode's rows are offset and never mix with the first.
  two = window_index([5, 3], 2, 2, 4)
  second = two.action_idx[len(idx):]
  assert second.min() == 5 and second.max() == 7
  # Every demo action is in the executed part [To-1, To-1+Ta) of some window: no step is lost.
  np.testing.assert_array_equal(np.unique(two.action_idx[:, 1:3]), np.arange(8))
  with pytest.raises(ValueError, match="Ta"):
    window_index([5], obs_horizon=2, action_horizon=4, pred_horizon=4)


def test_normalisation_round_trip_and_range(tmp_path):
  demos = read_demos(write_file(tmp_path / "n.hdf5", lengths=(6, 4)), KEYS)
  norm = fit_normalizer(demos)
  data = WindowDataset(demos, norm, obs_horizon=2, action_horizon=8, pred_horizon=16, seed=0)
  assert data.obs.min() >= -1 - 1e-6 and data.obs.max() <= 1 + 1e-6
  np.testing.assert_allclose(data.actions.min(0), -1, atol=1e-6)
  np.testing.assert_allclose(data.actions.max(0), 1, atol=1e-6)
  raw = np.concatenate([e.actions for e in demos.episodes])
  np.testing.assert_allclose(norm.actions.unnormalize(norm.actions.normalize(raw)), raw, atol=1e-5)
  batch = data.batch(step=3, batch_size=5)
  assert batch["obs"].shape == (5, 2, 13) and batch["actions"].shape == (5, 16, 7)
  np.testing.assert_array_equal(batch["actions"], data.batch(step=3, batch_size=5)["actions"])  # reproducible
  # A constant dimension is centred, not blown up.
  const = MinMax.fit(np.array([[2.0, 0.0], [2.0, 1.0]]))
  np.testing.assert_allclose(const.normalize(np.array([2.0, 0.5])), [0.0, 0.0])
  restored = type(norm).from_dict(json.loads(json.dumps(norm.to_dict())))
  np.testing.assert_array_equal(restored.obs.low, norm.obs.low)
