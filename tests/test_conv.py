"""segjax.models.depthwise against a float64 NumPy loop; segjax.models.conv
against flax's nn.Conv."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segjax.models import conv
from segjax.models import depthwise

CASES = [  # (batch, height, width, channels, k, stride, dilation, pad)
    (2, 7, 9, 3, 3, 1, 1, 1),
    (1, 12, 10, 4, 3, 1, 2, 2),
    (2, 9, 8, 5, 3, 2, 1, 1),
    (1, 11, 13, 2, 5, 1, 1, 2),
    (1, 8, 8, 3, 3, 1, 6, 6),      # Most taps fall in the padding.
    (2, 10, 7, 3, 3, 2, 2, 2),     # Stride and dilation (MobileNet OS8).
    (1, 6, 9, 2, 3, 1, 1, 0),      # 'valid': not the flipped-kernel path.
    (1, 5, 6, 1024, 3, 1, 2, 2),   # The per-tap weight gradient.
]


def reference(x, w, g, stride, dilation, pad):
  """Forward, d(sum(y * g))/dx and /dw by loops over every tap, float64."""
  x, w, g = (np.asarray(a, np.float64) for a in (x, w, g))
  b, h, wd, c = x.shape
  k = w.shape[0]
  xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  oh = (h + 2 * pad - dilation * (k - 1) - 1) // stride + 1
  ow = (wd + 2 * pad - dilation * (k - 1) - 1) // stride + 1
  y = np.zeros((b, oh, ow, c))
  dxp = np.zeros_like(xp)
  dw = np.zeros_like(w)
  for i in range(k):
    for j in range(k):
      for r in range(oh):
        for s in range(ow):
          row, col = r * stride + i * dilation, s * stride + j * dilation
          y[:, r, s] += xp[:, row, col] * w[i, j, 0]
          if g is not None:
            dxp[:, row, col] += g[:, r, s] * w[i, j, 0]
            dw[i, j, 0] += (xp[:, row, col] * g[:, r, s]).sum(0)
  dx = dxp[:, pad:pad + h, pad:pad + wd]
  return y, dx, dw


@pytest.mark.parametrize('method', ['shifted', 'xla'])
@pytest.mark.parametrize('case', CASES)
def test_forward_and_gradients_match_numpy(case, method):
  b, h, w, c, k, stride, dilation, pad = case
  rng = np.random.default_rng(sum(case))
  x = rng.normal(size=(b, h, w, c)).astype(np.float32)
  kernel = rng.normal(size=(k, k, 1, c)).astype(np.float32)
  f = lambda x, kernel: depthwise.depthwise_conv(
      x, kernel, stride=stride, dilation=dilation, padding=pad,
      method=method)
  y = jax.jit(f)(x, kernel)
  g = rng.normal(size=y.shape).astype(np.float32)
  want_y, want_dx, want_dw = reference(x, kernel, g, stride, dilation, pad)
  np.testing.assert_allclose(y, want_y, rtol=1e-5, atol=1e-5)
  _, vjp = jax.vjp(f, x, kernel)
  dx, dw = jax.jit(vjp)(g)
  np.testing.assert_allclose(dx, want_dx, rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(dw, want_dw, rtol=1e-5, atol=1e-4)


def test_bfloat16_keeps_dtype_and_accumulates_in_float32():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 16, 16, 8)).astype(np.float32)
  kernel = rng.normal(size=(3, 3, 1, 8)).astype(np.float32)
  g = rng.normal(size=(2, 16, 16, 8)).astype(np.float32)
  xb, kb = jnp.bfloat16(x), jnp.bfloat16(kernel)
  f = lambda x, kernel: depthwise.depthwise_conv(x, kernel, method='shifted')
  y, vjp = jax.vjp(f, xb, kb)
  dx, dw = vjp(jnp.bfloat16(g))
  assert y.dtype == dx.dtype == dw.dtype == jnp.bfloat16
  want_y, want_dx, want_dw = reference(
      np.float32(xb), np.float32(kb), np.float32(jnp.bfloat16(g)), 1, 1, 1)
  for got, want in ((y, want_y), (dx, want_dx), (dw, want_dw)):
    got = np.asarray(got, np.float64)
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-2


def test_cpu_gradient_has_no_convolution():
  """The regression this module exists for: XLA:CPU ran the depthwise
  weight gradient as a dense C x C convolution."""
  f = lambda x, kernel: jnp.sum(depthwise.depthwise_conv(
      x, kernel, dilation=2, method='shifted') ** 2)
  hlo = jax.jit(jax.grad(f, argnums=(0, 1))).lower(
      jnp.ones((1, 8, 8, 4)), jnp.ones((3, 3, 1, 4))).as_text()
  assert 'convolution' not in hlo


@pytest.mark.parametrize('platform,shifted', [
    ('cpu', True), ('cuda', True), ('rocm', True), ('tpu', False)])
def test_auto_method_is_chosen_for_the_lowered_platform(platform, shifted):
  f = jax.grad(lambda x, kernel: jnp.sum(depthwise.depthwise_conv(
      x, kernel, dilation=2) ** 2), argnums=(0, 1))
  args = (jax.ShapeDtypeStruct((1, 8, 8, 4), jnp.float32),
          jax.ShapeDtypeStruct((3, 3, 1, 4), jnp.float32))
  text = jax.export.export(jax.jit(f), platforms=(platform,))(
      *args).mlir_module()
  assert ('stablehlo.convolution' not in text) == shifted


def test_bad_kernel_shape_and_method_are_named():
  with pytest.raises(ValueError, match=r'kernel shape \(3, 3, 2, 4\)'):
    depthwise.depthwise_conv(jnp.ones((1, 5, 5, 4)), jnp.ones((3, 3, 2, 4)))
  with pytest.raises(ValueError, match="method 'fast'"):
    depthwise.depthwise_conv(jnp.ones((1, 5, 5, 4)), jnp.ones((3, 3, 1, 4)),
                             method='fast')


# segjax.models.conv: nn.Conv with the routing above, against nn.Conv.
CONV_CASES = [  # (nn.Conv kwargs, input shape, routed away from lax)
    (dict(features=5, kernel_size=(1, 1)), (2, 6, 7, 3), True),
    (dict(features=5, kernel_size=(1, 1), strides=2), (2, 7, 6, 3), True),
    (dict(features=4, kernel_size=(1, 1), strides=2, padding='SAME'),
     (1, 9, 8, 3), True),
    (dict(features=4, kernel_size=(1, 1), use_bias=True), (1, 5, 5, 2),
     True),
    (dict(features=6, kernel_size=(3, 3), feature_group_count=6,
          kernel_dilation=3, padding=((3, 3), (3, 3))), (2, 9, 10, 6), True),
    (dict(features=6, kernel_size=(3, 3), strides=2, feature_group_count=6,
          padding=((1, 1), (1, 1))), (1, 8, 9, 6), True),
    # 'SAME' at stride 2 pads unevenly: left to lax.
    (dict(features=6, kernel_size=(3, 3), strides=2, feature_group_count=6,
          padding='SAME'), (1, 8, 9, 6), False),
    (dict(features=4, kernel_size=(3, 3), feature_group_count=2),
     (1, 6, 6, 4), False),                 # Grouped, not depthwise.
    (dict(features=4, kernel_size=(3, 3), padding=((1, 1), (1, 1))),
     (1, 6, 6, 3), False),                 # Dense 3x3.
]


@pytest.mark.parametrize('kwargs,shape,routed', CONV_CASES)
def test_conv_routing_matches_nn_conv(kwargs, shape, routed):
  x = jax.random.normal(jax.random.PRNGKey(0), shape)
  theirs = nn.Conv(**kwargs)
  variables = theirs.init(jax.random.PRNGKey(1), x)
  for kernels in ('segjax', 'xla'):
    ours = conv.Conv(**kwargs, kernels=kernels)
    assert (jax.tree.map(jnp.shape, ours.init(jax.random.PRNGKey(1), x)) ==
            jax.tree.map(jnp.shape, variables))
    loss = lambda module: lambda v, x: jnp.sum(
        jnp.sin(module.apply(v, x)))
    for f in (lambda m: m.apply, lambda m: jax.grad(loss(m), (0, 1))):
      got, want = jax.jit(f(ours))(variables, x), f(theirs)(variables, x)
      jax.tree.map(lambda a, b: np.testing.assert_allclose(
          a, b, rtol=1e-5, atol=1e-5), got, want)
    hlo = jax.jit(ours.apply).lower(variables, x).as_text()
    assert ('convolution' not in hlo) == (routed and kernels == 'segjax')


def test_bad_kernels_is_named():
  with pytest.raises(ValueError, match="kernels='fast'"):
    conv.Conv(4, (1, 1), kernels='fast')


@pytest.mark.parametrize('platform,one_by_one,depthwise', [
    ('cpu', True, True),
    ('cuda', False, True),  # XLA:GPU's Triton GEMM fusion crashed on 1x1s.
    ('rocm', False, True),
    ('tpu', False, False),
])
def test_auto_routes_per_lowered_platform(platform, one_by_one, depthwise):
  """'auto' lowered for each platform on this machine (jax.export)."""
  cases = {  # kind: (module, input shape)
      'one_by_one': (conv.Conv(8, (1, 1), strides=2), (1, 8, 8, 4)),
      'depthwise': (conv.Conv(4, (3, 3), feature_group_count=4,
                              padding=((1, 1), (1, 1))), (1, 8, 8, 4)),
  }
  for kind, want_routed in (('one_by_one', one_by_one),
                            ('depthwise', depthwise)):
    module, shape = cases[kind]
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    variables = jax.eval_shape(module.init, jax.random.PRNGKey(0), x)
    text = jax.export.export(jax.jit(module.apply), platforms=(platform,))(
        variables, x).mlir_module()
    assert ('stablehlo.convolution' not in text) == want_routed, kind
    assert ('stablehlo.dot_general' in text) == (
        want_routed and kind == 'one_by_one'), kind
