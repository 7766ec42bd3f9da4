r"""Collects scripted-expert demonstrations in robosuite into a robomimic-format HDF5 file.

  python -m ebt_jax.collect --task=lift --num_demos=200 --out=/tmp/lift_scripted.hdf5
  python -m ebt_jax.collect --task=lift --num_demos=200 --out=/tmp/lift_mjx.hdf5 --backend=mjx
  python -m ebt_jax.collect --task=lift --style=teleop --action_noise=0 --out=/tmp/lift_teleop.hdf5
  python -m ebt_jax.collect --task=can --num_demos=200 --out=/tmp/can_scripted.hdf5    # also: square

Attempt k is reset with seed ``seed * 1_000_000 + k``; only successful episodes are kept (each demo
stores its ``seed`` attribute), so the file is a deterministic function of (task, style, num_demos,
seed, action_noise). ``--task`` is a robomimic task with a scripted expert (``ebt_jax.tasks``: lift, can,
square); ``--style`` picks how the scripted operator behaves (``ebt_jax.tasks.styles``: scripted, varied,
hesitant, teleop; robosuite backend only). Each demo ends at the first env step at which the task succeeds. The executed position
actions are perturbed with small Gaussian noise (DART) while ``actions`` keeps the expert's labels;
see ``collect_episode``. 90% / 10% of the demos form the ``mask/train`` / ``mask/valid`` splits, as
in robomimic's datasets.
"""

from __future__ import annotations

import os

import numpy as np
from absl import flags, logging

from ebt_jax import cli, paths, progress
from ebt_jax.data.robomimic_hdf5 import RawDemo, train_valid_masks, write_demos
from ebt_jax import tasks
from ebt_jax.envs import robosuite_env
from ebt_jax.errors import ConfigError
from ebt_jax.tasks import styles

MJX_TASKS = ("lift",)  # tasks the MJX collector implements
BACKENDS = ("robosuite", "mjx")  # one episode at a time / batched in MJX (ebt_jax/collect_mjx.py)
SEED_STRIDE = 1_000_000
# Std of the DART noise on executed position actions (1 = 0.05 m per step, so 0.2 = 1 cm). Measured on
# 20 seeds: position noise 0.15 and 0.25 left the expert at 20/20 successes (52.7 and 61.6 steps);
# noise of 0.2 on position *and* orientation dropped it to 9/10, 0.5 to 2/10.
DEFAULT_ACTION_NOISE = 0.2


def style_backend_problem(style: str, backend: str, task: str = "lift") -> str | None:
  """Why ``task`` in ``style`` cannot be collected with ``backend`` (None if it can): MJX runs Lift's
  default expert only."""
  if backend == "mjx" and task not in MJX_TASKS:
    return f"the MJX collector implements {', '.join(MJX_TASKS)} only, not {task!r}"
  if style != styles.DEFAULT_STYLE and backend == "mjx":
    return f"the MJX collector runs the {styles.DEFAULT_STYLE!r} expert only"
  return None


def collect_episode(env, expert, seed: int, horizon: int, action_noise: float = 0.0) -> RawDemo | None:
  """Runs the expert from the initial state of ``seed``; -> the demo, or None if it failed.

  ``expert``: a ``styles.StyledOperator`` (``reset(seed)``, then obs -> commanded action [7]); its
  commanded action is the demo's label.

  With ``action_noise`` > 0 the env executes the expert's action plus N(0, action_noise^2) on the three
  position dimensions (orientation noise would accumulate: OSC deltas are relative to the achieved
  pose and the expert only corrects yaw), clipped to [-1, 1], from a generator seeded by ``seed``; the demo
  records the expert's own action as ``actions`` (the label) and the executed one as
  ``executed_actions``. This is DART (Laskey et al., 2017): the demos visit the small deviations a
  learned policy makes and show how the expert corrects them.
  """
  obs = robosuite_env.reset(env, seed)
  expert.reset(seed)
  noise_rng = np.random.default_rng(seed)
  model_file = env.sim.model.get_xml()
  observations, actions, executed, states = [], [], [], []
  for _ in range(horizon):
    action = expert(obs)
    observations.append(obs)
    states.append(robosuite_env.sim_state(env))
    actions.append(action)
    noisy = action.copy()
    if action_noise > 0:
      noisy[:3] = np.clip(noisy[:3] + action_noise * noise_rng.standard_normal(3), -1.0, 1.0)
    executed.append(noisy)
    raw, _, _, _ = env.step(noisy)
    obs = robosuite_env.low_dim_obs(raw)
    if robosuite_env.is_success(env):
      n = len(actions)
      rewards = np.zeros(n)
      rewards[-1] = 1.0
      return RawDemo(obs={k: np.stack([o[k] for o in observations]) for k in observations[0]},
                     actions=np.stack(actions), rewards=rewards, dones=(rewards > 0).astype(np.int64),
                     states=np.stack(states), model_file=model_file,
                     attrs={"seed": seed, "action_noise": action_noise, "style": expert.style_name},
                     extra={"executed_actions": np.stack(executed)})
  return None


def collect(task: str, num_demos: int, out: str, seed: int = 0, horizon: int | None = None,
            action_noise: float = DEFAULT_ACTION_NOISE, max_attempts: int | None = None,
            backend: str = "robosuite", batch_size: int = 256, style: str = styles.DEFAULT_STYLE) -> str:
  """Writes ``num_demos`` successful expert demos of ``task`` to ``out`` (robomimic HDF5).

  Args:
    task: a task of ``ebt_jax.tasks`` with a scripted expert (``tasks.COLLECTABLE``: lift, can, square).
    num_demos: successful demos to keep.
    out: output path.
    seed: collection seed (robosuite: attempt k resets with seed * 1e6 + k; MJX: episode k resets
      from ``fold_in(PRNGKey(seed), k)``).
    horizon: max control steps per attempt (default: the task's robomimic horizon, 400 for all three).
    action_noise: std of the DART perturbation of executed position actions (``collect_episode``).
    max_attempts: give up after this many episodes (default 2 * num_demos).
    backend: ``robosuite`` (one episode at a time) or ``mjx`` (``batch_size`` episodes per jitted call;
      ``ebt_jax.collect_mjx``).
    batch_size: MJX episodes per call (CPU: keep <= 256).
    style: operator behaviour, a name of ``styles.STYLES`` (non-default styles: robosuite only).

  Raises:
    ConfigError: unknown task (or one without an expert), backend or style, a task or style the MJX
      backend does not implement,
      ``num_demos`` < 1, negative ``action_noise``, or ``out`` not writable: all checked before the
      first episode.
    RuntimeError: fewer than ``num_demos`` successes within ``max_attempts``.
  """
  problems = []
  if task not in tasks.COLLECTABLE:
    why = " (it has no scripted expert: train on your own file)" if task in tasks.TASKS else ""
    problems.append(f"task={task!r}{why}: must be one of {sorted(tasks.COLLECTABLE)}")
  if backend not in BACKENDS:
    problems.append(f"backend={backend!r}: must be one of {BACKENDS}")
  if style not in styles.STYLES:
    problems.append(f"style={style!r}: must be one of {sorted(styles.STYLES)}")
  elif backend in BACKENDS and (problem := style_backend_problem(style, backend, task)):
    problems.append(f"backend={backend!r}: {problem}; use backend='robosuite'")
  if num_demos < 1:
    problems.append(f"num_demos={num_demos}: must be an integer >= 1")
  if action_noise < 0:
    problems.append(f"action_noise={action_noise}: must be a number >= 0")
  out_problem = paths.output_file_problem(out)
  if out_problem:
    problems.append(f"out={out!r}: {out_problem}")
  if problems:
    raise ConfigError("cannot collect demos: " + "; ".join(problems))
  spec = tasks.get_task(task)
  horizon = spec.horizon if horizon is None else horizon
  env_args = spec.env_args(horizon)
  if backend == "mjx":
    from ebt_jax import collect_mjx  # pylint: disable=g-import-not-at-top
    demos, stats = collect_mjx.collect_demos(num_demos, seed, horizon, action_noise, batch_size, max_attempts)
    write_demos(out, demos, env_args, train_valid_masks(num_demos))
    logging.info("wrote %d MJX %s demos (%.0f%% of %d episodes succeeded, %.1f +- %.1f steps) to %s in %.1f s",
                 num_demos, task, 100 * stats["success_rate"], stats["attempts"],
                 np.mean([len(d.actions) for d in demos]), np.std([len(d.actions) for d in demos]), out,
                 stats["wall_time_s"])
    return out
  env = robosuite_env.make_env(env_args)
  expert = styles.StyledOperator(spec.expert, style)
  max_attempts = max_attempts or 2 * num_demos
  demos, attempt = [], 0
  with progress.bar(num_demos, f"collect {task}", "demo") as bar:  # a terminal only
    while len(demos) < num_demos:
      if attempt >= max_attempts:
        raise RuntimeError(f"only {len(demos)} of {num_demos} {task} demos succeeded in {attempt} attempts")
      demo = collect_episode(env, expert, seed * SEED_STRIDE + attempt, horizon, action_noise)
      attempt += 1
      if demo is not None:
        demos.append(demo)
      progress.advance(bar, len(demos), episodes=attempt, success=f"{len(demos) / attempt:.0%}")
  write_demos(out, demos, env_args, train_valid_masks(num_demos))
  lengths = [len(d.actions) for d in demos]
  logging.info("wrote %d %s %s demos (%d/%d attempts succeeded, %.1f +- %.1f steps) to %s", num_demos, style,
               task, num_demos, attempt, np.mean(lengths), np.std(lengths), out)
  return out


def default_cache_dir() -> str:
  """``$EBT_JAX_CACHE`` or ``~/.cache/ebt_jax``: where built-in datasets are collected once."""
  return os.environ.get("EBT_JAX_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "ebt_jax"))


def cached_dataset(task: str, num_demos: int, seed: int, action_noise: float, cache_dir: str = "",
                   backend: str = "robosuite", style: str = styles.DEFAULT_STYLE) -> str:
  """Path of the built-in dataset in the cache, collecting it first (with ``backend``) if it is not there yet.

  The file name holds every setting the file depends on (``<task>_<style>[_mjx]_n<N>_seed<S>_noise<X>.hdf5``).
  Concurrent callers (processes or threads) collect it once (``paths.make_once``: ``<file>.lock``).
  """
  tag = "" if backend == "robosuite" else f"_{backend}"
  name = f"{task}_{style}{tag}_n{num_demos}_seed{seed}_noise{action_noise:g}.hdf5"
  path = os.path.join(cache_dir or default_cache_dir(), name)

  def make():
    logging.info("no dataset given (config.data.path): collecting %d scripted %s demos into %s",
                 num_demos, task, path)
    collect(task, num_demos, path, seed, action_noise=action_noise, backend=backend, style=style)

  # Jobs started together (two seeds, EBT beside DP) collect the file once (paths.make_once's lock).
  return paths.make_once(path, make)


def main(argv):
  del argv  # cli.run refuses positional arguments
  f = flags.FLAGS
  collect(f.task, f.num_demos, f.out, f.seed, f.horizon, f.action_noise, backend=f.backend, batch_size=f.batch_size,
          style=f.style)


def define_flags() -> None:
  """The CLI's flags, with absl bounds and validators: every bad value is reported (together) at parse
  time, before the first episode. Defined on demand, not at import, so that ebt_jax.main can import
  this module."""
  flags.DEFINE_enum("task", "lift", sorted(tasks.COLLECTABLE), "Task to collect (ebt_jax/tasks/).")
  flags.DEFINE_integer("num_demos", 200, "Successful demos to keep.")
  flags.DEFINE_string("out", None, "Output .hdf5 path (its directory is created; must be writable).", required=True)
  flags.DEFINE_integer("seed", 0, "Collection seed (attempt k uses seed * 1e6 + k).")
  flags.DEFINE_integer("horizon", None, "Max env steps per attempt (20 Hz); default: the task's robomimic horizon.")
  flags.DEFINE_float("action_noise", DEFAULT_ACTION_NOISE, "DART noise std on executed position actions.")
  flags.DEFINE_enum("backend", "robosuite", list(BACKENDS), "Simulator: robosuite (serial) or MJX (batched).")
  flags.DEFINE_integer("batch_size", 256, "MJX episodes per jitted call.")
  flags.DEFINE_enum("style", styles.DEFAULT_STYLE, sorted(styles.STYLES),
                    "Operator behaviour (ebt_jax/tasks/styles.py); robosuite backend only.")
  for name, low in (("num_demos", 1), ("seed", 0), ("horizon", 1), ("action_noise", 0), ("batch_size", 1)):
    cli.at_least(name, low)
  cli.output_file("out")


def console_main() -> None:
  """The `ebt-collect` console script (pyproject.toml): the same as `python -m ebt_jax.collect`."""
  define_flags()
  cli.run(main)


if __name__ == "__main__":
  console_main()
