"""Command-line entry points: absl flag parsing, and user errors printed without a traceback.

Every ``python -m ebt_jax.<tool>`` ends with ``cli.run(main)`` instead of ``absl.app.run(main)``:

* a ``ebt_jax.errors.UserError`` raised by ``main`` (config, dataset, checkpoint, work directory) is
  printed as ``<tool>: error: <message>`` on stderr and the process exits with status 2
  (``EXIT_USER_ERROR``), without a Python traceback;
* a bad command line (unknown or malformed flag, a value outside its flag's bounds, a
  ``--config.<field>`` override the config does not have or of the wrong type, a config file that cannot
  be loaded, a positional argument: every tool takes flags only) is printed the same way, before anything
  runs;
* ``--verbose`` shows the traceback of these instead;
* any other exception is a bug in ebt-jax and keeps its traceback (absl's handler).
"""

from __future__ import annotations

import ast
import os
import re
import sys
import traceback
from typing import Callable, NoReturn, Sequence

from absl import app, flags

from ebt_jax import paths
from ebt_jax.errors import UserError

EXIT_USER_ERROR = 2
_VERBOSE = flags.DEFINE_bool("verbose", False, "Show the Python traceback of user errors (config, dataset, "
                             "checkpoint, work directory) instead of one paragraph.")
_VERBOSE_SPELLINGS = ("--verbose", "--verbose=true", "--verbose=True", "--verbose=1")


def program_name(main: Callable | None = None) -> str:
  """``ebt_jax.main`` for ``python -m ebt_jax.main`` (the module run), else the script name."""
  spec = getattr(sys.modules.get("__main__"), "__spec__", None)
  if spec is not None and spec.name:
    return spec.name
  module = getattr(main, "__module__", "") if main is not None else ""
  return module if module and module != "__main__" else os.path.basename(sys.argv[0] or "ebt_jax")


def fail(message: str, main: Callable | None = None) -> NoReturn:
  """Prints ``<program>: error: <message>`` on stderr and exits with ``EXIT_USER_ERROR`` (2)."""
  sys.stdout.flush()
  sys.stderr.write(f"{program_name(main)}: error: {message.rstrip()}\n"
                   f"(exit status {EXIT_USER_ERROR}; --verbose shows the Python traceback)\n")
  sys.stderr.flush()
  sys.exit(EXIT_USER_ERROR)


def _without_traceback(message: str) -> str:
  """Replaces an embedded ``Traceback (most recent call last):`` block by its final exception line(s),
  as ml_collections embeds the traceback of a config file that failed to load."""
  lines = message.splitlines()
  for i, line in enumerate(lines):
    if "Traceback (most recent call last):" in line:
      indent = len(line) - len(line.lstrip())
      tail = [l.strip() for l in lines[i + 1:] if l.strip() and len(l) - len(l.lstrip()) <= indent]
      head = " ".join(l.strip() for l in lines[:i] if l.strip())
      return " ".join([head, *tail])
  return message


def _unwrap(message: str) -> str:
  """ml_collections re-wraps KeyError text in AttributeError: undo the repr quoting it adds."""
  for _ in range(3):
    if len(message) >= 2 and message[0] == message[-1] and message[0] in "'\"":
      try:
        message = ast.literal_eval(message)
        continue
      except (ValueError, SyntaxError):
        pass
    break
  return message


def _raised_by_config_override(error: BaseException) -> bool:
  """True if ``error`` came out of ml_collections applying a ``--config.<field>=`` override."""
  marker = os.path.join("ml_collections", "config_flags")
  return any(marker in frame.filename for frame in traceback.extract_tb(error.__traceback__))


def override_error_message(error: BaseException, argv: Sequence[str]) -> str:
  """A one-paragraph message for an override ml_collections refused, naming the override(s) involved.

  For an unknown field (``--config.train.num_step=5``): ``--config.train.num_step=5: the config has no
  field 'num_step' there; did you mean 'num_steps'?``.
  """
  text = _unwrap(str(error))
  first, _, rest = text.partition("\n")
  key = _unwrap(first.strip())
  overrides = [a for a in argv[1:] if re.match(r"--\w+\.", a)]
  if isinstance(error, (AttributeError, KeyError)):
    named = [a for a in overrides if key in a.split("=", 1)[0].split(".")]
    suggestion = re.search(r'Did you mean "([^"]+)"', rest)
    hint = f"; did you mean '{suggestion.group(1)}'?" if suggestion else (
        "; the config file lists every field (e.g. configs/lift.py)")
    return f"{', '.join(named) or 'a --config override'}: the config has no field '{key}' there{hint}"
  return f"{', '.join(overrides) or 'the --config overrides'}: {type(error).__name__}: {text}"


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with command-line errors as one paragraph (``fail``) unless --verbose."""
  verbose = any(a in _VERBOSE_SPELLINGS for a in argv[1:])
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    if verbose:
      raise
    lines = [l.strip() for l in _without_traceback(str(e)).splitlines() if l.strip()]
    if len(lines) > 1:  # absl joins the messages of every failed validator
      fail("\n".join([f"{len(lines)} invalid flags (--helpshort lists the flags):", *(f"  - {l}" for l in lines)]))
    fail(f"{lines[0] if lines else e} (--helpshort lists the flags)")
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    if verbose or not _raised_by_config_override(e):
      raise
    fail(override_error_message(e, argv))


def at_least(name: str, low: float, flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """absl validator: ``--<name>`` must be >= ``low``. Validators (unlike a flag's ``lower_bound``, which
  stops at the first bad flag) are all run after parsing, so every bad flag is reported together."""
  flags.register_validator(name, lambda v: v is None or v >= low, message=f"must be >= {low}",
                           flag_values=flag_values)


def ints_at_least(name: str, low: int, flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """absl validator: the list flag ``--<name>`` holds integers, each >= ``low`` (e.g. ``--batch_sizes=1,256``)."""
  def check(values):
    bad = [v for v in values or () if not str(v).lstrip("-").isdigit() or int(v) < low]
    if bad:
      raise flags.ValidationError(f"{bad} must be integers >= {low}")
    return True
  flags.register_validator(name, check, flag_values=flag_values)


def _path_validator(name: str, problem_of: Callable[[str], str | None], flag_values: flags.FlagValues) -> None:
  def check(value):
    problem = problem_of(value) if value else None  # an empty optional path is not checked
    if problem:
      raise flags.ValidationError(problem)
    return True
  flags.register_validator(name, check, flag_values=flag_values)


def output_file(name: str, flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """absl validator: ``--<name>`` (if given) is a file path that can be written (``paths.output_file_problem``)."""
  _path_validator(name, paths.output_file_problem, flag_values)


def output_dir(name: str, flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """absl validator: ``--<name>`` (if given) is a directory that exists or can be created, and written."""
  _path_validator(name, paths.directory_problem, flag_values)


def existing_path(name: str, flag_values: flags.FlagValues = flags.FLAGS, uri: bool = False) -> None:
  """absl validator: ``--<name>`` (if given; a list flag: each entry) exists; with ``uri``, an entry may
  also be an object-store URI (``gs://bucket/runs/lift``), looked up through ``paths.missing_problem``."""
  def problem(value):
    values = [value] if isinstance(value, str) else value
    remote = {v: paths.missing_problem(v) for v in values if uri and not paths.is_local(v)}
    missing = [v for v in values if v not in remote and not os.path.exists(v)]
    reasons = [f"{v}: {why}" for v, why in remote.items() if why]
    return "; ".join(([f"no such file or directory: {', '.join(missing)}"] if missing else []) + reasons) or None
  _path_validator(name, problem, flag_values)


def guarded(main: Callable[[list[str]], object]) -> Callable[[list[str]], object]:
  """``main`` with positional arguments refused and ``UserError`` turned into ``fail`` (one paragraph, exit 2)
  unless ``--verbose``."""

  def wrapped(argv):
    if len(argv) > 1:
      fail(f"unexpected arguments {argv[1:]}: every option is a --flag (--helpshort lists them)", main)
    try:
      return main(argv)
    except UserError as e:
      if _VERBOSE.value:
        raise
      fail(str(e), main)

  wrapped.__name__ = getattr(main, "__name__", "main")
  wrapped.__module__ = getattr(main, "__module__", __name__)
  return wrapped


class QuietLibraries:
  """absl log filter (``logging.get_absl_handler().addFilter(QuietLibraries())``): drops the INFO lines of
  ``libraries`` (default orbax: several per checkpoint saved or restored; robosuite: its resets), keeps
  their warnings and everything else."""

  def __init__(self, libraries: Sequence[str] = ("orbax", "robosuite")):
    self.libraries = tuple(libraries)

  def filter(self, record) -> bool:
    from absl import logging  # pylint: disable=g-import-not-at-top
    noisy = any(f"{os.sep}{lib}{os.sep}" in record.pathname for lib in self.libraries)
    return record.levelno > logging.converter.ABSL_TO_STANDARD[logging.INFO] or not noisy


def run(main: Callable[[list[str]], object]) -> None:
  """``absl.app.run(main)`` with user errors as one paragraph and exit status 2 (module docstring)."""
  app.run(guarded(main), flags_parser=_parse_flags)
