"""EBT-Policy on robomimic Lift (low-dim), trained and evaluated on one machine.

  python -m ebt_jax.main --config=configs/lift.py                 # CPU-sized default (~35 min on 2 cores)
  python -m ebt_jax.main --config=configs/lift.py:paper           # the paper's model and schedule
  python -m ebt_jax.main --config=configs/lift.py:truncated       # ~2x cheaper training, 6-step decisions
  python -m ebt_jax.main --config=configs/lift.py:authors         # every choice of the authors' code, CPU size
  python -m ebt_jax.main --config=configs/lift.py:paper_authors   # ... at the paper's size
  python -m ebt_jax.main --config=configs/lift.py --config.policy=diffusion   # Diffusion Policy baseline
  python -m ebt_jax.main --config=configs/lift.py --config.data.path=lift/ph/low_dim_v15.hdf5

Every field and variant is defined once for all robomimic tasks in configs/robomimic.py. Any field can be
overridden with ``--config.<path>=<value>``.
"""

import ml_collections

from configs import robomimic

VARIANTS = robomimic.VARIANTS
apply_authors = robomimic.apply_authors


def get_config(variant: str = "cpu") -> ml_collections.ConfigDict:
  """``configs/robomimic.py``'s config for Lift; ``variant`` one of ``VARIANTS`` (see ``robomimic.get_config``)."""
  return robomimic.get_config("lift", variant)
