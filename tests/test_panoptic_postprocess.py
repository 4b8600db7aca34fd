"""Tests of segjax.postprocess.panoptic against a loop-based NumPy reference."""

import numpy as np
import pytest

import jax
from segjax.postprocess import panoptic as pp


def _reference(logits, heat, offsets, *, thing_classes, label_divisor,
               ignore_index, center_threshold, nms_kernel, top_k,
               stuff_area):
  """Float64, one image, explicit loops: the algorithm as written in prose."""
  logits = logits.astype(np.float64)
  heat = heat.astype(np.float64)
  offsets = offsets.astype(np.float64)
  h, w, c = logits.shape
  r = nms_kernel // 2
  sem = logits.argmax(-1)
  thing = np.isin(sem, thing_classes)
  peaks = []
  for i in range(h):
    for j in range(w):
      window = heat[max(i - r, 0):i + r + 1, max(j - r, 0):j + r + 1]
      if heat[i, j] >= window.max() and heat[i, j] > center_threshold:
        peaks.append((heat[i, j], i, j))
  peaks.sort(key=lambda t: -t[0])
  centers = peaks[:top_k]
  ids = np.zeros((h, w), np.int64)
  for i in range(h):
    for j in range(w):
      if not thing[i, j] or not centers:
        continue
      vy, vx = i + offsets[i, j, 0], j + offsets[i, j, 1]
      best, best_d = 0, np.inf
      for k, (_, cy, cx) in enumerate(centers):
        d = (vy - cy) ** 2 + (vx - cx) ** 2
        if d < best_d:
          best, best_d = k + 1, d
      ids[i, j] = best
  prob = np.exp(logits - logits.max(-1, keepdims=True))
  prob /= prob.sum(-1, keepdims=True)
  scores = np.zeros(top_k)
  classes = np.full(top_k, ignore_index)
  valid = np.zeros(top_k, bool)
  void = ignore_index * label_divisor
  pan = np.full((h, w), void, np.int64)
  for k in range(1, len(centers) + 1):
    mask = ids == k
    if not mask.any():
      continue
    cls = np.bincount(sem[mask], minlength=c).argmax()
    valid[k - 1] = True
    classes[k - 1] = cls
    scores[k - 1] = centers[k - 1][0] * prob[mask][:, cls].mean()
    pan[mask] = cls * label_divisor + k
  area = np.bincount(sem.ravel(), minlength=c)
  for cls in range(c):
    if cls not in thing_classes and area[cls] >= stuff_area:
      pan[sem == cls] = cls * label_divisor
  return dict(panoptic=pan, semantic=sem, instance_ids=ids,
              instance_scores=scores, instance_classes=classes,
              instance_valid=valid), len(centers)


def _random_inputs(seed, b=2, h=24, w=31, c=5):
  rng = np.random.default_rng(seed)
  # Class biases make some classes rare, so stuff_area voids some of them.
  logits = rng.normal(size=(b, h, w, c)) + np.linspace(1.5, -1.5, c)
  heat = rng.uniform(size=(b, h, w, 1))
  offsets = rng.normal(scale=6.0, size=(b, h, w, 2))
  return (logits.astype(np.float32), heat.astype(np.float32),
          offsets.astype(np.float32))


def _check_against_reference(inputs, **opts):
  out = jax.device_get(pp.panoptic_postprocess(*inputs, **opts))
  logits, heat, offsets = inputs
  kept = []
  for i in range(logits.shape[0]):
    ref, num_centers = _reference(logits[i], heat[i, ..., 0], offsets[i], **opts)
    for key in ('panoptic', 'semantic', 'instance_ids', 'instance_classes',
                'instance_valid'):
      np.testing.assert_array_equal(out[key][i], ref[key], err_msg=key)
    np.testing.assert_allclose(out['instance_scores'][i],
                               ref['instance_scores'], rtol=1e-5, atol=1e-6)
    kept.append(num_centers)
  for key in ('panoptic', 'semantic', 'instance_ids', 'instance_classes'):
    assert out[key].dtype == np.int32, key
  assert out['instance_scores'].dtype == np.float32
  return out, kept


@pytest.mark.parametrize('seed', [0, 1, 2])
@pytest.mark.parametrize('nms_kernel,top_k,threshold,things,case', [
    (3, 12, 0.3, (1, 3), 'full'),     # more peaks than top_k
    (7, 150, 0.1, (1, 3), 'partial'),  # fewer peaks than top_k
    (5, 150, 0.1, (4,), 'empty'),     # rare things: kept centers, no pixels
])
def test_matches_reference(seed, nms_kernel, top_k, threshold, things, case):
  out, kept = _check_against_reference(
      _random_inputs(seed), thing_classes=things, label_divisor=1000,
      ignore_index=255, center_threshold=threshold, nms_kernel=nms_kernel,
      top_k=top_k, stuff_area=150)
  # The random data must exercise the branch each case is named after.
  valid = out['instance_valid']
  assert valid.any() and (out['panoptic'] == 255 * 1000).any()
  if case == 'full':
    assert valid.all()
  elif case == 'partial':
    assert not valid.all()
  else:
    assert any(not v[:n].all() for v, n in zip(valid, kept))


def test_traces_once_per_shape():
  inputs = _random_inputs(3, b=1, h=13, w=17, c=4)
  opts = dict(thing_classes=(2,), label_divisor=100, top_k=9, nms_kernel=5,
              stuff_area=3, chunk_size=40)
  before = pp.trace_count
  first = pp.panoptic_postprocess(*inputs, **opts)
  second = pp.panoptic_postprocess(*inputs, **opts)
  assert pp.trace_count == before + 1
  np.testing.assert_array_equal(first['panoptic'], second['panoptic'])
  pp.panoptic_postprocess(*_random_inputs(4, b=1, h=14, w=17, c=4), **opts)
  assert pp.trace_count == before + 2


def test_zero_instances():
  logits, heat, offsets = _random_inputs(5)
  heat = heat * 0.05  # every value below the 0.1 threshold
  out = jax.device_get(pp.panoptic_postprocess(
      logits, heat, offsets, thing_classes=(1, 3), label_divisor=1000,
      top_k=20, stuff_area=0))
  sem = logits.argmax(-1)
  thing = np.isin(sem, (1, 3))
  assert (out['panoptic'][thing] == 255 * 1000).all()
  np.testing.assert_array_equal(out['panoptic'][~thing], sem[~thing] * 1000)
  assert (out['instance_ids'] == 0).all()
  assert not out['instance_valid'].any()
  assert np.isfinite(out['instance_scores']).all()
  assert (out['instance_classes'] == 255).all()


def test_only_top_k_peaks_kept():
  b, h, w, c, top_k = 1, 24, 31, 2, 5
  rng = np.random.default_rng(6)
  heat = rng.uniform(size=(b, h, w)).astype(np.float32)
  logits = np.zeros((b, h, w, c), np.float32)
  logits[..., 1] = 1.0  # every pixel is a thing
  offsets = np.zeros((b, h, w, 2), np.float32)
  ref_peaks = sorted(
      ((heat[0, i, j], i, j) for i in range(h) for j in range(w)
       if heat[0, i, j] >= heat[0, max(i - 1, 0):i + 2,
                                max(j - 1, 0):j + 2].max()
       and heat[0, i, j] > 0.1), reverse=True)
  assert len(ref_peaks) > top_k
  out = jax.device_get(pp.panoptic_postprocess(
      logits, heat, offsets, thing_classes=(1,), label_divisor=1000,
      nms_kernel=3, top_k=top_k, stuff_area=0))
  ids = out['instance_ids'][0]
  assert ((ids >= 1) & (ids <= top_k)).all()
  # With zero offsets a kept center is its own nearest center.
  for k, (_, i, j) in enumerate(ref_peaks[:top_k], start=1):
    assert ids[i, j] == k
  assert out['instance_valid'].all()
  masks = np.asarray(pp.instance_masks(out['instance_ids'], top_k))
  assert masks.shape == (b, top_k, h, w)
  assert (masks.sum(1) == 1).all()


def test_two_blobs():
  h, w, c = 20, 30, 3
  sem = np.zeros((h, w), np.int64)
  blob_a = (slice(3, 8), slice(3, 9))
  blob_b = (slice(12, 18), slice(20, 27))
  sem[blob_a] = 1
  sem[blob_b] = 1
  sem[18:20, 0:2] = 2  # 4 pixels of stuff class 2, below stuff_area
  logits = (5.0 * np.eye(c)[sem])[None].astype(np.float32)
  yy, xx = np.mgrid[:h, :w]
  heat = np.zeros((h, w))
  offsets = np.zeros((h, w, 2))
  for (cy, cx), peak, blob in (((5, 5), 0.9, blob_a),
                               ((14, 23), 0.6, blob_b)):
    heat += peak * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 8.0)
    offsets[blob] = np.stack([cy - yy, cx - xx], -1)[blob]
  out = jax.device_get(pp.panoptic_postprocess(
      logits, heat[None, ..., None].astype(np.float32),
      offsets[None].astype(np.float32), thing_classes=(1,),
      label_divisor=1000, top_k=4, stuff_area=10))
  expected_ids = np.zeros((h, w), np.int32)
  expected_ids[blob_a] = 1
  expected_ids[blob_b] = 2
  np.testing.assert_array_equal(out['instance_ids'][0], expected_ids)
  expected = np.zeros((h, w), np.int32)  # class 0 stuff, large enough
  expected[blob_a] = 1001
  expected[blob_b] = 1002
  expected[18:20, 0:2] = 255 * 1000
  np.testing.assert_array_equal(out['panoptic'][0], expected)
  np.testing.assert_array_equal(out['instance_valid'][0],
                                [True, True, False, False])
  np.testing.assert_array_equal(out['instance_classes'][0],
                                [1, 1, 255, 255])
  p = np.exp(5.0) / (np.exp(5.0) + 2.0)
  np.testing.assert_allclose(out['instance_scores'][0],
                             [0.9 * p, 0.6 * p, 0.0, 0.0], rtol=1e-5)


def test_chunking_matches_single_chunk():
  inputs = _random_inputs(7)
  opts = dict(thing_classes=(0, 2), label_divisor=1000, top_k=30,
              nms_kernel=5, stuff_area=50)
  whole = jax.device_get(pp.panoptic_postprocess(
      *inputs, chunk_size=24 * 31, **opts))
  chunked = jax.device_get(pp.panoptic_postprocess(
      *inputs, chunk_size=100, **opts))  # 744 = 7 * 100 + 44
  for key in whole:
    np.testing.assert_array_equal(whole[key], chunked[key], err_msg=key)


@pytest.mark.parametrize('opts,match', [
    (dict(label_divisor=200, top_k=200), 'label_divisor'),
    (dict(label_divisor=1000, top_k=0), 'top_k'),
    (dict(label_divisor=1000, nms_kernel=4), 'nms_kernel'),
    (dict(label_divisor=1000, thing_classes=(9,)), 'thing_classes'),
])
def test_bad_arguments(opts, match):
  opts = dict(dict(thing_classes=(1,)), **opts)
  with pytest.raises(ValueError, match=match):
    pp.panoptic_postprocess(*_random_inputs(8, b=1, h=6, w=7), **opts)


def test_bad_shapes():
  logits, heat, offsets = _random_inputs(9, b=1, h=6, w=7)
  with pytest.raises(ValueError, match='center_offsets'):
    pp.panoptic_postprocess(logits, heat, offsets[:, :5],
                            thing_classes=(1,), label_divisor=1000)
  with pytest.raises(ValueError, match='center_heatmap'):
    pp.panoptic_postprocess(logits, heat[:, :, :6], offsets,
                            thing_classes=(1,), label_divisor=1000)
