"""Image observations: the camera encoder on known inputs, augmentation per key, the image readers and
store on files written here (and each broken-file error), windows carrying frames, image policies."""

import json

import flax.linen as nn
import h5py
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import zarr

from configs import lift, pusht as pusht_config
from ebt_jax import policies, validation
from ebt_jax.data import datasets, images, loader
from ebt_jax.data.demos import DatasetError
from ebt_jax.data.windows import WindowDataset
from ebt_jax.models import image_augment, vision
from ebt_jax.training.trainer import fit_normalizer

KEYS = ("object", "robot0_eef_pos")
CAMS = ("agentview_image", "robot0_eye_in_hand_image")
ENV_ARGS = {"env_name": "Lift", "type": 1, "env_kwargs": {"robots": ["Panda"]}}
RBG = jax.random.key(0, impl="rbg")  # threefry init of a ResNet compiles for a minute on CPU (backbone.init_key)
BIG, CROP = (44, 40), (36, 36)  # a 36x36 crop leaves ResNet-18 a 2x2 map (smaller crops: 1x1, no keypoints)


def frames_for(demo: int, length: int, cam: int, hw=(12, 10)) -> np.ndarray:
  """[T, H, W, 3] uint8 whose pixel (0, 0, 0) encodes (demo, step, camera) and the rest is noise."""
  rng = np.random.default_rng(100 * demo + cam)
  out = rng.integers(0, 256, size=(length, *hw, 3), dtype=np.uint8)
  out[:, 0, 0, 0] = 10 * demo + np.arange(length)
  out[:, 0, 0, 1] = cam
  return out


def write_image_file(path, lengths=(5, 3), hw=(12, 10), mutate=None):
  rng = np.random.default_rng(0)
  with h5py.File(path, "w") as f:
    data = f.create_group("data")
    data.attrs["env_args"] = json.dumps(ENV_ARGS)
    for k, n in enumerate(lengths):
      g = data.create_group(f"demo_{k}")
      g.create_dataset("obs/object", data=rng.normal(size=(n, 10)))
      g.create_dataset("obs/robot0_eef_pos", data=np.stack([np.arange(n) + 10.0 * k] * 3, 1))
      for c, cam in enumerate(CAMS):
        g.create_dataset(f"obs/{cam}", data=frames_for(k, n, c, hw), chunks=(1, *hw, 3), compression="gzip")
      g.create_dataset("actions", data=rng.uniform(-1, 1, size=(n, 7)))
    if mutate is not None:
      mutate(f)
  return str(path)


# --- encoder -----------------------------------------------------------------------------------------

def test_spatial_softmax_finds_a_bright_pixel():
  """One channel, one keypoint, a large 1x1 weight: the softmax puts all mass on the bright pixel, so the
  keypoint is that pixel's (x, y) in [-1, 1] (x along the width, -1 = first column)."""
  h, w = 5, 7
  feats = np.zeros((2, h, w, 1), np.float32)
  feats[0, 1, 5, 0] = 1.0  # row 1, column 5
  feats[1, 4, 0, 0] = 1.0  # last row, first column
  module = vision.SpatialSoftmax(num_keypoints=1)
  params = {"params": {"Conv_0": {"kernel": jnp.full((1, 1, 1, 1), 100.0), "bias": jnp.zeros(1)}}}
  out = np.asarray(module.apply(params, feats))
  np.testing.assert_allclose(out[0], [np.linspace(-1, 1, w)[5], np.linspace(-1, 1, h)[1]], atol=1e-4)
  np.testing.assert_allclose(out[1], [-1.0, 1.0], atol=1e-4)
  flat = np.asarray(module.apply(params, np.zeros((1, h, w, 1), np.float32)))
  np.testing.assert_allclose(flat[0], [0.0, 0.0], atol=1e-6)  # uniform attention: the centre


def test_resnet18_shapes_groups_and_groupnorm():
  assert [vision.num_groups(c) for c in (16, 64, 512)] == [1, 4, 32]
  x = jnp.asarray(np.random.default_rng(0).uniform(size=(3, 76, 76, 3)), jnp.float32)
  trunk = vision.ResNet18Conv(widths=(8, 16, 16, 32))
  params = trunk.init(RBG, x)
  out = trunk.apply(params, x)
  assert out.shape == (3, 3, 3, 32)  # 76 -> 38 (stem) -> 19 (pool) -> 19, 10, 5, 3
  norms = [k for k in jax.tree_util.tree_flatten_with_path(params)[0] if "GroupNorm" in str(k[0])]
  assert norms and not any("BatchNorm" in str(k) for k in jax.tree_util.tree_flatten_with_path(params)[0])
  # GroupNorm normalises per sample: scaling one sample's input leaves the other's features unchanged.
  x2 = x.at[0].multiply(5.0)
  np.testing.assert_allclose(trunk.apply(params, x2)[1:], out[1:], atol=1e-5)
  full = jax.eval_shape(vision.ResNet18Conv().init, RBG, x[:1])
  assert 11.1e6 < sum(v.size for v in jax.tree.leaves(full)) < 11.3e6  # torchvision's conv trunk: 11.18M


def test_image_encoder_per_camera_and_missing_camera():
  enc = vision.ImageEncoder(cameras=CAMS, crop=CROP, widths=(4, 4, 4, 8), num_keypoints=3, features=5)
  imgs = {c: jnp.asarray(frames_for(0, 4, i, BIG).reshape(2, 2, *BIG, 3)) for i, c in enumerate(CAMS)}
  params = enc.init(RBG, imgs)
  assert set(params["params"]) == {f"camera_{c}" for c in CAMS}  # one trunk per camera
  out = enc.apply(params, imgs)
  assert out.shape == (2, 2, 10)
  # Evaluation (no augment) is deterministic; training draws crops from the "augment" stream.
  np.testing.assert_array_equal(out, enc.apply(params, imgs))
  a = enc.apply(params, imgs, augment=True, rngs={"augment": jax.random.key(1)})
  b = enc.apply(params, imgs, augment=True, rngs={"augment": jax.random.key(2)})
  assert not np.allclose(a, b)
  with pytest.raises(KeyError, match="robot0_eye_in_hand_image"):
    enc.apply(params, {CAMS[0]: imgs[CAMS[0]]})


# --- augmentation ------------------------------------------------------------------------------------

def test_crops_are_windows_of_the_image_and_deterministic_per_key():
  img = jnp.asarray(np.random.default_rng(0).uniform(size=(6, 12, 10, 3)), jnp.float32)
  a = image_augment.random_crop(jax.random.key(0), img, (8, 7))
  np.testing.assert_array_equal(a, image_augment.random_crop(jax.random.key(0), img, (8, 7)))
  assert not np.array_equal(a, image_augment.random_crop(jax.random.key(1), img, (8, 7)))
  offsets = set()
  for n in range(6):  # each crop is some window of its own image
    hits = [(i, j) for i in range(5) for j in range(4) if np.array_equal(a[n], img[n, i:i + 8, j:j + 7])]
    assert len(hits) == 1
    offsets.add(hits[0])
  assert len(offsets) > 1  # independent per image
  c = image_augment.center_crop(img, (8, 7))
  np.testing.assert_array_equal(c, img[:, 2:10, 1:8])
  with pytest.raises(ValueError, match="larger"):
    image_augment.center_crop(img, (13, 7))


def test_color_jitter_bounds_identity_and_key():
  img = jnp.asarray(np.random.default_rng(0).uniform(size=(4, 6, 6, 3)), jnp.float32)
  np.testing.assert_allclose(image_augment.color_jitter(jax.random.key(0), img, 0, 0, 0, 0), img)
  j = image_augment.color_jitter(jax.random.key(0), img, 0.3, 0.3, 0.3, 0.3)
  assert j.shape == img.shape and float(j.min()) >= 0 and float(j.max()) <= 1
  assert not np.allclose(j, img)
  np.testing.assert_array_equal(j, image_augment.color_jitter(jax.random.key(0), img, 0.3, 0.3, 0.3, 0.3))
  b = image_augment.color_jitter(jax.random.key(3), img, 0.5, 0, 0, 0)  # brightness: one factor per image
  ratio = np.asarray(b / jnp.maximum(img, 1e-6))[img > 0.05].reshape(-1)
  assert ratio.min() > 0.49 and ratio.max() < 1.51
  with pytest.raises(ValueError, match="hue"):
    image_augment.color_jitter(jax.random.key(0), img, 0, 0, 0, 0.7)


# --- readers and store -------------------------------------------------------------------------------

def test_reader_locates_frames_and_store_gathers_them_in_ram_and_from_file(tmp_path):
  path = write_image_file(tmp_path / "img.hdf5", lengths=(5, 3))
  demos = datasets.read_dataset(path, KEYS, image_keys=CAMS)
  assert demos.image_keys == CAMS and demos.image_shapes == {c: (12, 10) for c in CAMS}
  rows = np.array([[0, 4], [5, 7], [7, 7]])  # demo 0 steps 0, 4; demo 1 steps 0, 2 (twice)
  ram = images.ImageStore({c: [e.images[c] for e in demos.episodes] for c in CAMS}, in_ram=True)
  disk = images.ImageStore({c: [e.images[c] for e in demos.episodes] for c in CAMS}, in_ram=False)
  for store in (ram, disk):
    got = store.gather(rows)
    assert got[CAMS[0]].shape == (3, 2, 12, 10, 3) and got[CAMS[0]].dtype == np.uint8
    np.testing.assert_array_equal(got[CAMS[0]][..., 0, 0, 0], [[0, 4], [10, 12], [12, 12]])
    np.testing.assert_array_equal(got[CAMS[1]][..., 0, 0, 1], np.ones((3, 2)))
    np.testing.assert_array_equal(got[CAMS[1]][1, 1], frames_for(1, 3, 1)[2])
  assert ram.nbytes() == 2 * 8 * 12 * 10 * 3
  assert images.store_for(demos, "auto", ram_limit_gb=0).in_ram is False
  assert images.store_for(demos, "file").in_ram is False and images.store_for(demos, "ram").in_ram is True
  assert images.store_for(demos, "auto").in_ram is True


@pytest.mark.parametrize("mutate, match", [
    (lambda f: f.__delitem__("data/demo_1/obs/agentview_image"), "demo_1.*no image key 'obs/agentview_image'"),
    (lambda f: (f.__delitem__("data/demo_0/obs/agentview_image"),
                f.create_dataset("data/demo_0/obs/agentview_image", data=np.zeros((5, 12, 10, 3), np.float32))),
     "dtype float32, expected uint8"),
    (lambda f: (f.__delitem__("data/demo_0/obs/agentview_image"),
                f.create_dataset("data/demo_0/obs/agentview_image", data=np.zeros((5, 12, 10), np.uint8))),
     r"shape \(5, 12, 10\), expected \[T, H, W, 3\]"),
    (lambda f: (f.__delitem__("data/demo_0/obs/agentview_image"),
                f.create_dataset("data/demo_0/obs/agentview_image", data=np.zeros((4, 12, 10, 3), np.uint8))),
     "4 frames but the demo has 5 steps"),
    (lambda f: (f.__delitem__("data/demo_1/obs/agentview_image"),
                f.create_dataset("data/demo_1/obs/agentview_image", data=np.zeros((3, 8, 10, 3), np.uint8))),
     "frames are 8x10, expected 12x10"),
])
def test_reader_errors_name_file_demo_and_key(tmp_path, mutate, match):
  path = write_image_file(tmp_path / "bad.hdf5", mutate=mutate)
  with pytest.raises(DatasetError, match=match) as e:
    datasets.read_dataset(path, KEYS, image_keys=CAMS)
  assert str(tmp_path) in str(e.value)


def write_zarr(path, lengths=(4, 3), img=None):
  n = sum(lengths)
  root = zarr.open_group(str(path), mode="w", zarr_format=2)
  root.create_array("data/action", data=np.random.default_rng(0).uniform(0, 512, (n, 2)))
  root.create_array("data/state", data=np.random.default_rng(1).uniform(0, 512, (n, 5)))
  frames = np.stack([frames_for(0, n, 0, (6, 6))]).reshape(n, 6, 6, 3).astype(np.float32) if img is None else img
  root.create_array("data/img", data=frames, chunks=(3, *frames.shape[1:]))
  root.create_array("meta/episode_ends", data=np.cumsum(lengths))
  return str(path), frames


def test_zarr_float_frames_become_uint8_and_bad_ones_are_refused(tmp_path):
  path, frames = write_zarr(tmp_path / "ok.zarr")
  demos = datasets.read_dataset(path, ("agent_pos",), derived_obs="pusht", image_keys=("img",))
  store = images.store_for(demos)
  assert store.in_ram
  np.testing.assert_array_equal(store.gather(np.array([5]))["img"][0], frames[5].astype(np.uint8))
  with pytest.raises(DatasetError, match="read into RAM"):
    images.ImageStore({"img": [e.images["img"] for e in demos.episodes]}, in_ram=False)
  bad, _ = write_zarr(tmp_path / "bad.zarr", img=np.full((7, 6, 6, 3), 300.0, np.float32))
  with pytest.raises(DatasetError, match=r"bad.zarr.*data/img.*span \[300, 300\], expected 0..255"):
    images.store_for(datasets.read_dataset(bad, ("agent_pos",), derived_obs="pusht", image_keys=("img",)))
  gray, _ = write_zarr(tmp_path / "gray.zarr", img=np.zeros((7, 6, 6), np.float32))
  with pytest.raises(DatasetError, match=r"data/img' has shape \(7, 6, 6\)"):
    datasets.read_dataset(gray, ("agent_pos",), derived_obs="pusht", image_keys=("img",))


def test_windows_carry_the_frames_of_their_obs_steps_and_prefetch_keeps_order(tmp_path):
  path = write_image_file(tmp_path / "img.hdf5", lengths=(9, 6))
  demos = datasets.read_dataset(path, KEYS, image_keys=CAMS)
  data = WindowDataset(demos, fit_normalizer(demos, normalize_obs=False), 2, 4, 6, seed=0, image_storage="file")
  batch = data.batch(3, 16)
  assert batch["images"][CAMS[0]].shape == (16, 2, 12, 10, 3)
  # robot0_eef_pos was written as (step + 10 * demo): the frame's marker pixel must say the same step.
  np.testing.assert_array_equal(batch["images"][CAMS[0]][..., 0, 0, 0], batch["obs"][..., 10].astype(np.uint8))
  prefetched = list(loader.batches(data, 2, 6, 16, num_threads=2, prefetch=3))
  for step, b in zip(range(2, 6), prefetched):
    np.testing.assert_array_equal(b["images"][CAMS[1]], data.batch(step, 16)["images"][CAMS[1]])
    np.testing.assert_array_equal(b["obs"], data.batch(step, 16)["obs"])


# --- policies and config -----------------------------------------------------------------------------

def tiny_image_config(policy="ebt"):
  c = lift.get_config("image")
  c.policy = policy
  c.model.vision.widths = (4, 4, 4, 8)
  c.model.vision.crop = CROP
  c.data.image_size = BIG
  c.data.image_keys = CAMS[:1]  # one camera keeps the compile short; the encoder test covers two
  c.sampler.train_steps, c.sampler.train_extra_steps = 2, 0
  return c


@pytest.mark.parametrize("policy", ["ebt", "diffusion"])
def test_image_policies_train_on_frames_and_sample_deterministically(policy):
  c = tiny_image_config(policy)
  model = policies.make(c, 13, 7)
  params = model.init(jax.random.key(0))
  assert any("camera_agentview_image" in str(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0])
  imgs = {cam: jnp.asarray(frames_for(0, 8, i, BIG).reshape(4, 2, *BIG, 3)) for i, cam in enumerate(CAMS[:1])}
  batch = {"obs": jnp.zeros((4, 2, 13)), "actions": jnp.zeros((4, 16, 7)), "images": imgs}
  loss, grads = jax.jit(jax.value_and_grad(lambda p: model.loss(p, batch, jax.random.key(1))[0]))(params)
  stem = grads["backbone"]["image_encoder"]["camera_agentview_image"]["ResNet18Conv_0"]["Conv_0"]["kernel"]
  assert np.isfinite(float(loss)) and float(jnp.abs(stem).sum()) > 0  # the loss reaches the first conv
  sampler = model.samplers[0]
  s1 = model.sample(params, batch["obs"], jax.random.key(2), sampler, 2, images=imgs)
  s2 = model.sample(params, batch["obs"], jax.random.key(2), sampler, 2, images=imgs)
  np.testing.assert_array_equal(s1.actions, s2.actions)
  other = {cam: v[::-1] for cam, v in imgs.items()}
  s3 = model.sample(params, batch["obs"], jax.random.key(2), sampler, 2, images=other)
  assert not np.allclose(s1.actions, s3.actions)  # the decision depends on the frames
  with pytest.raises(ValueError, match="pass their images"):
    model.sample(params, batch["obs"], jax.random.key(2), sampler, 2)


def test_image_config_problems():
  c = lift.get_config("image")
  assert c.data.image_keys == CAMS and tuple(c.model.vision.widths) == (16, 32, 64, 128)
  assert validation.config_problems(c, needs_data=False) == []
  c.eval.backend = "mjx"
  c.model.vision.crop = (90, 76)
  problems = "\n".join(validation.config_problems(c, needs_data=False))
  assert "MJX has no renderer" in problems and "must fit in data.image_size=(84, 84)" in problems
  p = pusht_config.get_config("image")
  assert p.data.image_keys == ("img",) and tuple(p.model.vision.crop) == (84, 84)
  p.data.image_keys = ("agentview_image",)
  assert any("gym-pusht renders one frame" in x for x in validation.config_problems(p, needs_data=False))
