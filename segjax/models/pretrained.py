"""Import torchvision / timm ResNet weights without a PyTorch dependency.

Checkpoints are read from `.safetensors` (the `safetensors` package, NumPy
API) or `.npz` files holding a PyTorch `state_dict` (key -> array). Nothing
is downloaded: users bring the file, e.g. saved once with
`safetensors.torch.save_file(torchvision.models.resnet50(weights=...)
.state_dict(), 'resnet50.safetensors')`.

Conversions: conv kernels OIHW -> HWIO; batch norm weight/bias -> scale/bias
in `params`, running_mean/var -> mean/var in `batch_stats`;
`num_batches_tracked` is dropped; a classifier (`fc.*`) has no place in a
backbone and is reported as unexpected. PyTorch's batch-norm momentum 0.1 is
Flax's 0.9 (the models' default); its symmetric padding is reproduced by the
models themselves (see `segjax/models/resnet.py`).
"""

import re

from etils import epath
import flax
import numpy as np

SOURCES = ('torchvision', 'timm')


def read_state_dict(path):
  """{key: float32 NumPy array} from a .safetensors or .npz file."""
  path = epath.Path(path)
  if not path.exists():
    raise FileNotFoundError(f'pretrained weights file {str(path)!r} does not '
                            'exist.')
  if path.suffix == '.safetensors':
    from safetensors.numpy import load  # pylint: disable=g-import-not-at-top
    tensors = load(path.read_bytes())
  elif path.suffix == '.npz':
    with path.open('rb') as f:
      tensors = dict(np.load(f))
  else:
    raise ValueError(f'pretrained weights file {str(path)!r}: expected a '
                     '.safetensors or .npz file.')
  return {k: np.asarray(v) for k, v in tensors.items()}


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
    path: .safetensors or .npz file of the PyTorch state_dict.
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
