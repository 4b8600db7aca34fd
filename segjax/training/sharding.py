"""The device mesh and how arrays are laid out on it.

segjax's train step is one `jax.jit` over global arrays with `NamedSharding`s
(the modern pjit): the batch is split along its first axis over the mesh's
'data' axis, and the state is replicated. XLA's SPMD partitioner inserts the
gradient all-reduce itself, batch norm sees the global batch, and the same
program runs on 1 CPU, 8 GPUs or a multi-host TPU slice.
"""

import jax
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

DATA_AXIS = 'data'


def make_mesh(devices=None):
  """A 1-D mesh with axis 'data' over `devices` (default: all devices)."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def batch_sharding(mesh):
  """Leading (batch) axis split over 'data'; the other axes whole."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh):
  return NamedSharding(mesh, P())


def to_global_array(local_batch, mesh):
  """Turns this process's part of a batch into global `jax.Array`s.

  Args:
    local_batch: dict of NumPy arrays [b_local, ...], this process's examples.
    mesh: the mesh; the global batch is b_local * process_count.

  Returns:
    The same dict of global jax.Arrays sharded along the batch axis.
  """
  sharding = batch_sharding(mesh)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, x),
      local_batch)


def abstract_batch(local_spec, mesh):
  """`jax.ShapeDtypeStruct`s of the global batch, for ahead-of-time compiles.

  Args:
    local_spec: dict of (shape, dtype) of one local batch.
    mesh: the mesh.
  """
  sharding = batch_sharding(mesh)
  return {
      k: jax.ShapeDtypeStruct((shape[0] * jax.process_count(),) + shape[1:],
                              dtype, sharding=sharding)
      for k, (shape, dtype) in local_spec.items()
  }
