r"""Report: bytes per device of the train state (params + EMA params + AdamW state) under FSDP meshes.

  python -m ebt_jax.benchmarks.sharding_memory --out=/tmp/sharding_memory.json
  python -m ebt_jax.benchmarks.sharding_memory --variants=paper --wide_factor=10 --num_devices=8,256

For each model (each ``--variants`` entry of ``--config_file``, plus ``paper`` with ``model.width`` x
``--wide_factor``, the transformer width every block's kernels scale with) and each device count N of
``--num_devices``, the meshes (N, 1) (pure data parallelism), (N/2, 2) and (1, N) (FSDP over every device):
bytes one device holds of ``params``, ``ema_params`` and ``opt_state``, and their total.

Nothing is allocated and no devices are needed: the state's shapes come from ``jax.eval_shape`` of the
trainer's init, the layout from the trainer's rule (``training.sharding.fsdp_sharding``, threshold
``train.fsdp_min_size`` or ``--min_size``) on a device-free ``jax.sharding.AbstractMesh``, and the bytes from
each leaf's shard shape (``sharding.bytes_per_device``). Not counted: gradients, activations and XLA's
temporaries of the train step (gradients are reduce-scattered to the same layout under FSDP; activations
scale with the per-device batch, the same for every mesh of N devices). Prints a table and writes ``--out``.
"""

from __future__ import annotations

import jax
from absl import flags

from ebt_jax import cli, jsonio, policies
from ebt_jax.benchmarks import step_timing
from ebt_jax.benchmarks.common import device_description
from ebt_jax.errors import ConfigError
from ebt_jax.training import sharding
from ebt_jax.training.train_step import init_train_state, make_optimizer

PARTS = ("params", "ema_params", "opt_state")


def meshes(n: int) -> list[tuple[int, int]]:
  """(N, 1), (N/2, 2), (1, N) for an even device count ``n``.

  Raises:
    ConfigError: if ``n`` is odd or < 2.
  """
  if n < 2 or n % 2:
    raise ConfigError(f"--num_devices={n}: must be an even device count >= 2 (meshes (N, 1), (N/2, 2), (1, N))")
  return [(n, 1), (n // 2, 2), (1, n)]


def abstract_train_state(config, obs_dim: int = step_timing.OBS_DIM, action_dim: int = step_timing.ACTION_DIM):
  """The ``TrainState`` of ``config``'s policy as ``jax.ShapeDtypeStruct``s (``jax.eval_shape``: nothing
  allocated); obs / action widths of Lift low-dim by default."""
  model = policies.make(config, obs_dim, action_dim)
  tx = make_optimizer(config.train)
  return jax.eval_shape(lambda r: init_train_state(model, tx, r), jax.random.PRNGKey(0))


def state_memory(state, mesh_shape: tuple[int, int], min_size: int) -> dict:
  """Bytes per device of each part of ``state`` (ShapeDtypeStructs) on a device-free ``mesh_shape`` (data,
  fsdp) mesh under the FSDP rule: -> {"mesh": [data, fsdp], "params": ..., "ema_params": ..., "opt_state":
  ..., "total": ...} (bytes)."""
  laid_out = sharding.with_shardings(state, sharding.fsdp_sharding(state, sharding.abstract_mesh(mesh_shape),
                                                                   min_size))
  row = {"mesh": list(mesh_shape)}
  for part in PARTS:
    row[part] = sharding.bytes_per_device(getattr(laid_out, part))
  row["total"] = sum(row[p] for p in PARTS)
  return row


def model_report(name: str, config, device_counts: list[int], min_size: int) -> dict:
  """One model's rows: its parameter count, full (replicated) state bytes and ``state_memory`` per mesh."""
  state = abstract_train_state(config)
  full = state_memory(state, (1, 1), min_size)
  num_params = int(sum(x.size for x in jax.tree.leaves(state.params)))
  rows = []
  for n in device_counts:
    for shape in meshes(n):
      row = state_memory(state, shape, min_size)
      row.update(num_devices=n, fraction_of_replicated=row["total"] / full["total"])
      rows.append(row)
  m = config.model
  return {"model": name, "width": m.width, "num_layers": m.num_layers, "num_heads": m.num_heads,
          "policy": config.get("policy", "ebt"), "image_keys": list(config.data.get("image_keys", ())),
          "num_params": num_params, "replicated_bytes": full["total"], "min_size": min_size, "rows": rows}


def main(argv):
  del argv  # cli.run refuses positional arguments
  f = flags.FLAGS
  device_counts = [int(n) for n in f.num_devices]
  for n in device_counts:
    meshes(n)  # refuses odd counts before any model is built
  models = [(v, step_timing.load_config(f.config_file, v)) for v in f.variants]
  if f.wide_factor:
    wide = step_timing.load_config(f.config_file, "paper")
    wide.model.width *= f.wide_factor
    models.append((f"paper_width_x{f.wide_factor}", wide))
  reports = []
  for name, config in models:
    min_size = f.min_size or config.train.get("fsdp_min_size", sharding.MIN_SHARD_SIZE)
    reports.append(model_report(name, config, device_counts, min_size))
  mib = lambda b: b / 2**20
  print("\nTrain state bytes per device (params + EMA params + AdamW mu/nu; jax.eval_shape + the FSDP rule, "
        "nothing allocated)")
  print(f"{'model':<18} {'params':>11} {'N':>4} {'mesh':>10} {'params MiB':>11} {'ema MiB':>9} {'opt MiB':>9} "
        f"{'total MiB':>10} {'vs (N,1)':>8}")
  for r in reports:
    for row in r["rows"]:
      mesh = f"({row['mesh'][0]},{row['mesh'][1]})"
      print(f"{r['model']:<18} {r['num_params']:>11,} {row['num_devices']:>4} {mesh:>10} {mib(row['params']):>11.2f} "
            f"{mib(row['ema_params']):>9.2f} {mib(row['opt_state']):>9.2f} {mib(row['total']):>10.2f} "
            f"{row['fraction_of_replicated']:>8.3f}")
  if f.out:
    jsonio.write(f.out, {"device": device_description(), "config": f.config_file, "models": reports})


if __name__ == "__main__":
  # Flags are defined here, not at import, so that tests can import this module beside other CLIs (--out).
  flags.DEFINE_string("config_file", "configs/lift.py", "Config file whose get_config(variant) builds each model.")
  flags.DEFINE_list("variants", ["paper", "paper_image"], "Config variants to report.")
  flags.DEFINE_integer("wide_factor", 10, "Also report the 'paper' variant with model.width times this (0: not).")
  flags.DEFINE_list("num_devices", ["8", "256"], "Device counts N (even): meshes (N,1), (N/2,2), (1,N).")
  flags.DEFINE_integer("min_size", 0, "Leaves with fewer elements stay replicated (0: the config's "
                       "train.fsdp_min_size).")
  flags.DEFINE_string("out", "", "Write the results as JSON here.")
  cli.ints_at_least("num_devices", 2)
  cli.at_least("wide_factor", 0)
  cli.at_least("min_size", 0)
  cli.existing_path("config_file")
  cli.output_file("out")
  cli.run(main)
