"""The sub-pixel decoder conv against a float64 NumPy definition."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from segjax import models
from segjax.models.layers import upsample_nearest
from segjax.models.upconv import upsample_concat_conv


def _reference(x, skip, kernel, size):
  """conv3x3 'same' of [x[i // k, j // l], skip] by loops over taps."""
  x, kernel = np.asarray(x, np.float64), np.asarray(kernel, np.float64)
  big_h, big_w = size
  k, l = -(-big_h // x.shape[1]), -(-big_w // x.shape[2])
  up = x.repeat(k, axis=1).repeat(l, axis=2)[:, :big_h, :big_w]
  if skip is not None:
    up = np.concatenate([up, np.asarray(skip, np.float64)], axis=-1)
  padded = np.pad(up, ((0, 0), (1, 1), (1, 1), (0, 0)))
  out = np.zeros(up.shape[:3] + (kernel.shape[-1],))
  for i in range(3):
    for j in range(3):
      out += padded[:, i:i + big_h, j:j + big_w] @ kernel[i, j]
  return out


def _plain(x, skip, kernel, size):
  """The same conv as written (upsample, concatenate, one 3x3 conv)."""
  up = upsample_nearest(x, size)
  if skip is not None:
    up = jnp.concatenate([up, skip], axis=-1)
  return lax.conv_general_dilated(up, kernel, (1, 1), ((1, 1), (1, 1)),
                                  dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


@pytest.mark.parametrize('hw,size,skip_channels', [
    ((4, 5), (8, 10), 3),    # Exact 2x: the sub-pixel path.
    ((4, 5), (8, 10), None),  # The last block: no skip.
    ((3, 4), (5, 7), 2),     # 6x8 -> 11x15's case: upsample and crop.
])
def test_matches_loop_values_and_gradients(hw, size, skip_channels):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, *hw, 4)).astype(np.float32)
  skip = None if skip_channels is None else rng.normal(
      size=(2, *size, skip_channels)).astype(np.float32)
  kernel = rng.normal(size=(3, 3, 4 + (skip_channels or 0), 5)).astype(
      np.float32)
  out = upsample_concat_conv(x, skip, kernel, size)
  np.testing.assert_allclose(np.asarray(out, np.float64),
                             _reference(x, skip, kernel, size),
                             rtol=1e-5, atol=1e-4)
  # Gradients: against the conv as written, which the sub-pixel form must
  # equal.
  g = rng.normal(size=out.shape).astype(np.float32)
  args = (x, kernel) if skip is None else (x, kernel, skip)

  def loss(fn):
    def f(x, kernel, skip=None):
      return jnp.sum(fn(x, skip, kernel, size) * g)
    return jax.grad(f, argnums=tuple(range(len(args))))

  for kernels in ('segjax', 'xla'):
    sub_pixel = lambda x, skip, kernel, size: upsample_concat_conv(
        x, skip, kernel, size, kernels)
    for got, want in zip(loss(sub_pixel)(*args), loss(_plain)(*args)):
      np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize('platform,convolutions', [
    ('cpu', 5), ('cuda', 1), ('rocm', 1), ('tpu', 1)])
def test_auto_is_chosen_for_the_lowered_platform(platform, convolutions):
  """Sub-pixel (four 2x2 convs and the skip's 3x3) on CPUs only."""
  args = (jax.ShapeDtypeStruct((1, 4, 5, 4), jnp.float32),
          jax.ShapeDtypeStruct((1, 8, 10, 3), jnp.float32),
          jax.ShapeDtypeStruct((3, 3, 7, 5), jnp.float32))
  f = lambda x, skip, kernel: upsample_concat_conv(x, skip, kernel, (8, 10))
  text = jax.export.export(jax.jit(f), platforms=(platform,))(
      *args).mlir_module()
  assert text.count('stablehlo.convolution') == convolutions


def test_resnet_unet_keeps_its_parameters_and_output():
  """Same parameter tree as ConvBNReLU; logits and gradients as the
  decoder written out (upsample, concatenate, 3x3 conv: kernels='xla')."""
  images = jnp.asarray(np.random.default_rng(1).normal(size=(2, 64, 96, 3)),
                       jnp.float32)

  def build(kernels):
    return models.build('resnet_unet', num_classes=3, backbone='resnet18',
                        decoder_features=(8, 8, 8, 8, 8), kernels=kernels)

  variables = build('auto').init(jax.random.PRNGKey(0), images)
  block = variables['params']['decoder3_conv1']
  assert set(block) == {'conv', 'bn'} and set(block['conv']) == {'kernel'}
  assert block['conv']['kernel'].shape == (3, 3, 8 + 64, 8)
  assert (jax.tree.map(jnp.shape, variables) == jax.tree.map(
      jnp.shape, jax.eval_shape(build('xla').init, jax.random.PRNGKey(0),
                                images)))

  def logits_and_grad(model):
    def loss(params):
      out, _ = model.apply({**variables, 'params': params}, images,
                           train=True, mutable=['batch_stats'])
      return jnp.sum(out ** 2), out
    (_, out), grad = jax.jit(jax.value_and_grad(loss, has_aux=True))(
        variables['params'])
    return out, grad

  got, got_grad = logits_and_grad(build('segjax'))
  want, want_grad = logits_and_grad(build('xla'))
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
  for a, b in zip(jax.tree.leaves(got_grad), jax.tree.leaves(want_grad)):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3 * np.abs(b).max())
