"""EBT-Policy on robomimic Can (``PickPlaceCan``, low-dim): pick the can from bin 1, place it in its bin-2 compartment.

  python -m ebt_jax.main --config=configs/can.py                  # built-in scripted demos (collected once)
  python -m ebt_jax.main --config=configs/can.py:paper            # the paper's model and schedule
  python -m ebt_jax.main --config=configs/can.py --config.policy=diffusion   # Diffusion Policy baseline
  python -m ebt_jax.main --config=configs/can.py --config.data.path=can/ph/low_dim_v15.hdf5

Observation ``object`` is 14-D (can pose in the eef frame and in the world; ebt_jax/tasks/can.py), so the
policy's obs is 23-D per step. Every field and variant is defined once in configs/robomimic.py.
"""

import ml_collections

from configs import robomimic


def get_config(variant: str = "cpu") -> ml_collections.ConfigDict:
  """``configs/robomimic.py``'s config for Can; ``variant`` one of ``robomimic.VARIANTS``."""
  return robomimic.get_config("can", variant)
