"""Boundary IoU (Cheng et al., CVPR 2021), per class, as summable counts.

Definition (the paper's reference implementation): a mask's boundary is the
set of its pixels within distance d of its contour, d = max(1,
round(dilation_ratio * image diagonal)); it is computed as
`mask & ~erode(mask)`, with d iterations of a 3x3 erosion and the image
padded with zeros, so pixels on the image border count as boundary. Boundary
IoU of a class is |G_d & P_d| / |G_d | P_d| over the boundaries of the
ground-truth and predicted masks of that class, with intersection and union
summed over the whole data set before dividing.

Ignore pixels (label == ignore_index) belong to no class's ground-truth
mask, and are then left out of both the intersection and the union counts.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from segjax.metrics import confusion


def boundary_width(height, width, dilation_ratio=0.02):
  """d, in pixels, for an image of the given size."""
  return max(1, int(round(dilation_ratio * np.hypot(height, width))))


def _erode(masks, d):
  """d iterations of 3x3 binary erosion with zero padding, [N, H, W] bool.

  Iterated 3x3 erosion is erosion by a (2d+1)^2 square, computed here as two
  separable min-filters over an explicitly zero-padded array.
  """
  x = jnp.pad(masks.astype(jnp.uint8), ((0, 0), (d, d), (d, d)))
  k = 2 * d + 1
  x = jax.lax.reduce_window(x, jnp.uint8(1), jax.lax.min, (1, k, 1),
                            (1, 1, 1), 'VALID')
  x = jax.lax.reduce_window(x, jnp.uint8(1), jax.lax.min, (1, 1, k),
                            (1, 1, 1), 'VALID')
  return x.astype(bool)


@functools.partial(jax.jit, static_argnames=('num_classes', 'ignore_index',
                                             'dilation_ratio'))
def _boundary_stats(labels, predictions, *, num_classes, ignore_index,
                    dilation_ratio):
  h, w = labels.shape[-2:]
  d = boundary_width(h, w, dilation_ratio)
  labels = labels.reshape((-1, h, w)).astype(jnp.int32)
  predictions = predictions.reshape((-1, h, w)).astype(jnp.int32)
  valid = labels != ignore_index

  def per_class(c):
    gt = labels == c
    pred = predictions == c
    gt_b = gt & ~_erode(gt, d) & valid
    pred_b = pred & ~_erode(pred, d) & valid
    return (jnp.sum(gt_b & pred_b, dtype=jnp.int32),
            jnp.sum(gt_b | pred_b, dtype=jnp.int32))

  # A loop, not a vmap over classes: it keeps one class's masks in memory.
  inter, union = jax.lax.map(per_class, jnp.arange(num_classes))
  return {'intersection': inter, 'union': union}


def boundary_iou_stats(labels, predictions, num_classes, ignore_index=255,
                       dilation_ratio=0.02):
  """Per-class boundary intersection and union counts.

  Args:
    labels: [..., H, W] integer ground truth.
    predictions: [..., H, W] integer predictions.
    num_classes: C.
    ignore_index: label value of pixels that count nowhere.
    dilation_ratio: boundary width as a fraction of the image diagonal.

  Returns:
    {'intersection': [C] int32, 'union': [C] int32}: sums, to be added up
    across batches, devices and hosts, then passed to
    `boundary_iou_from_stats`.
  """
  confusion._check_label_arrays(  # pylint: disable=protected-access
      labels, predictions, num_classes, ignore_index)
  return _boundary_stats(jnp.asarray(labels), jnp.asarray(predictions),
                         num_classes=int(num_classes),
                         ignore_index=int(ignore_index),
                         dilation_ratio=float(dilation_ratio))


def boundary_iou_from_stats(stats):
  """{'iou': [C] (NaN where the union is empty), 'miou': mean over the rest}."""
  inter, union = stats['intersection'], stats['union']
  xp = jnp if isinstance(inter, jax.Array) else np
  iou = xp.where(union > 0, inter / xp.maximum(union, 1), xp.nan)
  keep = ~xp.isnan(iou)
  miou = xp.where(keep.sum() > 0,
                  xp.where(keep, iou, 0).sum() / xp.maximum(keep.sum(), 1),
                  xp.nan)
  return {'iou': iou, 'miou': miou}


def boundary_iou(labels, predictions, num_classes, ignore_index=255,
                 dilation_ratio=0.02):
  """Boundary IoU per class and its mean, over all the images given.

  Args: as `boundary_iou_stats`.

  Returns:
    {'iou': [C] float32, 'miou': float32}.
  """
  return boundary_iou_from_stats(boundary_iou_stats(
      labels, predictions, num_classes, ignore_index, dilation_ratio))
