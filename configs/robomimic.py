"""What every robomimic task's config shares (Lift, Can, Square, ToolHang): one place for the model,
sampler, optimiser and evaluation defaults; each task's file (configs/lift.py, can.py, square.py,
tool_hang.py) only names its task and variant.

  python -m ebt_jax.main --config=configs/can.py                  # built-in scripted Can demos, CPU size
  python -m ebt_jax.main --config=configs/square.py:paper          # the paper's model and schedule
  python -m ebt_jax.main --config=configs/tool_hang.py --config.data.path=tool_hang/ph/low_dim_v15.hdf5

Any field can be overridden with ``--config.<path>=<value>``. Sampler defaults are the authors'
(paper Table 1 and their robomimic code); see ebt_jax/samplers/mcmc.py for what each field does.
"""

import ml_collections

from ebt_jax import tasks


VARIANTS = ("cpu", "paper", "truncated", "authors", "paper_authors", "image", "paper_image")

# robomimic's image datasets (image_v15, 84x84) and the paper's Table 4 policies: two cameras (ToolHang:
# sideview_image instead of agentview_image) plus the low-dim keys.
IMAGE_KEYS = {"tool_hang": ("sideview_image", "robot0_eye_in_hand_image")}
DEFAULT_IMAGE_KEYS = ("agentview_image", "robot0_eye_in_hand_image")
# Training steps of the CPU variants where 2000 (Lift's ~13 epochs) is too few (README "EBT vs Diffusion Policy
# on Can"; Square, README "on Square": 8000 (15 epochs) gave 0.00 for both policies at their defaults, DP-100
# rose to 0.42 at 32000 (61 epochs), EBT's truncated chain from 0.00 to 0.22 at its best setting).
CPU_NUM_STEPS = {"can": 8000, "square": 32000}
PAPER_VISION_WIDTHS = (64, 128, 256, 512)  # ResNet-18's stages as published
CPU_VISION_WIDTHS = (16, 32, 64, 128)  # ResNet-18's stages at 1/4 width: ~1/16 of its FLOPs
AUTHORS_COLOR_JITTER = (0.3, 0.3, 0.3, 0.3)  # brightness, contrast, saturation, hue (their template)


def vision_config(cpu: bool = False, crop=(76, 76), color_jitter=AUTHORS_COLOR_JITTER) -> ml_collections.ConfigDict:
  """The camera encoder's fields (``config.model.vision``; ebt_jax/models/vision.py): a GroupNorm
  ResNet-18 trunk per camera (``cpu``: at 1/4 width), SpatialSoftmax keypoints, features per camera, the
  training crop / evaluation centre crop (h, w) and the training colour jitter (brightness, contrast,
  saturation, hue; zeros: none)."""
  widths = CPU_VISION_WIDTHS if cpu else PAPER_VISION_WIDTHS
  return ml_collections.ConfigDict(dict(widths=widths, num_keypoints=32, features=64, crop=tuple(crop),
                                        color_jitter=tuple(color_jitter)))


def apply_authors(c: ml_collections.ConfigDict, robomimic: bool = True) -> None:
  """Selects every choice of the authors' code (commit c5f5464; ../shared/docs/AUTHORS_EBT_SETTINGS.md)
  where ebt-jax's default departs from it, leaving the model size and step count as they are:

  1. one RMS over the whole sample tensor (the batch in training), at every MCMC step incl. the last;
  2. raw actions and low-dim obs (robomimic only: raw OSC actions are already in [-1, 1]);
  3. 6..10 training steps, one draw per batch;
  4. causal obs encoder, cross-attention memory mask, learned zero-init obs positions, head biases;
  5. horizon 700 (robomimic tasks), the maximum success over in-training evaluations reported and the
     best checkpoint kept (a quarter of the run apart unless the config evaluates already; they
     evaluate every 20 epochs);
  6. lr 1e-4 after 500 warm-up steps, cosine over 900k steps (nearly constant over any run here).
  """
  c.sampler.presample_norm = "per_batch"
  c.sampler.norm_final_step = True
  if robomimic:
    c.data.normalize_actions = False
    c.data.normalize_obs = False
  c.sampler.train_extra_steps = 4
  c.sampler.train_steps_draw = "per_batch"
  c.model.obs_pos_emb = "learned"
  c.model.obs_causal_mask = True
  c.model.cross_attn_mask = True
  c.model.head_bias = True
  if robomimic:
    c.eval.horizon = 700
  if not c.eval.every_steps:  # keep a task's own schedule (Push-T evaluates every 500 steps already)
    c.eval.every_steps = max(c.train.num_steps // 4, 1)
  c.train.learning_rate = 1e-4
  c.train.warmup_steps = 500
  c.train.decay_steps = 900_000


def get_config(task: str = "lift", variant: str = "cpu") -> ml_collections.ConfigDict:
  """task: a robomimic task of ``ebt_jax.tasks.TASKS``. variant: ``cpu`` (default, sized for a 2-core CPU), ``paper`` (8 layers, width 256, 4 heads),
  ``image`` / ``paper_image`` (two RGB cameras + low-dim, ``apply_image``, at the CPU / paper size),
  ``truncated`` (the CPU size trained with the authors' truncated chain, decisions capped at 6 MCMC steps:
  on the built-in demos 0.94 success after 2.0 training minutes instead of 4.6, each decision ~3x the
  cost of the default's 2 steps; README "What an EBT step costs"), ``authors`` (the CPU size with every
  choice of the authors' code, ``apply_authors``) or ``paper_authors`` (the same at the paper's size)."""
  if task not in tasks.TASKS:
    raise ValueError(f"unknown robomimic task {task!r}: one of {sorted(tasks.TASKS)}")
  if variant not in VARIANTS:
    raise ValueError(f"unknown variant {variant!r}: use configs/{task}.py or configs/{task}.py:<variant>, "
                     f"variant one of {VARIANTS[1:]}")
  c = ml_collections.ConfigDict()
  c.name = task  # default run directory: workdir/<name> (EBT), workdir/<name>_<policy> otherwise
  c.seed = 0
  # ebt: EBT-Policy (energy head, Alg. 1 training chain, MCMC inference: config.sampler);
  # diffusion: the Diffusion Policy baseline on the same backbone (noise head, DDPM: config.diffusion).
  c.policy = "ebt"

  # Dataset: a robomimic HDF5 file. Empty path = collect the task's scripted demos once into the cache.
  c.data = ml_collections.ConfigDict()
  c.data.path = ""
  # What an empty path means: the task's scripted demos ("<task>_scripted"), or "" = none (ToolHang).
  c.data.builtin = tasks.builtin_dataset(task)
  c.data.obs_keys = ("object", "robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos")
  c.data.filter_key = ""  # e.g. "train" to use mask/train; empty = every demo
  # Validation loss (valid_loss in metrics.jsonl, loss_vs_step.png): the demos of mask/<valid_filter_key>
  # (e.g. "valid"; the built-in demos have mask/valid, 10 %) are held out of training; "" = none. Or
  # valid_fraction: a share of whole demos held out by a seeded permutation (not with valid_filter_key).
  c.data.valid_filter_key = ""
  c.data.valid_fraction = 0.0
  c.data.cache_dir = ""  # default: $EBT_JAX_CACHE or ~/.cache/ebt_jax
  c.data.num_demos = 200  # built-in demos: scripted-expert episodes (successes only)
  c.data.collect_seed = 0  # demo k is reset with seed collect_seed * 1_000_000 + k
  c.data.action_noise = 0.2  # DART noise on executed expert position actions (ebt_jax/collect.py)
  c.data.collect_backend = "robosuite"  # robosuite | mjx (batched, fast on GPU: ebt_jax/collect_mjx.py)
  # How the scripted operator behaves (ebt_jax/tasks/styles.py): scripted | varied (other paths,
  # grasp heights, speeds) | hesitant (pauses, slow-downs) | teleop (both + jitter; the hardest).
  c.data.demo_style = "scripted"
  # Min-max normalise each dimension to [-1, 1] (False: raw; the authors train on raw OSC actions, which
  # robosuite already bounds to [-1, 1], and raw low-dim obs). Fitted on the demos, saved with checkpoints.
  c.data.normalize_actions = True
  c.data.normalize_obs = True
  # RGB camera keys (robomimic obs/<key>, [T, H, W, 3] uint8), each through its own ResNet-18 (config.model.vision);
  # empty = low-dim only. Built-in demos get them rendered from their states (python -m ebt_jax.render).
  c.data.image_keys = ()
  c.data.image_size = (84, 84)  # (H, W) of rendered frames (robomimic's image_v15: 84x84)
  # Built-in demos' frames with MuJoCo's reflection pass (robomimic's look); False: ~3x faster rendering in
  # software GL, recorded in the rendered file's env_args so that evaluation draws the same way.
  c.data.render_reflections = True
  # Where training reads frames: auto (RAM if they fit in image_ram_limit_gb, else the file) | ram | file.
  c.data.image_storage = "auto"
  c.data.image_ram_limit_gb = 8.0

  # Horizons (control steps at 20 Hz): observation To, action (executed) Ta, prediction Tp.
  c.horizon = ml_collections.ConfigDict()
  c.horizon.obs = 2
  c.horizon.action = 8
  c.horizon.pred = 16

  # Energy model (ebt_jax/models/ebt.py).
  c.model = ml_collections.ConfigDict()
  c.model.width = 64
  c.model.num_layers = 2
  c.model.num_obs_layers = 1
  c.model.num_heads = 4
  c.model.mlp_ratio = 1.0
  c.model.attn_dropout = 0.0
  # The authors' trunk choices (ebt_jax/models/backbone.py); off by default.
  c.model.obs_pos_emb = "sincos"  # sincos | learned (zero-init, the authors')
  c.model.obs_causal_mask = False  # obs token s attends to obs tokens <= s
  c.model.cross_attn_mask = False  # action token t attends to obs tokens <= t (authors' memory mask)
  c.model.head_bias = False  # biases in the energy head's MLP
  c.model.vision = vision_config()  # used only with data.image_keys

  # MCMC sampler (ebt_jax/samplers/mcmc.py: SamplerConfig), paper Table 1 / authors' code.
  c.sampler = ml_collections.ConfigDict()
  c.sampler.step_size = 1000.0  # alpha
  c.sampler.step_size_randomization = 1.5  # c: training draws U[alpha/c, alpha*c]
  c.sampler.energy_scaled_step = True  # alpha * exp(E) / T (Eq. 2)
  c.sampler.energy_temperature = 1.0  # T
  c.sampler.max_log_step_scale = 20.0  # overflow guard on exp(E)
  c.sampler.momentum = 0.9  # Nesterov mu
  c.sampler.normalize_samples = True  # RMSNorm pre-sample normalisation
  # Which elements share one RMS: per_step (each prediction step's A dims) | per_sample ([Tp, A]) |
  # per_batch (the whole [B, Tp, A] tensor in training, the authors'; per sample in decisions).
  c.sampler.presample_norm = "per_step"
  c.sampler.norm_final_step = False  # also normalise before the final MCMC step (the authors do)
  c.sampler.norm_eps = 1e-6
  c.sampler.init_std = 1.0  # y_0 ~ N(0, I)
  c.sampler.train_steps = 6  # base MCMC steps in training
  c.sampler.train_extra_steps = 3  # + U{0..3} (the authors' code: U{0..4})
  c.sampler.train_steps_draw = "per_sample"  # per_sample | per_batch (one draw per batch, the authors')
  c.sampler.langevin_sigma_max = 0.2
  c.sampler.langevin_sigma_min = 0.002
  c.sampler.max_steps = 2  # inference cap N (Table 1 allows up to 20)
  c.sampler.grad_norm_tol = 1e-3  # tau
  # What a training step / a decision costs (README "What an EBT step costs"; ebt_jax/samplers/mcmc.py).
  c.sampler.remat_train_steps = True  # jax.checkpoint each training MCMC step: same numbers, ~2x faster on CPU
  c.sampler.truncate_chain = False  # True: differentiate only the final training step (authors' truncate_mcmc)
  c.sampler.detach_step_scale = False  # True: no gradient through exp(E) in the training step size
  c.sampler.inference_energy = "last_step"  # energy a decision reports: last_step (free) | exact (+1 forward)

  # Diffusion Policy baseline (ebt_jax/policies/diffusion.py), used when policy == "diffusion"; Chi et al.
  # 2023: epsilon prediction, T = 100, squaredcos_cap_v2, clipped samples, 100-step DDPM inference.
  c.diffusion = ml_collections.ConfigDict()
  c.diffusion.num_train_steps = 100  # T
  c.diffusion.clip_sample = True  # clip the predicted x_0 to [-1, 1]
  c.diffusion.inference = "ddpm-100"  # default sampler-steps: ddpm-K (ancestral) or ddim-K (deterministic)
  c.diffusion.eval_sweep = ("ddim-2", "ddim-10", "ddpm-100")  # also evaluated after training

  # Optimisation.
  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 64
  # CPU schedule: 2000 steps at a peak lr of 5e-4 after 100 warm-up steps (the paper's 1e-4 / 500
  # reached 0.14 loss in 1100 steps where this reaches 0.05; see README). `:paper` restores them.
  # Can and Square demos are ~3x longer than Lift's: 2000 steps are 4.4 epochs there, and Can reached
  # 0.06 (EBT-2) / 0.10 (DP-100) at 2000 steps against 0.86 / 0.72 at 8000 (README, docs/issue14/table4/).
  c.train.num_steps = CPU_NUM_STEPS.get(task, 2000)
  c.train.learning_rate = 5e-4
  c.train.warmup_steps = 100
  c.train.decay_steps = 0  # the cosine reaches 0 here; 0 = at num_steps (the authors: 900_000)
  c.train.weight_decay = 1e-6  # robomimic's L2 for the authors' AdamW
  c.train.grad_clip_norm = 1.0
  c.train.ema_power = 0.75  # EMA decay 1 - (1 + step)^-power, capped (diffusers EMAModel, as the authors)
  c.train.ema_max_decay = 0.9999
  c.train.max_consecutive_nonfinite = 20  # skipped non-finite updates in a row before failing
  c.train.log_every = 50
  c.train.checkpoint_every = 500
  c.train.keep_checkpoints = 2
  # Host CPU devices to split this machine into (data-parallel mesh). On CPU, 2 devices of one thread
  # each train ~1.5x faster than 1 device of 2 threads. Ignored when a GPU/TPU is present.
  c.train.num_cpu_devices = 2
  # Device mesh (data, fsdp) over every device of every host (ebt_jax/training/sharding.py); -1 = all
  # remaining devices. The batch is split over both axes; params, EMA and AdamW state are sharded over
  # fsdp (each leaf of >= fsdp_min_size elements, along its largest divisible axis) and replicated over
  # data. (-1, 1): pure data parallelism, the whole state on every device; (1, -1): 1/N of it per device.
  c.train.mesh = (-1, 1)
  c.train.fsdp_min_size = 2**16  # smaller leaves (biases, norm scales) stay replicated
  c.train.loader_threads = 2  # grain threads computing batches ahead (ebt_jax/data/loader.py); 0 = none
  c.train.prefetch_batches = 4
  # Weights & Biases (ebt_jax/training/writers.py): "disabled", "offline" (files in <workdir>/wandb, `wandb sync`
  # later) or "online"; needs `pip install -r requirements-wandb.txt`. TensorBoard events are always written.
  c.train.wandb = "disabled"

  # Evaluation (ebt_jax/evaluation/): robosuite (one episode at a time, CPU) or MJX (all episodes in
  # one jitted scan; fast on GPU/TPU). Both write the same eval.json.
  c.eval = ml_collections.ConfigDict()
  c.eval.backend = "robosuite"  # robosuite | mjx
  # MJX initial states: "robosuite" = robosuite's own resets for the eval seeds (the same episodes
  # as the robosuite backend); "sampled" = robosuite's reset distribution sampled in JAX (no robosuite
  # resets; for thousands of episodes).
  c.eval.mjx_initial_states = "robosuite"
  c.eval.mjx_batch_size = 0  # episodes per jitted call; 0 = all at once (CPU: keep <= 256)
  c.eval.num_episodes = 50
  c.eval.horizon = tasks.get_task(task).horizon  # control steps (robomimic's rollout horizon: 400, ToolHang 700)
  c.eval.seed = 1_000_000_000  # episode k is reset with seed eval.seed + k (disjoint from demo seeds)
  c.eval.max_steps_sweep = (1, 2, 4, 20)  # EBT: also report success at these inference caps (mcmc-N)
  c.eval.use_ema = True
  c.eval.every_steps = 0  # also evaluate every this many training steps (eval_curve.jsonl); 0 = off
  c.eval.plot_episodes = 4  # episodes per column in energy_vs_step.png
  # Rollout videos of the final evaluation (ebt_jax/evaluation/video.py): the first video_episodes episodes
  # of each inference label -> <workdir>/videos/<label>/episode_<k>_<success|failure>.mp4, the camera
  # frame with the energy trace beside it (0 = none; needs an offscreen GL context: MUJOCO_GL=egl / osmesa).
  c.eval.video_episodes = 2
  c.eval.video_camera = "agentview"  # robosuite camera (MJX: rendered afterwards in robosuite)
  c.eval.video_size = (256, 256)  # (height, width) px of the camera frames
  # eval.json's best_over_training and checkpoints/best rank evaluations by this eval.json field.
  c.eval.best_metric = "success_rate"

  if variant == "truncated":
    # Only the final MCMC step of a training chain is differentiated (authors' truncate_mcmc), so a
    # training step costs ~1/3.6 of the full chain's; the policy then works at the chain length it was
    # trained on: 6 steps (Lift: mcmc-2 0.34, mcmc-6 0.98, mcmc-8 0.56 after 2000 steps).
    c.name = f"{task}_truncated"
    c.sampler.truncate_chain = True
    c.sampler.max_steps = 6
    c.eval.max_steps_sweep = (2, 4, 8)
  if variant in ("paper", "paper_authors", "paper_image"):
    c.model.width = 256
    c.model.num_layers = 8
    c.model.num_obs_layers = 8
    c.model.num_heads = 4
    c.model.attn_dropout = 0.3
    c.train.num_steps = 100_000
    c.train.learning_rate = 1e-4
    c.train.warmup_steps = 500
  if variant in ("authors", "paper_authors"):
    c.name = f"{task}_{variant}"
    apply_authors(c)
  if variant in ("image", "paper_image"):
    c.name = f"{task}_{variant}"
    apply_image(c, IMAGE_KEYS.get(task, DEFAULT_IMAGE_KEYS), cpu=variant == "image")
  return c


def apply_image(c: ml_collections.ConfigDict, image_keys, cpu: bool) -> None:
  """Image observations (paper Table 4, EBT-Policy-S): ``image_keys`` through a GroupNorm ResNet-18 each
  (``cpu``: at 1/4 width) + SpatialSoftmax(32) -> 64 features per camera, next to the low-dim keys;
  84 -> 76 random crops and colour jitter in training; ``cpu``: the built-in demos rendered without
  reflections. MJX has no renderer on CPU: evaluation stays in robosuite (``eval.backend`` must not be mjx)."""
  c.data.image_keys = tuple(image_keys)
  c.data.render_reflections = not cpu  # CPU: the built-in demos render ~3x faster (robosuite_env.render_cameras)
  c.model.vision = vision_config(cpu, crop=(76, 76))
