"""Binary-mask scores, per-image mIoU and boundary IoU vs NumPy definitions."""

import jax
import numpy as np
import pytest

from segjax import metrics
from segjax.metrics import binary
from segjax.metrics import boundary

IGNORE = 255


def _np_binary(labels, probs, threshold):
  tp = fp = fn = tn = 0
  for y, p in zip(np.ravel(labels), np.ravel(probs)):
    if y == IGNORE:
      continue
    pos = p >= threshold
    tp += pos and y == 1
    fp += pos and y == 0
    fn += (not pos) and y == 1
    tn += (not pos) and y == 0
  return tp, fp, fn, tn


@pytest.mark.parametrize('threshold', [0.3, 0.5, 0.8])
def test_binary_scores_match_counts(threshold):
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 2, (3, 9, 11))
  labels[rng.random(labels.shape) < 0.2] = IGNORE
  probs = rng.random(labels.shape).astype(np.float32)
  tp, fp, fn, tn = _np_binary(labels, probs, threshold)
  got = metrics.binary_scores(labels, probs, threshold)
  np.testing.assert_allclose([got['tp'], got['fp'], got['fn'], got['tn']],
                             [tp, fp, fn, tn])
  np.testing.assert_allclose(got['iou'], tp / (tp + fp + fn), rtol=1e-6)
  np.testing.assert_allclose(got['dice'], 2 * tp / (2 * tp + fp + fn),
                             rtol=1e-6)
  np.testing.assert_allclose(got['precision'], tp / (tp + fp), rtol=1e-6)
  np.testing.assert_allclose(got['recall'], tp / (tp + fn), rtol=1e-6)
  # Logits give the same decision as their probabilities.
  logits = np.log(probs) - np.log1p(-probs)
  from_logits = metrics.binary_scores(labels, logits, threshold,
                                      from_logits=True)
  np.testing.assert_allclose(from_logits['tp'], tp)


def test_binary_scores_nan_when_nothing_is_predicted_and_bad_probs_raise():
  labels = np.zeros((2, 4, 4), np.int32)
  got = metrics.binary_scores(labels, np.zeros((2, 4, 4), np.float32))
  assert np.isnan(got['iou']) and np.isnan(got['precision'])
  with pytest.raises(ValueError, match='from_logits=True'):
    metrics.binary_scores(labels, np.full((2, 4, 4), 3.0, np.float32))


def test_binary_stats_add_up_over_batches():
  rng = np.random.default_rng(1)
  labels = rng.integers(0, 2, (4, 6, 6))
  probs = rng.random(labels.shape).astype(np.float32)
  whole = binary.binary_stats(labels, probs)
  parts = [binary.binary_stats(labels[i:i + 1], probs[i:i + 1])
           for i in range(4)]
  for k in whole:
    np.testing.assert_allclose(whole[k], sum(p[k] for p in parts))


def test_per_image_mean_iou_scores_each_image_alone():
  rng = np.random.default_rng(2)
  labels = rng.integers(0, 3, (4, 5, 6))
  preds = rng.integers(0, 3, (4, 5, 6))
  labels[3] = IGNORE  # An image with no valid pixel scores NaN.
  got = np.asarray(metrics.per_image_mean_iou(labels, preds, 3))
  for i in range(3):
    ious = []
    for c in range(3):
      tp = np.sum((labels[i] == c) & (preds[i] == c))
      union = np.sum((labels[i] == c) | (preds[i] == c))
      if union:
        ious.append(tp / union)
    np.testing.assert_allclose(got[i], np.mean(ious), rtol=1e-6)
  assert np.isnan(got[3])


def _np_boundary(mask, d):
  """The reference: pad with one ring of zeros, erode d times with a 3x3."""
  h, w = mask.shape
  x = np.pad(mask.astype(np.uint8), 1)
  for _ in range(d):
    y = x.copy()
    for dy in (-1, 0, 1):
      for dx in (-1, 0, 1):
        shifted = np.zeros_like(x)
        src = x[max(dy, 0):x.shape[0] + min(dy, 0),
                max(dx, 0):x.shape[1] + min(dx, 0)]
        shifted[max(-dy, 0):x.shape[0] + min(-dy, 0),
                max(-dx, 0):x.shape[1] + min(-dx, 0)] = src
        y = np.minimum(y, shifted)
    y[0, :] = y[-1, :] = y[:, 0] = y[:, -1] = 0
    x = y
  eroded = x[1:h + 1, 1:w + 1].astype(bool)
  return mask & ~eroded


@pytest.mark.parametrize('size,ratio', [((20, 30), 0.02), ((40, 40), 0.1),
                                        ((33, 17), 0.2)])
def test_boundary_iou_matches_the_reference_erosion(size, ratio):
  rng = np.random.default_rng(3)
  h, w = size
  # Blocky maps, so masks have interiors that erosion can keep.
  coarse = rng.integers(0, 3, (3, h // 4 + 1, w // 4 + 1))
  labels = np.repeat(np.repeat(coarse, 4, 1), 4, 2)[:, :h, :w]
  preds = np.roll(labels, 1, axis=2)
  labels[:, :2, :3] = IGNORE
  d = boundary.boundary_width(h, w, ratio)
  inter = np.zeros(3)
  union = np.zeros(3)
  for img_l, img_p in zip(labels, preds):
    valid = img_l != IGNORE
    for c in range(3):
      gt_b = _np_boundary(img_l == c, d) & valid
      pr_b = _np_boundary(img_p == c, d) & valid
      inter[c] += np.sum(gt_b & pr_b)
      union[c] += np.sum(gt_b | pr_b)
  got = metrics.boundary_iou(labels, preds, 3, dilation_ratio=ratio)
  np.testing.assert_allclose(got['iou'], inter / union, rtol=1e-6)
  np.testing.assert_allclose(got['miou'], np.mean(inter / union), rtol=1e-6)


def test_boundary_iou_is_jittable_and_perfect_on_identical_maps():
  labels = np.random.default_rng(4).integers(0, 4, (2, 16, 16))
  got = jax.jit(lambda l: metrics.boundary_iou_stats(l, l, 4))(labels)
  np.testing.assert_array_equal(got['intersection'], got['union'])
  assert np.all(np.asarray(got['union']) > 0)


@pytest.mark.parametrize('shape,num_classes,ignore_frac', [
    ((1, 3, 5), 1, 0.3),      # Batch of 1, a single class, non-square.
    ((2, 4, 4), 3, 1.0),      # Every pixel ignored.
    ((2, 7, 3), 5, 0.0),      # Classes absent from one or both sides.
])
def test_edge_cases_match_the_definitions(shape, num_classes, ignore_frac):
  rng = np.random.default_rng(8)
  labels = rng.integers(0, max(num_classes - 2, 1), shape)
  preds = rng.integers(0, num_classes, shape)
  labels[rng.random(shape) < ignore_frac] = IGNORE
  cm = np.zeros((num_classes, num_classes), np.int64)
  for l, p in zip(labels.ravel(), preds.ravel()):
    if l != IGNORE:
      cm[l, p] += 1
  np.testing.assert_array_equal(
      metrics.confusion_matrix(labels, preds, num_classes), cm)
  scores = metrics.segmentation_scores(
      metrics.confusion_matrix(labels, preds, num_classes))
  if ignore_frac == 1.0:
    assert np.isnan(scores['miou']) and np.isnan(scores['pixel_accuracy'])
  else:
    union = cm.sum(0) + cm.sum(1) - np.diag(cm)
    iou = np.where(union > 0, np.diag(cm) / np.maximum(union, 1), np.nan)
    np.testing.assert_allclose(scores['iou'], iou, rtol=1e-6)
    np.testing.assert_allclose(scores['miou'], np.nanmean(iou), rtol=1e-6)
  got = metrics.boundary_iou_stats(labels, preds, num_classes)
  assert got['intersection'].shape == (num_classes,)
  if ignore_frac == 1.0:
    np.testing.assert_array_equal(got['union'], 0)


def test_binary_and_boundary_stats_are_sums_over_devices():
  rng = np.random.default_rng(9)
  labels = rng.integers(0, 2, (8, 12, 10))
  probs = rng.random(labels.shape).astype(np.float32)
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:8]), ('data',))
  sharding = jax.sharding.NamedSharding(mesh,
                                        jax.sharding.PartitionSpec('data'))
  l_sh, p_sh = jax.device_put(labels, sharding), jax.device_put(probs, sharding)
  whole = binary.binary_stats(labels, probs)
  sharded = jax.jit(binary.binary_stats)(l_sh, p_sh)
  for k in whole:
    np.testing.assert_allclose(whole[k], sharded[k])
  preds = (probs > 0.5).astype(np.int32)
  one_call = metrics.boundary_iou_stats(labels, preds, 2)
  per_image = [metrics.boundary_iou_stats(labels[i:i + 1], preds[i:i + 1], 2)
               for i in range(8)]
  on_mesh = jax.jit(lambda l, p: metrics.boundary_iou_stats(l, p, 2))(
      l_sh, jax.device_put(preds, sharding))
  for k in ('intersection', 'union'):
    np.testing.assert_array_equal(one_call[k], sum(s[k] for s in per_image))
    np.testing.assert_array_equal(one_call[k], on_mesh[k])
