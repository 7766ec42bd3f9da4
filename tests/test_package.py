"""pyproject.toml: the package's dependencies are the requirements files' pins, and every console script
names a function that exists (a typo there only shows when a user runs the script)."""

import importlib
import os
import tomllib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pyproject() -> dict:
  with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
    return tomllib.load(f)


def test_console_scripts_name_existing_functions():
  scripts = _pyproject()["project"]["scripts"]
  assert {"ebt-train", "ebt-collect"} <= set(scripts)
  for name, target in scripts.items():
    module, func = target.split(":")
    assert callable(getattr(importlib.import_module(module), func)), (name, target)


def test_dependencies_come_from_the_requirements_files_and_robosuite_stays_out():
  dynamic = _pyproject()["tool"]["setuptools"]["dynamic"]
  files = [dynamic["dependencies"]["file"]] + [v["file"] for v in dynamic["optional-dependencies"].values()]
  for names in files:
    for name in names:
      assert os.path.exists(os.path.join(REPO, name)), name
  assert dynamic["dependencies"]["file"] == ["requirements.txt"]
  with open(os.path.join(REPO, "requirements.txt")) as f:
    pins = [l.split("#")[0].strip() for l in f if l.split("#")[0].strip()]
  # robosuite's mink==0.0.5 pin needs numpy<2 (jax needs >=2): installed with --no-deps, never a dependency.
  assert not any(p.lower().startswith("robosuite") for p in pins)
  assert all(not p.startswith("-") for p in pins), "setuptools' file: directive takes no pip options"
