"""EBT-Policy on robomimic Square (``NutAssemblySquare``, low-dim): put the square nut onto the square peg.

  python -m ebt_jax.main --config=configs/square.py               # built-in scripted demos (collected once)
  python -m ebt_jax.main --config=configs/square.py:paper         # the paper's model and schedule
  python -m ebt_jax.main --config=configs/square.py --config.policy=diffusion   # Diffusion Policy baseline
  python -m ebt_jax.main --config=configs/square.py --config.data.path=square/ph/low_dim_v15.hdf5

Observation ``object`` is 14-D (nut pose in the eef frame and in the world; ebt_jax/tasks/square.py), so
the policy's obs is 23-D per step. Every field and variant is defined once in configs/robomimic.py.
"""

import ml_collections

from configs import robomimic


def get_config(variant: str = "cpu") -> ml_collections.ConfigDict:
  """``configs/robomimic.py``'s config for Square; ``variant`` one of ``robomimic.VARIANTS``."""
  return robomimic.get_config("square", variant)
