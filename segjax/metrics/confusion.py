"""Confusion matrix and the scores derived from it (IoU, Dice, accuracy).

Labels and predictions are counted in int32 (JAX's default integer). The
public functions check concrete (eager) inputs first, so a value that does
not fit int32 (e.g. an int64 label >= 2**31) is a ValueError naming it.
Under `jit` nothing can be checked: such a value has already been converted
to int32, modulo 2**32, when the traced function received it (2**32 + 1
arrives as 1 and is counted as class 1). Give jitted code int32 (or
narrower) labels.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from segjax import kernels as kernels_lib


# Histograms of up to this many bins count pixel *pairs* (see `_histogram`).
_MAX_PAIR_BINS = 1 << 20

METHODS = ('auto', 'scatter', 'pairs', 'matmul')


def _histogram_method(num_bins):
  """The bincount formulation of `method='auto'` on CPUs and GPUs.

  `method='auto'` decides per platform when the program is lowered
  (segjax.kernels): a bincount on CPUs and GPUs, 'matmul' elsewhere. Measured
  on a 2-core x86 CPU (8x512x1024 labels, 19 classes; see
  docs/performance.md): 'pairs' 8 ms, 'scatter' 15 ms, 'matmul' 260 ms.
  On TPUs scatter-adds are slow and one-hot matrix products run on the MXU,
  so 'matmul' is chosen there (not measured here: no TPU).
  """
  return 'pairs' if num_bins * num_bins <= _MAX_PAIR_BINS else 'scatter'


def _histogram(index, num_bins, method, pad_bin):
  """Counts of each value of `index` ([..., W] int32 in [0, num_bins)).

  'scatter' is one bincount. 'pairs' halves the number of scatter updates,
  which dominate on CPUs: neighbouring pixels (along the last axis, so a
  batch-sharded array never moves between devices) are packed into one index
  of a num_bins^2 histogram, whose two marginals add up to the counts. An
  odd last axis is padded with `pad_bin`, a bin the caller discards.
  """
  if method == 'pairs':
    if index.shape[-1] % 2:
      pad = [(0, 0)] * (index.ndim - 1) + [(0, 1)]
      index = jnp.pad(index, pad, constant_values=pad_bin)
    pair = index[..., 0::2] * num_bins + index[..., 1::2]
    joint = jnp.bincount(pair.ravel(), length=num_bins * num_bins)
    joint = joint.reshape(num_bins, num_bins)
    return joint.sum(0) + joint.sum(1)
  return jnp.bincount(index.ravel(), length=num_bins)


@functools.partial(jax.jit, static_argnames=('num_classes', 'ignore_index',
                                             'method'))
def _confusion_counts(labels, predictions, weights, *, num_classes,
                      ignore_index, method='auto'):
  """([C, C] counts, number of non-ignored pixels with an invalid value)."""
  c = num_classes
  labels = labels.astype(jnp.int32)
  predictions = predictions.astype(jnp.int32)
  ignored = labels == ignore_index
  bad = ~ignored & ((labels < 0) | (labels >= c) | (predictions < 0)
                    | (predictions >= c))
  # Two extra bins, so the histogram has a static size and needs no boolean
  # indexing: C*C for ignored pixels, C*C+1 for invalid ones. Counting the
  # invalid ones in the same pass makes the eager range check free.
  index = jnp.where(ignored, c * c,
                    jnp.where(bad, c * c + 1, labels * c + predictions))
  num_bins = c * c + 2
  if weights is not None:
    w = jnp.broadcast_to(weights, labels.shape).astype(jnp.float32)
    counts = jnp.bincount(index.ravel(), weights=w.ravel(), length=num_bins)
    return counts[:-2].reshape(c, c), bad.sum(dtype=jnp.int32)

  def by_matmul(labels, predictions, ignored, bad):
    valid = ~ignored & ~bad
    one_hot_l = jax.nn.one_hot(jnp.where(valid, labels, -1).ravel(), c,
                               dtype=jnp.int8)
    one_hot_p = jax.nn.one_hot(predictions.ravel(), c, dtype=jnp.int8)
    cm = jnp.einsum('nc,nd->cd', one_hot_l, one_hot_p,
                    preferred_element_type=jnp.int32)
    return cm, bad.sum(dtype=jnp.int32)

  def by_histogram(method, index):
    counts = _histogram(index, num_bins, method, pad_bin=c * c)
    return (counts[:-2].reshape(c, c).astype(jnp.int32),
            counts[-1].astype(jnp.int32))

  if method == 'auto':
    return kernels_lib.choose(
        'auto', 'confusion_matrix',
        lambda index, *_: by_histogram(_histogram_method(num_bins), index),
        lambda _, *args: by_matmul(*args),
        index, labels, predictions, ignored, bad)
  if method == 'matmul':
    return by_matmul(labels, predictions, ignored, bad)
  return by_histogram(method, index)


def confusion_matrix(labels, predictions, num_classes, ignore_index=255,
                     weights=None, method='auto'):
  """Counts (ground truth, prediction) pixel pairs.

  Args:
    labels: [..., H, W] integer ground truth (any integer dtype).
    predictions: [..., H, W] integer predicted classes, same shape.
    num_classes: C, a Python int.
    ignore_index: pixels whose label equals it are skipped.
    weights: optional float weights broadcastable to `labels` (e.g. a [B, 1, 1]
      mask that drops padded examples).
    method: 'auto' (chosen per platform), 'scatter', 'pairs' or 'matmul':
      the same counts by different formulations (see `_histogram_method`).

  Returns:
    [C, C] int32 counts (float32 when weighted); rows are ground truth,
    columns predictions. On arrays sharded over a mesh the result is the
    global sum. int32 holds 2**31 pixels (~1000 Cityscapes images): accumulate
    longer sums on the host in int64.

  Raises:
    ValueError (concrete inputs only): shape mismatch, non-integer inputs,
    a value that does not fit int32, or a pixel whose label is neither
    `ignore_index` nor in [0, C), or whose label is valid but whose
    prediction is outside [0, C). Under `jit` no error can be raised: such
    pixels are skipped (counted nowhere), and values outside int32 have
    wrapped before the function sees them (see the module docstring).
  """
  if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
    raise ValueError(f'num_classes must be a positive int, got {num_classes!r}.')
  if method not in METHODS:
    raise ValueError(f'method must be one of {METHODS}, got {method!r}.')
  _check_shapes_and_dtypes(labels, predictions)
  cm, num_bad = _confusion_counts(labels, predictions, weights,
                                  num_classes=int(num_classes),
                                  ignore_index=int(ignore_index),
                                  method=method)
  if is_concrete(num_bad) and int(num_bad):
    _raise_for_invalid_values(labels, predictions, num_classes, ignore_index)
  return cm


def is_concrete(x):
  """False for a tracer (inside jit/vmap/grad): no values to validate."""
  return not isinstance(x, jax.core.Tracer)


def _check_shapes_and_dtypes(labels, predictions):
  if np.shape(labels) != np.shape(predictions):
    raise ValueError(f'labels {np.shape(labels)} and predictions '
                     f'{np.shape(predictions)} must have the same shape.')
  for name, x in (('labels', labels), ('predictions', predictions)):
    if not jnp.issubdtype(jnp.result_type(x), jnp.integer):
      raise ValueError(f'{name} must be an integer array, got dtype '
                       f'{jnp.result_type(x)}.')
    check_int32_range(name, x)


_INT32 = np.iinfo(np.int32)


def check_int32_range(name, x):
  """Raises a ValueError when concrete integer `x` holds a value outside int32.

  The jitted cores see int32: a wider value (NumPy int64, uint32, uint64)
  would wrap modulo 2**32 and be counted as another class. Tracers and
  dtypes of at most 32 signed bits are not checked (nothing can wrap).
  """
  if not is_concrete(x):
    return
  dtype = np.result_type(x)
  if not np.issubdtype(dtype, np.integer) or np.can_cast(dtype, np.int32):
    return
  values = np.asarray(x)
  if not values.size:
    return
  low, high = values.min(), values.max()
  if low >= _INT32.min and high <= _INT32.max:
    return
  bad = int(low) if low < _INT32.min else int(high)
  raise ValueError(
      f'{name} hold value {bad}, which does not fit int32 (the metrics '
      f'count in int32, where it would wrap to '
      f'{np.array(bad).astype(np.int64).astype(np.int32)}); '
      'give ids in [-2**31, 2**31).')


def _raise_for_invalid_values(labels, predictions, num_classes, ignore_index):
  """Raises a ValueError that names the offending values (slow path)."""
  lab = np.asarray(labels)
  pred = np.asarray(predictions)
  bad = (lab != ignore_index) & ((lab < 0) | (lab >= num_classes))
  if bad.any():
    raise ValueError(
        f'labels hold value(s) {np.unique(lab[bad])[:8].tolist()} outside '
        f'[0, {num_classes}) that are not ignore_index={ignore_index}.')
  bad = (lab != ignore_index) & ((pred < 0) | (pred >= num_classes))
  if bad.any():
    raise ValueError(
        f'predictions hold value(s) {np.unique(pred[bad])[:8].tolist()} '
        f'outside [0, {num_classes}) at non-ignored pixels.')


def _check_label_arrays(labels, predictions, num_classes, ignore_index):
  """Eager validation for the other metrics; skipped for traced inputs."""
  _check_shapes_and_dtypes(labels, predictions)
  if is_concrete(labels) and is_concrete(predictions):
    _raise_for_invalid_values(labels, predictions, num_classes, ignore_index)


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


def per_image_mean_iou(labels, predictions, num_classes, ignore_index=255):
  """mIoU of each image on its own: a different reduction from `mean_iou`.

  Each image is scored from its own confusion matrix, with the classes absent
  from both its ground truth and its prediction left out of its mean (NaN if
  the image has no valid pixel). Averaging these gives the "per-image mIoU"
  that some papers report; it is not the data-set mIoU.

  Args:
    labels, predictions: [B, H, W] integer arrays.
    num_classes, ignore_index: as `confusion_matrix`.

  Returns:
    [B] float32.
  """
  if np.ndim(labels) != 3:
    raise ValueError(f'per_image_mean_iou takes [B, H, W] arrays, got shape '
                     f'{np.shape(labels)}.')
  _check_label_arrays(labels, predictions, num_classes, ignore_index)

  def one(l, p):
    cm, _ = _confusion_counts(l, p, None, num_classes=int(num_classes),
                              ignore_index=int(ignore_index))
    return segmentation_scores(cm)['miou']

  return jax.vmap(one)(jnp.asarray(labels), jnp.asarray(predictions))
