"""Confusion matrix and the scores derived from it (IoU, Dice, accuracy)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np


@functools.partial(jax.jit, static_argnames=('num_classes', 'ignore_index'))
def _confusion_matrix(labels, predictions, weights, *, num_classes,
                      ignore_index):
  labels = labels.astype(jnp.int32)
  predictions = predictions.astype(jnp.int32)
  valid = ((labels != ignore_index) & (labels >= 0) & (labels < num_classes)
           & (predictions >= 0) & (predictions < num_classes))
  # Invalid pixels go to one extra bin that is dropped, so the histogram has a
  # static size and needs no boolean indexing.
  index = jnp.where(valid, labels * num_classes + predictions,
                    num_classes * num_classes)
  length = num_classes * num_classes + 1
  if weights is None:
    counts = jnp.bincount(index.ravel(), length=length)
  else:
    w = jnp.broadcast_to(weights, labels.shape).astype(jnp.float32)
    counts = jnp.bincount(index.ravel(), weights=w.ravel(), length=length)
  return counts[:-1].reshape(num_classes, num_classes)


def confusion_matrix(labels, predictions, num_classes, ignore_index=255,
                     weights=None):
  """Counts (ground truth, prediction) pixel pairs.

  Args:
    labels: [..., H, W] integer ground truth (any integer dtype).
    predictions: [..., H, W] integer predicted classes, same shape.
    num_classes: C, a Python int.
    ignore_index: pixels whose label equals it are skipped.
    weights: optional float weights broadcastable to `labels` (e.g. a [B, 1, 1]
      mask that drops padded examples).

  Returns:
    [C, C] int32 counts (float32 when weighted); rows are ground truth,
    columns predictions. On arrays sharded over a mesh the result is the
    global sum. int32 holds 2**31 pixels (~1000 Cityscapes images): accumulate
    longer sums on the host in int64.

  Raises:
    ValueError (concrete inputs only): shape mismatch, non-integer inputs, or
    labels outside [0, C) other than `ignore_index`, or predictions outside
    [0, C). Under `jit` no check is made and such pixels are skipped (counted
    nowhere).
  """
  if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
    raise ValueError(f'num_classes must be a positive int, got {num_classes!r}.')
  _check_label_arrays(labels, predictions, num_classes, ignore_index)
  return _confusion_matrix(labels, predictions, weights,
                           num_classes=int(num_classes),
                           ignore_index=int(ignore_index))


def _is_concrete(x):
  return not isinstance(x, jax.core.Tracer)


def _check_label_arrays(labels, predictions, num_classes, ignore_index):
  """Eager validation; silently skipped for traced (jitted) inputs."""
  if np.shape(labels) != np.shape(predictions):
    raise ValueError(f'labels {np.shape(labels)} and predictions '
                     f'{np.shape(predictions)} must have the same shape.')
  for name, x in (('labels', labels), ('predictions', predictions)):
    if not jnp.issubdtype(jnp.result_type(x), jnp.integer):
      raise ValueError(f'{name} must be an integer array, got dtype '
                       f'{jnp.result_type(x)}.')
  if not (_is_concrete(labels) and _is_concrete(predictions)):
    return
  lab = np.asarray(labels)
  bad = (lab != ignore_index) & ((lab < 0) | (lab >= num_classes))
  if bad.any():
    raise ValueError(
        f'labels hold value(s) {np.unique(lab[bad])[:8].tolist()} outside '
        f'[0, {num_classes}) that are not ignore_index={ignore_index}.')
  pred = np.asarray(predictions)
  bad = (pred < 0) | (pred >= num_classes)
  if bad.any():
    raise ValueError(
        f'predictions hold value(s) {np.unique(pred[bad])[:8].tolist()} '
        f'outside [0, {num_classes}).')


def segmentation_scores(cm):
  """Scores from a confusion matrix (rows ground truth, columns prediction).

  A class absent from both ground truth and prediction has NaN IoU and Dice
  and is left out of the means (the Cityscapes / mmsegmentation convention);
  per-class accuracy (recall) is NaN where the class has no ground-truth
  pixel. With no pixel at all every score is NaN.

  Args:
    cm: [C, C] counts. A NumPy array is scored in float64 NumPy; a JAX array
      (also inside `jit`) in float32 JAX.

  Returns:
    dict with 'iou' [C], 'miou', 'dice' [C], 'mean_dice', 'accuracy' [C]
    (per-class recall), 'mean_accuracy', 'pixel_accuracy', 'fw_iou'
    (frequency-weighted IoU).
  """
  xp = jnp if isinstance(cm, jax.Array) else np
  dtype = jnp.float32 if xp is jnp else np.float64
  cm = xp.asarray(cm).astype(dtype)
  tp = xp.diagonal(cm)
  gt = cm.sum(axis=1)
  pred = cm.sum(axis=0)
  total = cm.sum()
  union = gt + pred - tp

  def ratio(num, den):
    return xp.where(den > 0, num / xp.where(den > 0, den, 1), xp.nan)

  iou = ratio(tp, union)
  dice = ratio(2 * tp, gt + pred)
  accuracy = ratio(tp, gt)
  freq = ratio(gt, total)
  present = union > 0
  fw_iou = xp.where(total > 0, xp.where(present, freq * iou, 0).sum(), xp.nan)
  with np.errstate(invalid='ignore'):
    return {
        'iou': iou,
        'miou': _nanmean(xp, iou),
        'dice': dice,
        'mean_dice': _nanmean(xp, dice),
        'accuracy': accuracy,
        'mean_accuracy': _nanmean(xp, accuracy),
        'pixel_accuracy': ratio(tp.sum(), total),
        'fw_iou': fw_iou,
    }


def _nanmean(xp, x):
  """Mean over non-NaN entries; NaN (without a warning) when all are NaN."""
  keep = ~xp.isnan(x)
  count = keep.sum()
  return xp.where(count > 0, xp.where(keep, x, 0).sum() / xp.maximum(count, 1),
                  xp.nan)


def mean_iou(labels, predictions, num_classes, ignore_index=255):
  """Data-set-level mIoU of all the pixels given (not a mean of per-image mIoUs).

  Args: as `confusion_matrix`.

  Returns:
    float32 scalar: `segmentation_scores(confusion_matrix(...))['miou']`.
  """
  cm = confusion_matrix(labels, predictions, num_classes, ignore_index)
  return segmentation_scores(cm)['miou']
