"""Augmentation ops: each transforms an example's image and label maps jointly.

An op is a factory `op(*args) -> fn(example, seed) -> example`; `augment.py`
composes them from a spec string. An example is a dict with 'image'
[H, W, 3] uint8 and optionally 'labels' [H, W] uint8/int32 (class ids,
255 = ignore) and 'instances' [H, W] int32 (0 = no instance); other keys pass
through untouched. H and W may be unknown until run time (tf.data).

Conventions every op keeps, so the maps stay aligned and honest:
  * one draw per example moves all maps the same way;
  * label maps are sampled nearest-neighbour, never interpolated, and keep
    their dtype;
  * a pixel an op invents is the ignore label (255) in 'labels', 0 in
    'instances', and `PAD_COLOR` (the mean pixel) in a uint8 image.

Fns are plain TF ops marked `do_not_convert` (no Python branching on tensors,
hence tf.cond / tf.where): autograph would re-read their source for nothing.
"""

import math

from segjax.data.tf_host import tf

# Must equal segjax.models.inputs.MEAN_RGB / STDDEV_RGB (a test checks). They
# are copied because that module imports jax.numpy, which the host-side input
# code has no other reason to load.
IMAGENET_MEAN_255 = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD_255 = (0.229 * 255, 0.224 * 255, 0.225 * 255)
# The mean pixel, rounded: a padded pixel normalises to ~0 (DeepLab pads with
# the mean pixel for the same reason).
PAD_COLOR = tuple(round(m) for m in IMAGENET_MEAN_255)  # (124, 116, 104)
MAP_FILL = {'labels': 255, 'instances': 0}
MAPS = ('image',) + tuple(MAP_FILL)
_no_autograph = tf.autograph.experimental.do_not_convert


def pad_color(dtype):
  """[3] pad colour in `dtype`: the mean pixel in either representation."""
  # A float image reaching an op was normalised already (normalize ran
  # first), so there the mean pixel is 0.
  color = PAD_COLOR if dtype == tf.uint8 else (0, 0, 0)
  return tf.constant(color, dtype)


def map_size(example):
  """Dynamic (H, W) int32 of the example's first map present."""
  x = next(example[k] for k in MAPS if k in example)
  shape = tf.shape(x)
  return shape[0], shape[1]


def _shape(h, w, x):
  """Static shape [h, w] + x's trailing dims (e.g. channels)."""
  return tf.TensorShape([h, w]).concatenate(x.shape[2:])


def to_dtype(x, dtype):
  """Casts float `x` to `dtype`, rounding and saturating for integer types."""
  if dtype.is_integer:
    x = tf.clip_by_value(tf.round(x), dtype.min, dtype.max)
  return tf.cast(x, dtype)


def _check(ok, message):
  if not ok:
    raise ValueError(message)


def _check_size(h, w):
  _check(all(isinstance(v, int) and not isinstance(v, bool) and v > 0
             for v in (h, w)), f'size must be two positive ints, got {(h, w)}')


def _check_prob(p):
  _check(isinstance(p, (int, float)) and 0 <= p <= 1,
         f'p must be a probability in [0, 1], got {p!r}')


def _resize(example, h, w):
  """Resizes every map to (h, w): image bilinear, label maps nearest."""
  out = dict(example)
  size = tf.stack([h, w])
  if 'image' in example:
    image = example['image']
    in_h, in_w = map_size(example)

    def bilinear(antialias):
      return lambda: tf.image.resize(image, size, antialias=antialias)

    # Antialiasing only matters when shrinking, and costs 2-3x when
    # enlarging (a general kernel op instead of the bilinear one).
    resized = tf.cond(tf.logical_or(h < in_h, w < in_w), bilinear(True),
                      bilinear(False))
    out['image'] = to_dtype(resized, image.dtype)
  for key in MAP_FILL:
    if key in example:
      # TF's nearest resize uses half-pixel centres, like bilinear: each
      # output pixel takes the input pixel its centre falls in, so the label
      # maps and the image stay aligned. It also keeps integer dtypes.
      x = example[key][..., None]
      out[key] = tf.image.resize(x, size, method='nearest')[..., 0]
  return out


def _crop(example, h, w, pad_top, pad_left, top, left):
  """Pads the maps around the input, then cuts the (h, w) window at top, left.

  Args:
    example: standard example, maps [H, W(, C)].
    h, w: Python ints, output size.
    pad_top, pad_left: int32 scalars, where the input lands inside the padded
      canvas of size (max(H, h), max(W, w)).
    top, left: int32 scalars, the window's corner in that canvas.

  Returns:
    The example with every map [h, w(, C)], static shape set.
  """
  in_h, in_w = map_size(example)
  canvas_h, canvas_w = tf.maximum(in_h, h), tf.maximum(in_w, w)
  paddings = [[pad_top, canvas_h - in_h - pad_top],
              [pad_left, canvas_w - in_w - pad_left]]
  out = dict(example)
  for key in MAPS:
    if key not in example:
      continue
    x = example[key]
    if key == 'image':
      # tf.pad takes one scalar fill; the colour differs per channel, so pad
      # a mask of where the input is and fill the rest with tf.where.
      inside = tf.pad(tf.ones([in_h, in_w, 1], tf.bool), paddings + [[0, 0]])
      x = tf.where(inside, tf.pad(x, paddings + [[0, 0]]),
                   pad_color(x.dtype))
    else:
      x = tf.pad(x, paddings, constant_values=tf.cast(MAP_FILL[key], x.dtype))
    x = x[top:top + h, left:left + w]
    out[key] = tf.ensure_shape(x, _shape(h, w, x))
  return out


def _rotate(example, radians):
  """Rotates every map by `radians` (a float scalar) about the image centre.

  Positive angles turn the picture counter-clockwise as displayed (row 0 at
  the top): 90 degrees on a square matches np.rot90(x, k=1). Output keeps
  the input size; image bilinear, label maps nearest, outside pixels filled
  per the module conventions.
  """
  in_h, in_w = map_size(example)
  cx = (tf.cast(in_w, tf.float32) - 1) / 2
  cy = (tf.cast(in_h, tf.float32) - 1) / 2
  radians = tf.cast(radians, tf.float32)
  cos, sin = tf.cos(radians), tf.sin(radians)
  # The op maps each output pixel (x, y) to the input point it samples:
  # x_in = cos*x - sin*y + tx, y_in = sin*x + cos*y + ty, and the centre
  # maps to itself.
  transform = tf.stack([cos, -sin, cx - cos * cx + sin * cy,
                        sin, cos, cy - sin * cx - cos * cy, 0., 0.])[None]

  def warp(x, interpolation, fill):
    y = tf.raw_ops.ImageProjectiveTransformV3(
        images=x[None], transforms=transform, output_shape=[in_h, in_w],
        fill_value=tf.constant(fill, tf.float32), interpolation=interpolation,
        fill_mode='CONSTANT')[0]
    return tf.ensure_shape(y, x.shape)

  out = dict(example)
  if 'image' in example:
    image = example['image']
    # Warp (image - pad colour) with fill 0: the fill is then the pad colour
    # in every channel, and edge pixels blend towards it, not towards black.
    color = tf.cast(pad_color(image.dtype), tf.float32)
    warped = warp(tf.cast(image, tf.float32) - color, 'BILINEAR', 0.)
    out['image'] = to_dtype(warped + color, image.dtype)
  for key, fill in MAP_FILL.items():
    if key in example:
      x = example[key]
      # The op takes uint8/int32/int64 as they are (ids stay exact); other
      # dtypes go through float32, exact for ids below 2**24.
      native = x.dtype in (tf.uint8, tf.int32, tf.int64)
      y = warp((x if native else tf.cast(x, tf.float32))[..., None],
               'NEAREST', float(fill))[..., 0]
      out[key] = y if native else tf.cast(y, x.dtype)
  return out


# The random draws of the geometric ops, shared with their fused form in
# `augment_warp` so that both move an example identically for one seed.


def draw_scale(seed, in_h, in_w, min_scale, max_scale):
  """Output (h, w) int32 of `scale`: round(size * f), f ~ U[min, max]."""
  f = tf.random.stateless_uniform([], seed, min_scale, max_scale)
  def scaled(n):
    return tf.maximum(1, tf.cast(tf.round(tf.cast(n, tf.float32) * f),
                                 tf.int32))
  return scaled(in_h), scaled(in_w)


def draw_crop(seed, in_h, in_w, h, w):
  """(pad_top, pad_left, top, left) int32 of a random (h, w) `crop`."""
  offsets = []
  seeds = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  for d, s in zip((in_h - h, in_w - w), seeds):
    # One draw in [0, |d|]: the crop offset if the input is larger, else
    # the input's offset in the padded window.
    u = tf.random.stateless_uniform([], s, 0, tf.abs(d) + 1, tf.int32)
    offsets.append((tf.where(d < 0, u, 0), tf.where(d < 0, 0, u)))
  (pad_top, top), (pad_left, left) = offsets
  return pad_top, pad_left, top, left


def center_offsets(in_h, in_w, h, w):
  """(pad_top, pad_left, top, left) int32 of `center_crop`."""
  d_h, d_w = in_h - h, in_w - w
  return (tf.maximum(-d_h, 0) // 2, tf.maximum(-d_w, 0) // 2,
          tf.maximum(d_h, 0) // 2, tf.maximum(d_w, 0) // 2)


def draw_flip(seed, p):
  """bool scalar: whether `flip_lr` mirrors."""
  return tf.random.stateless_uniform([], seed) < p


def draw_rotation(seed, max_degrees, p):
  """(apply: bool, angle: float32 radians) of `rotate`."""
  s_apply, s_angle = tf.unstack(
      tf.random.experimental.stateless_split(seed, 2))
  limit = math.radians(max_degrees)
  angle = tf.random.stateless_uniform([], s_angle, -limit, limit)
  apply = tf.random.stateless_uniform([], s_apply) < p
  return apply, angle


def scale(min_scale, max_scale):
  """Resizes by a factor drawn uniformly in [min_scale, max_scale].

  Output size is round(H * f) x round(W * f) (at least 1), so the aspect
  ratio is kept; image bilinear (antialiased when shrinking), maps nearest.
  """
  _check(isinstance(min_scale, (int, float)) and
         isinstance(max_scale, (int, float)) and 0 < min_scale <= max_scale,
         f'need 0 < min_scale <= max_scale, got {(min_scale, max_scale)}')

  @_no_autograph
  def fn(example, seed):
    return _resize(example, *draw_scale(seed, *map_size(example), min_scale,
                                        max_scale))
  return fn


def resize(h, w):
  """Resizes to exactly (h, w): image bilinear (antialiased), maps nearest."""
  _check_size(h, w)

  @_no_autograph
  def fn(example, seed):
    del seed  # Deterministic.
    out = _resize(example, h, w)
    return {k: tf.ensure_shape(v, _shape(h, w, v)) if k in MAPS else v
            for k, v in out.items()}
  return fn


def crop(h, w):
  """Random (h, w) window; a smaller input is first padded, at a random place.

  In a dimension where the input is smaller than the window, the input lands
  at a uniformly random offset inside it (pad values per module docstring);
  where it is larger, the window's offset is uniform. Output static shape is
  (h, w), so examples batch.
  """
  _check_size(h, w)

  @_no_autograph
  def fn(example, seed):
    return _crop(example, h, w, *draw_crop(seed, *map_size(example), h, w))
  return fn


def pad(h, w):
  """Pads at the bottom/right up to (h, w); an input larger than that fails."""
  _check_size(h, w)

  @_no_autograph
  def fn(example, seed):
    del seed  # Deterministic.
    in_h, in_w = map_size(example)
    with tf.control_dependencies([
        tf.debugging.assert_less_equal(
            tf.stack([in_h, in_w]), tf.constant([h, w]),
            message=f'pad({h}, {w}): input larger than the padded size')]):
      return _crop(example, h, w, 0, 0, 0, 0)
  return fn


def center_crop(h, w):
  """Central (h, w) window; a smaller input is padded first, centred."""
  _check_size(h, w)

  @_no_autograph
  def fn(example, seed):
    del seed  # Deterministic.
    return _crop(example, h, w, *center_offsets(*map_size(example), h, w))
  return fn


def flip_lr(p=0.5):
  """Mirrors every map left-right, all together, with probability p."""
  _check_prob(p)

  @_no_autograph
  def fn(example, seed):
    flip = draw_flip(seed, p)
    out = dict(example)
    for key in MAPS:
      if key in example:
        x = example[key]
        # Maps are [H, W] or [H, W, C]; axis 1 is the width in both.
        out[key] = tf.cond(flip, lambda x=x: tf.reverse(x, axis=[1]),
                           lambda x=x: x)
    return out
  return fn


def rotate(max_degrees, p=1.0):
  """With probability p, rotates by an angle uniform in [-max, max] degrees.

  About the image centre, same output size; image bilinear, maps nearest;
  pixels from outside the input are filled per the module docstring.
  """
  _check(isinstance(max_degrees, (int, float)) and max_degrees >= 0,
         f'max_degrees must be >= 0, got {max_degrees!r}')
  _check_prob(p)

  @_no_autograph
  def fn(example, seed):
    apply, angle = draw_rotation(seed, max_degrees, p)
    return tf.cond(apply, lambda: _rotate(example, angle),
                   lambda: dict(example))
  return fn


def jitter(brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0):
  """Photometric jitter of the image only, like torchvision's ColorJitter.

  Factors are drawn uniformly: brightness (multiplies) in [1-b, 1+b],
  contrast (blend with the mean grey level) in [1-c, 1+c], saturation
  (blend with the grey image) in [1-s, 1+s], hue shift in [-h, h] of the
  colour circle. Applied in that fixed order (torchvision shuffles it);
  a zero strength skips its step. The image is uint8 (or float in [0, 1]);
  the result is clipped to that range and keeps the dtype.
  """
  strengths = dict(brightness=brightness, contrast=contrast,
                   saturation=saturation, hue=hue)
  for name, v in strengths.items():
    _check(isinstance(v, (int, float)) and v >= 0, f'{name} must be >= 0')
  _check(hue <= 0.5, f'hue must be <= 0.5, got {hue}')
  for name in ('brightness', 'contrast', 'saturation'):
    _check(strengths[name] <= 1, f'{name} must be <= 1')

  @_no_autograph
  def fn(example, seed):
    if not any(strengths.values()):
      return dict(example)
    seeds = tf.random.experimental.stateless_split(seed, 4)
    f = [tf.random.stateless_uniform([], s, -v, v) for s, v in
         zip(tf.unstack(seeds), strengths.values())]
    image = example['image']
    scale_to_1 = 255. if image.dtype == tf.uint8 else 1.
    x = tf.cast(image, tf.float32) / scale_to_1
    if brightness:
      x = tf.clip_by_value(x * (1 + f[0]), 0., 1.)
    if contrast:
      mean = tf.reduce_mean(tf.image.rgb_to_grayscale(x))
      x = tf.clip_by_value(mean + (1 + f[1]) * (x - mean), 0., 1.)
    if saturation:
      gray = tf.image.rgb_to_grayscale(x)  # [H, W, 1]
      x = tf.clip_by_value(gray + (1 + f[2]) * (x - gray), 0., 1.)
    if hue:
      x = tf.clip_by_value(tf.image.adjust_hue(x, f[3]), 0., 1.)
    out = dict(example)
    out['image'] = to_dtype(x * scale_to_1, image.dtype)
    return out
  return fn


def normalize(mean=IMAGENET_MEAN_255, std=IMAGENET_STD_255):
  """Image -> [H, W, 3] float32 (image - mean) / std; label maps untouched.

  segjax's default configs do NOT use this op: the train step normalises
  uint8 images on the device (4x less host-to-device traffic), and takes a
  float image arriving there as already normalised. Put it last: ops after
  it would pad a float image with 0 (the normalised mean pixel).
  """
  _check(len(mean) == 3 and len(std) == 3 and all(s > 0 for s in std),
         f'need 3 means and 3 positive stds, got {mean!r}, {std!r}')

  @_no_autograph
  def fn(example, seed):
    del seed  # Deterministic.
    out = dict(example)
    x = tf.cast(example['image'], tf.float32)
    out['image'] = (x - tf.constant(mean, tf.float32)) / tf.constant(
        std, tf.float32)
    return out
  return fn
