"""What every benchmark reports about the machine it ran on."""

from __future__ import annotations

import os
import platform

import jax


def device_description() -> dict:
  """{platform, device_kind, num_devices, host_cpus, host, jax} of the default JAX backend."""
  d = jax.devices()[0]
  return {"platform": d.platform, "device_kind": d.device_kind, "num_devices": jax.device_count(),
          "host_cpus": os.cpu_count(), "host": platform.processor() or platform.machine(),
          "jax": jax.__version__}
