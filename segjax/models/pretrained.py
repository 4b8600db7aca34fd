"""Import torchvision / timm ResNet weights without a PyTorch dependency.

Checkpoints hold a PyTorch `state_dict` (key -> tensor) in one of three
formats, recognised by their content (the file name's suffix does not
matter):

  .safetensors  the `safetensors` package's format (read with its NumPy API);
  .npz          NumPy's archive of named arrays (`np.savez`);
  .pth / .pt    `torch.save`'s zip archive (PyTorch >= 1.6), e.g. the files
                torchvision downloads to ~/.cache/torch/hub/checkpoints/.

Nothing is downloaded: users bring the file. A `.pth` archive is read
without running its pickle: `_TorchUnpickler` rebuilds only what a
state_dict is made of (what `torch.load(weights_only=True)` allows for one):
`collections.OrderedDict`, tensors (`torch._utils._rebuild_tensor_v2`,
`_rebuild_parameter`) and their storages (`torch.FloatStorage` etc., raw
little- or big-endian bytes in `<archive>/data/<key>`, named by persistent
ids `('storage', storage_type, key, location, numel)`). Any other global in
the pickle stream is refused with an error naming it, before anything is
called; a tensor's offset, size and stride are checked against its storage
before it is read. The older non-zip `torch.save` format (a bare pickle)
and other pickles are refused; convert such a file with PyTorch once:

  python -c "import sys, torch, safetensors.torch as st; st.save_file({k: \
v.contiguous() for k, v in torch.load(sys.argv[1], weights_only=True)\
.items()}, sys.argv[2])" resnet34.pth resnet34.safetensors

Conversions: conv kernels OIHW -> HWIO; batch norm weight/bias -> scale/bias
in `params`, running_mean/var -> mean/var in `batch_stats`;
`num_batches_tracked` is dropped; a classifier (`fc.*`) has no place in a
backbone and is reported as unexpected. PyTorch's batch-norm momentum 0.1 is
Flax's 0.9 (the models' default); its symmetric padding is reproduced by the
models themselves (see `segjax/models/resnet.py`).
"""

import collections
import io
import pickle
import re
import zipfile

from etils import epath
import flax
import ml_dtypes
import numpy as np

SOURCES = ('torchvision', 'timm')

_EXPECTED = ('expected a .safetensors or .npz file or a PyTorch .pth zip '
             'archive (torch.save)')


def read_state_dict(path):
  """{key: NumPy array} from a .safetensors, .npz or torch.save .pth file.

  Arrays keep the file's dtype (float32 weights, int64
  `num_batches_tracked`, bfloat16 as `ml_dtypes.bfloat16`).

  Raises:
    FileNotFoundError: no such file.
    ValueError: naming the file and what it is, when it is not one of the
      three formats, is malformed, or (a .pth) its pickle names anything
      but tensors, storages and OrderedDict.
  """
  path = epath.Path(path)
  if not path.exists():
    raise FileNotFoundError(f'pretrained weights file {str(path)!r} does not '
                            'exist.')
  data = path.read_bytes()
  name = f'pretrained weights file {str(path)!r}'
  if not data:
    raise ValueError(f'{name} is empty; {_EXPECTED}.')
  if data.startswith(b'\x93NUMPY'):
    raise ValueError(
        f'{name} is a single NumPy array (.npy format), not named arrays: '
        'save the state_dict with np.savez(path, **state_dict).')
  if data.startswith((b'PK\x03\x04', b'PK\x05\x06')):
    try:
      archive = zipfile.ZipFile(io.BytesIO(data))
      names = archive.namelist()
    except zipfile.BadZipFile as e:
      raise ValueError(f'{name} is a damaged zip archive ({e}).') from e
    if any(re.fullmatch(r'[^/]+/data\.pkl', n) for n in names):
      tensors = _read_torch_zip(archive, name)
    elif names and all(n.endswith('.npy') for n in names):
      tensors = _read_npz(data, name)
    else:
      raise ValueError(f'{name} is a zip archive of neither .npz nor '
                       f'torch.save layout (entries {names[:4]}); '
                       f'{_EXPECTED}.')
  elif _is_safetensors(data):
    import safetensors.numpy  # pylint: disable=g-import-not-at-top
    try:
      tensors = safetensors.numpy.load(data)
    except safetensors.SafetensorError as e:
      raise ValueError(f'{name} is a damaged .safetensors file ({e}).') from e
  elif data[:1] == b'\x80':
    raise ValueError(
        f'{name} is a Python pickle (torch.save\'s format before PyTorch '
        '1.6, or pickle.dump), which is not read: unpickling can run any '
        'code. Re-save it with torch.save in PyTorch >= 1.6 or convert it '
        'to .safetensors (segjax/models/pretrained.py shows the command).')
  else:
    raise ValueError(f'{name} is not a weights file of a known format '
                     f'(starts with {data[:8]!r}); {_EXPECTED}.')
  return {k: np.asarray(v) for k, v in tensors.items()}


def _is_safetensors(data):
  """A little-endian u64 header length, then that many bytes of JSON."""
  if len(data) < 10:
    return False
  size = int.from_bytes(data[:8], 'little')
  return 8 + size <= len(data) and data[8:9] == b'{'


def _read_npz(data, name):
  try:
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
      return {k: npz[k] for k in npz.files}
  except ValueError as e:  # E.g. object arrays, which need pickle.
    raise ValueError(f'{name}: {e}') from e


# torch.save's storage classes -> their element type.
_STORAGE_DTYPES = {
    'DoubleStorage': np.float64, 'FloatStorage': np.float32,
    'HalfStorage': np.float16, 'BFloat16Storage': ml_dtypes.bfloat16,
    'LongStorage': np.int64, 'IntStorage': np.int32,
    'ShortStorage': np.int16, 'CharStorage': np.int8,
    'ByteStorage': np.uint8, 'BoolStorage': np.bool_,
}


class _Refused(pickle.UnpicklingError):
  """The pickle stream asks for something a state_dict does not need."""


class _Inert:
  """Objects the unpickler hands to the stream: BUILD on them is refused,
  so the stream cannot change one after it was checked."""

  __slots__ = ()

  def __setstate__(self, state):
    raise _Refused(f'its pickle sets the state of a {type(self).__name__[1:]}'
                   ', which a state_dict never does')


class _StorageType(_Inert):
  __slots__ = ('name', 'dtype')

  def __init__(self, name, dtype):
    self.name, self.dtype = name, dtype


class _Storage(_Inert):
  __slots__ = ('array',)  # 1-D, numel elements.

  def __init__(self, array):
    self.array = array


class _Tensor(_Inert):
  __slots__ = ('array',)

  def __init__(self, array):
    self.array = array


def _is_int(x):
  return isinstance(x, int) and not isinstance(x, bool)


def _rebuild_tensor(storage, offset, size, stride, *unused):
  """`torch._utils._rebuild_tensor_v2`: a (copied) strided view of storage.

  The trailing arguments (requires_grad, backward hooks, metadata) do not
  matter for weights.
  """
  del unused
  if not isinstance(storage, _Storage):
    raise _Refused('a tensor is rebuilt from something other than a storage')
  if not (_is_int(offset) and isinstance(size, tuple) and
          isinstance(stride, tuple) and len(size) == len(stride) and
          all(_is_int(v) and v >= 0 for v in (offset,) + size + stride)):
    raise _Refused(f'a tensor has a malformed offset / size / stride '
                   f'({offset!r}, {size!r}, {stride!r})')
  data = storage.array
  if any(n == 0 for n in size):
    return _Tensor(np.zeros(size, data.dtype))
  # The farthest element the view reads must lie inside the storage.
  last = offset + sum((n - 1) * s for n, s in zip(size, stride))
  if last >= data.size:
    raise _Refused(f'a tensor of size {size}, stride {stride} at offset '
                   f'{offset} reads past its storage of {data.size} elements')
  view = np.lib.stride_tricks.as_strided(
      data[offset:], shape=size,
      strides=tuple(s * data.itemsize for s in stride), writeable=False)
  return _Tensor(np.array(view))


def _rebuild_parameter(data, *unused):
  """`torch._utils._rebuild_parameter`: an nn.Parameter is its tensor."""
  del unused
  if not isinstance(data, _Tensor):
    raise _Refused('a parameter is rebuilt from something other than a '
                   'tensor')
  return data


class _TorchUnpickler(pickle.Unpickler):
  """Unpickles a torch.save state_dict and nothing else (see module doc)."""

  _GLOBALS = {
      ('collections', 'OrderedDict'): collections.OrderedDict,
      ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor,
      ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
  }

  def __init__(self, file, archive, prefix, byteorder):
    super().__init__(file)
    self._archive = archive
    self._prefix = prefix
    self._byteorder = byteorder
    self._storages = {}

  def find_class(self, module, name):
    # Every global of the stream (GLOBAL, STACK_GLOBAL, INST, OBJ and the
    # copyreg extension codes) is looked up here, so nothing else can be
    # imported or called.
    if (module, name) in self._GLOBALS:
      return self._GLOBALS[(module, name)]
    if module == 'torch' and name in _STORAGE_DTYPES:
      return _StorageType(name, _STORAGE_DTYPES[name])
    raise _Refused(f'its pickle names the global {module}.{name}, which a '
                   'state_dict never needs (only tensors, their storages '
                   'and OrderedDict are rebuilt); refused without running '
                   'it')

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and len(pid) == 5 and
            pid[0] == 'storage' and isinstance(pid[1], _StorageType) and
            isinstance(pid[2], str) and _is_int(pid[4]) and pid[4] >= 0):
      raise _Refused(f'its pickle refers to {pid!r}, which is not a tensor '
                     'storage')
    _, storage_type, key, _, numel = pid
    cache_key = (key, storage_type.name)
    if cache_key not in self._storages:
      entry = f'{self._prefix}/data/{key}'
      try:
        raw = self._archive.read(entry)
      except KeyError:
        raise _Refused(f'storage {key!r} is missing from the archive '
                       f'({entry})') from None
      dtype = np.dtype(storage_type.dtype)
      if len(raw) < numel * dtype.itemsize:
        raise _Refused(f'storage {key!r} holds {len(raw)} bytes, less than '
                       f'{numel} {storage_type.name} elements')
      # Byte-swapped as unsigned ints: ml_dtypes' bfloat16 has no
      # non-native byte order of its own.
      words = np.frombuffer(raw, f'{self._byteorder}u{dtype.itemsize}',
                            count=numel)
      self._storages[cache_key] = _Storage(
          words.astype(f'=u{dtype.itemsize}').view(dtype))
    return self._storages[cache_key]


def _read_torch_zip(archive, name):
  """{key: array} of a torch.save zip archive, without running its pickle."""
  pickles = [n for n in archive.namelist()
             if re.fullmatch(r'[^/]+/data\.pkl', n)]
  if len(pickles) != 1:
    raise ValueError(f'{name} holds {len(pickles)} pickles ({pickles}); a '
                     'torch.save archive holds one.')
  prefix = pickles[0].split('/')[0]
  try:
    byteorder = archive.read(f'{prefix}/byteorder').decode().strip()
  except KeyError:  # Archives from before PyTorch 1.12 were little-endian.
    byteorder = 'little'
  if byteorder not in ('little', 'big'):
    raise ValueError(f'{name}: unknown byte order {byteorder!r}.')
  unpickler = _TorchUnpickler(
      io.BytesIO(archive.read(pickles[0])), archive, prefix,
      '<' if byteorder == 'little' else '>')
  try:
    state = unpickler.load()
  except _Refused as e:
    raise ValueError(f'{name}: {e}.') from None
  except (pickle.UnpicklingError, EOFError, TypeError, ValueError, KeyError,
          IndexError, AttributeError) as e:
    # A damaged stream, or our allowed callables given the wrong arguments.
    raise ValueError(f'{name}: not a readable torch.save state_dict '
                     f'({type(e).__name__}: {e}).') from None
  if not isinstance(state, dict):
    raise ValueError(f'{name} holds a {type(state).__name__}, not a '
                     'state_dict (names -> tensors): save model.state_dict().')
  tensors = {}
  for key, value in state.items():
    if not isinstance(key, str) or not isinstance(value, _Tensor):
      raise ValueError(
          f'{name}: entry {key!r} holds a {type(value).__name__.lstrip("_")!r} '
          'value, not a tensor; save the state_dict itself (e.g. '
          'checkpoint["state_dict"]), not a dict around it.')
    tensors[key] = value.array
  return tensors


def _resnet_key_map(key, source, deep_stem):
  """PyTorch key -> (collection, module path tuple, leaf name) or None."""
  stem = {'conv1': ('conv1',), 'bn1': ('bn1',)}  # The 7x7 stem.
  if source == 'timm' and deep_stem:  # resnet*d: conv1 is a Sequential.
    stem = {'conv1.0': ('stem_conv1',), 'conv1.1': ('stem_bn1',),
            'conv1.3': ('stem_conv2',), 'conv1.4': ('stem_bn2',),
            'conv1.6': ('stem_conv3',), 'bn1': ('stem_bn3',)}
  module, _, leaf = key.rpartition('.')
  path = stem.get(module)
  m = re.fullmatch(r'layer(\d)\.(\d+)\.(.+)', module)
  if m:
    stage, block, rest = m.groups()
    block_name = f'layer{stage}_{block}'
    downsample = {'downsample.0': 'downsample_conv',
                  'downsample.1': 'downsample_bn'}
    if source == 'timm':  # avg_down: downsample.0 is the (parameter-free) pool.
      downsample.update({'downsample.1': None, 'downsample.2': None})
    if rest in downsample and downsample[rest] is None:
      # Decided by shape below: conv (4-D) or norm (1-D).
      path = (block_name, 'downsample_?')
    elif rest in downsample:
      path = (block_name, downsample[rest])
    elif re.fullmatch(r'(conv|bn)\d', rest):
      path = (block_name, rest)
  if path is None:
    return None
  if leaf == 'weight':
    return ('params', path, 'kernel_or_scale')
  if leaf == 'bias':
    return ('params', path, 'bias')
  if leaf == 'running_mean':
    return ('batch_stats', path, 'mean')
  if leaf == 'running_var':
    return ('batch_stats', path, 'var')
  return None


def _find_backbone(params):
  """The path of the ResNet inside `params` (root, or under 'backbone')."""
  if 'layer1_0' in params:
    return ()
  for name, sub in params.items():
    if isinstance(sub, dict) and 'layer1_0' in sub:
      return (name,)
  raise ValueError('load_pretrained: no ResNet backbone (a "layer1_0" '
                   'module) at the top level of the variables or one level '
                   'below; nothing to load into.')


def load_pretrained(variables, path, source='torchvision'):
  """Loads a torchvision or timm ResNet checkpoint into `variables`.

  Args:
    variables: {'params': ..., 'batch_stats': ...} of a ResNet backbone, or
      of a model that holds one as a direct submodule (e.g. 'backbone').
    path: .safetensors, .npz or torch.save .pth file of the PyTorch
      state_dict (see `read_state_dict`).
    source: 'torchvision' or 'timm' (whose resnet*d models use a deep stem
      and average-pool shortcuts).

  Returns:
    (variables, report): new variables with the backbone's arrays replaced,
    and a dict with 'loaded' (count), 'missing' (backbone leaves the file
    did not provide), 'unexpected' (file keys that map to nothing, e.g. the
    classifier) and 'shape_mismatch' (key, file shape, model shape).
  """
  if source not in SOURCES:
    raise ValueError(f'source must be one of {SOURCES}, got {source!r}.')
  state = read_state_dict(path)
  variables = flax.core.unfreeze(variables)
  prefix = _find_backbone(variables['params'])
  flat = {coll: flax.traverse_util.flatten_dict(
      _get(variables.get(coll, {}), prefix)) for coll in ('params',
                                                          'batch_stats')}
  remaining = {coll: set(f) for coll, f in flat.items()}
  deep_stem = any(p[0] == 'stem_conv1' for p in flat['params'])
  report = {'loaded': 0, 'missing': [], 'unexpected': [],
            'shape_mismatch': []}
  for key, value in sorted(state.items()):
    if key.endswith('num_batches_tracked'):
      continue
    target = _resnet_key_map(key, source, deep_stem)
    if target is None:
      report['unexpected'].append(key)
      continue
    coll, module, leaf = target
    if module[-1] == 'downsample_?':
      module = module[:-1] + (
          'downsample_conv' if value.ndim == 4 else 'downsample_bn',)
    if leaf == 'kernel_or_scale':
      leaf = 'kernel' if value.ndim == 4 else 'scale'
    if value.ndim == 4:
      value = value.transpose(2, 3, 1, 0)  # OIHW -> HWIO.
    leaf_path = module + (leaf,)
    if leaf_path not in flat[coll]:
      report['unexpected'].append(key)
      continue
    expected = flat[coll][leaf_path]
    if tuple(expected.shape) != value.shape:
      report['shape_mismatch'].append((key, value.shape, tuple(expected.shape)))
      continue
    flat[coll][leaf_path] = value.astype(expected.dtype)
    remaining[coll].discard(leaf_path)
    report['loaded'] += 1
  for coll, leaves in remaining.items():
    report['missing'] += ['/'.join((coll,) + prefix + p) for p in sorted(leaves)]
  for coll in ('params', 'batch_stats'):
    if coll in variables:
      variables[coll] = _set(variables[coll], prefix,
                             flax.traverse_util.unflatten_dict(flat[coll]))
  return variables, report


def _get(tree, prefix):
  for name in prefix:
    tree = tree[name]
  return tree


def _set(tree, prefix, value):
  if not prefix:
    return value
  tree = dict(tree)
  tree[prefix[0]] = _set(tree[prefix[0]], prefix[1:], value)
  return tree
