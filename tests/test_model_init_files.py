"""Pretrained weight files: torch.save archives read without running pickle
code, files of the wrong kind named as such, and model_init's required
arrays (segjax/models/pretrained.py, segjax/training/model_init.py)."""

import importlib.util
import json
import os
import pathlib
import pickle
import re
import struct
import zipfile

import flax
import jax
import jax.numpy as jnp
import ml_collections
import ml_dtypes
import numpy as np
import orbax.checkpoint as ocp
import pytest

from segjax import models
from segjax.configs import base
from segjax.errors import ConfigError
from segjax.models import pretrained
from segjax.training import model_init

REPO = pathlib.Path(__file__).resolve().parents[1]


# ------------------------------------------- torch.save archives, by hand
# The layout torch.save (PyTorch >= 1.6) writes: a zip of
#   <prefix>/data.pkl     pickle protocol 2 of the state_dict, each tensor
#                         `torch._utils._rebuild_tensor_v2(storage, offset,
#                         size, stride, requires_grad, hooks)` with its
#                         storage a persistent id ('storage', torch.<T>Storage,
#                         key, location, numel)
#   <prefix>/data/<key>   the storage's raw bytes
#   <prefix>/byteorder, <prefix>/version, <prefix>/.data/serialization_id


def _global(module, name):
  return b'c' + f'{module}\n{name}\n'.encode()


def _str(text):
  data = text.encode()
  return b'X' + struct.pack('<I', len(data)) + data


def _int(value):
  return b'J' + struct.pack('<i', value)


def _tuple(items):
  return b'(' + b''.join(items) + b't'


def _tensor_pickle(storage_type, key, numel, offset, size, stride):
  """Opcodes that leave one rebuilt tensor on the stack."""
  return b''.join([
      _global('torch._utils', '_rebuild_tensor_v2'), b'(',
      _tuple([_str('storage'), _global('torch', storage_type), _str(key),
              _str('cpu'), _int(numel)]), b'Q',  # BINPERSID
      _int(offset), _tuple(map(_int, size)), _tuple(map(_int, stride)),
      b'\x89',  # NEWFALSE: requires_grad
      _global('collections', 'OrderedDict'), b')R',  # backward hooks
      b'tR'])


def _state_dict_pickle(tensors, after_tensor=b''):
  """An OrderedDict of name -> tensor opcodes (from `_tensor_pickle`)."""
  body = b''.join(_str(name) + opcodes + after_tensor
                  for name, opcodes in tensors.items())
  return (b'\x80\x02' + _global('collections', 'OrderedDict') + b')R(' +
          body + b'u.')


_STORAGE_TYPES = {np.dtype(np.float32): 'FloatStorage',
                  np.dtype(np.float64): 'DoubleStorage',
                  np.dtype(np.float16): 'HalfStorage',
                  np.dtype(ml_dtypes.bfloat16): 'BFloat16Storage',
                  np.dtype(np.int64): 'LongStorage',
                  np.dtype(np.uint8): 'ByteStorage',
                  np.dtype(np.bool_): 'BoolStorage'}


def _write_pth(path, tensors, *, prefix='archive', byteorder='little',
               data_pkl=None, after_tensor=b''):
  """Writes a torch.save-layout archive of `tensors`.

  Args:
    path: the file.
    tensors: name -> a NumPy array (stored contiguously), or a tuple
      (1-D storage array, offset, size, stride) for a view.
    prefix: the archive's top folder (torch.save uses the file's stem).
    byteorder: 'little' or 'big' (the storages' bytes and the byteorder
      entry).
    data_pkl: pickle bytes to store instead of the state_dict's.
    after_tensor: opcodes appended after each tensor (attacks).
  """
  opcodes, blobs = {}, {}
  for i, (name, value) in enumerate(tensors.items()):
    if isinstance(value, tuple):
      storage, offset, size, stride = value
    else:
      value = np.asarray(value)
      storage, offset, size = value.reshape(-1), 0, value.shape
      stride = tuple(s // value.itemsize for s in value.strides)
    key = str(i)
    words = storage.view(f'u{storage.itemsize}')
    if byteorder == 'big':
      words = words.astype(f'>u{storage.itemsize}')
    blobs[key] = words.tobytes()
    opcodes[name] = _tensor_pickle(_STORAGE_TYPES[storage.dtype], key,
                                   storage.size, offset, size, stride)
  if data_pkl is None:
    data_pkl = _state_dict_pickle(opcodes, after_tensor)
  with zipfile.ZipFile(path, 'w', zipfile.ZIP_STORED) as archive:
    archive.writestr(f'{prefix}/data.pkl', data_pkl)
    archive.writestr(f'{prefix}/byteorder', byteorder)
    for key, blob in blobs.items():
      archive.writestr(f'{prefix}/data/{key}', blob)
    archive.writestr(f'{prefix}/version', '3\n')
    archive.writestr(f'{prefix}/.data/serialization_id', '0' * 40)
  return path


def _tricky_tensors():
  rng = np.random.default_rng(0)
  base_storage = np.arange(12, dtype=np.float32)
  return {
      'conv.weight': rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
      'half': np.arange(6, dtype=np.float16).reshape(2, 3),
      'bf16': np.array([1.5, -2.0, 3.25], ml_dtypes.bfloat16),
      'double': np.array([[1e-300, 2.0]]),
      'bn.num_batches_tracked': np.array(7, np.int64),
      'mask': np.array([True, False, True]),
      'bytes': np.arange(5, dtype=np.uint8),
      'empty': np.zeros((0, 3), np.float32),
      # Views into a shared storage: a transpose and an offset slice.
      'transposed': (base_storage, 0, (4, 3), (1, 4)),
      'slice': (base_storage, 2, (3,), (1,)),
  }


def _expected(value):
  if isinstance(value, tuple):
    storage, offset, size, stride = value
    return np.lib.stride_tricks.as_strided(
        storage[offset:], size, [s * storage.itemsize for s in stride])
  return value


@pytest.mark.parametrize('byteorder', ['little', 'big'])
def test_hand_built_pth_reads_every_tensor_as_torch_load_would(
    tmp_path, byteorder):
  tensors = _tricky_tensors()
  path = _write_pth(tmp_path / 'w.pth', tensors, byteorder=byteorder,
                    prefix='w')
  state = pretrained.read_state_dict(path)
  assert sorted(state) == sorted(tensors)
  for name, value in tensors.items():
    want = _expected(value)
    assert state[name].dtype == want.dtype, name
    np.testing.assert_array_equal(state[name], want, err_msg=name)
  np.testing.assert_array_equal(state['transposed'],
                                np.arange(12.0).reshape(3, 4).T)


def test_a_file_written_by_pytorch_itself_reads_as_torch_load(tmp_path):
  torch = pytest.importorskip('torch')
  torch.manual_seed(0)
  module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3),
                               torch.nn.BatchNorm2d(4))
  state = module.state_dict()
  state['half'] = torch.arange(6, dtype=torch.float16).reshape(2, 3)
  state['bf16'] = torch.tensor([1.5, -2.0], dtype=torch.bfloat16)
  state['transposed'] = torch.arange(12.0).reshape(3, 4).t()
  state['slice'] = torch.arange(10.0)[2:5]
  torch.save(state, tmp_path / 'module.pth')
  loaded = pretrained.read_state_dict(tmp_path / 'module.pth')
  assert sorted(loaded) == sorted(state)
  for name, tensor in state.items():
    want = (tensor.float().numpy().astype(ml_dtypes.bfloat16)
            if tensor.dtype == torch.bfloat16 else tensor.numpy())
    np.testing.assert_array_equal(loaded[name], want, err_msg=name)
  # Parameters (state_dict(keep_vars=True)) are their tensors.
  torch.save(module.state_dict(keep_vars=True), tmp_path / 'params.pth')
  assert sorted(pretrained.read_state_dict(tmp_path / 'params.pth')) == (
      sorted(module.state_dict()))
  # A pickled module is code, not a state_dict: refused, naming its class.
  torch.save(module, tmp_path / 'module_object.pth')
  with pytest.raises(ValueError, match=r'global torch\.nn\.'):
    pretrained.read_state_dict(tmp_path / 'module_object.pth')


class _RunsCode:
  """Unpickling this calls `function(argument)`."""

  def __init__(self, function, argument):
    self.function, self.argument = function, argument

  def __reduce__(self):
    return self.function, (self.argument,)


@pytest.mark.parametrize('protocol', [2, 4])
@pytest.mark.parametrize('attack', ['system', 'exec'])
def test_malicious_pickle_is_refused_without_running(tmp_path, attack,
                                                     protocol):
  marker = tmp_path / 'pwned'
  payload = (_RunsCode(os.system, f'touch {marker}') if attack == 'system'
             else _RunsCode(exec, f'open({str(marker)!r}, "w").close()'))
  data = pickle.dumps({'conv1.weight': payload}, protocol=protocol)
  path = _write_pth(tmp_path / 'resnet18.pth', {}, data_pkl=data)
  name = (r'(posix|nt|os)\.system' if attack == 'system' else
          r'(builtins|__builtin__)\.exec')  # Protocol 2 says __builtin__.
  with pytest.raises(ValueError, match=rf"'.*resnet18\.pth'.* global {name}"
                     r'.*refused without running it'):
    pretrained.read_state_dict(path)
  assert not marker.exists()
  # The same through model_init: a ConfigError, nothing run.
  with pytest.raises(ConfigError, match='refused without running it'):
    model_init.load(_init_config(path, 'torchvision'), _resnet18_vars())
  assert not marker.exists()


@pytest.mark.parametrize('tensors,after,message', [
    # BUILD on a rebuilt tensor: the stream may not change one.
    ({'w': np.zeros(3, np.float32)}, b'}b', 'sets the state of a Tensor'),
    # A stride that reads past the storage (as_strided would not check).
    ({'w': (np.zeros(4, np.float32), 0, (4, 4), (1, 1000))}, b'',
     'reads past its storage'),
    ({'w': (np.zeros(4, np.float32), 3, (2,), (1,))}, b'',
     'reads past its storage'),
    ({'w': (np.zeros(4, np.float32), 0, (2,), (-1,))}, b'',
     'malformed offset'),
])
def test_malformed_tensors_are_refused(tmp_path, tensors, after, message):
  path = _write_pth(tmp_path / 'w.pth', tensors, after_tensor=after)
  with pytest.raises(ValueError, match=message):
    pretrained.read_state_dict(path)


def test_a_persistent_id_must_name_a_storage_in_the_archive(tmp_path):
  opcodes = _tensor_pickle('FloatStorage', 'nosuch', 3, 0, (3,), (1,))
  path = _write_pth(tmp_path / 'w.pth', {},
                    data_pkl=_state_dict_pickle({'w': opcodes}))
  with pytest.raises(ValueError, match="storage 'nosuch' is missing"):
    pretrained.read_state_dict(path)
  data = (b'\x80\x02' + _str('anything') + b'Q.')
  path = _write_pth(tmp_path / 'v.pth', {}, data_pkl=data)
  with pytest.raises(ValueError, match='not a tensor storage'):
    pretrained.read_state_dict(path)


# ------------------------------------------------ files of the wrong kind


def _wrong_files(tmp_path):
  npy_as_npz = tmp_path / 'weights.npz'
  with open(npy_as_npz, 'wb') as f:
    np.save(f, np.zeros((2, 2), np.float32))
  pickle_as_safetensors = tmp_path / 'weights.safetensors'
  pickle_as_safetensors.write_bytes(pickle.dumps({'a': [1, 2]}, protocol=2))
  wrapped = _write_pth(tmp_path / 'checkpoint.pth',
                       {'w': np.zeros(2, np.float32)},
                       data_pkl=b'\x80\x02}(' + _str('epoch') + _int(3) +
                       b'u.')
  empty = tmp_path / 'empty.pth'
  empty.write_bytes(b'')
  text = tmp_path / 'notes.safetensors'
  text.write_text('hello, these are not weights')
  return [(npy_as_npz, r'is a single NumPy array \(\.npy format\)'),
          (pickle_as_safetensors, r'is a Python pickle .*not read'),
          (wrapped, r"entry 'epoch' holds a 'int' value, not a tensor"),
          (empty, 'is empty'),
          (text, 'is not a weights file of a known format')]


def test_a_file_of_the_wrong_kind_is_one_line_naming_it(tmp_path):
  for path, what in _wrong_files(tmp_path):
    with pytest.raises(ConfigError) as e:
      model_init.load(_init_config(path, 'torchvision'), _resnet18_vars())
    message = str(e.value)
    assert '\n' not in message
    assert f"'{path}'" in message, message
    assert re.search(what, message), message


# ------------------------------------------------------ required arrays


def _torchvision_resnet_state_dict(blocks=(2, 2, 2, 2), seed=0):
  """A torchvision BasicBlock ResNet's state_dict (random values)."""
  rng = np.random.default_rng(seed)
  sd = {}

  def bn(name, n):
    sd[f'{name}.weight'] = rng.uniform(0.5, 1.5, n)
    sd[f'{name}.bias'] = rng.normal(size=n)
    sd[f'{name}.running_mean'] = rng.normal(size=n)
    sd[f'{name}.running_var'] = rng.uniform(0.5, 2.0, n)
    sd[f'{name}.num_batches_tracked'] = np.array(10)

  sd['conv1.weight'] = rng.normal(size=(64, 3, 7, 7))
  bn('bn1', 64)
  cin = 64
  for s, (planes, count) in enumerate(zip((64, 128, 256, 512), blocks)):
    for b in range(count):
      p = f'layer{s + 1}.{b}'
      sd[f'{p}.conv1.weight'] = rng.normal(size=(planes, cin, 3, 3))
      bn(f'{p}.bn1', planes)
      sd[f'{p}.conv2.weight'] = rng.normal(size=(planes, planes, 3, 3))
      bn(f'{p}.bn2', planes)
      if b == 0 and s > 0:
        sd[f'{p}.downsample.0.weight'] = rng.normal(size=(planes, cin, 1, 1))
        bn(f'{p}.downsample.1', planes)
      cin = planes
  sd['fc.weight'] = rng.normal(size=(1000, 512))
  sd['fc.bias'] = rng.normal(size=1000)
  return {k: np.asarray(v, np.float32 if v.ndim else np.int64)
          for k, v in sd.items()}


def _init_config(path, source, **fields):
  config = base.get_config().model_init
  config.path = str(path)
  config.source = source
  config.update(fields)
  return config


def _abstract_variables(model_config, num_outputs=11):
  model = models.build_model(model_config, num_outputs)
  return jax.eval_shape(lambda: model.init(
      jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), train=False))


def _resnet18_vars():
  config = ml_collections.ConfigDict({'name': 'resnet_unet',
                                      'backbone': 'resnet18'})
  return _abstract_variables(config)


def _experiment(name, arg):
  spec = importlib.util.spec_from_file_location(
      name, REPO / 'experiments' / f'{name}.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


@pytest.mark.parametrize('recipe', ['camvid_unet', 'camvid_deeplabv3plus'])
def test_camvid_recipes_start_from_a_torchvision_pth(tmp_path, recipe):
  # The recipes' documented `--config.model_init.path=<resnet>.pth
  # --config.model_init.source=torchvision`, with their ResNet-18 variant.
  config = _experiment(recipe, 'tiny')
  assert config.model.backbone == 'resnet18'
  state = _torchvision_resnet_state_dict()
  path = _write_pth(tmp_path / 'resnet18.pth', state, prefix='resnet18')
  variables = _abstract_variables(config.model)
  new, report = model_init.load(_init_config(path, 'torchvision'), variables)
  tensors = [k for k in state if not k.endswith('num_batches_tracked')]
  assert report['loaded'] == report['required'] == len(tensors) - 2
  assert report['missing'] == [] and report['shape_mismatch'] == []
  assert report['unexpected'] == ['fc.bias', 'fc.weight']
  # The decoder and head keep their initialisation, by design.
  flat = flax.traverse_util.flatten_dict(variables)
  assert report['initialised'] == len(flat) - report['loaded'] > 0
  np.testing.assert_array_equal(
      new['params']['backbone']['layer2_0']['downsample_conv']['kernel'],
      state['layer2.0.downsample.0.weight'].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(
      new['batch_stats']['backbone']['bn1']['var'], state['bn1.running_var'])
  json.dumps(report)  # Fit for run_info.json.
  assert model_init.describe(report).startswith(
      f'model_init: loaded {report["loaded"]} of the {report["required"]} '
      f'required arrays from {path}')


def test_a_backbone_file_lacking_required_arrays_fails_unless_allowed(
    tmp_path):
  variables = _resnet18_vars()
  state = _torchvision_resnet_state_dict()
  # One array of the backbone's 100 or so: training on from it would be
  # training from scratch with one INFO line.
  path = tmp_path / 'stem_only.safetensors'
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  save_file({'conv1.weight': state['conv1.weight']}, str(path))
  with pytest.raises(ConfigError) as e:
    model_init.load(_init_config(path, 'torchvision'), variables)
  message = str(e.value)
  required = len([k for k in state if k[:2] not in ('fc',)
                  and not k.endswith('num_batches_tracked')])
  assert (f'{required - 1} of the {required} required arrays are missing '
          f"from '{path}'") in message
  assert "first: ['batch_stats/backbone/bn1/mean'," in message
  assert 'config.model_init.allow_missing' in message
  # Allowed: the stages may stay initialised; the stem may not.
  _, report = model_init.load(
      _init_config(path, 'torchvision',
                   allow_missing=('backbone/(bn1|layer.*)/.*',)), variables)
  assert report['loaded'] == 1
  assert report['allowed_missing'] == report['missing']
  assert len(report['missing']) == required - 1
  # A mismatched shape is as missing as an absent array.
  state['layer1.0.conv1.weight'] = state['layer1.0.conv1.weight'][:32]
  _write_pth(tmp_path / 'narrow.pth', state)
  with pytest.raises(ConfigError, match=r"1 of the \d+ required arrays .*"
                     r"'params/backbone/layer1_0/conv1/kernel'.*shape "
                     r"mismatches \(key, file, model\): \[\['layer1\.0\."):
    model_init.load(_init_config(tmp_path / 'narrow.pth', 'torchvision'),
                    variables)


def _save_run(folder, variables, step=1):
  """A segjax workdir's checkpoint of `variables` (as the trainer saves
  them: params and batch_stats in the state)."""
  item = folder / 'checkpoints' / str(step) / 'state'
  checkpointer = ocp.PyTreeCheckpointer()
  checkpointer.save(str(item), jax.tree.map(np.asarray, variables))
  return folder


def _unet_vars(features, classes=3):
  model = models.build('unet', classes, features=features)
  return jax.tree.map(np.asarray, model.init(
      jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)), train=False))


def test_a_run_of_another_shape_fails_unless_allowed(tmp_path):
  source = _unet_vars((4, 8), classes=5)  # Another class count.
  run = _save_run(tmp_path / 'run', dict(source))
  target = _unet_vars((4, 8), classes=3)
  with pytest.raises(ConfigError) as e:
    model_init.load(_init_config(run, 'segjax'), target)
  flat = flax.traverse_util.flatten_dict(target['params'], sep='/')
  head = [k for k, v in flat.items()
          if v.shape != flax.traverse_util.flatten_dict(
              source['params'], sep='/')[k].shape]
  assert head, 'the class count should change the head'
  assert f'{len(head)} of the ' in str(e.value)
  assert f"'params/{sorted(head)[0]}'" in str(e.value)
  pattern = '|'.join(sorted({k.rsplit('/', 1)[0] for k in head})) + '/.*'
  for fields in ({'allow_missing': (pattern,)}, {'exclude': (pattern,)}):
    new, report = model_init.load(_init_config(run, 'segjax', **fields),
                                  target)
    assert report['missing'] == [] or report['allowed_missing'] == (
        report['missing'])
    loaded = flax.traverse_util.flatten_dict(new['params'], sep='/')
    for key, value in flat.items():
      want = value if key in head else flax.traverse_util.flatten_dict(
          source['params'], sep='/')[key]
      np.testing.assert_array_equal(loaded[key], want, err_msg=key)
  # A narrower model: every array of it is in the run, none in its shape.
  with pytest.raises(ConfigError, match=r'nothing in .* matches the model \('
                     r'\d+ arrays missing or of another shape'):
    model_init.load(_init_config(run, 'segjax'), _unet_vars((2, 4)))
