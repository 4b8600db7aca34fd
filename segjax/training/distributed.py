"""Multi-host start-up: one process per host, JAX's multi-controller runtime.

Every process runs the same command; `jax.distributed.initialize` connects
them, after which `jax.devices()` lists the devices of all hosts, one global
`Mesh` spans them, each process feeds its rows of every global batch
(`segjax.data.pipeline`) and process 0 alone writes logs and images, while
all processes take part in checkpointing (Orbax coordinates them).

Where the coordinator comes from:
  * flags `--coordinator_address host:port --num_processes N --process_id i`
    (any cluster, or several processes on one machine, as the tests do);
  * otherwise the platform: Cloud TPU VMs and SLURM jobs with more than one
    task, which `jax.distributed.initialize()` detects by itself;
  * otherwise nothing: a single process.
"""

import os

from absl import logging
import jax


def _platform_provides_coordinator():
  if os.environ.get('TPU_WORKER_HOSTNAMES', '').count(',') >= 1:
    return True  # A multi-host Cloud TPU VM slice.
  return int(os.environ.get('SLURM_NTASKS', '1') or 1) > 1


def initialize(coordinator_address=None, num_processes=None, process_id=None):
  """Connects this process to the others, if there are others.

  Must run before anything else touches JAX's backends.

  Args:
    coordinator_address: 'host:port' of process 0, or None.
    num_processes, process_id: this job's size and this process's rank
      (required with `coordinator_address`).

  Returns:
    True if JAX now runs multi-process.
  """
  if coordinator_address:
    if num_processes is None or process_id is None:
      raise ValueError('--coordinator_address needs --num_processes and '
                       '--process_id.')
    # XLA:CPU needs a collectives implementation across processes; gloo
    # ships with jaxlib. Other platforms bring their own.
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(coordinator_address, int(num_processes),
                               int(process_id))
  elif _platform_provides_coordinator():
    jax.distributed.initialize()
  else:
    return False
  logging.info('Process %d of %d; %d local of %d devices.',
               jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())
  return True
