"""How arrays are laid out over devices: a (data, fsdp) mesh, the batch split, FSDP parameter sharding.

``train.mesh = (data, fsdp)`` names the sizes of a 2-D device mesh with axes ``"data"`` and ``"fsdp"``
(one entry may be -1: all remaining devices). Its product is every device of every host:

  * the batch is split over both axes (``batch_sharding``: ``PartitionSpec(("data", "fsdp"))``), so every
    device sees ``train.batch_size / num_devices`` samples whatever the mesh shape;
  * the train state (params, ema_params and the optax state, whose mu / nu mirror the params) is
    sharded over ``"fsdp"`` and replicated over ``"data"`` (``fsdp_sharding``): each leaf of at least
    ``min_size`` elements is split along its largest axis divisible by the fsdp size, every other leaf
    (scalars such as the step and optax's counts, biases, norm scales) is replicated. jit's SPMD
    partitioner then all-gathers a parameter where it is used and reduce-scatters its gradient.

``(-1, 1)`` (the default) is pure data parallelism: the whole state on every device, as before this
module. ``(1, N)`` stores 1/N of every large leaf per device. The same arithmetic in any mesh shape, so a
train step and a checkpoint agree across shapes to float tolerance (the order of the reductions differs).

Arrays are born in their layout: ``abstract_state`` runs ``jax.eval_shape`` on the init and attaches the
shardings, the trainer jits the init with ``out_shardings`` from it and restores checkpoints into it
(orbax reads each array into the sharding of its ``ShapeDtypeStruct``, whatever mesh it was saved from).
``abstract_mesh`` gives the same layout for device counts this machine does not have (memory reports).

Design after big_vision's ``fsdp`` rule and openpi's ``fsdp_sharding`` (largest divisible axis, small
leaves replicated); here the threshold counts elements, and ties between equal axes go to the last one.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import jax
import numpy as np
from jax.sharding import AbstractMesh, AxisType, Mesh, NamedSharding, PartitionSpec

from ebt_jax.errors import ConfigError

DATA_AXIS, FSDP_AXIS = "data", "fsdp"
AXES = (DATA_AXIS, FSDP_AXIS)
DEFAULT_MESH = (-1, 1)  # pure data parallelism over every device
# Leaves with fewer elements stay replicated (256 KiB in float32; the paper model's 256 x 256 kernels are
# sharded, its biases and norm scales are not): gathering a tiny leaf costs a collective and saves nothing.
MIN_SHARD_SIZE = 2**16

AnyMesh = Mesh | AbstractMesh


def mesh_shape_problem(shape: Any, num_devices: int | None = None) -> str | None:
  """What is wrong with ``shape`` as ``train.mesh`` (None if nothing), as "must be ..." text.

  Args:
    shape: the ``(data, fsdp)`` sizes: two ints, each >= 1 or -1 (all remaining devices), at most one -1.
    num_devices: the devices the mesh must cover; None checks only the form.
  """
  form = ("must be two sizes (data, fsdp), each an integer >= 1 or -1 (all remaining devices), at most one -1, "
          "e.g. (-1, 1) for pure data parallelism or (1, -1) for FSDP over every device")
  if (not isinstance(shape, (list, tuple)) or len(shape) != 2
      or not all(isinstance(s, int) and not isinstance(s, bool) and (s >= 1 or s == -1) for s in shape)
      or list(shape).count(-1) > 1):
    return form
  if num_devices is None:
    return None
  known = math.prod(s for s in shape if s != -1)
  if -1 in shape:
    if num_devices % known:
      return (f"must divide the {num_devices} devices: {known} does not (the -1 entry takes the remaining "
              "devices)")
    return None
  if known != num_devices:
    return (f"must cover every device: data x fsdp = {shape[0]} x {shape[1]} = {known}, but there are "
            f"{num_devices} devices (use -1 in one entry for all remaining devices)")
  return None


def resolve_mesh_shape(shape: Sequence[int], num_devices: int) -> tuple[int, int]:
  """``train.mesh`` with its -1 filled in: -> (data, fsdp), data * fsdp == num_devices.

  Raises:
    ConfigError: if ``shape`` is not two sizes >= 1 / -1 (at most one -1), or they do not multiply to
      (or, with a -1, divide) ``num_devices``.
  """
  problem = mesh_shape_problem(shape, num_devices)
  if problem:
    raise ConfigError(f"train.mesh={tuple(shape) if isinstance(shape, (list, tuple)) else shape!r}: {problem}")
  known = math.prod(s for s in shape if s != -1)
  data, fsdp = (num_devices // known if s == -1 else s for s in shape)
  return data, fsdp


def make_mesh(shape: Sequence[int] = DEFAULT_MESH, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """The (data, fsdp) mesh of ``train.mesh`` over ``devices`` (default: every device of every host).

  Built with ``jax.make_mesh`` (it orders the devices for the physical topology; on GPU hosts in process
  order, so the last axis, fsdp, stays within a host when it is at most the host's devices) with
  ``AxisType.Auto`` axes, so that
  ``jax.jit``'s in/out shardings place arrays and the compiler partitions the computation as with a
  plain ``Mesh`` (jax 0.10's ``make_mesh`` defaults to explicit axes).

  Raises:
    ConfigError: as ``resolve_mesh_shape``.
  """
  devices = list(jax.devices() if devices is None else devices)
  sizes = resolve_mesh_shape(shape, len(devices))
  return jax.make_mesh(sizes, AXES, axis_types=(AxisType.Auto,) * len(AXES), devices=devices)


def abstract_mesh(shape: Sequence[int]) -> AbstractMesh:
  """A device-free (data, fsdp) mesh of any size (no -1): for shard shapes of device counts this machine
  does not have (``NamedSharding(abstract_mesh((128, 2)), spec).shard_shape(shape)``).

  Raises:
    ConfigError: if ``shape`` is not two sizes >= 1.
  """
  if mesh_shape_problem(shape) or -1 in shape:
    raise ConfigError(f"abstract mesh {shape!r}: must be two sizes (data, fsdp) >= 1")
  return AbstractMesh(tuple(shape), AXES, axis_types=(AxisType.Auto,) * len(AXES))


def replicated(mesh: AnyMesh) -> NamedSharding:
  """Every device holds the whole array."""
  return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: AnyMesh) -> NamedSharding:
  """Arrays [B, ...] split along B over every axis of ``mesh`` (``("data", "fsdp")``; a 1-D mesh: its
  axis), the other axes whole: each device holds B / mesh.size samples."""
  return NamedSharding(mesh, PartitionSpec(tuple(mesh.axis_names)))


def fsdp_size(mesh: AnyMesh) -> int:
  """Devices along the fsdp axis (1 for a mesh without one, e.g. a 1-D data-parallel mesh)."""
  return int(dict(mesh.shape).get(FSDP_AXIS, 1))


def fsdp_spec(shape: Sequence[int], fsdp: int, min_size: int = MIN_SHARD_SIZE) -> PartitionSpec:
  """The FSDP rule for one array of ``shape``: ``PartitionSpec`` with ``"fsdp"`` on its largest axis
  divisible by ``fsdp`` (ties: the last such axis, e.g. a square [in, out] kernel splits its outputs),
  if the array has at least ``min_size`` elements; otherwise (or with ``fsdp`` 1, or no divisible
  axis) ``PartitionSpec()``: replicated.

  Examples (fsdp=4, min_size=1): [64, 256] -> P(None, "fsdp"); [256, 4, 64] -> P("fsdp", None, None);
  [5] -> P(); [6, 10] -> P().
  """
  shape = tuple(int(s) for s in shape)
  if fsdp <= 1 or not shape or math.prod(shape) < min_size:
    return PartitionSpec()
  divisible = [i for i, s in enumerate(shape) if s % fsdp == 0]
  if not divisible:
    return PartitionSpec()
  axis = max(divisible, key=lambda i: (shape[i], i))
  return PartitionSpec(*(FSDP_AXIS if i == axis else None for i in range(len(shape))))


def fsdp_sharding(tree: Any, mesh: AnyMesh, min_size: int = MIN_SHARD_SIZE) -> Any:
  """The ``NamedSharding`` of every leaf of ``tree`` (arrays or ``jax.ShapeDtypeStruct``; a TrainState,
  params, an optax state) under the FSDP rule (``fsdp_spec``) on ``mesh``'s fsdp axis, replicated over
  the other axes; a leaf without a shape is replicated. -> a pytree of the same structure.

  With fsdp size 1 every leaf is ``replicated(mesh)``: pure data parallelism.
  """
  fsdp = fsdp_size(mesh)

  def leaf(x):
    return NamedSharding(mesh, fsdp_spec(np.shape(x), fsdp, min_size) if hasattr(x, "shape") else PartitionSpec())

  return jax.tree.map(leaf, tree)


def with_shardings(abstract: Any, shardings: Any) -> Any:
  """``jax.ShapeDtypeStruct(shape, dtype, sharding=...)`` per leaf of two pytrees of the same structure
  (shapes/dtypes from ``abstract``: arrays or ShapeDtypeStructs)."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract, shardings)


def abstract_state(init: Callable[..., Any], mesh: AnyMesh, *args, min_size: int = MIN_SHARD_SIZE) -> Any:
  """``jax.eval_shape(init, *args)`` (no allocation) with each leaf's FSDP sharding on ``mesh``: a pytree
  of ``jax.ShapeDtypeStruct(shape, dtype, sharding=NamedSharding)``. Its ``shardings_of`` are the
  ``out_shardings`` for ``jax.jit(init)`` (parameters born sharded) and the train step's state
  shardings; the tree itself is what ``checkpoint.restore_latest`` restores into."""
  shapes = jax.eval_shape(init, *args)
  return with_shardings(shapes, fsdp_sharding(shapes, mesh, min_size))


def shardings_of(tree: Any) -> Any:
  """The ``.sharding`` of every leaf (jax.Array or ShapeDtypeStruct with one)."""
  return jax.tree.map(lambda x: x.sharding, tree)


def bytes_per_device(tree: Any) -> int:
  """Bytes one device holds of ``tree`` (ShapeDtypeStructs or arrays with a ``NamedSharding``, possibly
  on an ``AbstractMesh``): the sum over leaves of shard shape x item size. Arithmetic only."""
  total = 0
  for x in jax.tree.leaves(tree):
    shard = x.sharding.shard_shape(tuple(x.shape))
    total += math.prod(shard) * np.dtype(x.dtype).itemsize
  return total
