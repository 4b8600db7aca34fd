"""Fused geometric augmentation: consecutive geometric ops as one warp.

`scale(0.5, 2)|crop(512, 1024)|flip_lr|rotate(10)` run op by op resizes the
whole image (up to 4x its pixels at scale 2), then cuts, mirrors and rotates
the result: on a 1024x2048 image that is ~130 ms on one CPU core. Each of
these ops is an affine map of pixel coordinates, so their composition is one
affine map, and one `ImageProjectiveTransformV3` per map computes only the
output pixels, sampling the input once: ~30 ms for image and label maps
together (measured in docs/performance.md).

`augment.build` fuses every run of two or more ops that have a geometry here
(`GEOMETRY`). The random draws are the ops' own (`augment_ops.draw_*`, same
seeds), so a fused run moves every pixel where the ops would, and label maps
come out identical (tested). The image differs slightly: it is interpolated
once instead of at every op. When the run shrinks (e.g. `resize` to half
size, then `scale(0.75, 1.5)`), the image is first shrunk by the run's
scale with `tf.image.resize(antialias=True)`, as the unfused `scale` /
`resize` do, and then warped: bilinear sampling alone reads only ~4 input
pixels per output pixel, so fine texture would alias into moire that the
antialiased evaluation images (`eval_preprocess='resize(...)'`) never show.
Only the box of the input the output reads is filtered (`_prefiltered`).

Coordinates: pixel centres at integers, x right, y down. Each geometry maps
an op's output pixel to the input point it samples, as a 3x3 matrix; the run
maps the final output to the original input through their product.
"""

from segjax.data import augment_ops
from segjax.data.tf_host import tf

_no_autograph = tf.autograph.experimental.do_not_convert


def _matrix(rows):
  return tf.convert_to_tensor(
      [[tf.cast(v, tf.float32) for v in row] for row in rows] + [[0., 0., 1.]])


def _resample(in_h, in_w, out_h, out_w):
  """Resize with half-pixel centres, as tf.image.resize: x_in =
  (x + 0.5) * in / out - 0.5."""
  sy = tf.cast(in_h, tf.float32) / tf.cast(out_h, tf.float32)
  sx = tf.cast(in_w, tf.float32) / tf.cast(out_w, tf.float32)
  return _matrix([[sx, 0., 0.5 * sx - 0.5], [0., sy, 0.5 * sy - 0.5]])


def _window(pad_top, pad_left, top, left):
  """A crop/pad window: output (x, y) samples input (x + left - pad_left,
  y + top - pad_top)."""
  return _matrix([[1., 0., left - pad_left], [0., 1., top - pad_top]])


def _scale(min_scale, max_scale):
  def geometry(seed, in_h, in_w):
    h, w = augment_ops.draw_scale(seed, in_h, in_w, min_scale, max_scale)
    return _resample(in_h, in_w, h, w), h, w, None
  return geometry


def _resize(h, w):
  def geometry(seed, in_h, in_w):
    del seed
    return _resample(in_h, in_w, h, w), h, w, (h, w)
  return geometry


def _crop(h, w):
  def geometry(seed, in_h, in_w):
    return _window(*augment_ops.draw_crop(seed, in_h, in_w, h, w)), h, w, (
        h, w)
  return geometry


def _pad(h, w):
  def geometry(seed, in_h, in_w):
    del seed
    with tf.control_dependencies([tf.debugging.assert_less_equal(
        tf.stack([in_h, in_w]), tf.constant([h, w]),
        message=f'pad({h}, {w}): input larger than the padded size')]):
      matrix = tf.identity(_window(0, 0, 0, 0))
    return matrix, h, w, (h, w)
  return geometry


def _center_crop(h, w):
  def geometry(seed, in_h, in_w):
    del seed
    return _window(*augment_ops.center_offsets(in_h, in_w, h, w)), h, w, (
        h, w)
  return geometry


def _flip_lr(p=0.5):
  def geometry(seed, in_h, in_w):
    flip = augment_ops.draw_flip(seed, p)
    sign = tf.where(flip, -1., 1.)
    shift = tf.where(flip, tf.cast(in_w - 1, tf.float32), 0.)
    return _matrix([[sign, 0., shift], [0., 1., 0.]]), in_h, in_w, 'same'
  return geometry


def _rotate(max_degrees, p=1.0):
  def geometry(seed, in_h, in_w):
    apply, angle = augment_ops.draw_rotation(seed, max_degrees, p)
    angle = tf.where(apply, angle, 0.)
    cx = (tf.cast(in_w, tf.float32) - 1) / 2
    cy = (tf.cast(in_h, tf.float32) - 1) / 2
    cos, sin = tf.cos(angle), tf.sin(angle)
    # About the centre; the same map as augment_ops._rotate.
    return _matrix([[cos, -sin, cx - cos * cx + sin * cy],
                    [sin, cos, cy - sin * cx - cos * cy]]), in_h, in_w, 'same'
  return geometry


# Op name -> factory(*args) -> geometry(seed, in_h, in_w) -> (matrix [3, 3]
# float32, out_h, out_w, static size: (h, w), 'same' (as the input) or None).
GEOMETRY = {
    'scale': _scale,
    'resize': _resize,
    'crop': _crop,
    'pad': _pad,
    'center_crop': _center_crop,
    'flip_lr': _flip_lr,
    'rotate': _rotate,
}


def _warp(x, transform, out_hw, interpolation, fill_mode='CONSTANT', fill=0):
  return tf.raw_ops.ImageProjectiveTransformV3(
      images=x[None], transforms=transform, output_shape=out_hw,
      fill_value=tf.constant(fill, tf.float32), interpolation=interpolation,
      fill_mode=fill_mode)[0]


def _maps_inside(matrix, out_h, out_w, in_h, in_w):
  """[out_h, out_w] bool: whether each output pixel's nearest input pixel,
  under `matrix`, lies inside an (in_h, in_w) image."""
  y = tf.range(tf.cast(out_h, tf.float32))[:, None]
  x = tf.range(tf.cast(out_w, tf.float32))[None, :]
  # Nearest rounds half away from zero: index round(u) is in [0, n - 1]
  # exactly when -0.5 < u < n - 0.5.
  u = matrix[0, 0] * x + matrix[0, 1] * y + matrix[0, 2]
  v = matrix[1, 0] * x + matrix[1, 1] * y + matrix[1, 2]
  n_w = tf.cast(in_w, tf.float32) - 0.5
  n_h = tf.cast(in_h, tf.float32) - 0.5
  return (u > -0.5) & (u < n_w) & (v > -0.5) & (v < n_h)


def _prefiltered(image, matrix, in_h, in_w, out_h, out_w):
  """The image to warp and its transform: antialiased when the run shrinks.

  Row i of `matrix`'s 2x2 part is how far an output pixel's step moves the
  sampling point along input axis i; its norm (rotation-invariant) above 1
  means the run shrinks that axis by that factor. The part of the image the
  output reads (the box around the output corners' footprint, plus a margin
  for the filter) is then resized by that factor (triangle filter over the
  footprint, as PIL's bilinear resize) and the warp composed with the map
  from the original input's coordinates to the resized box's. Only the box
  is filtered: a 256x256 crop of a large image costs what the crop needs.

  Args:
    image: [in_h, in_w, C] image, any real dtype.
    matrix: [3, 3] float32, output pixel -> input point.
    in_h, in_w, out_h, out_w: int32 scalars.

  Returns:
    ([h, w, C] float32 image, [1, 8] float32 transform).
  """
  image = tf.cast(image, tf.float32)
  shrink_x = tf.maximum(tf.norm(matrix[0, :2]), 1.0)
  shrink_y = tf.maximum(tf.norm(matrix[1, :2]), 1.0)
  # 2% of slack: an image shrunk by a hair (scale 0.99) aliases nothing
  # visible, and skipping the resize keeps those warps as fast as before.
  shrinks = tf.logical_or(shrink_x > 1.02, shrink_y > 1.02)

  def shrunk():
    # Input points of the output's corner pixels -> the box they span.
    x = tf.cast(tf.stack([0, out_w - 1, 0, out_w - 1]), tf.float32)
    y = tf.cast(tf.stack([0, 0, out_h - 1, out_h - 1]), tf.float32)
    u = matrix[0, 0] * x + matrix[0, 1] * y + matrix[0, 2]
    v = matrix[1, 0] * x + matrix[1, 1] * y + matrix[1, 2]
    margin_x = tf.math.ceil(shrink_x) + 2.0
    margin_y = tf.math.ceil(shrink_y) + 2.0

    def span(lo, hi, margin, size):
      first = tf.clip_by_value(tf.math.floor(lo - margin), 0.0,
                               tf.cast(size - 1, tf.float32))
      last = tf.clip_by_value(tf.math.ceil(hi + margin), first,
                              tf.cast(size - 1, tf.float32))
      return tf.cast(first, tf.int32), tf.cast(last - first, tf.int32) + 1

    left, box_w = span(tf.reduce_min(u), tf.reduce_max(u), margin_x, in_w)
    top, box_h = span(tf.reduce_min(v), tf.reduce_max(v), margin_y, in_h)
    box = image[top:top + box_h, left:left + box_w]
    h = tf.cast(tf.math.ceil(tf.cast(box_h, tf.float32) / shrink_y), tf.int32)
    w = tf.cast(tf.math.ceil(tf.cast(box_w, tf.float32) / shrink_x), tf.int32)
    small = tf.image.resize(box, tf.stack([h, w]), antialias=True)
    # Original input (x, y) -> the box's -> the resized box's (half-pixel
    # centres).
    to_small = tf.linalg.matmul(_resample(h, w, box_h, box_w),
                                _window(top, left, 0, 0))
    return small, tf.linalg.matmul(to_small, matrix)

  source, composed = tf.cond(shrinks, shrunk, lambda: (image, matrix))
  return source, tf.reshape(composed, [9])[None, :8]


def fused(geometries):
  """One fn(example, seeds) applying `geometries` in order as a single warp.

  Args:
    geometries: geometry functions (from `GEOMETRY`), first applied first.

  Returns:
    fn(example, seeds) -> example, where seeds[i] is the seed of geometry i.
    Maps as in `augment_ops`: image bilinear (edges clamped, pixels from
    outside the input = PAD_COLOR), label maps nearest (outside = 255 /
    0), dtypes kept.
  """

  @_no_autograph
  def fn(example, seeds):
    in_h, in_w = augment_ops.map_size(example)
    h, w = in_h, in_w
    steps, sizes = [], []  # sizes[k]: (h, w) of step k's input.
    static = 'same'
    for geometry, seed in zip(geometries, seeds):
      sizes.append((h, w))
      step, h, w, size = geometry(seed, h, w)
      steps.append(step)
      static = static if size == 'same' else size
    # Back to front: `matrix` maps an output pixel into step k's input. Each
    # intermediate image is bounded, so (as op by op) an output pixel that
    # maps outside any of them is filled, even where the original input
    # would have a value (e.g. the corners of `crop|rotate`).
    matrix = tf.eye(3)
    inside = None
    for k in range(len(steps) - 1, -1, -1):
      matrix = tf.linalg.matmul(steps[k], matrix)
      if k:
        ok = _maps_inside(matrix, h, w, *sizes[k])
        inside = ok if inside is None else tf.logical_and(inside, ok)
    # The op's 8 parameters: the first two rows, then the projective terms
    # of the (affine, hence [0, 0, 1]) last row.
    transform = tf.reshape(matrix, [9])[None, :8]
    out_hw = tf.stack([h, w])
    if static == 'same':  # As the input's, static or not.
      static = next(example[k].shape[:2] for k in augment_ops.MAPS
                    if k in example)
    out = dict(example)
    # Where the output samples the input (nearest rule, as the label maps):
    # warp 1s with fill 0. Labels carry it for free as (label + 1), fill 0.
    if 'labels' in example:
      shifted = _warp(tf.cast(example['labels'], tf.int32)[..., None] + 1,
                      transform, out_hw, 'NEAREST')[..., 0]
      in_input = shifted > 0
      labels = shifted - 1
    else:
      in_input = _warp(tf.ones([in_h, in_w, 1], tf.uint8), transform, out_hw,
                       'NEAREST')[..., 0] > 0
    inside = in_input if inside is None else tf.logical_and(inside, in_input)
    if 'labels' in example:
      out['labels'] = tf.cast(
          tf.where(inside, labels, augment_ops.MAP_FILL['labels']),
          example['labels'].dtype)
    if 'instances' in example:
      x = example['instances']
      native = x.dtype in (tf.uint8, tf.int32, tf.int64)
      y = _warp((x if native else tf.cast(x, tf.float32))[..., None],
                transform, out_hw, 'NEAREST')[..., 0]
      y = y if native else tf.cast(y, x.dtype)
      out['instances'] = tf.where(inside, y, tf.cast(
          augment_ops.MAP_FILL['instances'], x.dtype))
    if 'image' in example:
      image = example['image']
      source, image_transform = _prefiltered(image, matrix, in_h, in_w, h, w)
      # Clamp at the edges as tf.image.resize does, then paint the pixels
      # that fall outside the input with the pad colour.
      warped = _warp(source, image_transform, out_hw, 'BILINEAR',
                     fill_mode='NEAREST')
      warped = tf.where(inside[..., None], warped, tf.cast(
          augment_ops.pad_color(image.dtype), tf.float32))
      out['image'] = augment_ops.to_dtype(warped, image.dtype)
    for key in augment_ops.MAPS:
      if key in out and static is not None:
        out[key] = tf.ensure_shape(
            out[key], tf.TensorShape(static).concatenate(out[key].shape[2:]))
    return out

  return fn
