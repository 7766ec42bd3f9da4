"""collect -> train -> evaluate, tiny, through the real robosuite Lift env and the main job."""

import json
import os

import h5py
import jax
import numpy as np
import pytest

from configs import lift
from ebt_jax import collect, main
from ebt_jax.data.robomimic_hdf5 import read_demos


@pytest.fixture(scope="module")
def two_demos(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("data") / "lift.hdf5")
  collect.collect("lift", num_demos=2, out=path, seed=7)
  return path


def test_collect_writes_robomimic_lift_demos_deterministically(two_demos, tmp_path):
  with h5py.File(two_demos) as f:
    env_args = json.loads(f["data"].attrs["env_args"])
    assert env_args["env_name"] == "Lift" and env_args["env_kwargs"]["control_freq"] == 20
    arm = env_args["env_kwargs"]["controller_configs"]["body_parts"]["right"]
    assert arm["type"] == "OSC_POSE" and arm["kp"] == 150 and arm["input_type"] == "delta"
    assert [n.decode() for n in f["mask/train"]] == ["demo_0"] and [n.decode() for n in f["mask/valid"]] == ["demo_1"]
    for name in ("demo_0", "demo_1"):
      demo = f["data"][name]
      n = demo.attrs["num_samples"]
      assert demo["actions"].shape == (n, 7) and demo["states"].shape[0] == n
      assert demo["obs/object"].shape == (n, 10) and demo["obs/robot0_eef_quat"].shape == (n, 4)
      assert demo["rewards"][-1] == 1 and demo["dones"][-1] == 1 and demo["dones"][:-1].sum() == 0
      assert np.abs(demo["actions"][()]).max() <= 1.0
      assert "<mujoco" in demo.attrs["model_file"]
      # DART: executed position actions are perturbed, labels are the expert's, gripper untouched.
      executed, labels = demo["executed_actions"][()], demo["actions"][()]
      assert executed.shape == labels.shape and not np.allclose(executed[:, :3], labels[:, :3])
      np.testing.assert_array_equal(executed[:, 3:], labels[:, 3:])
    first_actions = f["data/demo_0/actions"][()]
  again = str(tmp_path / "again.hdf5")
  collect.collect("lift", num_demos=1, out=again, seed=7)
  with h5py.File(again) as f:
    np.testing.assert_array_equal(f["data/demo_0/actions"][()], first_actions)
  demos = read_demos(two_demos, lift.get_config().data.obs_keys, filter_key="train")
  assert demos.obs_dim == 19 and demos.action_dim == 7 and len(demos.episodes) == 1


def test_main_job_trains_evaluates_and_resumes(two_demos, tmp_path):
  config = lift.get_config()
  config.data.path = two_demos
  config.model.width, config.model.num_layers, config.model.num_obs_layers, config.model.num_heads = 16, 1, 1, 2
  config.sampler.train_steps, config.sampler.train_extra_steps = 2, 1
  config.train.update(batch_size=8, num_steps=4, warmup_steps=1, log_every=2, checkpoint_every=2)
  config.eval.update(num_episodes=2, horizon=12, max_steps_sweep=(1, 3), every_steps=2)
  workdir = str(tmp_path / "run")
  result = main.run(config, workdir)
  with open(os.path.join(workdir, main.EVAL_FILE)) as f:
    saved = json.load(f)
  for key in ("success_rate", "num_episodes", "mean_episode_length", "mean_sampler_steps", "mean_final_energy"):
    assert saved[key] == result[key]
  assert saved["num_episodes"] == 2 and 0.0 <= saved["success_rate"] <= 1.0
  assert saved["train_steps"] == 4
  # The paper's protocol beside the final number: the best of the evaluation at step 2 and the final one.
  best = saved["best_over_training"]
  with open(os.path.join(workdir, "eval_curve.jsonl")) as f:
    curve = [json.loads(l)["success_rate"] for l in f]  # step 2, then the final evaluation (step 4)
  assert len(curve) == 2 and curve[-1] == saved["success_rate"]
  assert best["metric"] == "success_rate" and best["num_evaluations"] == 2 and best["value"] == max(curve)
  assert best["step"] in (2, 4) and (best["checkpoint"] is None) == (not os.path.isdir(
      os.path.join(workdir, "checkpoints", "best", str(best["step"]))))
  with open(os.path.join(workdir, "eval_curve.jsonl")) as f:
    assert json.loads(f.readlines()[-1])["max_success_rate_so_far"] == best["value"]
  assert saved["config"]["seed"] == config.seed and saved["config"]["model"]["width"] == 16
  # Caps: the configured N = 2 plus the sweep; an episode never uses more MCMC steps than its cap.
  assert list(saved["by_inference"]) == ["mcmc-1", "mcmc-2", "mcmc-3"] and saved["inference"] == "mcmc-2"
  assert saved["policy"] == "ebt" and saved["by_inference"]["mcmc-1"]["mean_sampler_steps"] == 1.0
  for label, r in saved["by_inference"].items():
    assert 1.0 <= r["mean_sampler_steps"] <= int(label.split("-")[1])
  episode = saved["episodes"][0]
  assert episode["seed"] == config.eval.seed and episode["length"] <= 12
  # Eval seeds are disjoint from the demo seeds.
  with h5py.File(two_demos) as f:
    demo_seeds = {int(f["data"][n].attrs["seed"]) for n in f["data"]}
  assert not demo_seeds & {e["seed"] for e in saved["episodes"]}
  # The same command again (a finished run) evaluates the step-4 checkpoint again, to the same numbers
  # (seeded episodes), and its final row replaces the first one: one row per step, two evaluations.
  again = main.run(config, workdir)
  assert again["by_inference"]["mcmc-2"]["success_rate"] == saved["success_rate"]
  with open(os.path.join(workdir, "eval_curve.jsonl")) as f:
    assert [json.loads(l)["step"] for l in f] == [2, 4]
  assert again["best_over_training"]["num_evaluations"] == 2
  # A longer schedule resumes from the step-4 checkpoint.
  config.train.num_steps = 6
  assert main.run(config, workdir, skip_eval=True) is None
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(l) for l in f]
  assert [r["step"] for r in records] == [2, 4, 6]
  # Training wall-clock accumulates over the resume (steps 5-6 continue from the time at step 4).
  walls = [r["train_wall_s"] for r in records]
  assert 0 < walls[0] < walls[1] < walls[2] and saved["train_wall_s"] == walls[1]


def test_diffusion_policy_trains_and_evaluates_with_the_same_job(two_demos, tmp_path):
  """--config.policy=diffusion: same main job, the noise head's loss, DDIM / DDPM inference, no energy."""
  from ebt_jax.training import checkpoint  # pylint: disable=g-import-not-at-top
  config = lift.get_config()
  config.policy = "diffusion"
  config.data.path = two_demos
  config.model.width, config.model.num_layers, config.model.num_obs_layers, config.model.num_heads = 16, 1, 1, 2
  config.train.update(batch_size=8, num_steps=4, warmup_steps=1, log_every=2, checkpoint_every=2)
  config.diffusion.update(inference="ddim-10", eval_sweep=("ddim-2", "ddpm-100"))
  config.eval.update(num_episodes=2, horizon=12)
  assert main.default_workdir(config) == os.path.join("workdir", "lift_diffusion")
  workdir = str(tmp_path / "dp")
  main.run(config, workdir)
  with open(os.path.join(workdir, main.EVAL_FILE)) as f:
    saved = json.load(f)
  assert saved["policy"] == "diffusion" and saved["inference"] == "ddim-10"
  assert list(saved["by_inference"]) == ["ddim-2", "ddim-10", "ddpm-100"]
  for label, r in saved["by_inference"].items():  # every decision takes exactly K denoising steps
    assert r["mean_sampler_steps"] == int(label.split("-")[1]) and r["mean_final_energy"] is None
  assert "energy" not in saved["episodes"][0] and len(saved["episodes"][0]["sampler_steps"]) == 2
  assert not os.path.exists(os.path.join(workdir, main.ENERGY_PLOT))
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  assert {"loss", "mse_by_t_low", "mse_by_t_high", "grad_norm"} <= set(records[-1])
  assert "energy_first" not in records[-1]
  # The checkpoint reloads as a diffusion policy; an EBT config cannot resume it.
  policy, _ = checkpoint.load_policy(workdir)
  decision = policy(np.zeros((3, 2, policy.model.obs_dim), np.float32), jax.random.PRNGKey(0), "ddpm-100")
  assert decision.actions.shape == (3, 8, 7) and decision.energy is None and list(decision.steps) == [100] * 3
  with pytest.raises(ValueError, match="inference 'mcmc-2'"):
    policy(np.zeros((1, 2, policy.model.obs_dim), np.float32), jax.random.PRNGKey(0), "mcmc-2")
  config.policy = "ebt"
  with pytest.raises(ValueError, match="'diffusion' policy, config.policy is 'ebt'"):
    main.run(config, workdir, skip_eval=True)


def test_rendered_frames_are_robosuites_camera_observations_upright(two_demos):
  """render_cameras (what ebt_jax.render and the image evaluation use) equals robosuite's own camera
  observation with IMAGE_CONVENTION="opencv" (row 0 at the top, as robomimic's image files store it)."""
  import robosuite.macros as macros  # pylint: disable=g-import-not-at-top
  from ebt_jax.envs import robosuite_env  # pylint: disable=g-import-not-at-top
  with h5py.File(two_demos) as f:
    env_args = json.loads(f["data"].attrs["env_args"])
  keys = ("agentview_image", "robot0_eye_in_hand_image")
  old, macros.IMAGE_CONVENTION = macros.IMAGE_CONVENTION, "opencv"
  try:
    import robosuite  # pylint: disable=g-import-not-at-top
    kwargs = robosuite_env.camera_env_args(env_args, keys, 40, 44)["env_kwargs"]
    kwargs["controller_configs"] = robosuite_env.make_env(env_args).robots[0].composite_controller_config
    kwargs.update(has_renderer=False, ignore_done=True)
    env = robosuite.make(env_args["env_name"], **kwargs)
    obs = env.reset()
    frames = robosuite_env.render_cameras(env, keys, 40, 44)
  finally:
    macros.IMAGE_CONVENTION = old
  for k in keys:
    assert frames[k].shape == (40, 44, 3) and frames[k].dtype == np.uint8
    np.testing.assert_array_equal(frames[k], obs[k])


def test_frames_rendered_without_reflections_are_marked_and_evaluation_draws_them_so(two_demos, tmp_path):
  """``render --noreflections`` (the CPU image configs' built-in demos) records the setting in the file's
  env_args; the child renderer evaluation uses, given those env_args, draws the file's frames exactly, and
  with robomimic's default (reflections on) draws other ones."""
  from ebt_jax import render  # pylint: disable=g-import-not-at-top
  from ebt_jax.envs import robosuite_env  # pylint: disable=g-import-not-at-top
  from ebt_jax.evaluation import offscreen  # pylint: disable=g-import-not-at-top
  key = "agentview_image"
  path = render.rendered_path(two_demos, (key,), 40, 44, reflections=False)
  assert path.endswith("_img40x44_agentview_noreflect.hdf5") and path != render.rendered_path(two_demos, (key,), 40, 44)
  render.render_dataset(two_demos, path, (key,), height=40, width=44, reflections=False)
  with h5py.File(path) as f:
    env_args = json.loads(f["data"].attrs["env_args"])
    stored = f["data/demo_0/obs"][key][:2]
    states, xml = f["data/demo_0/states"][:2], f["data/demo_0"].attrs["model_file"]
  unmarked = {k: v for k, v in env_args.items() if k != robosuite_env.RENDER_KEY}  # as robomimic's files
  assert env_args[robosuite_env.RENDER_KEY] == {"reflections": False}
  assert not robosuite_env.render_reflections(env_args)
  assert robosuite_env.render_reflections(unmarked)
  frames = {}
  for name, args in (("as_file", env_args), ("reflections", unmarked)):
    renderer = offscreen.Renderer(args)
    frames[name] = renderer.states(xml, states, "agentview", (40, 44))
    renderer.close()
  np.testing.assert_array_equal(frames["as_file"], stored)
  assert np.abs(frames["reflections"].astype(float) - stored).mean() > 0.05


def test_image_main_job_renders_demos_trains_and_evaluates(two_demos, tmp_path, monkeypatch):
  """configs/lift.py:image, shrunk: ebt_jax.render adds the frames from the demos' states, the job trains
  on them, and the evaluation renders only the frames decisions see. The diffusion baseline compiles in
  a third of EBT's time; the EBT image model's loss and decisions are tested in tests/test_images.py."""
  from ebt_jax import render  # pylint: disable=g-import-not-at-top
  from ebt_jax.evaluation import robosuite_eval  # pylint: disable=g-import-not-at-top
  keys = ("agentview_image", "robot0_eye_in_hand_image")
  path = str(tmp_path / "img.hdf5")
  render.render_dataset(two_demos, path, keys, height=40, width=44)
  with h5py.File(two_demos) as f, h5py.File(path) as g:
    n = f["data/demo_1/actions"].shape[0]
    assert g["data/demo_1/obs/agentview_image"].shape == (n, 40, 44, 3)
    np.testing.assert_array_equal(g["data/demo_1/actions"][()], f["data/demo_1/actions"][()])
    assert json.loads(g["data"].attrs["env_args"])["env_kwargs"]["camera_names"] == ["agentview", "robot0_eye_in_hand"]
  config = lift.get_config("image")
  config.policy = "diffusion"
  config.diffusion.update(inference="ddim-2", eval_sweep=())
  config.data.path, config.data.image_size = path, (40, 44)
  config.data.image_keys = keys[:1]  # one camera: half the compile time; both cameras' frames are checked above
  config.model.width, config.model.num_layers, config.model.num_obs_layers, config.model.num_heads = 16, 1, 1, 2
  config.model.vision.widths, config.model.vision.crop = (4, 4, 4, 8), (36, 36)
  config.sampler.train_steps, config.sampler.train_extra_steps = 2, 1
  config.train.update(batch_size=8, num_steps=2, warmup_steps=1, log_every=1, checkpoint_every=2)
  config.eval.update(num_episodes=1, horizon=16, max_steps_sweep=(2,), every_steps=0)
  calls, frames = [], []
  real = robosuite_eval.CameraFrames.__call__

  def counted(self):
    out = real(self)
    calls.append(1)
    frames.append(out["agentview_image"])
    return out

  monkeypatch.setattr(robosuite_eval.CameraFrames, "__call__", counted)
  result = main.run(config, str(tmp_path / "run"))
  assert result["num_episodes"] == 1 and set(result["by_inference"]) == {"ddim-2"}
  # The decisions saw real frames (the child renderer's; rendered in this process after XLA ran, Mesa's EGL
  # returns stale, dark ones): the reset frame is the demos' first frame of a reset scene, mean ~219.
  assert frames[0].shape == (40, 44, 3) and frames[0].mean() > 150, frames[0].mean()
  if not result["episodes"][0]["success"]:
    # A 16-step episode renders the reset frame, then after steps 7, 8 and 15, 16 (the To = 2 before each
    # decision), not at all 16 steps.
    assert len(calls) == 5
