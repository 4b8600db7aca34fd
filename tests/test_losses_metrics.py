"""Losses and metrics against independent float64 NumPy definitions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segjax import losses
from segjax import metrics

IGNORE = 255


def _random_case(seed, shape=(2, 5, 7), num_classes=4, ignore_frac=0.2,
                 dtype=np.int32):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, num_classes, shape)
  labels[rng.random(shape) < ignore_frac] = IGNORE
  preds = rng.integers(0, num_classes, shape)
  return labels.astype(dtype), preds.astype(dtype)


def _np_confusion(labels, preds, num_classes):
  cm = np.zeros((num_classes, num_classes), np.int64)
  for l, p in zip(np.ravel(labels), np.ravel(preds)):
    if l != IGNORE:
      cm[l, p] += 1
  return cm


def _np_scores(cm):
  """IoU / Dice / accuracy, written per class from the definitions."""
  cm = cm.astype(np.float64)
  c = cm.shape[0]
  iou, dice, acc = [], [], []
  for k in range(c):
    tp = cm[k, k]
    fn = cm[k].sum() - tp
    fp = cm[:, k].sum() - tp
    iou.append(tp / (tp + fp + fn) if tp + fp + fn else np.nan)
    dice.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else np.nan)
    acc.append(tp / (tp + fn) if tp + fn else np.nan)
  return np.array(iou), np.array(dice), np.array(acc)


@pytest.mark.parametrize('dtype', [np.int8, np.uint8, np.int16, np.uint16,
                                   np.int32, np.int64])
def test_confusion_matrix_matches_a_pixel_loop(dtype):
  labels, preds = _random_case(0, dtype=dtype)
  if dtype == np.int8:  # 255 does not fit int8: it wrapped to -1 there.
    assert (labels == -1).any()
    cm = metrics.confusion_matrix(labels, preds, 4, ignore_index=-1)
    labels = np.where(labels == -1, IGNORE, labels.astype(np.int64))
  else:
    cm = metrics.confusion_matrix(labels, preds, 4)
  assert cm.dtype == jnp.int32
  np.testing.assert_array_equal(cm, _np_confusion(labels, preds, 4))


@pytest.mark.parametrize('method', ['scatter', 'pairs', 'matmul'])
@pytest.mark.parametrize('shape', [(2, 5, 7), (1, 4, 8), (3, 1, 1)])
def test_every_confusion_matrix_formulation_counts_the_same(method, shape):
  labels, preds = _random_case(7, shape=shape)
  cm = metrics.confusion_matrix(labels, preds, 4, method=method)
  np.testing.assert_array_equal(cm, _np_confusion(labels, preds, 4))
  assert cm.dtype == jnp.int32


def test_invalid_predictions_under_ignored_labels_are_fine():
  labels = np.array([[[0, 255, 1]]])
  preds = np.array([[[0, 99, 1]]])
  np.testing.assert_array_equal(metrics.confusion_matrix(labels, preds, 2),
                                [[1, 0], [0, 1]])
  with pytest.raises(ValueError, match=r'predictions hold value\(s\) \[99\]'):
    metrics.confusion_matrix(np.array([[[0, 0, 1]]]), preds, 2)


def test_confusion_matrix_is_a_sum_over_images_and_devices():
  labels, preds = _random_case(1, shape=(8, 6, 10))
  whole = metrics.confusion_matrix(labels, preds, 4)
  per_image = sum(metrics.confusion_matrix(l, p, 4)
                  for l, p in zip(labels, preds))
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:8]), ('data',))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
  sharded = jax.jit(lambda l, p: metrics.confusion_matrix(l, p, 4))(
      jax.device_put(labels, sharding), jax.device_put(preds, sharding))
  np.testing.assert_array_equal(whole, per_image)
  np.testing.assert_array_equal(whole, sharded)


def test_confusion_matrix_weights_drop_padded_examples():
  labels, preds = _random_case(2, shape=(4, 5, 5))
  mask = np.array([1, 0, 1, 0], np.float32)[:, None, None]
  cm = metrics.confusion_matrix(labels, preds, 4, weights=mask)
  assert cm.dtype == jnp.float32
  np.testing.assert_array_equal(
      cm, _np_confusion(labels[::2], preds[::2], 4).astype(np.float32))


def test_confusion_matrix_eager_errors_name_the_problem():
  labels, preds = _random_case(3)
  with pytest.raises(ValueError, match=r'outside \[0, 4\)'):
    metrics.confusion_matrix(np.where(labels == 1, 7, labels), preds, 4)
  with pytest.raises(ValueError, match='same shape'):
    metrics.confusion_matrix(labels, preds[:1], 4)
  with pytest.raises(ValueError, match='integer'):
    metrics.confusion_matrix(labels.astype(np.float32), preds, 4)


def test_out_of_range_labels_under_jit_are_skipped():
  labels, preds = _random_case(4)
  bad = np.where(labels == 1, 9, labels)
  cm = jax.jit(lambda l, p: metrics.confusion_matrix(l, p, 4))(bad, preds)
  np.testing.assert_array_equal(
      cm, _np_confusion(np.where(bad == 9, IGNORE, bad), preds, 4))


@pytest.mark.parametrize('seed', range(4))
def test_segmentation_scores_match_definitions(seed):
  labels, preds = _random_case(seed, num_classes=5)
  labels = np.where(labels == 4, IGNORE, labels)  # Class 4: never in truth,
  preds = np.where(preds == 3, 0, preds)  # class 3 never predicted.
  cm = _np_confusion(labels, preds, 6)  # Class 5: absent from both.
  iou, dice, acc = _np_scores(cm)
  for scores in (metrics.segmentation_scores(cm),
                 metrics.segmentation_scores(jnp.asarray(cm))):
    np.testing.assert_allclose(scores['iou'], iou, rtol=1e-6)
    np.testing.assert_allclose(scores['dice'], dice, rtol=1e-6)
    np.testing.assert_allclose(scores['accuracy'], acc, rtol=1e-6)
    assert np.isnan(scores['iou'][5]) and np.isnan(scores['accuracy'][4])
    np.testing.assert_allclose(scores['miou'], np.nanmean(iou), rtol=1e-6)
    np.testing.assert_allclose(scores['mean_dice'], np.nanmean(dice),
                               rtol=1e-6)
    np.testing.assert_allclose(scores['mean_accuracy'], np.nanmean(acc),
                               rtol=1e-6)
    np.testing.assert_allclose(scores['pixel_accuracy'],
                               np.trace(cm) / cm.sum(), rtol=1e-6)
    freq = cm.sum(1) / cm.sum()
    np.testing.assert_allclose(scores['fw_iou'],
                               np.nansum(freq * iou), rtol=1e-6)


def test_scores_of_an_empty_matrix_are_nan():
  scores = metrics.segmentation_scores(np.zeros((3, 3), np.int64))
  for v in scores.values():
    assert np.all(np.isnan(v))


def test_mean_iou_is_data_set_level_not_a_mean_over_images():
  labels = np.array([[[0, 0, 0, 1]], [[1, 1, 1, 1]]])
  preds = np.array([[[0, 0, 0, 0]], [[1, 1, 1, 1]]])
  # Pooled: class 0 IoU 3/4, class 1 IoU 4/5 -> 0.775. Averaging the two
  # images' own mIoUs would give ((3/4 + 0) / 2 + 1) / 2 = 0.6875.
  np.testing.assert_allclose(metrics.mean_iou(labels, preds, 2),
                             (3 / 4 + 4 / 5) / 2, rtol=1e-6)


def _np_cross_entropy(logits, labels, class_weights=None, smoothing=0.0):
  logits = logits.astype(np.float64)
  c = logits.shape[-1]
  num = den = 0.0
  for idx in np.ndindex(labels.shape):
    y = labels[idx]
    if y == IGNORE:
      continue
    z = logits[idx]
    logp = z - (np.log(np.exp(z - z.max()).sum()) + z.max())
    target = np.full(c, smoothing / c)
    target[y] += 1 - smoothing
    w = 1.0 if class_weights is None else class_weights[y]
    num += w * -(target * logp).sum()
    den += w
  return num / den if den else 0.0


@pytest.mark.parametrize('class_weights,smoothing', [
    (None, 0.0), (np.array([0.5, 1.0, 2.0, 3.0]), 0.0), (None, 0.1)])
def test_cross_entropy_matches_definition(class_weights, smoothing):
  labels, _ = _random_case(5)
  logits = np.random.default_rng(5).normal(size=labels.shape + (4,)) * 3
  got = losses.softmax_cross_entropy(
      jnp.asarray(logits, jnp.float32), labels, class_weights=class_weights,
      label_smoothing=smoothing)
  np.testing.assert_allclose(
      got, _np_cross_entropy(logits, labels, class_weights, smoothing),
      rtol=1e-5)


def _np_dice(logits, labels, smooth=1.0):
  logits = logits.astype(np.float64)
  c = logits.shape[-1]
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  valid = labels != IGNORE
  pred = logits.argmax(-1)
  total, present = 0.0, 0
  for k in range(c):
    y = (labels == k) & valid
    pk = p[..., k] * valid
    if not (y.any() or ((pred == k) & valid).any()):
      continue
    dice = (2 * (pk * y).sum() + smooth) / (pk.sum() + y.sum() + smooth)
    total += 1 - dice
    present += 1
  return total / present if present else 0.0


@pytest.mark.parametrize('seed', range(3))
def test_dice_matches_definition_and_ignores_void_in_denominator(seed):
  labels, _ = _random_case(seed, num_classes=4, ignore_frac=0.3)
  labels = np.where(labels == 3, IGNORE, labels)  # Class 3 absent in truth.
  logits = np.random.default_rng(seed).normal(size=labels.shape + (4,)) * 2
  got = losses.dice_loss(jnp.asarray(logits, jnp.float32), labels)
  np.testing.assert_allclose(got, _np_dice(logits, labels), rtol=1e-5)


@pytest.mark.parametrize('name', ['cross_entropy', 'dice'])
def test_loss_and_gradient_are_zero_when_every_pixel_is_ignored(name):
  loss_fn = losses.build_loss({name: 1.0})
  labels = np.full((2, 4, 4), IGNORE)
  logits = jnp.asarray(np.random.default_rng(0).normal(size=(2, 4, 4, 3)),
                       jnp.float32)
  value, grad = jax.value_and_grad(lambda z: loss_fn(z, labels)[0])(logits)
  assert value == 0.0
  np.testing.assert_array_equal(grad, 0.0)


@pytest.mark.parametrize('name', ['cross_entropy', 'dice'])
def test_gradient_is_finite_on_perfect_predictions(name):
  loss_fn = losses.build_loss({name: 1.0})
  labels = np.random.default_rng(0).integers(0, 3, (2, 4, 4))
  logits = jnp.asarray(np.eye(3)[labels] * 50.0, jnp.float32)
  grad = jax.grad(lambda z: loss_fn(z, labels)[0])(logits)
  assert np.all(np.isfinite(grad))


def test_build_loss_rejects_unknown_names():
  with pytest.raises(ValueError, match="unknown loss 'lovaz'"):
    losses.build_loss({'lovaz': 1.0})
  with pytest.raises(ValueError, match=r"focal has argument\(s\) \['gama'\]"):
    losses.build_loss({'focal': {'weight': 1.0, 'gama': 2.0}})
  # ignore_index comes from config.data, the same for every term.
  with pytest.raises(ValueError, match=r"\['ignore_index'\]"):
    losses.build_loss({'dice': {'ignore_index': 0}})


def test_importing_metrics_does_not_import_tensorflow():
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  code = ('import sys, segjax.metrics, segjax.losses, segjax.models; '
          'sys.exit("tensorflow" in sys.modules)')
  assert subprocess.run([sys.executable, '-c', code], check=False).returncode == 0
