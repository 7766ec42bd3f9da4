"""robomimic tasks, each with its robosuite env, rollout horizon, ``object`` width, scripted expert and
success test together (``TASKS``: lift, can, square, tool_hang)."""

from __future__ import annotations

from ebt_jax.tasks import can, lift, square, tool_hang
from ebt_jax.tasks.task import Expert, NumpyExpert, Task

__all__ = ["COLLECTABLE", "TASKS", "Expert", "NumpyExpert", "Task", "get_task", "task_of_env"]

TASKS: dict[str, Task] = {t.name: t for t in (lift.TASK, can.TASK, square.TASK, tool_hang.TASK)}
COLLECTABLE = tuple(name for name, t in TASKS.items() if t.expert is not None)


def get_task(name: str) -> Task:
  """The task called ``name``. Raises ValueError naming the known tasks."""
  if name not in TASKS:
    raise ValueError(f"unknown task {name!r}: use one of {sorted(TASKS)}")
  return TASKS[name]


def task_of_env(env_name: str) -> Task | None:
  """The task whose robosuite env is ``env_name`` (a dataset's ``env_args["env_name"]``), or None."""
  return next((t for t in TASKS.values() if t.env_name == env_name), None)
