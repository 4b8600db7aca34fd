"""Multi-host start-up: one process per host, JAX's multi-controller runtime.

Every process runs the same command; `jax.distributed.initialize` connects
them, after which `jax.devices()` lists the devices of all hosts, one global
`Mesh` spans them, each process feeds its rows of every global batch
(`segjax.data.pipeline`) and process 0 alone writes logs and images, while
all processes take part in checkpointing (Orbax coordinates them).

Where the coordinator comes from, first match wins:
  * flags `--coordinator_address host:port --num_processes N --process_id i`
    (any cluster, or several processes on one machine, as the tests do);
  * JAX's own cluster detection (`jax._src.clusters`: Cloud TPU VM slices
    through the metadata server, GKE TPU pods, SLURM, Open MPI, Kubernetes
    with the `kubernetes` package) when it finds an environment of more than
    one process; `jax.distributed.initialize()` then reads the coordinator,
    size and rank from that environment;
  * otherwise nothing: a single process.

Initialising also starts JAX's coordination service, which the training
loop relies on to stop all processes at one step
(`multihost_utils.reached_preemption_sync_point`, see `preemption_service`).
"""


from absl import logging
import jax


def detected_cluster():
  """The cluster environment JAX's auto-detection finds here, or None.

  The same search `jax.distributed.initialize()` makes without arguments
  (opt-in methods such as mpi4py excluded).
  """
  from jax._src import clusters  # pylint: disable=g-import-not-at-top
  for env in clusters.ClusterEnv._cluster_types:  # pylint: disable=protected-access
    if env.opt_in_only_method:
      continue
    try:
      if env.is_env_present():
        return env
    except Exception as e:  # pylint: disable=broad-except
      # E.g. a metadata server that does not answer: not this environment.
      logging.info('Cluster detection %s failed: %s', env.__name__, e)
  return None


def _process_count(env):
  try:
    return int(env.get_process_count())
  except Exception as e:  # pylint: disable=broad-except
    logging.warning('%s detected but its process count is unreadable (%s); '
                    'running as a single process.', env.__name__, e)
    return 1


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
    args = (coordinator_address, int(num_processes), int(process_id))
  else:
    env = detected_cluster()
    if env is None or _process_count(env) <= 1:
      return False
    logging.info('Multi-process environment detected: %s.', env.__name__)
    args = ()
  # XLA:CPU needs a collectives implementation across processes; gloo ships
  # with jaxlib. Other platforms bring their own and ignore this setting.
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(*args)
  logging.info('Process %d of %d; %d local of %d devices.',
               jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())
  return True


def preemption_service():
  """True if JAX's preemption service runs in this process.

  It does after `jax.distributed.initialize` (unless
  `jax_enable_preemption_service` is off): its own SIGTERM listener then
  tells every process, and `reached_preemption_sync_point(step)` turns true
  at one step agreed by all. A Python SIGTERM handler installed after it
  would replace that listener, so the training loop installs none then.
  """
  from jax._src import distributed  # pylint: disable=g-import-not-at-top
  return distributed.global_state.preemption_sync_manager is not None


def wait_for_all(name, timeout_s=1800):
  """Returns once every process has called `wait_for_all(name)`.

  A barrier of JAX's coordination service, not a device collective. Call it
  before the first collective: CPU collectives (Gloo) give up when a peer
  is more than 30 s late, and processes finish compiling at different times
  (one reads the step from the compile cache, another compiles it). A no-op
  in a single process.
  """
  if jax.process_count() == 1:
    return
  from jax._src import distributed  # pylint: disable=g-import-not-at-top
  distributed.global_state.client.wait_at_barrier(
      f'segjax: {name}', timeout_in_ms=int(timeout_s * 1000))
