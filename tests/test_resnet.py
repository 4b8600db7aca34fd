"""ResNet backbones: structure (eval_shape), padding semantics, weight import."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segjax.models import pretrained
from segjax.models import resnet

IMAGE = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)


def _init_shapes(model, image=IMAGE):
  return jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x), image)


def _num_params(variables):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(
      variables['params']))


@pytest.mark.parametrize('depth,expected', [
    (18, 11_176_512), (50, 23_508_032), (101, 42_500_160)])
def test_parameter_counts_equal_torchvision_without_classifier(depth,
                                                               expected):
  # torchvision resnet{18,50,101} minus fc (512*1000+1000 / 2048*1000+1000).
  assert _num_params(_init_shapes(resnet.ResNet(depth=depth))) == expected


@pytest.mark.parametrize('output_stride,sizes', [
    (32, {'stem': 32, 'stage1': 16, 'stage2': 8, 'stage3': 4, 'stage4': 2}),
    (16, {'stem': 32, 'stage1': 16, 'stage2': 8, 'stage3': 4, 'stage4': 4}),
    (8, {'stem': 32, 'stage1': 16, 'stage2': 8, 'stage3': 8, 'stage4': 8}),
])
def test_output_stride_sets_feature_sizes(output_stride, sizes):
  model = resnet.ResNet(depth=18, output_stride=output_stride)
  variables = _init_shapes(model)
  features = jax.eval_shape(lambda v, x: model.apply(v, x), variables, IMAGE)
  assert {k: v.shape[1] for k, v in features.items()} == sizes
  assert {k: 64 // s for k, s in model.strides.items()} == sizes


def test_documented_dilation_rates():
  assert resnet.stage_dilations(16) == ((1, 1), (2, 1), (2, 1), (1, 2))
  assert resnet.stage_dilations(8) == ((1, 1), (2, 1), (1, 2), (1, 4))
  with pytest.raises(ValueError, match='output_stride must be 8, 16 or 32'):
    resnet.stage_dilations(4)


def test_deep_stem_and_avg_down_change_only_what_they_should():
  plain = _init_shapes(resnet.ResNet(depth=50))['params']
  deep = _init_shapes(resnet.ResNet(depth=50, deep_stem=True,
                                    avg_down=True))['params']
  assert 'conv1' in plain and 'stem_conv3' in deep and 'conv1' not in deep
  assert deep['stem_conv1']['kernel'].shape == (3, 3, 3, 32)
  # avg_down keeps the shortcut conv's shape but makes it stride 1 after a
  # pool; the parameters are the same.
  assert (plain['layer2_0']['downsample_conv']['kernel'].shape ==
          deep['layer2_0']['downsample_conv']['kernel'].shape)


def _np_conv(x, w, stride, pad):
  """Cross-correlation with symmetric zero padding (PyTorch's Conv2d)."""
  x = np.pad(x, ((pad, pad), (pad, pad), (0, 0)))
  k = w.shape[0]
  h = (x.shape[0] - k) // stride + 1
  v = (x.shape[1] - k) // stride + 1
  out = np.zeros((h, v, w.shape[-1]))
  for i in range(h):
    for j in range(v):
      patch = x[i * stride:i * stride + k, j * stride:j * stride + k]
      out[i, j] = np.einsum('hwc,hwco->o', patch, w)
  return out


@pytest.mark.parametrize('kernel,size', [(3, 9), (3, 8), (7, 11)])
def test_strided_convs_pad_symmetrically_like_pytorch(kernel, size):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(1, size, size, 2)).astype(np.float32)
  conv = resnet._conv(3, kernel, stride=2)  # pylint: disable=protected-access
  params = conv.init(jax.random.PRNGKey(0), x)
  got = conv.apply(params, x)[0]
  w = np.asarray(params['params']['kernel'], np.float64)
  np.testing.assert_allclose(got, _np_conv(x[0].astype(np.float64), w, 2,
                                           (kernel - 1) // 2),
                             rtol=1e-5, atol=1e-5)


def _torchvision_resnet18_state_dict(rng):
  """Keys and shapes of torchvision's resnet18 state_dict, written out."""
  sd = {}

  def bn(name, c):
    sd[f'{name}.weight'] = rng.normal(size=c)
    sd[f'{name}.bias'] = rng.normal(size=c)
    sd[f'{name}.running_mean'] = rng.normal(size=c)
    sd[f'{name}.running_var'] = rng.uniform(0.5, 2, size=c)
    sd[f'{name}.num_batches_tracked'] = np.array(7)

  sd['conv1.weight'] = rng.normal(size=(64, 3, 7, 7))
  bn('bn1', 64)
  cin = 64
  for s, planes in enumerate((64, 128, 256, 512)):
    for b in range(2):
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


class _WithBackbone(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.Conv(2, (1, 1), name='head')(
        resnet.ResNet(depth=18, name='backbone')(x)['stage4'])


def test_load_pretrained_maps_every_torchvision_key(tmp_path):
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  sd = _torchvision_resnet18_state_dict(np.random.default_rng(1))
  path = tmp_path / 'resnet18.safetensors'
  save_file(sd, str(path))
  model = _WithBackbone()
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
  loaded, report = pretrained.load_pretrained(variables, path)
  assert report['unexpected'] == ['fc.bias', 'fc.weight']
  assert report['shape_mismatch'] == []
  # 'missing' speaks of the backbone: every leaf of it came from the file
  # (the head is new by design and keeps its initialisation, checked below).
  assert report['missing'] == []
  assert report['loaded'] == len(sd) - 2 - sum(
      k.endswith('num_batches_tracked') for k in sd)
  bb = loaded['params']['backbone']
  np.testing.assert_array_equal(bb['conv1']['kernel'],
                                sd['conv1.weight'].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(
      bb['layer3_0']['downsample_conv']['kernel'],
      sd['layer3.0.downsample.0.weight'].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(bb['layer2_1']['bn2']['scale'],
                                sd['layer2.1.bn2.weight'])
  np.testing.assert_array_equal(
      loaded['batch_stats']['backbone']['layer4_1']['bn1']['var'],
      sd['layer4.1.bn1.running_var'])
  np.testing.assert_array_equal(loaded['params']['head']['kernel'],
                                variables['params']['head']['kernel'])
  # A leaf the file lacks is reported, and keeps its initial value.
  del sd['layer1.0.conv1.weight']
  save_file(sd, str(path))
  partial, report = pretrained.load_pretrained(variables, path)
  assert report['missing'] == ['params/backbone/layer1_0/conv1/kernel']
  np.testing.assert_array_equal(
      partial['params']['backbone']['layer1_0']['conv1']['kernel'],
      variables['params']['backbone']['layer1_0']['conv1']['kernel'])


def test_load_pretrained_errors_name_the_problem(tmp_path):
  variables = _init_shapes(resnet.ResNet(depth=18))
  with pytest.raises(FileNotFoundError, match='nosuch.safetensors'):
    pretrained.load_pretrained(variables, tmp_path / 'nosuch.safetensors')
  (tmp_path / 'w.pt').write_bytes(b'')
  with pytest.raises(ValueError, match='expected a .safetensors or .npz'):
    pretrained.load_pretrained(variables, tmp_path / 'w.pt')
  with pytest.raises(ValueError, match="source must be one of"):
    pretrained.load_pretrained(variables, tmp_path / 'w.pt', source='keras')
