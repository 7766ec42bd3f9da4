"""What every benchmark reports about the machine it ran on."""

from __future__ import annotations

import os
import platform

import jax

from ebt_jax.data.normalization import MinMax, Normalizer


def device_description() -> dict:
  """{platform, device_kind, num_devices, host_cpus, host, jax} of the default JAX backend."""
  d = jax.devices()[0]
  return {"platform": d.platform, "device_kind": d.device_kind, "num_devices": jax.device_count(),
          "host_cpus": os.cpu_count(), "host": platform.processor() or platform.machine(),
          "jax": jax.__version__}


def unit_normalizer(obs_dim: int, action_dim: int) -> Normalizer:
  """The identity normaliser on [-1, 1] (one obs key "obs" of width ``obs_dim``, ``action_dim`` actions)
  for benchmarks that feed already-normalised random inputs."""
  return Normalizer(obs=MinMax.identity(obs_dim), actions=MinMax.identity(action_dim), obs_keys=("obs",), obs_key_dims=(obs_dim,))
