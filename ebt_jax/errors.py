"""User errors: something wrong with what the user gave (config, dataset, checkpoint, work directory).

Every entry point (``ebt_jax.cli.run``) prints a ``UserError`` as one paragraph on stderr and exits with
status 2, without a Python traceback (``--verbose`` shows it). Any other exception is a bug in ebt-jax
and keeps its traceback. Each message names the file / field / key at fault and what would be valid.

This module imports nothing from ebt_jax, so every layer may raise these.
"""

from __future__ import annotations


class UserError(Exception):
  """A problem with the user's input, not with ebt-jax: printed without a traceback by ``ebt_jax.cli``."""


class ConfigError(UserError, ValueError):
  """Config fields or command-line flags outside their valid range or set (all problems in one message)."""


class DatasetError(UserError, ValueError):
  """A dataset is missing, malformed or inconsistent. The message names the file, the demo and the key."""


class CheckpointError(UserError, ValueError):
  """No checkpoint of a run can be restored, or one belongs to a run of another model / data."""


class DivergedError(UserError, FloatingPointError):
  """Training produced non-finite losses or gradients for too many steps in a row (the message names the
  step, the settings to change and the metrics file); the last checkpoint before it is kept."""


class WorkdirError(UserError, RuntimeError):
  """A run directory cannot be used: not writable, held by another run (its lock names the pid), or
  missing a file a tool reads (e.g. ``eval.json`` for ``ebt_jax.compare``)."""
