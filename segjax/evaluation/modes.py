"""Semantic-segmentation inference modes compiled to one program per shape.

`make_predict_fn` turns a model's `apply_fn(variables, images) -> logits`
into a jitted `predict(variables, images, mask) -> probs` that averages
softmax probabilities over:

* mode 'whole': the model sees the whole (padded) image once;
* mode 'slide': windows of `window` = (h, w) every `stride` = (h, w), plus a
  last window aligned to the bottom / right edge so every pixel is covered;
  per pixel, the mean over the windows covering it;
* `scales`: the image is resized by each scale (bilinear), run through the
  mode, and the probabilities are resized back;
* `flip`: each scale also runs on the horizontally flipped image, and the
  result is flipped back.

Peers (e.g. mmsegmentation's slide inference and test-time augmentation)
loop over windows and scales in Python, launching the model once per window.
Here window positions, counts and resized shapes are static Python ints
computed from the static input shape, so the loops unroll at trace time into
ONE XLA program per input shape, and all windows of a scale go through the
model as one batch [B * n_windows, wh, ww, C].

Shapes and dtypes: images [B, H, W, C] float32 (already normalised), mask
[B, H, W] bool (True on real pixels, a top-left rectangle per image as
`pad_to` makes it); probs [B, H, W, num_classes] float32, 0 where mask is
False. Variables are an argument of `predict`, so new weights (a later
checkpoint, EMA weights) reuse the compiled program.

Cost: one pass per scale and flip. A slide pass holds the activations of
B * n_windows windows at once, so its peak memory is that of a batch of
B * n_windows images of the window size (plus the [B, H, W, num_classes]
probability accumulator); reduce B if that does not fit.

Buckets: every distinct input shape compiles its own program (seconds to
minutes for a large model). Data sets with mixed image sizes (ADE20K, COCO)
would compile one per size; `bucket_shape` + `pad_to` pad each image up to
one of a handful of bucket shapes, so a whole evaluation compiles at most
len(buckets)**2 programs, usually far fewer. Buckets should be multiples of
the model's output stride (32 for the default ones).

Padding: padded pixels are zeros (after normalisation) and the model sees
them, as in mmsegmentation's whole-image inference, where images are padded
to the batch shape: a real pixel within the model's receptive field of the
padding is influenced by it, no further. In 'slide' mode window positions
are laid out on the padded canvas, so which windows cover a real pixel
depends on the bucket. At scales != 1 bilinear resizing also mixes the last
real row / column with the first padded one (one source pixel, no
antialiasing, as torch's `interpolate` in the peers). Flips mirror only each
image's real region (its width read from `mask`), so the padding stays at
the right and the flipped pass sees exactly the flipped unpadded image,
padded (as the peers flip, then pad); in that pass the real region's left
edge is the one next to the padding. Outputs at padded pixels are set to 0.
"""

import numbers

import jax
import jax.numpy as jnp
import numpy as np

from segjax.data import buckets as buckets_lib

# Number of times the jitted body was traced; tests read it to check that a
# call with an already seen input shape does not retrace.
trace_count = 0

MODES = ('whole', 'slide')
BUCKETS = buckets_lib.BUCKETS
bucket_shape = buckets_lib.bucket_shape


def pad_to(images, shape):
  """[B, h, w, C] images -> ([B, H, W, C] zero-padded at the bottom / right,
  [B, H, W] bool mask, True on real pixels). NumPy in, NumPy out."""
  images = np.asarray(images)
  if images.ndim != 4:
    raise ValueError(f'images must be [B, h, w, C], got shape {images.shape}')
  b, h, w, c = images.shape
  big_h, big_w = shape
  if big_h < h or big_w < w:
    raise ValueError(f'shape {tuple(shape)} must be >= the image size '
                     f'({h}, {w})')
  padded = np.zeros((b, big_h, big_w, c), images.dtype)
  padded[:, :h, :w] = images
  mask = np.zeros((b, big_h, big_w), bool)
  mask[:, :h, :w] = True
  return padded, mask


def window_starts(size, window, stride):
  """Static start offsets of the windows along one side of length `size`.

  0, stride, 2 * stride, ... while a window fits, plus one window flush with
  the far edge when the last stride would leave pixels uncovered. A side no
  longer than the window gets one window at 0 (of the side's own length).
  """
  if size <= window:
    return [0]
  last = size - window
  # range() stops before `last`; appending it covers the far edge exactly
  # once whether or not `last` is a multiple of the stride.
  return list(range(0, last, stride)) + [last]


def _pair(name, value):
  """An int or an (h, w) pair of positive ints -> (h, w)."""
  pair = (value, value) if np.ndim(value) == 0 else tuple(value)
  if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) for v in pair):
    raise ValueError(f'{name} must be an int or an (h, w) pair of ints, got '
                     f'{value!r}')
  if min(pair) <= 0:
    raise ValueError(f'{name} must be positive, got {value!r}')
  return int(pair[0]), int(pair[1])


def _validate(num_classes, mode, window, stride, scales):
  """Checks the options eagerly; returns (window, stride, scales)."""
  if not isinstance(num_classes, int) or num_classes < 1:
    raise ValueError(f'num_classes must be an int >= 1, got {num_classes!r}')
  if mode not in MODES:
    raise ValueError(f'mode must be one of {MODES}, got {mode!r}')
  if mode == 'whole':
    # A window in whole mode is almost certainly a config mistake; silently
    # ignoring it would run the (more expensive or cheaper) wrong mode.
    if window is not None or stride is not None:
      raise ValueError("window and stride are only used by mode='slide'")
  else:
    if window is None:
      raise ValueError("mode='slide' needs a window (h, w)")
    window = _pair('window', window)
    # Default: tiles without overlap.
    stride = window if stride is None else _pair('stride', stride)
    if stride[0] > window[0] or stride[1] > window[1]:
      raise ValueError(f'stride {stride} must not exceed window {window}: '
                       'pixels between windows would get no prediction')
  scales = tuple(scales)
  if not scales:
    raise ValueError('scales must not be empty')
  if any(not isinstance(s, numbers.Real) or not s > 0 for s in scales):
    raise ValueError(f'scales must all be positive numbers, got {scales!r}')
  return window, stride, tuple(float(s) for s in scales)


def _probabilities(logits, shape, num_classes, activation):
  """float32 softmax (or sigmoid), after checking what apply_fn returned."""
  if logits.shape != (*shape, num_classes):
    raise ValueError(f'apply_fn returned logits of shape {logits.shape}, '
                     f'expected {(*shape, num_classes)}')
  if activation == 'sigmoid':
    return jax.nn.sigmoid(logits.astype(jnp.float32))
  return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)


def _slide(apply_fn, variables, images, num_classes, window, stride,
           activation):
  """[B, H, W, C] -> [B, H, W, K]: mean probabilities over the windows."""
  b, h, w, _ = images.shape
  wh, ww = min(window[0], h), min(window[1], w)
  rows = window_starts(h, window[0], stride[0])
  cols = window_starts(w, window[1], stride[1])
  corners = [(r, c) for r in rows for c in cols]
  n = len(corners)
  # Window corners are Python ints, so the crops are static slices in the
  # compiled program (no gathers) and the loop below unrolls at trace time.
  crops = jnp.stack([images[:, r:r + wh, c:c + ww] for r, c in corners], 1)
  logits = apply_fn(variables, crops.reshape(b * n, wh, ww, -1))
  probs = _probabilities(logits, (b * n, wh, ww), num_classes, activation)
  probs = probs.reshape(b, n, wh, ww, num_classes)
  total = jnp.zeros((b, h, w, num_classes), jnp.float32)
  count = np.zeros((h, w, 1), np.float32)
  for i, (r, c) in enumerate(corners):
    total = total.at[:, r:r + wh, c:c + ww].add(probs[:, i])
    count[r:r + wh, c:c + ww] += 1
  # The coverage count is a compile-time constant (>= 1 everywhere).
  return total / jnp.asarray(count)


def scaled_shape(shape, scale):
  """The (h, w) a scale pass runs at: (H, W) * scale, rounded half up."""
  return int(shape[0] * scale + 0.5), int(shape[1] * scale + 0.5)


def _resize(x, h, w):
  # antialias=False: plain bilinear, as torch's interpolate in the peers;
  # probabilities stay convex combinations, so they still sum to 1.
  return jax.image.resize(x, (x.shape[0], h, w, x.shape[3]), 'bilinear',
                          antialias=False)


def _flip_real(x, width):
  """Mirrors each image's columns [0, width[b]); padding stays in place."""
  cols = jnp.arange(x.shape[2])[None, :]
  index = jnp.where(cols < width[:, None], width[:, None] - 1 - cols, cols)
  return jnp.take_along_axis(x, index[:, None, :, None], axis=2)


def make_predict_fn(apply_fn, num_classes, *, mode='whole', window=None,
                    stride=None, scales=(1.0,), flip=False,
                    activation='softmax'):
  """Returns a jitted `predict(variables, images, mask) -> probs`.

  Args:
    apply_fn: (variables, images [N, h, w, C] float32) -> logits
      [N, h, w, num_classes], for any spatial size (h, w); e.g.
      `model.apply` or `lambda v, x: model.apply(v, x, train=False)`.
      Variables are an argument of `predict`, not closed over, so new
      weights do not retrace.
    num_classes: the number of logits per pixel.
    mode: 'whole' (the model sees the whole padded image) or 'slide'.
    window: 'slide' only: window (h, w) or an int for a square one. A side
      of the (scaled) image shorter than the window gets one window of the
      image's size along it.
    stride: 'slide' only: (h, w) or an int, at most the window; default
      the window (tiles without overlap). Windows start at 0, s, 2s, ...
      plus one flush with the bottom / right edge.
    scales: each scale s resizes the image to (int(H * s + 0.5),
      int(W * s + 0.5)) bilinearly, runs the mode there and resizes the
      probabilities back to (H, W).
    flip: also run each scale on the horizontally flipped image (real
      region only, see the module docstring) and flip the result back.
    activation: 'softmax' (over the classes) or 'sigmoid' (each channel
      its own probability, for a binary model's sigmoid logits).

  Returns:
    predict(variables, images [B, H, W, C] float32, mask [B, H, W] bool)
    -> probs [B, H, W, num_classes] float32: the equally weighted mean of
    the softmax (or sigmoid) probabilities of all len(scales) * (1 + flip)
    passes, 0 where mask is False. It traces (and compiles) once per input
    shape.

  Raises:
    ValueError: naming the argument, for bad options (here, eagerly), or
      for shapes that do not fit (when `predict` is traced).
  """
  window, stride, scales = _validate(num_classes, mode, window, stride,
                                     scales)
  if activation not in ('softmax', 'sigmoid'):
    raise ValueError(f"activation must be 'softmax' or 'sigmoid', got "
                     f'{activation!r}')

  def one_scale(variables, images, scale):
    b, h, w, _ = images.shape
    sh, sw = scaled_shape((h, w), scale)
    if sh < 1 or sw < 1:
      raise ValueError(f'scale {scale} shrinks a {h}x{w} input to nothing')
    x = images if (sh, sw) == (h, w) else _resize(images, sh, sw)
    if mode == 'whole':
      probs = _probabilities(apply_fn(variables, x), (b, sh, sw),
                             num_classes, activation)
    else:
      probs = _slide(apply_fn, variables, x, num_classes, window, stride,
                     activation)
    return probs if (sh, sw) == (h, w) else _resize(probs, h, w)

  def predict(variables, images, mask):
    global trace_count
    trace_count += 1
    if images.ndim != 4 or mask.shape != images.shape[:3]:
      raise ValueError(f'images must be [B, H, W, C] and mask [B, H, W]; got '
                       f'{images.shape} and {mask.shape}')
    images = images.astype(jnp.float32)
    # Real width per image: the number of columns holding a real pixel.
    width = jnp.sum(jnp.any(mask, axis=1), axis=1)
    total = 0.0
    for scale in scales:
      total = total + one_scale(variables, images, scale)
      if flip:
        flipped = one_scale(variables, _flip_real(images, width), scale)
        total = total + _flip_real(flipped, width)
    probs = total / (len(scales) * (2 if flip else 1))
    return jnp.where(mask[..., None], probs, 0.0).astype(jnp.float32)

  return jax.jit(predict)


def num_windows(shape, window, stride):
  """Windows per image of a 'slide' pass on an (H, W) input (for sizing B)."""
  window, stride = _pair('window', window), _pair('stride', stride)
  return (len(window_starts(shape[0], window[0], stride[0]))
          * len(window_starts(shape[1], window[1], stride[1])))

