"""Tests for segjax.evaluation.modes: whole / slide / multi-scale / flip.

Every reference is computed independently: NumPy loops over windows, and
resize -> apply -> resize back step by step, with the same apply_fn.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segjax.evaluation import modes

K = 3  # classes


class TinyNet(nn.Module):
  """Two 3x3 convs: receptive field 5x5, translation equivariant."""

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(4, (3, 3))(x))
    return nn.Conv(K, (3, 3))(x)


def _net():
  model = TinyNet()
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))
  return model.apply, variables


def pixelwise(v, x):
  """A 1x1 function: commutes with flips and crops."""
  return x @ v['w']


def ramp(v, x):
  """Depends on the position in the input it is given: not flip symmetric,
  and a window sees different logits than the whole image does."""
  _, h, w, _ = x.shape
  rows = jnp.linspace(0.0, 1.0, h)[None, :, None, None]
  cols = jnp.linspace(0.0, 2.0, w)[None, None, :, None] ** 2
  return x @ v['w'] + rows * v['r'] + cols * v['c']


def _ramp_vars():
  rng = np.random.default_rng(1)
  return {'w': jnp.asarray(rng.normal(size=(3, K)), jnp.float32),
          'r': jnp.asarray([1.0, -2.0, 0.5], jnp.float32),
          'c': jnp.asarray([-1.0, 0.0, 1.5], jnp.float32)}


def _images(b, h, w, seed=0):
  return np.random.default_rng(seed).normal(size=(b, h, w, 3)).astype(
      np.float32)


def _full(images):
  return np.ones(images.shape[:3], bool)


def _softmax(logits):
  logits = np.asarray(logits, np.float64)
  e = np.exp(logits - logits.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _resize(x, h, w):
  return jax.image.resize(jnp.asarray(x), (x.shape[0], h, w, x.shape[3]),
                          'bilinear', antialias=False)


def test_window_starts_cover_every_pixel():
  for size, window, stride in [(37, 16, 10), (45, 16, 12), (32, 16, 16),
                               (33, 16, 16), (16, 16, 5), (7, 16, 4),
                               (100, 30, 1)]:
    starts = modes.window_starts(size, window, stride)
    win = min(window, size)
    count = np.zeros(size, int)
    for s in starts:
      assert 0 <= s and s + win <= size
      count[s:s + win] += 1
    assert count.min() >= 1, (size, window, stride)
    assert starts == sorted(set(starts))
    # Regular steps, then at most one window flush with the far edge.
    assert starts[:-1] == list(range(0, stride * (len(starts) - 1), stride))
    assert starts[-1] == max(size - window, 0)
  assert modes.window_starts(37, 16, 10) == [0, 10, 20, 21]
  assert modes.window_starts(45, 16, 12) == [0, 12, 24, 29]
  assert modes.num_windows((37, 45), (16, 16), (10, 12)) == 16


def test_slide_with_one_window_equals_whole():
  apply_fn, variables = _net()
  x = _images(2, 20, 24)
  whole = modes.make_predict_fn(apply_fn, K)(variables, x, _full(x))
  for window in [(20, 24), (32, 40)]:  # exact fit; larger than the image
    slide = modes.make_predict_fn(apply_fn, K, mode='slide', window=window,
                                  stride=(7, 9))(variables, x, _full(x))
    np.testing.assert_allclose(slide, whole, atol=1e-6, rtol=0)


@pytest.mark.parametrize('fn', ['ramp', 'net'])
def test_slide_equals_numpy_window_loop(fn):
  apply_fn, variables = (ramp, _ramp_vars()) if fn == 'ramp' else _net()
  x = _images(2, 37, 45, seed=2)
  got = modes.make_predict_fn(apply_fn, K, mode='slide', window=(16, 16),
                              stride=(10, 12))(variables, x, _full(x))
  # Independent window grid: ceil((size - window) / stride) + 1 windows,
  # the last one clipped to the edge (the formula of mmseg's slide mode).
  def starts(size, win, s):
    n = -(-(size - win) // s) + 1
    return [min(i * s, size - win) for i in range(n)]
  total = np.zeros((2, 37, 45, K))
  count = np.zeros((37, 45))
  for r in starts(37, 16, 10):
    for c in starts(45, 16, 12):
      logits = apply_fn(variables, jnp.asarray(x[:, r:r + 16, c:c + 16]))
      total[:, r:r + 16, c:c + 16] += _softmax(logits)
      count[r:r + 16, c:c + 16] += 1
  assert count.min() >= 1
  np.testing.assert_allclose(got, total / count[..., None], atol=1e-5)
  np.testing.assert_allclose(np.sum(got, -1), 1.0, atol=1e-5)


def test_single_scale_no_flip_equals_plain_whole():
  apply_fn, variables = _net()
  x = _images(2, 24, 20)
  got = modes.make_predict_fn(apply_fn, K, scales=(1.0,), flip=False)(
      variables, x, _full(x))
  want = jax.nn.softmax(apply_fn(variables, jnp.asarray(x)), axis=-1)
  np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)


def test_flip():
  x = _images(2, 12, 10)
  # A 1x1 function commutes with flipping: flip changes nothing.
  v = {'w': _ramp_vars()['w']}
  plain = modes.make_predict_fn(pixelwise, K)(v, x, _full(x))
  flipped = modes.make_predict_fn(pixelwise, K, flip=True)(v, x, _full(x))
  np.testing.assert_allclose(flipped, plain, atol=1e-6)
  # A position-dependent one: the mean of the pass and the mirrored pass.
  v = _ramp_vars()
  got = modes.make_predict_fn(ramp, K, flip=True)(v, x, _full(x))
  one = _softmax(ramp(v, jnp.asarray(x)))
  two = _softmax(ramp(v, jnp.asarray(x[:, :, ::-1])))[:, :, ::-1]
  np.testing.assert_allclose(got, (one + two) / 2, atol=1e-6)
  assert np.abs(one - two).max() > 0.05  # the test means something


def test_flip_mirrors_only_the_real_region():
  v = _ramp_vars()
  x = _images(2, 12, 10)
  x[1, :, 7:] = 0  # image 1 is 12x7, padded to 12x10
  mask = _full(x)
  mask[1, :, 7:] = False
  got = np.asarray(modes.make_predict_fn(ramp, K, flip=True)(v, x, mask))
  one = _softmax(ramp(v, jnp.asarray(x)))
  mirrored = x.copy()
  mirrored[1, :, :7] = x[1, :, 6::-1]
  mirrored[0] = x[0, :, ::-1]
  two = _softmax(ramp(v, jnp.asarray(mirrored)))
  back = two.copy()
  back[1, :, :7] = two[1, :, 6::-1]
  back[0] = two[0, :, ::-1]
  want = np.where(mask[..., None], (one + back) / 2, 0)
  np.testing.assert_allclose(got, want, atol=1e-6)


def test_multi_scale_matches_step_by_step_reference():
  apply_fn, variables = _net()
  x = _images(2, 20, 28, seed=3)
  scales = (0.5, 0.75, 1.25)
  got = modes.make_predict_fn(apply_fn, K, scales=scales, flip=True)(
      variables, x, _full(x))
  passes = []
  for s in scales:
    h, w = int(20 * s + 0.5), int(28 * s + 0.5)
    for xx in (x, x[:, :, ::-1]):
      probs = jax.nn.softmax(apply_fn(variables, _resize(xx, h, w)), axis=-1)
      probs = np.asarray(_resize(probs, 20, 28))
      passes.append(probs if xx is x else probs[:, :, ::-1])
  assert passes[0].shape == (2, 20, 28, K)
  np.testing.assert_allclose(got, np.mean(passes, axis=0), atol=1e-5)


def test_slide_at_several_scales_matches_reference():
  v = _ramp_vars()
  x = _images(1, 30, 26, seed=4)
  got = modes.make_predict_fn(ramp, K, mode='slide', window=(16, 12),
                              stride=(8, 8), scales=(0.5, 1.5))(
                                  v, x, _full(x))
  single = {}
  for s in (0.5, 1.5):
    h, w = int(30 * s + 0.5), int(26 * s + 0.5)
    single[s] = modes.make_predict_fn(ramp, K, mode='slide', window=(16, 12),
                                      stride=(8, 8))
    small = np.asarray(_resize(x, h, w))
    probs = single[s](v, small, _full(small))
    single[s] = np.asarray(_resize(probs, 30, 26))
  np.testing.assert_allclose(got, (single[0.5] + single[1.5]) / 2, atol=1e-5)


def test_traces_once_per_shape_and_not_per_call_or_weights():
  apply_fn, variables = _net()
  predict = modes.make_predict_fn(apply_fn, K, mode='slide', window=(8, 8),
                                  stride=(4, 4), flip=True)
  start = modes.trace_count
  x = _images(1, 16, 16)
  predict(variables, x, _full(x))
  predict(variables, x + 1, _full(x))
  other = jax.tree_util.tree_map(lambda a: a * 2, variables)
  predict(other, x, _full(x))  # new weights, same program
  assert modes.trace_count == start + 1
  y = _images(1, 16, 24)
  predict(variables, y, _full(y))
  predict(variables, y, _full(y))
  assert modes.trace_count == start + 2


def test_bucket_shape():
  assert modes.bucket_shape(360, 480) == (512, 512)
  assert modes.bucket_shape(512, 513) == (512, 768)
  assert modes.bucket_shape(1, 2048) == (256, 2048)
  assert modes.bucket_shape(3000, 2049) == (3008, 2080)
  assert modes.bucket_shape(100, 70, buckets=(64, 128), multiple=8) == (
      128, 128)
  assert modes.bucket_shape(129, 64, buckets=(64, 128), multiple=8) == (
      136, 64)


def test_pad_to_and_zeros_outside_the_mask():
  rng = np.random.default_rng(5)
  raw = rng.integers(0, 256, size=(2, 13, 19, 3), dtype=np.uint8)
  shape = modes.bucket_shape(13, 19, buckets=(16, 24))
  assert shape == (16, 24)
  padded, mask = modes.pad_to(raw, shape)
  assert padded.dtype == np.uint8 and padded.shape == (2, 16, 24, 3)
  assert mask.dtype == bool and mask.shape == (2, 16, 24)
  np.testing.assert_array_equal(padded[:, :13, :19], raw)
  assert not padded[:, 13:].any() and not padded[:, :, 19:].any()
  assert mask[:, :13, :19].all() and mask.sum() == 2 * 13 * 19
  apply_fn, variables = _net()
  x = padded.astype(np.float32) / 255 - 0.5
  got = np.asarray(modes.make_predict_fn(apply_fn, K, flip=True)(
      variables, x, mask))
  assert not got[~mask].any()
  np.testing.assert_allclose(got[mask].sum(-1), 1.0, atol=1e-5)
  # Padding reaches real pixels only through the receptive field (2 pixels
  # for two 3x3 convs): farther away, padded == unpadded. The flipped pass
  # puts the real region's left edge next to the padding, so with flip=True
  # the 2 left columns are near padding too.
  for flip, left in [(False, 0), (True, 2)]:
    predict = modes.make_predict_fn(apply_fn, K, flip=flip)
    got = np.asarray(predict(variables, x, mask))
    ref = np.asarray(predict(variables, x[:, :13, :19], mask[:, :13, :19]))
    np.testing.assert_allclose(got[:, :11, left:17], ref[:, :11, left:17],
                               atol=1e-6)
    assert np.abs(got[:, :13, :19] - ref).max() > 1e-3  # padding is seen


def test_value_errors():
  make = modes.make_predict_fn
  with pytest.raises(ValueError, match='mode'):
    make(pixelwise, K, mode='tiles')
  with pytest.raises(ValueError, match='window'):
    make(pixelwise, K, mode='slide')
  with pytest.raises(ValueError, match='stride'):
    make(pixelwise, K, mode='slide', window=8, stride=0)
  with pytest.raises(ValueError, match='stride'):
    make(pixelwise, K, mode='slide', window=(8, 8), stride=(4, -1))
  with pytest.raises(ValueError, match='stride'):
    make(pixelwise, K, mode='slide', window=(8, 8), stride=(4, 9))
  with pytest.raises(ValueError, match='window'):
    make(pixelwise, K, mode='slide', window=(8, 0))
  with pytest.raises(ValueError, match='window'):
    make(pixelwise, K, mode='whole', window=8)
  with pytest.raises(ValueError, match='scales'):
    make(pixelwise, K, scales=())
  with pytest.raises(ValueError, match='scales'):
    make(pixelwise, K, scales=(1.0, 0.0))
  with pytest.raises(ValueError, match='scales'):
    make(pixelwise, K, scales=(-0.5,))
  with pytest.raises(ValueError, match='num_classes'):
    make(pixelwise, 0)
  with pytest.raises(ValueError, match='apply_fn'):
    x = _images(1, 4, 4)
    make(pixelwise, K + 1)({'w': jnp.ones((3, K))}, x, _full(x))
  with pytest.raises(ValueError, match='height'):
    modes.bucket_shape(0, 10)
  with pytest.raises(ValueError, match='shape'):
    modes.pad_to(np.zeros((1, 8, 8, 3)), (4, 8))
