"""Scores of binary masks (sigmoid outputs): IoU, Dice/F1, precision, recall.

Labels are compared in int32. `binary_scores` checks concrete inputs and
refuses a label that does not fit int32 (ValueError naming it);
`binary_stats` is the jitted function itself and checks nothing: an int64
label of 2**32 reaches it as 0 (background) and 2**32 + 255 as 255
(ignored). Give jitted code int32 (or narrower) labels.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from segjax.metrics import confusion


@functools.partial(jax.jit, static_argnames=('from_logits', 'ignore_index'))
def binary_stats(labels, scores, threshold=0.5, *, from_logits=False,
                 ignore_index=255):
  """Pixel counts of a thresholded binary prediction; sums over everything.

  Args:
    labels: [..., H, W] integer ground truth: 1 foreground, 0 background,
      `ignore_index` skipped (any other value counts as foreground).
    scores: [..., H, W] float probabilities, or logits with
      `from_logits=True` (then `sigmoid(logit) >= threshold` is evaluated as
      `logit >= log(threshold / (1 - threshold))`, exactly and without
      overflow).
    threshold: probability threshold for foreground.
    from_logits: whether `scores` are logits.
    ignore_index: label of pixels that count nowhere.

  Returns:
    dict of float32 scalars 'tp', 'fp', 'fn', 'tn'. They are sums, so they
    add up across batches, devices and hosts.
  """
  labels = jnp.asarray(labels)
  valid = labels != ignore_index
  truth = (labels != 0) & valid
  if from_logits:
    threshold = jnp.asarray(threshold, jnp.float32)
    cut = jnp.log(threshold) - jnp.log1p(-threshold)
    pred = (scores >= cut) & valid
  else:
    pred = (scores >= threshold) & valid
  f32 = lambda x: x.sum(dtype=jnp.float32)  # noqa: E731
  return {
      'tp': f32(pred & truth),
      'fp': f32(pred & ~truth),
      'fn': f32(~pred & truth),
      'tn': f32(~pred & ~truth & valid),
  }


def binary_scores_from_stats(stats):
  """IoU, Dice (= F1), precision and recall from `binary_stats` sums.

  A ratio with a zero denominator is NaN (e.g. precision when nothing was
  predicted); IoU and Dice are NaN only when neither side has a foreground
  pixel.
  """
  tp, fp, fn = stats['tp'], stats['fp'], stats['fn']
  xp = jnp if isinstance(tp, jax.Array) else np

  def ratio(num, den):
    return xp.where(den > 0, num / xp.where(den > 0, den, 1), xp.nan)

  return {
      'iou': ratio(tp, tp + fp + fn),
      'dice': ratio(2 * tp, 2 * tp + fp + fn),
      'precision': ratio(tp, tp + fp),
      'recall': ratio(tp, tp + fn),
  }


def binary_scores(labels, scores, threshold=0.5, *, from_logits=False,
                  ignore_index=255):
  """IoU, Dice/F1, precision and recall of a binary prediction.

  Args: as `binary_stats`.

  Returns:
    dict with float32 scalars 'iou', 'dice', 'precision', 'recall' and the
    counts 'tp', 'fp', 'fn', 'tn' they come from.

  Raises:
    ValueError (concrete inputs): shape mismatch, float labels, labels
    that do not fit int32, or probabilities outside [0, 1] when
    `from_logits=False`.
  """
  if np.shape(labels) != np.shape(scores):
    raise ValueError(f'labels {np.shape(labels)} and scores '
                     f'{np.shape(scores)} must have the same shape.')
  if not jnp.issubdtype(jnp.result_type(labels), jnp.integer):
    raise ValueError(f'labels must be integers, got {jnp.result_type(labels)}.')
  confusion.check_int32_range('labels', labels)
  if not from_logits and confusion.is_concrete(scores):
    s = np.asarray(scores)
    if s.size and (s.min() < 0 or s.max() > 1):
      raise ValueError(
          f'scores lie in [{s.min():.3g}, {s.max():.3g}], outside [0, 1]: '
          'pass from_logits=True for logits.')
  stats = binary_stats(labels, scores, threshold, from_logits=from_logits,
                       ignore_index=ignore_index)
  return {**binary_scores_from_stats(stats), **stats}
