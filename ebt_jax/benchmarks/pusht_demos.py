r"""The human demos' own Push-T scores: replay every episode of a replay buffer in gym-pusht.

  python -m ebt_jax.benchmarks.pusht_demos --data=<dir>/pusht_cchi_v7_replay.zarr [--out=demos.json]

Each episode starts from its recorded first state (``pusht.set_state``) and executes its recorded
actions. Prints, over all episodes: the max coverage (mean, quantiles), the protocol's success rate
(max coverage >= 0.95), Diffusion Policy's mean score, and how far the replayed agent / block drift
from the recorded states (px), i.e. how exactly gym-pusht reproduces the env the data came from.
This is the reference a policy trained on these demos is compared with; the other end is
``protocol_seeds_initial_coverage_mean``: the coverage at reset of the protocol's seeds, which is what a
policy that never moves the block scores.
"""

from __future__ import annotations

import time

import numpy as np
from absl import flags

from ebt_jax import cli, jsonio
from ebt_jax.data import zarr_replay
from ebt_jax.envs import pusht

def define_flags():
  """Defines this benchmark's flags (called under ``__main__`` only, so that importing the module beside
  other command-line modules, as the test suite does, defines nothing)."""
  global _DATA, _OUT, _SEED, _EPISODES
  _DATA = flags.DEFINE_string("data", None, "Diffusion-Policy Push-T replay buffer (.zarr directory).", required=True)
  _OUT = flags.DEFINE_string("out", "", "Optional JSON file for the per-episode numbers.")
  _SEED = flags.DEFINE_integer("seed", 100_000, "First protocol seed, for the do-nothing baseline.")
  _EPISODES = flags.DEFINE_integer("num_episodes", 50, "Protocol episodes, for the do-nothing baseline.")
  cli.existing_path("data")
  cli.output_file("out")
  cli.at_least("seed", 0)
  cli.at_least("num_episodes", 1)


def initial_coverage(seeds) -> np.ndarray:
  """Goal coverage at reset for each seed: the max coverage of a policy that never moves the block."""
  env = pusht.make_env()
  out = []
  for seed in seeds:
    env.reset(seed=int(seed))
    out.append(env.unwrapped._get_coverage())  # pylint: disable=protected-access
  return np.array(out)


def replay(state: np.ndarray, action: np.ndarray, ends: np.ndarray) -> list[dict]:
  """Replays each episode; -> per episode {max_coverage, final_coverage, max_drift_px, length}."""
  env = pusht.make_env(max_env_steps=int(np.diff(ends, prepend=0).max()) + 1)
  env.reset(seed=0)
  out = []
  for start, end in zip(np.concatenate([[0], ends[:-1]]), ends):
    pusht.set_state(env, state[start])
    coverage, drift = [], 0.0
    for t in range(start, end):
      u = env.unwrapped
      drift = max(drift, float(np.abs(np.array([*u.agent.position, *u.block.position]) - state[t, :4]).max()))
      _, _, _, _, info = env.step(action[t].astype(np.float64))
      coverage.append(float(info["coverage"]))
    out.append({"length": int(end - start), "max_coverage": max(coverage), "final_coverage": coverage[-1],
                "max_drift_px": drift})
    env.reset(seed=0)
  return out


def main(argv):
  del argv  # cli.run refuses positional arguments
  arrays = zarr_replay.read_replay_buffer(_DATA.value, ("state",))
  state = np.concatenate([e.obs for e in arrays.episodes]).astype(np.float64)
  action = np.concatenate([e.actions for e in arrays.episodes]).astype(np.float64)
  ends = zarr_replay.episode_ends(_DATA.value)
  t0 = time.time()
  episodes = replay(state, action, ends)
  cov = np.array([e["max_coverage"] for e in episodes])
  drift = np.array([e["max_drift_px"] for e in episodes])
  summary = {
      "num_episodes": len(episodes), "env_steps": int(ends[-1]), "wall_time_s": time.time() - t0,
      "mean_max_coverage": float(cov.mean()), "max_coverage_quantiles_10_50_90": np.quantile(cov, [0.1, 0.5, 0.9]).tolist(),
      "success_rate": float((cov >= pusht.SUCCESS_COVERAGE).mean()),
      "mean_max_score": float(np.clip(cov / pusht.SUCCESS_COVERAGE, 0, 1).mean()),
      "episodes_drifting_over_1px": int((drift > 1.0).sum()), "median_max_drift_px": float(np.median(drift)),
      "protocol_seeds_initial_coverage_mean": float(initial_coverage(range(_SEED.value, _SEED.value + _EPISODES.value)).mean()),
  }
  print(jsonio.dumps(summary, indent=1))
  if _OUT.value:
    jsonio.write(_OUT.value, {"summary": summary, "episodes": episodes})


if __name__ == "__main__":
  define_flags()
  cli.run(main)
