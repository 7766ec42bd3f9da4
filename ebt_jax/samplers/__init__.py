"""Samplers: EBT-Policy's Alg. 1 (training chain) and Alg. 2 (dynamic inference), and the Diffusion Policy
baseline's DDPM / DDIM (``ebt_jax.samplers.diffusion``), as pure functions."""

from ebt_jax.samplers.inference import InferenceResult, minimize_energy
from ebt_jax.samplers.mcmc import SamplerConfig, langevin_sigma, mcmc_step, rms_normalize
from ebt_jax.samplers.training import ChainOutput, training_chain
