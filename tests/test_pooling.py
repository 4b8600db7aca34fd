"""segjax.models.pooling.max_pool against a float64 NumPy loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segjax.models.pooling import max_pool


def _reference(x, g, window, strides, padding):
  """Forward and gradient by loops: the first maximum (row-major) wins."""
  x = np.asarray(x, np.float64)
  g = np.asarray(g, np.float64)
  (kh, kw), (sh, sw), ((pt, pb), (pl, pr)) = window, strides, padding
  b, h, w, c = x.shape
  oh = (h + pt + pb - kh) // sh + 1
  ow = (w + pl + pr - kw) // sw + 1
  out = np.full((b, oh, ow, c), -np.inf)
  dx = np.zeros_like(x)
  for n in range(b):
    for ch in range(c):
      for a in range(oh):
        for bb in range(ow):
          best, where = -np.inf, None
          for i in range(kh):
            for j in range(kw):
              r, s = a * sh + i - pt, bb * sw + j - pl
              if 0 <= r < h and 0 <= s < w and x[n, r, s, ch] > best:
                best, where = x[n, r, s, ch], (r, s)
          out[n, a, bb, ch] = best
          if where is not None:
            dx[n, where[0], where[1], ch] += g[n, a, bb, ch]
  return out, dx


@pytest.mark.parametrize('shape,window,strides,padding', [
    ((2, 9, 11, 3), (3, 3), (2, 2), ((1, 1), (1, 1))),  # ResNet stem.
    ((2, 8, 10, 3), (3, 3), (2, 2), ((1, 1), (1, 1))),
    ((1, 7, 9, 2), (2, 2), (2, 2), ((0, 0), (0, 0))),  # U-Net, odd sizes.
    ((1, 6, 7, 2), (3, 2), (1, 2), ((2, 0), (0, 1))),  # Asymmetric.
])
@pytest.mark.parametrize('ties', [False, True])
@pytest.mark.parametrize('kernels', ['segjax', 'xla'])
def test_matches_loop(shape, window, strides, padding, ties, kernels):
  rng = np.random.default_rng(0)
  x = rng.normal(size=shape).astype(np.float32)
  if ties:  # ReLU'd integers: most windows hold several equal maxima.
    x = np.maximum(np.round(x), 0).astype(np.float32)
  pool = lambda v: max_pool(v, window, strides, padding, kernels)
  out = jax.jit(pool)(x)
  g = rng.normal(size=out.shape).astype(np.float32)
  want, want_dx = _reference(x, g, window, strides, padding)
  dx = jax.jit(jax.grad(lambda v: jnp.sum(pool(v) * g)))(x)
  np.testing.assert_array_equal(np.asarray(out, np.float64), want)
  np.testing.assert_allclose(np.asarray(dx, np.float64), want_dx, atol=1e-6)


@pytest.mark.parametrize('platform,segjax_form', [
    ('cpu', True), ('cuda', False), ('rocm', False), ('tpu', False)])
def test_auto_is_chosen_for_the_lowered_platform(platform, segjax_form):
  """The gradient's select-and-scatter is XLA's form: timed on CPUs only,
  segjax's form replaces it there."""
  x = jax.ShapeDtypeStruct((2, 16, 16, 8), jnp.float32)
  f = jax.grad(lambda v: jnp.sum(max_pool(
      v, (3, 3), (2, 2), ((1, 1), (1, 1))) ** 2))
  text = jax.export.export(jax.jit(f), platforms=(platform,))(
      x).mlir_module()
  assert ('stablehlo.select_and_scatter' not in text) == segjax_form
  assert ('stablehlo.reduce_window' not in text) == segjax_form


def test_bfloat16_values_and_dtype():
  x = np.random.default_rng(1).normal(size=(1, 6, 6, 4)).astype(np.float32)
  out = max_pool(jnp.asarray(x, jnp.bfloat16), (3, 3), (2, 2),
                 ((1, 1), (1, 1)))
  want, _ = _reference(np.asarray(jnp.asarray(x, jnp.bfloat16), np.float32),
                       np.zeros((1, 3, 3, 4)), (3, 3), (2, 2),
                       ((1, 1), (1, 1)))
  assert out.dtype == jnp.bfloat16
  np.testing.assert_array_equal(np.asarray(out, np.float64), want)


def test_gradient_has_no_select_and_scatter():
  x = jnp.zeros((2, 16, 16, 8))
  hlo = jax.jit(jax.grad(lambda v: jnp.sum(
      max_pool(v, (3, 3), (2, 2), ((1, 1), (1, 1)))))).lower(x).as_text()
  assert 'select_and_scatter' not in hlo and 'scatter' not in hlo


@pytest.mark.parametrize('x,padding,match', [
    (jnp.zeros((1, 4, 4, 1), jnp.int32), ((0, 0), (0, 0)), 'floats'),
    (jnp.zeros((4, 4, 1)), ((0, 0), (0, 0)), r'\[B, H, W, C\]'),
    (jnp.zeros((1, 4, 4, 1)), ((-1, 0), (0, 0)), 'padding'),
    (jnp.zeros((1, 1, 4, 1)), ((0, 0), (0, 0)), 'smaller than'),
])
def test_bad_input_is_named(x, padding, match):
  with pytest.raises(ValueError, match=match):
    max_pool(x, (2, 2), (2, 2), padding)
  with pytest.raises(ValueError, match="kernels='fast'"):
    max_pool(jnp.zeros((1, 4, 4, 1)), (2, 2), (2, 2), ((0, 0), (0, 0)),
             'fast')
