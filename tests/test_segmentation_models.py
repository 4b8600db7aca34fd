"""DeepLabV3 / V3+, FCN and the model registry (eval_shape: no compilation)."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segjax import models


def _shapes(model, size=(1, 67, 93, 3), dtype=jnp.float32):
  image = jax.ShapeDtypeStruct(size, dtype)
  variables = jax.eval_shape(
      lambda x: model.init(jax.random.PRNGKey(0), x), image)
  out = jax.eval_shape(lambda v, x: model.apply(v, x), variables, image)
  return variables, out


def _count(variables):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(
      variables['params']))


def test_deeplabv3plus_separable_matches_smp_parameter_count():
  # segmentation_models_pytorch DeepLabV3Plus("resnet50", classes=11).
  model = models.build('deeplabv3plus', num_classes=11, backbone='resnet50',
                       output_stride=16, separable=True)
  variables, logits = _shapes(model)
  assert _count(variables) == 26_680_155
  assert logits.shape == (1, 67, 93, 11) and logits.dtype == jnp.float32


@pytest.mark.parametrize('name', ['deeplabv3', 'deeplabv3plus'])
@pytest.mark.parametrize('output_stride', [8, 16])
def test_logits_come_back_at_input_size_for_any_size(name, output_stride):
  model = models.build(name, num_classes=1, backbone='resnet18',
                       output_stride=output_stride, aspp_features=32)
  _, logits = _shapes(model, size=(2, 45, 61, 3))
  assert logits.shape == (2, 45, 61, 1)


def test_rates_default_per_output_stride():
  assert models.deeplab.default_rates(16) == (6, 12, 18)
  assert models.deeplab.default_rates(8) == (12, 24, 36)


def test_bf16_compute_keeps_float32_parameters():
  model = models.build('deeplabv3plus', num_classes=3, backbone='resnet18',
                       aspp_features=16, dtype=jnp.bfloat16)
  variables, logits = _shapes(model, size=(1, 32, 32, 3))
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(variables))
  assert logits.dtype == jnp.float32


def test_backbone_by_name_returns_its_feature_dict():
  backbone = models.build('resnet50', output_stride=8)
  _, features = _shapes(backbone, size=(1, 64, 64, 3))
  assert {k: v.shape[1:] for k, v in features.items()} == {
      'stem': (32, 32, 64), 'stage1': (16, 16, 256), 'stage2': (8, 8, 512),
      'stage3': (8, 8, 1024), 'stage4': (8, 8, 2048)}


def test_registry_errors_name_the_problem():
  with pytest.raises(ValueError, match="'pspnet' is not a known model"):
    models.build('pspnet', num_classes=2)
  with pytest.raises(ValueError, match='needs num_classes'):
    models.build('deeplabv3plus')
  with pytest.raises(ValueError, match="unsupported backbone 'vgg16'"):
    models.build('deeplabv3plus', num_classes=2, backbone='vgg16')
  with pytest.raises(ValueError, match='takes no num_classes'):
    models.build('resnet50', num_classes=2)
  with pytest.raises(ValueError, match='output_stride must be 8, 16 or 32'):
    _shapes(models.build('deeplabv3', num_classes=2, backbone='resnet18',
                         output_stride=4), size=(1, 32, 32, 3))
  with pytest.raises(ValueError, match="low_level_stage='stage7'"):
    _shapes(models.build('deeplabv3plus', num_classes=2, backbone='resnet18',
                         low_level_stage='stage7'), size=(1, 32, 32, 3))


@pytest.mark.parametrize('name,kwargs', [
    ('deeplabv3plus', {'backbone': 'resnet18', 'aspp_features': 32,
                       'low_level_features': 16, 'dropout': 0.0}),
    ('fcn8s', {'backbone': 'mobilenet_v2'}),
])
def test_models_learn_a_shapes_batch(tfds_dir, name, kwargs):
  import ml_collections  # pylint: disable=g-import-not-at-top
  from segjax import losses  # pylint: disable=g-import-not-at-top
  from segjax.data import pipeline  # pylint: disable=g-import-not-at-top
  from segjax.training import optimizer  # pylint: disable=g-import-not-at-top
  from segjax.parallel import sharding  # pylint: disable=g-import-not-at-top
  from segjax.training import state as state_lib  # pylint: disable=g-import-not-at-top
  from segjax.training import steps  # pylint: disable=g-import-not-at-top
  from segjax.configs import base  # pylint: disable=g-import-not-at-top
  data = base.merge(base.get_config().data,
                    {'name': 'shapes/tiny', 'data_dir': tfds_dir})
  batch = next(pipeline.as_numpy(pipeline.train_dataset(data, 8, seed=0)))
  model = models.build(name, num_classes=5, **kwargs)
  config = ml_collections.ConfigDict({
      'optimizer': {'name': 'adamw', 'learning_rate': 1e-3},
      'schedule': {'name': 'constant'}})
  tx, schedule = optimizer.build_optimizer(config, 10)
  mesh = sharding.make_mesh(jax.devices()[:1])
  state, _ = state_lib.create_train_state(model, tx, (32, 32, 3),
                                          jax.random.PRNGKey(0), mesh)
  step = jax.jit(steps.make_train_step(
      model, tx, losses.build_loss({'cross_entropy': 1.0}), schedule))
  history = []
  for _ in range(8):
    state, metrics = step(state, jax.device_put(batch))
    history.append(float(metrics['loss']))
  assert history[-1] < 0.7 * history[0], history


@pytest.mark.parametrize('name', ['fcn32s', 'fcn16s', 'fcn8s'])
def test_fcn_skip_variants_give_input_size_logits(name):
  model = models.build(name, num_classes=4, backbone='resnet18')
  variables, logits = _shapes(model, size=(1, 45, 61, 3))
  assert logits.shape == (1, 45, 61, 4)
  scores = {k for k in variables['params'] if k.startswith('score_')}
  assert scores == {'fcn32s': {'score_stage4'},
                    'fcn16s': {'score_stage4', 'score_stage3'},
                    'fcn8s': {'score_stage4', 'score_stage3',
                              'score_stage2'}}[name]


def test_dilated_fcn_head_with_aux_head_sows_aux_logits():
  model = models.build('fcn', num_classes=3, backbone='resnet18',
                       output_stride=8, aux_head=True, head_channels=16)
  image = jax.ShapeDtypeStruct((1, 40, 40, 3), jnp.float32)
  variables = jax.eval_shape(
      lambda x: model.init(jax.random.PRNGKey(0), x), image)
  logits, state = jax.eval_shape(
      lambda v, x: model.apply(v, x, mutable=['intermediates']),
      {k: v for k, v in variables.items() if k != 'intermediates'}, image)
  assert logits.shape == (1, 40, 40, 3)
  assert state['intermediates']['aux_logits'][0].shape == (1, 40, 40, 3)


def test_fcn8s_at_output_stride_16_is_a_clear_error():
  with pytest.raises(ValueError, match='FCN-8s .* needs output_stride=32'):
    _shapes(models.build('fcn8s', num_classes=2, backbone='resnet18',
                         output_stride=16), size=(1, 32, 32, 3))


def test_resnet_unet_matches_smp_unet_parameter_count():
  # segmentation_models_pytorch Unet("resnet18", classes=11).
  model = models.build('resnet_unet', num_classes=11, backbone='resnet18')
  variables, logits = _shapes(model, size=(1, 45, 61, 3))
  assert _count(variables) == 14_329_659
  assert logits.shape == (1, 45, 61, 11)


def test_mobilenet_v2_matches_torchvision_features_parameter_count():
  # torchvision mobilenet_v2: 3,504,872 parameters, minus the classifier
  # (1280*1000 + 1000) and the last 1x1 conv to 1280 with its norm
  # (320*1280 + 2*1280), which segmentation heads do not use.
  variables, features = _shapes(models.build('mobilenet_v2'),
                                size=(1, 64, 64, 3))
  assert _count(variables) == 3_504_872 - 1_281_000 - 412_160
  assert {k: v.shape[1:] for k, v in features.items()} == {
      'stem': (32, 32, 16), 'stage1': (16, 16, 24), 'stage2': (8, 8, 32),
      'stage3': (4, 4, 96), 'stage4': (2, 2, 320)}


@pytest.mark.parametrize('output_stride', [8, 16])
def test_mobilenet_v2_dilates_for_smaller_output_strides(output_stride):
  backbone = models.build('mobilenet_v2', output_stride=output_stride)
  _, features = _shapes(backbone, size=(1, 64, 64, 3))
  assert features['stage4'].shape[1] == 64 // output_stride
  assert backbone.strides['stage4'] == output_stride


@pytest.mark.parametrize('name', ['deeplabv3plus', 'fcn8s', 'resnet_unet'])
def test_models_take_the_light_backbone(name):
  model = models.build(name, num_classes=3, backbone='mobilenet_v2')
  _, logits = _shapes(model, size=(1, 45, 61, 3))
  assert logits.shape == (1, 45, 61, 3)


@pytest.mark.parametrize('in_hw,out_hw', [((6, 8), (11, 15)), ((3, 4), (6, 8)),
                                          ((5, 7), (5, 7)), ((2, 3), (7, 9))])
def test_upsample_nearest_copies_the_top_left_aligned_pixel(in_hw, out_hw):
  # Independent definition, float64: output (i, j) = input (i // k, j // l)
  # with k, l the ceil ratios; the gradient of sum(w * out) sums w over the
  # output pixels that copy each input pixel.
  from segjax.models.layers import upsample_nearest
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, *in_hw, 3))
  weights = rng.normal(size=(2, *out_hw, 3))
  k, l = -(-out_hw[0] // in_hw[0]), -(-out_hw[1] // in_hw[1])
  want = np.zeros((2, *out_hw, 3))
  want_grad = np.zeros_like(x)
  for i in range(out_hw[0]):
    for j in range(out_hw[1]):
      want[:, i, j] = x[:, i // k, j // l]
      want_grad[:, i // k, j // l] += weights[:, i, j]
  got = upsample_nearest(jnp.asarray(x, jnp.float32), out_hw)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6)
  grad = jax.grad(lambda v: jnp.sum(upsample_nearest(v, out_hw) * weights))(
      jnp.asarray(x, jnp.float32))
  np.testing.assert_allclose(np.asarray(grad), want_grad, rtol=1e-5,
                             atol=1e-5)


def test_upsample_nearest_equals_torch_nearest_at_unet_sizes():
  # PyTorch's F.interpolate(mode='nearest') reads input floor(i * h / H);
  # for H = 2h and H = 2h - 1 that is i // 2, the repeat-and-crop above.
  from segjax.models.layers import upsample_nearest
  for h, out in ((6, 11), (6, 12), (11, 22), (5, 9)):
    x = np.arange(h, dtype=np.float32).reshape(1, h, 1, 1)
    got = np.asarray(upsample_nearest(jnp.asarray(x), (out, 1)))[0, :, 0, 0]
    np.testing.assert_array_equal(got, np.floor(np.arange(out) * h / out))
  with pytest.raises(ValueError, match='enlarges'):
    upsample_nearest(jnp.ones((1, 4, 4, 1)), (3, 4))


def test_resnet_unet_gradient_has_no_scatter():
  # The decoder's upsampling must not lower to gather / scatter (XLA:CPU
  # runs scatter-add serially; see layers.upsample_nearest).
  model = models.build('resnet_unet', num_classes=3, backbone='resnet18',
                       decoder_features=(8, 8, 8, 8, 8))
  x = jnp.zeros((1, 40, 56, 3))
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x))
  def loss(params, batch_stats):
    out = model.apply({'params': params, 'batch_stats': batch_stats}, x,
                      train=True, mutable=['batch_stats'])[0]
    return out.sum()
  text = jax.jit(jax.grad(loss)).lower(variables['params'],
                                       variables['batch_stats']).as_text()
  # (select_and_scatter, max pooling's gradient, is not a scatter.)
  assert not re.findall(r'stablehlo\.(?:scatter|gather)\b', text)


def test_torchvision_init_draws_as_torchvision_and_smp():
  # The definitions (PyTorch's docs): torchvision's ResNet draws conv
  # kernels from N(0, 2 / (k*k*out)) (kaiming_normal_, fan_out, relu) and
  # starts every BN scale at 1; SMP's initialize_decoder draws decoder convs
  # from U(+-sqrt(6 / (k*k*in))) (kaiming_uniform_, fan_in, relu) and
  # initialize_head the classifier from U(+-sqrt(6 / (fan_in + fan_out)))
  # (xavier_uniform_) with zero bias. Checked on the drawn values.
  model = models.build('resnet_unet', num_classes=11, backbone='resnet18',
                       init_scheme='torchvision')
  params = model.init(jax.random.PRNGKey(0),
                      jnp.zeros((1, 64, 64, 3)))['params']
  big = params['backbone']['layer3_0']['conv2']['kernel']  # 3x3x256x256
  np.testing.assert_allclose(np.std(big), np.sqrt(2 / (9 * 256)), rtol=0.02)
  stem = params['backbone']['conv1']['kernel']  # 7x7x3x64, fan_out 3136.
  np.testing.assert_allclose(np.std(stem), np.sqrt(2 / (49 * 64)), rtol=0.05)
  assert np.all(params['backbone']['layer1_0']['bn2']['scale'] == 1)
  dec = np.asarray(params['decoder0_conv1']['conv']['kernel'])  # in 512+256.
  bound = np.sqrt(6 / (9 * 768))
  assert np.abs(dec).max() <= bound
  np.testing.assert_allclose(np.std(dec), bound / np.sqrt(3), rtol=0.02)
  head = np.asarray(params['classifier']['kernel'])  # 3x3x16x11.
  assert np.abs(head).max() <= np.sqrt(6 / (9 * 16 + 9 * 11))
  assert np.abs(head).max() > 0.9 * np.sqrt(6 / (9 * 16 + 9 * 11))
  assert np.all(params['classifier']['bias'] == 0)
  # Flax's default keeps LeCun normal and zero-initialised residual BNs.
  flax_params = models.build('resnet_unet', num_classes=11,
                             backbone='resnet18').init(
                                 jax.random.PRNGKey(0),
                                 jnp.zeros((1, 64, 64, 3)))['params']
  assert np.all(flax_params['backbone']['layer1_0']['bn2']['scale'] == 0)
  np.testing.assert_allclose(
      np.std(flax_params['backbone']['layer3_0']['conv2']['kernel']),
      np.sqrt(1 / (9 * 256)), rtol=0.05)
  with pytest.raises(ValueError, match="init_scheme must be one of.*'kaiming'"):
    models.build('resnet18', init_scheme='kaiming').init(
        jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
