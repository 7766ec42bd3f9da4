"""robomimic tasks, each with its robosuite env, rollout horizon, ``object`` width, scripted expert and
success test together (``TASKS``: lift, can, square, tool_hang)."""

from __future__ import annotations

from ebt_jax.tasks import can, lift, square, tool_hang
from ebt_jax.tasks.task import Expert, NumpyExpert, Task

__all__ = ["BUILTIN", "COLLECTABLE", "TASKS", "builtin_dataset", "Expert", "NumpyExpert", "Task", "get_task", "task_of_env"]

TASKS: dict[str, Task] = {t.name: t for t in (lift.TASK, can.TASK, square.TASK, tool_hang.TASK)}
COLLECTABLE = tuple(name for name, t in TASKS.items() if t.expert is not None)
# config.data.builtin -> task: what an empty data.path means in a task's config (its scripted demos).
BUILTIN = {f"{name}_scripted": name for name in COLLECTABLE}


def builtin_dataset(name: str) -> str:
  """``config.data.builtin`` of task ``name``: ``<name>_scripted`` if it has a scripted expert, else ""."""
  return next((b for b, t in BUILTIN.items() if t == name), "")


def get_task(name: str) -> Task:
  """The task called ``name``. Raises ValueError naming the known tasks."""
  if name not in TASKS:
    raise ValueError(f"unknown task {name!r}: use one of {sorted(TASKS)}")
  return TASKS[name]


def task_of_env(env_name: str) -> Task | None:
  """The task whose robosuite env is ``env_name`` (a dataset's ``env_args["env_name"]``), or None."""
  return next((t for t in TASKS.values() if t.env_name == env_name), None)
