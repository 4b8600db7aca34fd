"""Panoptic-DeepLab training targets, as TF ops for a `tf.data` map.

Panoptic-DeepLab (Cheng et al., "Panoptic-DeepLab: A Simple, Strong, and Fast
Baseline for Bottom-Up Panoptic Segmentation", CVPR 2020) trains three heads
on one image: semantic classes, an instance-center heatmap and, per pixel,
the 2-D offset to its instance's center. `panoptic_targets` turns an [H, W]
class map and an [H, W] instance-number map into the regression targets and
the loss weights of those heads, all [H, W] float32 except the offsets:

  center_heatmap   [H, W]     max over thing segments of a Gaussian
                              exp(-d^2 / (2 sigma^2)) around each segment's
                              center, cut to a (2r+1)^2 window, r = ceil(3
                              sigma); 0 away from every center.
  center_offsets   [H, W, 2]  (cy - y, cx - x) on a segment's pixels, 0
                              elsewhere.
  center_weights   [H, W]     0 on void pixels, 1 elsewhere.
  offset_weights   [H, W]     1 on thing-segment pixels, 0 elsewhere.
  semantic_weights [H, W]     small_instance_weight on pixels of segments
                              smaller than small_instance_area, 1 elsewhere.

A thing segment is the set of pixels that share one (class, instance number)
pair, with the class in `thing_classes` and the number > 0: data sets such as
Cityscapes number instances per class, so the number alone is no key. Its
center is the mean pixel (row, col), rounded as floor(mean + 0.5).

The paper's defaults: sigma = 8 px at Cityscapes' 1024x2048,
and instances smaller than 64x64 = 4096 px get semantic-loss weight 3. A
Gaussian of fixed pixel size covers a different share of a smaller or
larger image, so configs scale sigma with the training resolution (and may
scale the small-instance area with its square).

H and W may be dynamic and an image may hold no segment at all. No [N, H, W]
tensor is built: each segment writes only its window, so the cost grows with
N (2r+1)^2 plus a few passes over the image.
"""

import math
import operator

import numpy as np

from segjax.data.tf_host import tf


def _check_thing_classes(thing_classes):
  classes = []
  for c in thing_classes:
    c = operator.index(c)
    if c < 0:
      raise ValueError(f'thing_classes must be non-negative ids, got {c}.')
    classes.append(c)
  return sorted(set(classes))


def _gaussian_window(sigma):
  """Static window offsets (dy, dx) [K] int64 and their Gaussian [K]."""
  radius = int(math.ceil(3 * sigma))
  steps = np.arange(-radius, radius + 1)
  dy, dx = [a.reshape(-1) for a in np.meshgrid(steps, steps, indexing='ij')]
  # Computed in float64 once, on the host, so the only error is the final
  # rounding to float32.
  values = np.exp(-(dy**2 + dx**2) / (2.0 * sigma**2))
  return (dy.astype(np.int64), dx.astype(np.int64),
          values.astype(np.float32))


@tf.autograph.experimental.do_not_convert
def panoptic_targets(labels, instances, *, thing_classes, sigma=8.0,
                     small_instance_area=4096, small_instance_weight=3.0,
                     ignore_index=255):
  """Panoptic-DeepLab center, offset and weight targets of one image.

  Args:
    labels: [H, W] integer (uint8 or int32) class ids, ignore_index = void.
    instances: [H, W] int32 instance numbers (0 = none).
    thing_classes: a Python sequence of class ids.
    sigma: Gaussian standard deviation of the center heatmap, in pixels.
    small_instance_area: segments with fewer pixels are "small".
    small_instance_weight: semantic-loss weight of small segments' pixels.
    ignore_index: the void class id.

  Returns:
    A dict of tensors:
      'center_heatmap'  [H, W] float32
      'center_offsets'  [H, W, 2] float32 (dy, dx)
      'center_weights'  [H, W] float32
      'offset_weights'  [H, W] float32
      'semantic_weights'[H, W] float32
  """
  if not sigma > 0:
    raise ValueError(f'sigma must be > 0, got {sigma}.')
  if small_instance_area < 0:
    raise ValueError(
        f'small_instance_area must be >= 0, got {small_instance_area}.')
  classes = _check_thing_classes(thing_classes)

  labels = tf.cast(labels, tf.int32)
  instances = tf.cast(instances, tf.int32)
  zeros = tf.zeros_like(labels, tf.float32)  # Keeps static H, W if known.

  if classes:
    # A lookup table costs one gather per pixel, however many thing classes
    # (COCO has 80); out-of-table ids are stuff or void.
    table = np.zeros([classes[-1] + 1], np.bool_)
    table[classes] = True
    in_table = (labels >= 0) & (labels < len(table))
    is_thing = in_table & tf.gather(
        tf.constant(table), tf.clip_by_value(labels, 0, len(table) - 1))
  else:
    is_thing = tf.zeros_like(labels, tf.bool)
  in_segment = is_thing & (instances > 0)

  # Only segment pixels go on: [P, 2] (row, col), each with its segment
  # index in [0, N).
  coords = tf.where(in_segment)
  # (class, number) as one int64: a class id above the 32 bits that hold
  # any positive int32 number.
  keys = (tf.cast(tf.gather_nd(labels, coords), tf.int64) * 2**32
          + tf.cast(tf.gather_nd(instances, coords), tf.int64))
  unique_keys, segment = tf.unique(keys, out_idx=tf.int32)
  num_segments = tf.size(unique_keys)  # 0 if no pixel is in a segment.

  # Integer sums keep the rounding exact however large the image:
  # floor(sum / n + 1/2) = floor((2 sum + n) / (2 n)). n >= 1 for every
  # segment, so nothing divides by zero, and N = 0 gives empty tensors.
  area = tf.math.unsorted_segment_sum(
      tf.ones_like(segment, tf.int64), segment, num_segments)
  sums = tf.math.unsorted_segment_sum(coords, segment, num_segments)
  centers = tf.math.floordiv(2 * sums + area[:, None], 2 * area[:, None])

  # One scatter of [P, 3] rows (dy, dx, weight - 1) costs about half of
  # three [P] scatters, which dominate the run time on large images.
  offsets = tf.cast(tf.gather(centers, segment) - coords, tf.float32)
  small = tf.gather(area, segment) < small_instance_area
  # The weight goes in minus 1, so the base is plain zeros: building a
  # [H, W, 3] base of (0, 0, 1) costs as much as the scatter itself.
  extra = tf.where(small, float(small_instance_weight) - 1.0, 0.0)
  per_pixel = tf.tensor_scatter_nd_update(
      tf.zeros(tf.concat([tf.shape(labels), [3]], 0)), coords,
      tf.concat([offsets, extra[:, None]], axis=1))
  center_offsets = per_pixel[..., :2]
  semantic_weights = per_pixel[..., 2] + 1.0

  # Every segment writes its whole window, with cells past the border
  # clamped onto it: no mask, and a static K updates per segment. Clamping
  # moves a cell toward the center (which lies in the image) in each
  # coordinate, onto a cell of the same window whose own value is at least
  # as large, so the max is unchanged.
  dy, dx, gaussian = _gaussian_window(sigma)
  shape = tf.shape(labels, out_type=tf.int64)
  window = tf.stack(
      [tf.clip_by_value(centers[:, 0:1] + dy[None, :], 0, shape[0] - 1),
       tf.clip_by_value(centers[:, 1:2] + dx[None, :], 0, shape[1] - 1)],
      axis=-1)  # [N, K, 2]
  gauss = tf.broadcast_to(gaussian, tf.shape(window)[:2])
  center_heatmap = tf.tensor_scatter_nd_max(
      zeros, tf.reshape(window, [-1, 2]), tf.reshape(gauss, [-1]))

  return {
      'center_heatmap': center_heatmap,
      'center_offsets': center_offsets,
      'center_weights': tf.cast(tf.not_equal(labels, ignore_index),
                                tf.float32),
      'offset_weights': tf.cast(in_segment, tf.float32),
      'semantic_weights': semantic_weights,
  }
