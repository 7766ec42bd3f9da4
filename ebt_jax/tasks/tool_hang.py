"""robomimic ToolHang (robosuite ``ToolHang``): insert the frame into the stand, then hang the tool on the frame.

Success (robosuite ``_check_success``): the frame assembled (the stand within 10 deg of upright, the
frame's tip within 0.05 m of the stand's base, its hook between the stand's walls) and the tool hanging
on it on its own (no gripper contact, the tool's hole around the hook, 5-100 % along it).
Observation ``object`` [44] (robosuite 1.5 order): for base, frame and tool each its position and
quaternion in the eef frame and in the world (3 + 4 + 3 + 4 = 14 each), then
``frame_is_assembled`` [1] and ``tool_on_frame`` [1]. robomimic evaluates ToolHang for 700 steps.

There is no scripted expert: train on a user's ``tool_hang/ph/low_dim_v15.hdf5``
(``configs/tool_hang.py``); evaluation rebuilds this env from the file's ``env_args``.
"""

from __future__ import annotations

from ebt_jax.tasks.task import Task

TASK = Task(name="tool_hang", env_name="ToolHang", horizon=700, object_dim=44)
