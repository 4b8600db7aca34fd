"""Label values that do not fit int32 are refused by the eager metric
functions instead of wrapping into another class (segjax/metrics)."""

import jax
import numpy as np
import pytest

from segjax import metrics

BIG = 2**32 + 1  # Wraps to 1 in int32.


def _pair(value, dtype=np.int64):
  labels = np.array([[[value, 0], [1, 255]]], dtype)
  return labels, np.array([[[1, 0], [1, 0]]], np.int64)


@pytest.mark.parametrize('call', [
    lambda l, p: metrics.confusion_matrix(l, p, 2),
    lambda l, p: metrics.mean_iou(l, p, 2),
    lambda l, p: metrics.per_image_mean_iou(l, p, 2),
    lambda l, p: metrics.boundary_iou(l, p, 2),
    lambda l, p: metrics.panoptic_stats(p, l, num_categories=2,
                                        label_divisor=1000),
    lambda l, p: metrics.binary_scores(l, p.astype(np.float32)),
], ids=['confusion_matrix', 'mean_iou', 'per_image_mean_iou',
        'boundary_iou', 'panoptic_stats', 'binary_scores'])
@pytest.mark.parametrize('value,dtype', [(BIG, np.int64), (-2**31 - 1,
                                                           np.int64),
                                         (2**31, np.uint32),
                                         (2**40, np.uint64)])
def test_a_label_outside_int32_is_a_value_error_naming_it(call, value, dtype):
  labels, predictions = _pair(value, dtype)
  with pytest.raises(ValueError, match=rf'labels hold value {value}, which '
                     r'does not fit int32'):
    call(labels, predictions)


def test_predictions_are_checked_too_and_int32_values_in_int64_pass():
  labels, predictions = _pair(1)
  predictions[0, 0, 0] = BIG
  with pytest.raises(ValueError, match=rf'predictions hold value {BIG}.*'
                     r'would wrap to 1'):
    metrics.confusion_matrix(labels, predictions, 2)
  labels, predictions = _pair(1)  # int64 arrays of small values are fine.
  np.testing.assert_array_equal(
      metrics.confusion_matrix(labels, predictions, 2), [[1, 0], [0, 2]])


def test_under_jit_nothing_can_be_checked_as_documented():
  # The module docstring's caveat: a traced function receives the value
  # already converted to int32, so 2**32 + 1 counts as class 1.
  labels, predictions = _pair(BIG)
  cm = jax.jit(lambda l, p: metrics.confusion_matrix(l, p, 2))(
      labels, predictions)
  np.testing.assert_array_equal(cm, [[1, 0], [0, 2]])
