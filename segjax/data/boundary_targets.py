"""Instance-boundary targets, as TF ops for a `tf.data` map.

A U-Net that predicts, beside the foreground, which foreground pixels lie
on the edge of their instance can separate touching nuclei: the
connected components of foreground-minus-boundary are one seed per nucleus
(`segjax.postprocess.instances`). The target is made from the augmented
instance map, like Panoptic-DeepLab's (`panoptic_targets.py`):

  boundaries [H, W] int32: 1 on an instance pixel (instance number > 0)
      with a pixel of another instance number, or of background (instance
      0), within `width` pixels in each direction (a (2 width + 1)^2 square
      around it); 0 on every other pixel; `ignore_index` on void pixels.

Void pixels (label `ignore_index`, e.g. the padding of a rotation) and
pixels outside the image are nobody's neighbours: a nucleus cut by a crop
or by void gets no boundary along the cut, since its true edge is unknown.
Instance numbers are compared whatever the class, which is what a binary
(foreground / background) task needs.
"""

from segjax.data.tf_host import tf

# Larger than any instance number (uint16 in the builders), exact in float32.
_ABOVE_ALL = float(2**24)


@tf.autograph.experimental.do_not_convert
def boundary_targets(labels, instances, *, width=1, ignore_index=255):
  """The boundary labels of one image.

  Args:
    labels: [H, W] integer class ids, `ignore_index` = void.
    instances: [H, W] integer instance numbers, 0 = none (background).
    width: how far (pixels, per axis) a different instance or background
      may be for a pixel to be boundary; >= 1.
    ignore_index: the void label.

  Returns:
    [H, W] int32: 1 boundary, 0 not, `ignore_index` on void pixels.
  """
  if not isinstance(width, int) or width < 1:
    raise ValueError(f'width must be an int >= 1, got {width!r}.')
  void = tf.equal(tf.cast(labels, tf.int32), ignore_index)
  ids = tf.cast(tf.where(void, 0, tf.cast(instances, tf.int32)), tf.float32)
  # A pixel has a different neighbour iff the window's max exceeds its id
  # or the window's min is below it. Void takes no part: -1 never raises a
  # max, a huge value never lowers a min; max_pool's SAME padding is -inf.
  low_void = tf.where(void, -1.0, ids)[None, :, :, None]
  high_void = tf.where(void, _ABOVE_ALL, ids)[None, :, :, None]
  size = 2 * width + 1
  window_max = tf.nn.max_pool2d(low_void, size, 1, 'SAME')[0, :, :, 0]
  window_min = -tf.nn.max_pool2d(-high_void, size, 1, 'SAME')[0, :, :, 0]
  edge = (ids > 0) & ((window_max > ids) | (window_min < ids))
  return tf.where(void, ignore_index, tf.cast(edge, tf.int32))
