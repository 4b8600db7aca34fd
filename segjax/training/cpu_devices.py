"""One XLA:CPU device per core on CPU machines: the cores stay busy.

XLA:CPU runs one device's program op by op, most ops on one thread, with
only independent ops overlapping: profiled on the 2-core CI machine, the
DeepLabV3+ ResNet-50 train step (batch 8, 256x256) kept its two threads
busy 70% of the step. Splitting the batch over 2 CPU devices of the
`data` mesh gives the runtime two independent halves to overlap: 4.55 s per
step instead of 5.08 (docs/performance.md), with the same loss, because
the train step's batch-norm statistics and gradients are reduced over the
whole mesh as on any multi-device run.

`configure(config)` sets `jax_num_cpu_devices` (it must run before JAX
starts its backends: `segjax.main` calls it first thing) from
`config.cpu_devices`: -1 (the default) picks the largest count up to the
number of cores that divides every per-step batch, N >= 1 takes N. It
leaves JAX alone when XLA_FLAGS already forces a device count (the tests
do), when the config sets its own mesh sizes, and in multi-process runs.
On machines with a GPU or TPU the setting only shapes the unused CPU
backend.
"""

import os

from absl import logging
import jax

_XLA_FLAG = '--xla_force_host_platform_device_count'


def auto_count(batch_sizes, cores=None):
  """The largest n <= cores dividing every batch size (at least 1)."""
  cores = cores or os.cpu_count() or 1
  return max(n for n in range(1, cores + 1)
             if all(b % n == 0 for b in batch_sizes))


def batch_sizes(config):
  """The per-step batch sizes a device count must divide."""
  accum = config.grad_accum_steps
  sizes = [config.batch_size, config.eval_batch_size or config.batch_size]
  if isinstance(accum, int) and accum > 0 and config.batch_size % accum == 0:
    sizes.append(config.batch_size // accum)
  return [s for s in sizes if isinstance(s, int) and s > 0]


def configure(config, *more):
  """Sets JAX's CPU device count from `config.cpu_devices`; returns it, or
  None where it left JAX's default (see the module docstring). `more`
  configs (a sweep's other points) add their batch sizes and meshes."""
  configs = (config,) + more
  requested = config.cpu_devices
  if not (isinstance(requested, int) and (requested == -1 or requested >= 1)):
    from segjax.errors import ConfigError  # pylint: disable=g-import-not-at-top
    raise ConfigError(f'config.cpu_devices={requested!r}: -1 (one per core '
                      'that divides the batch) or a positive int.')
  if _XLA_FLAG in os.environ.get('XLA_FLAGS', ''):
    return None
  if any(tuple(tuple(a) for a in c.mesh) != (
      ('data', -1),) for c in configs):
    return None
  if requested == -1:
    sizes = [size for c in configs for size in batch_sizes(c)]
    if not sizes:
      return None
    count = auto_count(sizes)
  else:
    count = requested
  try:
    jax.config.update('jax_num_cpu_devices', count)
  except RuntimeError:  # Backends already started (a notebook, say).
    logging.warning('config.cpu_devices: JAX already started; keeping its '
                    'CPU device count.')
    return None
  return count
