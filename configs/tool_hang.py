"""EBT-Policy on robomimic ToolHang (low-dim) from the user's demonstrations (there is no scripted expert).

  python -m ebt_jax.main --config=configs/tool_hang.py --config.data.path=tool_hang/ph/low_dim_v15.hdf5
  python -m ebt_jax.main --config=configs/tool_hang.py:paper --config.data.path=...   # GPU-sized

Observation ``object`` is 44-D (base, frame and tool poses plus two assembly flags;
ebt_jax/tasks/tool_hang.py), so the policy's obs is 53-D per step; episodes are evaluated for 700 steps
(robomimic's horizon) in the env the file's ``env_args`` describe. Every field and variant is defined
once in configs/robomimic.py.
"""

import ml_collections

from configs import robomimic


def get_config(variant: str = "cpu") -> ml_collections.ConfigDict:
  """``configs/robomimic.py``'s config for ToolHang; ``variant`` one of ``robomimic.VARIANTS``."""
  return robomimic.get_config("tool_hang", variant)
