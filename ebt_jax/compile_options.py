"""XLA compile options that ebt-jax passes to particular jitted functions, chosen by measurement.

Process-wide XLA flags are set in ``ebt_jax/__init__.py`` (MJX on CPU needs the fusion emitters off).
Per-function options go through ``jax.jit(..., compiler_options=...)``, so one process can compile its
policy decisions one way and its training step or MJX rollout another.

``decision()``: for a policy decision on the CPU backend, YNNPACK fuses only single dot products
(``LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT``) instead of the default fusions of dots with the elementwise and
reduction ops around them. On the 2-core development CPU (jax 0.10.2) the default fused the backward
pass of the energy model's RMSNorms into slow YNNPACK reductions: an EBT mcmc-2 decision at batch 256
took 107 ms with the defaults and 63 ms with this option, while Diffusion Policy's DDPM-100 decision was
unchanged (1160-1210 ms; ``python -m ebt_jax.benchmarks.latency``, README "Decision latency"). The
training step is compiled with the defaults: there the option made EBT's step 1.7x slower.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from absl import logging

# The one option, keyed by the XLA DebugOptions field it sets.
CPU_DECISION_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}


@functools.lru_cache(maxsize=None)
def _supported(backend: str, items: tuple[tuple[str, str], ...]) -> bool:
  """Whether this jaxlib compiles a trivial function with these options (they are experimental)."""
  try:
    jax.jit(lambda x: x @ x, compiler_options=dict(items)).lower(jnp.ones((2, 2), jnp.float32)).compile()
    return True
  except Exception as e:  # noqa: BLE001 - an unknown option or value is reported in many ways
    logging.warning("compile options %s are not supported by jaxlib %s on %s (%s); using XLA's defaults",
                    dict(items), jax.__version__, backend, str(e).splitlines()[0][:200])
    return False


def decision() -> dict[str, str] | None:
  """``compiler_options`` for ``jax.jit`` of a policy decision: ``CPU_DECISION_OPTIONS`` on the CPU
  backend when this jaxlib accepts them, else None (XLA's defaults; always on GPU / TPU)."""
  backend = jax.default_backend()
  if backend != "cpu" or not _supported(backend, tuple(sorted(CPU_DECISION_OPTIONS.items()))):
    return None
  return dict(CPU_DECISION_OPTIONS)


def jit_decision(fn, **kwargs):
  """``jax.jit(fn, compiler_options=decision(), **kwargs)``: how every policy decision is compiled."""
  return jax.jit(fn, compiler_options=decision(), **kwargs)
