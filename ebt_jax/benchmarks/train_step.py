r"""Benchmark: what one training step of EBT-Policy and of the Diffusion Policy baseline costs.

  python -m ebt_jax.benchmarks.train_step --out=/tmp/train_step.json                     # CPU size
  python -m ebt_jax.benchmarks.train_step --sizes=cpu,paper --batch_sizes=64,256 --out=gpu.json
  python -m ebt_jax.benchmarks.train_step --variant=steps_2_3:sampler.train_steps=2,sampler.train_extra_steps=1

For every model size (``--sizes``: variants of ``--config``, e.g. ``cpu`` and ``paper`` of
configs/lift.py), batch size (``--batch_sizes``) and policy setting (Diffusion Policy, EBT with the
config's settings, and each ``--variant`` of EBT: a name and ``config`` overrides), it times the jitted
train step exactly as the trainer builds it (``trainer.jit_train_step``: the batch split over every
device of the default (-1, 1) mesh, state replicated): compile time (``lower().compile()``), then the median of
``--runs`` calls after ``--warmup``; train steps/s and samples/s follow. Random parameters and random normalised
batches (obs_dim 19, A = 7 as Lift low-dim): the step's cost does not depend on the data.

``--breakdown`` (default on) splits each policy's default step into where its time goes, each part a
jitted function of its own timed the same way:
  * host input: ``WindowDataset.batch`` on synthetic demos + the transfer to the devices;
  * loss forward: the policy's loss without any gradient to theta (EBT: the whole MCMC chain,
    energies and first-order dE/dy included; diffusion: one noise-prediction forward pass);
  * backward to theta: value_and_grad(loss) minus the loss forward (EBT: the second-order pass
    through every differentiated MCMC step);
  * optimiser + EMA: AdamW's update and the EMA of the parameters, given the gradients.

Memory: the compiled step's temporary buffers (``memory_analysis``, any backend) and, where the
backend reports it (GPU, TPU), the device's peak bytes in use. Prints a table and writes ``--out``.
"""

from __future__ import annotations

import jax
from absl import flags, logging

from ebt_jax import cli, jsonio, policies, validation
from ebt_jax.benchmarks import step_timing
from ebt_jax.benchmarks.common import device_description
from ebt_jax.errors import ConfigError
from ebt_jax.training import trainer

def define_flags():
  """Defines this benchmark's flags (called under ``__main__`` only, so that importing the module beside
  other command-line modules, as the test suite does, defines nothing)."""
  global _CONFIG, _SIZES, _BATCH_SIZES, _POLICIES, _VARIANTS, _RUNS, _WARMUP, _BREAKDOWN, _NUM_CPU_DEVICES, _OUT
  _CONFIG = flags.DEFINE_string("config", "configs/lift.py", "Config file whose get_config(size) builds each size.")
  _SIZES = flags.DEFINE_list("sizes", ["cpu"], "Config variants to time (configs/lift.py: cpu, paper).")
  _BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["64", "256"], "Global batch sizes.")
  _POLICIES = flags.DEFINE_list("policies", ["diffusion", "ebt"], "Policies to time with the config's settings.")
  _VARIANTS = flags.DEFINE_multi_string(
      "variant", ["no_remat:sampler.remat_train_steps=False", "truncated:sampler.truncate_chain=True",
                  "detach_step_scale:sampler.detach_step_scale=True",
                  "steps_2_3:sampler.train_steps=2,sampler.train_extra_steps=1"],
      "EBT variants, NAME:FIELD=VALUE[,FIELD=VALUE...] (config overrides; values as Python literals).")
  _RUNS = flags.DEFINE_integer("runs", 10, "Timed calls per setting (median reported).")
  _WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed calls after compilation.")
  _BREAKDOWN = flags.DEFINE_boolean("breakdown", True, "Also time host input, loss forward and backward parts.")
  _NUM_CPU_DEVICES = flags.DEFINE_integer("num_cpu_devices", 0, "CPU devices to split the host into "
                                          "(0: the config's train.num_cpu_devices); ignored on GPU / TPU.")
  _OUT = flags.DEFINE_string("out", "", "Write the results as JSON here.")
  cli.ints_at_least("batch_sizes", 1)
  cli.at_least("runs", 1)
  cli.at_least("warmup", 0)
  cli.at_least("num_cpu_devices", 0)
  cli.existing_path("config")
  cli.output_file("out")


def main(argv):
  del argv  # cli.run refuses positional arguments
  variants = [step_timing.parse_variant(v) for v in _VARIANTS.value]
  settings = []  # (size, name, config)
  for size in _SIZES.value:
    base = step_timing.load_config(_CONFIG.value, size)
    for policy in _POLICIES.value:
      settings.append((size, policy, step_timing.with_overrides(base, policy, {})))
    settings += [(size, f"ebt {name}", step_timing.with_overrides(base, "ebt", o)) for name, o in variants]
  problems = []
  for size, name, config in settings:
    problems += [f"{size} / {name}: {p}" for p in validation.config_problems(config, needs_data=False)]
  if problems:
    raise ConfigError(validation.format_problems(problems, "settings"))
  jax.config.update("jax_num_cpu_devices", _NUM_CPU_DEVICES.value or settings[0][2].train.num_cpu_devices)
  mesh = trainer.make_mesh()
  bad = [b for b in _BATCH_SIZES.value if int(b) % mesh.size]
  if bad:
    raise ConfigError(f"--batch_sizes={','.join(bad)}: must be multiples of the {mesh.size} devices")
  device = device_description()
  logging.info("device: %s", device)
  results = []
  for size, name, config in settings:
    for batch in (int(b) for b in _BATCH_SIZES.value):
      row = step_timing.time_setting(config, name, batch, mesh, _RUNS.value, _WARMUP.value,
                         _BREAKDOWN.value and name in policies.POLICIES)
      row["size"] = size
      results.append(row)
      logging.info("%s", row)
  print(f"\nTrain step on {device['platform']} ({device['device_kind']}, {device['num_devices']} devices, "
        f"{device['host_cpus']} host CPUs, jax {device['jax']}); median of {_RUNS.value} steps")
  print(f"{'size':<6} {'setting':<24} {'batch':>5} {'step ms':>9} {'steps/s':>8} {'samples/s':>10} {'compile s':>9} "
        f"{'temp MiB':>8}")
  for r in results:
    temp = f"{r['temp_bytes'] / 2**20:8.1f}" if "temp_bytes" in r else f"{'-':>8}"
    print(f"{r['size']:<6} {r['setting']:<24} {r['batch']:>5} {r['step_ms']:>9.1f} {r['steps_per_s']:>8.2f} "
          f"{r['samples_per_s']:>10.0f} {r['compile_s']:>9.1f} {temp}")
  for r in (r for r in results if "breakdown_ms" in r):
    parts = "  ".join(f"{k} {v:.1f}" for k, v in r["breakdown_ms"].items())
    print(f"breakdown ms, {r['size']} {r['setting']} batch {r['batch']}: {parts}")
  if _OUT.value:
    jsonio.write(_OUT.value, {"device": device, "config": _CONFIG.value, "results": results})


if __name__ == "__main__":
  define_flags()
  cli.run(main)
