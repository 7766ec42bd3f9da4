"""Policy heads on the shared backbone: ``config.policy`` = "ebt" (EBT-Policy) or "diffusion" (the
Diffusion Policy baseline). See ``base.PolicyModel`` for what each provides."""

from __future__ import annotations

from ebt_jax.policies.base import PolicyModel, Sample, parse_inference, sort_labels
from ebt_jax.policies.diffusion import DiffusionPolicyModel
from ebt_jax.policies.ebt import EBTPolicyModel

POLICIES = {"ebt": EBTPolicyModel, "diffusion": DiffusionPolicyModel}


def make(config, obs_dim: int, action_dim: int) -> PolicyModel:
  """The policy model ``config.policy`` names (default "ebt", for configs saved before the switch existed).

  Raises:
    ValueError: if ``config.policy`` is not a key of ``POLICIES``.
  """
  name = config.get("policy", "ebt")
  if name not in POLICIES:
    raise ValueError(f"config.policy={name!r}: use one of {sorted(POLICIES)}")
  return POLICIES[name].from_config(config, obs_dim, action_dim)
