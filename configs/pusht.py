"""EBT-Policy on Push-T from human demonstrations (low-dim), evaluated in gym-pusht.

  python -m ebt_jax.main --config=configs/pusht.py --config.data.path=<dir>/pusht_cchi_v7_replay.zarr
  python -m ebt_jax.main --config=configs/pusht.py:paper --config.data.path=...   # GPU-sized
  python -m ebt_jax.main --config=configs/pusht.py --config.policy=diffusion --config.data.path=...  # baseline
  python -m ebt_jax.main --config=configs/pusht.py:image --config.data.path=...   # from 96x96 frames + agent pos

Data: Diffusion Policy's replay buffer (206 human teleoperation episodes, 25,650 steps at 10 Hz;
https://diffusion-policy.cs.columbia.edu/data/training/pusht.zip). There is no built-in dataset.

Observation (``config.data.obs_keys``): gym-pusht's ``environment_state_agent_pos`` = the T block's 8
corners (16 numbers, px) and the agent position (2, px). In training they are computed from the
buffer's ``data/state`` by ``ebt_jax.envs.pusht.observations_from_state`` (``data.derived_obs``), at
evaluation the live env returns them: the same formula on the same state (tests/test_pusht.py). Raw
``state`` carries the block angle mod 2 pi, which jumps by 2 pi in 91 of the 206 demos; the corners do
not. Actions: absolute agent target (x, y) in px, min-max normalised to [-1, 1].

Evaluation: the Diffusion Policy protocol (50 episodes, seeds 100000..100049, <= 300 env steps, success
= max coverage >= 0.95), all episodes as one batch. ``eval.every_steps`` adds evaluations during
training (``eval_curve.jsonl`` and ``coverage_vs_steps.png``).
"""

import ml_collections

from configs import lift, robomimic


VARIANTS = ("cpu", "paper", "authors", "paper_authors", "image", "paper_image")


def get_config(variant: str = "cpu") -> ml_collections.ConfigDict:
  """variant: ``cpu`` (default, <= 60 min on a 2-core CPU), ``paper`` (the paper-sized model, GPU),
  ``authors`` / ``paper_authors`` (``lift.apply_authors`` at either size, except what only applies to
  robomimic: actions stay normalised (Push-T's are pixel targets, 0..512) and the horizon stays 300),
  ``image`` / ``paper_image`` (Diffusion Policy's image Push-T: the 96x96 frame ``data/img`` through a
  GroupNorm ResNet-18 (CPU: 1/4 width) with 84x84 random crops and no colour jitter, plus the agent
  position; the block's pose is not observed)."""
  if variant not in VARIANTS:
    raise ValueError(f"unknown variant {variant!r}: use configs/pusht.py or configs/pusht.py:<variant>, "
                     f"variant one of {VARIANTS[1:]}")
  size = "paper" if variant.startswith("paper") else "cpu"
  c = lift.get_config(size)  # sampler, optimiser and model defaults are shared; the task fields differ
  c.name = "pusht" if variant == "cpu" else f"pusht_{variant}"  # default run directory: workdir/pusht

  c.data = ml_collections.ConfigDict()
  c.data.path = ""  # required: the pusht_cchi_v7_replay.zarr directory
  c.data.builtin = ""  # no built-in demos for Push-T
  c.data.obs_keys = ("environment_state", "agent_pos")
  c.data.derived_obs = "pusht"  # observations from data/state, as gym-pusht computes them
  c.data.action_key = "action"
  c.data.filter_key = ""
  c.data.valid_filter_key = ""  # Zarr buffers have no masks: hold out episodes with valid_fraction
  # Share of whole episodes held out for the validation loss (valid_loss in metrics.jsonl), drawn by a
  # seeded permutation of the episode indices, the same for every run (0.1: 21 of the 206); 0 = none.
  c.data.valid_fraction = 0.0
  c.data.normalize_actions = True
  c.data.normalize_obs = True
  c.data.image_keys = ()  # ("img",): the buffer's 96x96 frames (the image variants)
  c.data.image_size = (96, 96)
  c.data.image_storage = "ram"  # Zarr frames come in ~160-frame chunks: always loaded (0.7 GB as uint8)
  c.data.image_ram_limit_gb = 8.0

  # Horizons in env steps at 10 Hz (Diffusion Policy's Push-T: To 2, Ta 8, Tp 16).
  c.horizon.obs = 2
  c.horizon.action = 8
  c.horizon.pred = 16

  c.train.batch_size = 64
  c.train.num_steps = 3500  # ~45 min at ~1.35 steps/s on 2 CPU cores
  c.train.learning_rate = 5e-4
  c.train.warmup_steps = 100
  c.train.checkpoint_every = 500

  c.eval = ml_collections.ConfigDict()
  c.eval.backend = "gym_pusht"
  c.eval.num_episodes = 50
  c.eval.seed = 100_000  # episode k is reset with seed 100000 + k (Diffusion Policy's test seeds)
  c.eval.horizon = 300  # max env steps per episode (30 s at 10 Hz)
  c.eval.max_steps_sweep = (1, 2, 4, 20)
  c.eval.use_ema = True
  c.eval.every_steps = 500  # also evaluate (default inference) every this many training steps; 0 = off
  c.eval.plot_episodes = 4  # episodes per column in energy_vs_step.png
  # Rollout videos of the final evaluation: the first video_episodes episodes of each inference label ->
  # <workdir>/videos/<label>/episode_<k>_<success|failure>.mp4 (gym-pusht's own render + the energy trace).
  c.eval.video_episodes = 2
  c.eval.video_size = (256, 256)  # (height, width) px
  c.eval.best_metric = "mean_max_coverage"  # what best_over_training and checkpoints/best rank by

  if size == "paper":
    c.train.batch_size = 256
    c.train.num_steps = 100_000
    c.train.checkpoint_every = 5000
    c.eval.every_steps = 5000
  if variant in ("authors", "paper_authors"):
    lift.apply_authors(c, robomimic=False)
  if variant in ("image", "paper_image"):
    c.data.obs_keys = ("agent_pos",)
    c.data.image_keys = ("img",)
    # Diffusion Policy's image Push-T: 84x84 crops of the 96x96 frames, no colour jitter.
    c.model.vision = robomimic.vision_config(size == "cpu", crop=(84, 84), color_jitter=(0.0, 0.0, 0.0, 0.0))
  return c
