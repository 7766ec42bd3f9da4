"""ebt-jax: EBT-Policy (Energy-Based Transformer policies) in JAX/Flax, with MJX and robosuite evaluation."""

import os as _os

# XLA's CPU fusion emitters make MJX physics ~200x slower (mujoco#2957, jax#33761); the flag only affects
# CPU and must be set before JAX starts its backend, so it is set when the package is imported.
_CPU_FLAG = "--xla_cpu_use_fusion_emitters=false"
if "xla_cpu_use_fusion_emitters" not in _os.environ.get("XLA_FLAGS", ""):
  _os.environ["XLA_FLAGS"] = f"{_os.environ.get('XLA_FLAGS', '')} {_CPU_FLAG}".strip()
