"""The device mesh and how arrays are laid out on it.

segjax's train step is one `jax.jit` over global arrays with `NamedSharding`s
(the modern pjit). The mesh comes from `config.mesh`, a tuple of
(axis name, size) pairs, one size -1 (all remaining devices):

  (('data', -1),)                  pure data parallelism (the default)
  (('data', -1), ('fsdp', 4))      ... and parameters / optimizer state split
                                   FSDP-style over 4 devices
  (('data', -1), ('spatial', 2))   ... and every image's rows split over 2
                                   devices (large images)

The batch is split along its first axis over 'data' and 'fsdp' together (an
FSDP group still sees different examples); with 'spatial', image and label
maps are also split along their height, and XLA's SPMD partitioner inserts
the halo exchanges convolutions need. The state is replicated, except for
leaves of at least `fsdp_min_size` elements when the mesh has 'fsdp': those
are split along their largest dimension that 'fsdp' divides (and gathered
by XLA where a layer needs them whole). Gradient reductions are XLA's too;
batch norm sees the global batch; the same program runs on 1 CPU, 8 GPUs or
a multi-host TPU slice.
"""

import math

import jax
from jax.experimental import mesh_utils
from jax.sharding import AxisType
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

from segjax.errors import ConfigError

DATA_AXIS = 'data'
FSDP_AXIS = 'fsdp'
SPATIAL_AXIS = 'spatial'
_AXES = (DATA_AXIS, FSDP_AXIS, SPATIAL_AXIS)


def _auto(names):
  # Automatic axis types: XLA's partitioner propagates the shardings that
  # jit's in/out shardings give. (Newer JAX defaults `make_mesh` to
  # explicit sharding, which would ask every op for its output sharding.)
  return (AxisType.Auto,) * len(names)


def make_mesh(devices=None):
  """A 1-D mesh with axis 'data' over `devices` (default: all devices)."""
  devices = jax.devices() if devices is None else list(devices)
  return jax.make_mesh((len(devices),), (DATA_AXIS,),
                       axis_types=_auto((DATA_AXIS,)), devices=devices)


def _check_axes(axes, field='config.mesh'):
  axes = [(str(name), int(size)) for name, size in axes]
  names = [name for name, _ in axes]
  if set(names) - set(_AXES) or len(set(names)) != len(names):
    raise ConfigError(f'{field}={axes}: axes must be distinct and come '
                      f'from {_AXES}.')
  return axes


def _granule(device):
  """What groups devices on the fast network: the TPU slice, else the
  process (`mesh_utils.create_hybrid_device_mesh`'s fallback)."""
  return getattr(device, 'slice_index', None)


def device_grid(axes, devices, dcn_axes=None):
  """The devices arranged as the mesh `axes` over `devices`.

  Args:
    axes: (name, size) pairs, the whole mesh; one size may be -1.
    devices: a flat list of devices.
    dcn_axes: (name, n) pairs: axis `name` spans n slices (multi-slice TPU:
      n data-centre-network hops), the rest of its size lies within a slice
      (ICI). Axes not named stay within a slice. None: one slice.

  Returns:
    (names, grid): the axis names and an object array of `devices` of the
    mesh's shape. With `dcn_axes`, devices of one slice (else of one
    process) form contiguous blocks along the DCN axes.
  """
  names = [name for name, _ in axes]
  known = math.prod(size for _, size in axes if size != -1)
  sizes = [len(devices) // known if size == -1 else size
           for _, size in axes]
  if math.prod(sizes) != len(devices) or sum(s == -1 for _, s in axes) > 1:
    raise ConfigError(f'config.mesh={axes} does not fit the {len(devices)} '
                      'devices (at most one size may be -1).')
  dcn = dict(_check_axes(dcn_axes or (), 'config.mesh_dcn'))
  if set(dcn) - set(names):
    raise ConfigError(f'config.mesh_dcn={dcn_axes} names axes that '
                      f'config.mesh={axes} lacks.')
  dcn_shape = [dcn.get(name, 1) for name in names]
  if math.prod(dcn_shape) == 1:
    return names, np.asarray(devices).reshape(sizes)
  if any(size % n for size, n in zip(sizes, dcn_shape)):
    raise ConfigError(f'config.mesh_dcn={dcn_axes} does not divide the '
                      f'mesh {dict(zip(names, sizes))}.')
  ici_shape = [size // n for size, n in zip(sizes, dcn_shape)]
  grid = mesh_utils.create_hybrid_device_mesh(
      ici_shape, dcn_shape, devices,
      process_is_granule=_granule(devices[0]) is None)
  return names, grid


def mesh_from_config(axes=None, devices=None, dcn_axes=None):
  """The mesh `config.mesh` (and `config.mesh_dcn`) describe.

  `axes` None: all devices on 'data'. Built with `jax.make_mesh`
  (topology-aware device order on TPUs) for one slice, or
  `mesh_utils.create_hybrid_device_mesh` with `dcn_axes`; axis types
  automatic.

  Raises:
    ConfigError: unknown axis names, or sizes that do not multiply to the
      device count.
  """
  devices = jax.devices() if devices is None else list(devices)
  if not axes:
    return make_mesh(devices)
  axes = _check_axes(axes)
  if DATA_AXIS not in [name for name, _ in axes]:
    raise ConfigError(f'config.mesh={axes}: axes must be distinct, include '
                      f'{DATA_AXIS!r} and come from {_AXES}.')
  names, grid = device_grid(axes, devices, dcn_axes)
  if dcn_axes:
    return Mesh(grid, tuple(names), axis_types=_auto(names))
  return jax.make_mesh(grid.shape, tuple(names), axis_types=_auto(names),
                       devices=devices)


def _batch_axes(mesh):
  axes = tuple(a for a in (DATA_AXIS, FSDP_AXIS) if a in mesh.axis_names)
  return axes if len(axes) > 1 else axes[0]


def batch_sharding(mesh, ndim=1):
  """Sharding of a batch leaf of rank `ndim`: rows over the batch axes and,
  for maps ([B, H, W(, C)]) on a mesh with 'spatial', height over it."""
  if ndim >= 3 and SPATIAL_AXIS in mesh.axis_names:
    return NamedSharding(mesh, P(_batch_axes(mesh), SPATIAL_AXIS))
  return NamedSharding(mesh, P(_batch_axes(mesh)))


def replicated(mesh):
  return NamedSharding(mesh, P())


def state_sharding(leaf, mesh, fsdp_min_size=2**14):
  """Sharding of one state leaf (see the module docstring)."""
  if FSDP_AXIS not in mesh.axis_names or leaf.size < fsdp_min_size:
    return replicated(mesh)
  n = mesh.shape[FSDP_AXIS]
  for dim in sorted(range(leaf.ndim), key=lambda d: -leaf.shape[d]):
    if leaf.shape[dim] % n == 0:
      spec = [None] * leaf.ndim
      spec[dim] = FSDP_AXIS
      return NamedSharding(mesh, P(*spec))
  return replicated(mesh)


def to_global_array(local_batch, mesh):
  """Turns this process's part of a batch into global `jax.Array`s.

  Args:
    local_batch: dict of NumPy arrays [b_local, ...], this process's rows
      (whole images: a 'spatial' axis must lie within each process).
    mesh: the mesh; the global batch is b_local * process_count.

  Returns:
    The same dict of global jax.Arrays, sharded as `batch_sharding`.
  """
  def put(x):
    shape = (x.shape[0] * jax.process_count(),) + x.shape[1:]
    return jax.make_array_from_process_local_data(
        batch_sharding(mesh, x.ndim), x, shape)
  return jax.tree.map(put, local_batch)


def abstract_batch(local_spec, mesh):
  """`jax.ShapeDtypeStruct`s of the global batch, for ahead-of-time compiles.

  Args:
    local_spec: dict of (shape, dtype) of one local batch.
    mesh: the mesh.
  """
  return {
      k: jax.ShapeDtypeStruct((shape[0] * jax.process_count(),) + shape[1:],
                              dtype, sharding=batch_sharding(mesh,
                                                             len(shape)))
      for k, (shape, dtype) in local_spec.items()
  }
