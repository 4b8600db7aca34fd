"""Panoptic-DeepLab post-processing as one jitted JAX function.

Turns the three heads of Panoptic-DeepLab (Cheng et al., "Panoptic-DeepLab",
CVPR 2020) into a panoptic map, per image and vmapped over the batch:

1. semantic = argmax of the semantic logits; thing pixels are those whose
   semantic class is in `thing_classes`.
2. Centers: a pixel of the class-agnostic center heatmap is a peak when it
   equals the max-pool of the heatmap over an `nms_kernel` x `nms_kernel`
   window (stride 1, SAME padding with -inf) and exceeds `center_threshold`.
   The `top_k` highest peaks are kept with `lax.top_k`; slots beyond the
   number of peaks are invalid centers.
3. Grouping: each thing pixel p goes to the valid center c minimising
   ||p + offset(p) - c||^2 (row, col). Distances are computed over chunks
   of `chunk_size` pixels, so the peak extra memory is
   B x chunk_size x top_k floats, never B x H*W x top_k.
4. Instance class: majority vote of the semantic labels over its pixels
   (ties -> smallest class id).
5. Instance score: heatmap value at its center x mean over its pixels of
   softmax(logits)[instance class] (the paper's objectness x class score).
6. Panoptic map: instance pixels -> class * label_divisor + k (k = 1-based
   rank of the center by heatmap value); thing pixels without an instance
   -> void; stuff pixels -> class * label_divisor, or void when that stuff
   class covers fewer than `stuff_area` pixels of the image. Void is
   ignore_index * label_divisor.

Shapes and dtypes: semantic_logits [B, H, W, C] float, center_heatmap
[B, H, W] or [B, H, W, 1] float, center_offsets [B, H, W, 2] float (dy, dx)
in pixels. Outputs: 'panoptic', 'semantic', 'instance_ids' [B, H, W] int32;
'instance_scores' [B, top_k] float32, 'instance_classes' [B, top_k] int32
(ignore_index for invalid slots), 'instance_valid' [B, top_k] bool. All
computation is float32; every shape is static, so there are no host round
trips and no Python loops over instances.

Defaults are deeplab2's Cityscapes settings (center threshold 0.1, NMS
kernel 7, top-k 200, stuff area 2048). DSB2018 images hold up to 375
nuclei, so use top_k >= 500 there (and a label_divisor above it).
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax

# Number of times the jitted body was traced; tests read it to check that a
# repeated call with the same shapes and options does not retrace.
trace_count = 0

# The tunable options of `panoptic_postprocess` (config.panoptic fields).
OPTIONS = ('center_threshold', 'nms_kernel', 'top_k', 'stuff_area')


def _check(cond, message):
  if not cond:
    raise ValueError(message)


def _validate(logits, heatmap, offsets, thing_classes, label_divisor,
              ignore_index, nms_kernel, top_k, stuff_area, chunk_size):
  """Raises ValueError naming the bad argument; runs at trace time."""
  _check(isinstance(top_k, int) and top_k >= 1,
         f'top_k must be an int >= 1, got {top_k!r}')
  _check(isinstance(label_divisor, int) and label_divisor > top_k,
         f'label_divisor ({label_divisor!r}) must be an int > top_k '
         f'({top_k}) so that instance ids 1..top_k fit below it')
  _check(isinstance(nms_kernel, int) and nms_kernel >= 1
         and nms_kernel % 2 == 1,
         f'nms_kernel must be an odd int >= 1, got {nms_kernel!r}')
  _check(isinstance(chunk_size, int) and chunk_size >= 1,
         f'chunk_size must be an int >= 1, got {chunk_size!r}')
  _check(stuff_area >= 0, f'stuff_area must be >= 0, got {stuff_area!r}')
  _check(logits.ndim == 4,
         f'semantic_logits must be [B, H, W, C], got shape {logits.shape}')
  b, h, w, c = logits.shape
  _check(heatmap.shape in ((b, h, w), (b, h, w, 1)),
         f'center_heatmap shape {heatmap.shape} must be ({b}, {h}, {w}) or '
         f'({b}, {h}, {w}, 1) to match semantic_logits {logits.shape}')
  _check(offsets.shape == (b, h, w, 2),
         f'center_offsets shape {offsets.shape} must be ({b}, {h}, {w}, 2) '
         f'to match semantic_logits {logits.shape}')
  _check(isinstance(thing_classes, tuple)
         and all(isinstance(t, int) and 0 <= t < c for t in thing_classes),
         f'thing_classes must be a tuple of class ids in [0, {c}), got '
         f'{thing_classes!r}')
  _check(isinstance(ignore_index, int) and not 0 <= ignore_index < c,
         f'ignore_index ({ignore_index!r}) must be an int outside the '
         f'class ids [0, {c}), or void would alias a class')
  # Panoptic ids are int32: the largest one must not overflow.
  _check(max(c - 1, ignore_index) * label_divisor + top_k < 2**31,
         f'label_divisor ({label_divisor}) x max(ignore_index, C - 1) '
         'overflows int32')


def _find_centers(heat, threshold, nms_kernel, top_k):
  """[H, W] heatmap -> (values [K], rows [K], cols [K], valid [K])."""
  w = heat.shape[1]
  # reduce_window pads with its init value, so -inf gives SAME padding that
  # never wins the max, as the algorithm requires.
  pooled = lax.reduce_window(heat, -jnp.inf, lax.max, (nms_kernel, nms_kernel),
                             (1, 1), 'SAME')
  peak = (heat == pooled) & (heat > threshold)
  scores = jnp.where(peak, heat, -jnp.inf).reshape(-1)
  # lax.top_k needs k <= n: pad tiny images with non-peaks.
  if scores.shape[0] < top_k:
    scores = jnp.pad(scores, (0, top_k - scores.shape[0]),
                     constant_values=-jnp.inf)
  values, index = lax.top_k(scores, top_k)
  # Peaks are finite and sort before every -inf slot, so valid centers form
  # a prefix: slot k is the k-th highest peak.
  valid = values > -jnp.inf
  return values, index // w, index % w, valid


def _group(offsets, thing, rows, cols, valid, chunk_size):
  """Nearest valid center per thing pixel -> [H, W] int32 ids (0 = none)."""
  h, w = thing.shape
  n = h * w
  chunk = min(chunk_size, n)
  num_chunks = -(-n // chunk)
  pad = num_chunks * chunk - n
  yy, xx = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32),
                        jnp.arange(w, dtype=jnp.float32), indexing='ij')
  # Where each pixel votes its center is: its position plus its offset.
  vote_y = jnp.pad((yy + offsets[..., 0]).reshape(-1), (0, pad))
  vote_x = jnp.pad((xx + offsets[..., 1]).reshape(-1), (0, pad))
  cy = rows.astype(jnp.float32)
  cx = cols.astype(jnp.float32)

  def nearest(args):
    vy, vx = args
    # Explicit differences, not |q|^2 - 2 q.c + |c|^2: the expansion loses
    # precision when pixels are far from the origin and can flip argmins.
    d = jnp.square(vy[:, None] - cy) + jnp.square(vx[:, None] - cx)
    d = jnp.where(valid[None, :], d, jnp.inf)
    return jnp.argmin(d, axis=1).astype(jnp.int32)

  # lax.map keeps only one [chunk, top_k] distance block alive at a time.
  nearest_k = lax.map(nearest, (vote_y.reshape(num_chunks, chunk),
                                vote_x.reshape(num_chunks, chunk)))
  nearest_k = nearest_k.reshape(-1)[:n].reshape(h, w)
  return jnp.where(thing & jnp.any(valid), nearest_k + 1, 0)


def _one_image(logits, heat, offsets, *, thing_classes, label_divisor,
               ignore_index, center_threshold, nms_kernel, top_k, stuff_area,
               chunk_size):
  """The whole algorithm for one [H, W] image."""
  c = logits.shape[-1]
  semantic = jnp.argmax(logits, axis=-1).astype(jnp.int32)
  # A [C] lookup table instead of isin: one gather per pixel.
  is_thing = jnp.zeros((c,), bool).at[
      jnp.array(thing_classes, jnp.int32)].set(True)
  thing = is_thing[semantic]

  values, rows, cols, kept = _find_centers(heat, center_threshold, nms_kernel,
                                           top_k)
  ids = _group(offsets, thing, rows, cols, kept, chunk_size)

  # Majority vote: one bincount over (instance, class) pairs with a static
  # number of segments; row 0 (no instance) is dropped. argmax returns the
  # first maximum, i.e. the smallest class id on ties.
  pair = (ids * c + semantic).reshape(-1)
  votes = jax.ops.segment_sum(jnp.ones_like(pair), pair,
                              num_segments=(top_k + 1) * c)
  votes = votes.reshape(top_k + 1, c)
  area = votes.sum(axis=1)
  klass = jnp.argmax(votes, axis=1).astype(jnp.int32)  # [top_k + 1]

  # Class probability of each pixel's instance class, via log-softmax so the
  # [H, W, C] probabilities are never needed, only one logit per pixel.
  pixel_class = klass[ids]
  logit = jnp.take_along_axis(logits, pixel_class[..., None], axis=-1)[..., 0]
  prob = jnp.exp(logit - jax.nn.logsumexp(logits, axis=-1))
  prob_sum = jax.ops.segment_sum(prob.reshape(-1), ids.reshape(-1),
                                 num_segments=top_k + 1)
  # max(area, 1) keeps empty slots finite; they are masked out below anyway.
  mean_prob = prob_sum[1:] / jnp.maximum(area[1:], 1).astype(jnp.float32)
  valid = kept & (area[1:] > 0)
  scores = jnp.where(valid, values * mean_prob, 0.0).astype(jnp.float32)
  classes = jnp.where(valid, klass[1:], ignore_index)

  # Stuff: a class that is not a thing keeps all its pixels' semantic label,
  # so its area is simply the class histogram.
  class_area = jnp.bincount(semantic.reshape(-1), length=c)
  void = jnp.int32(ignore_index * label_divisor)
  stuff_id = jnp.where(class_area[semantic] >= stuff_area,
                       semantic * label_divisor, void)
  thing_id = jnp.where(ids > 0, pixel_class * label_divisor + ids, void)
  panoptic = jnp.where(thing, thing_id, stuff_id).astype(jnp.int32)
  return {
      'panoptic': panoptic,
      'semantic': semantic,
      'instance_ids': ids.astype(jnp.int32),
      'instance_scores': scores,
      'instance_classes': classes.astype(jnp.int32),
      'instance_valid': valid,
  }


@functools.partial(jax.jit, static_argnames=(
    'thing_classes', 'label_divisor', 'ignore_index', 'center_threshold',
    'nms_kernel', 'top_k', 'stuff_area', 'chunk_size'))
def panoptic_postprocess(semantic_logits, center_heatmap, center_offsets, *,
                         thing_classes, label_divisor, ignore_index=255,
                         center_threshold=0.1, nms_kernel=7, top_k=200,
                         stuff_area=2048, chunk_size=16384):
  """Panoptic-DeepLab heads -> panoptic map and scored instances.

  Args:
    semantic_logits: [B, H, W, C] float.
    center_heatmap: [B, H, W] or [B, H, W, 1] float.
    center_offsets: [B, H, W, 2] float (dy, dx) in pixels, pointing from a
      pixel to its instance's center.
    thing_classes: tuple of the class ids that have instances (static, as
      are all keyword arguments).
    label_divisor: panoptic id = category * label_divisor + instance; must
      exceed top_k.
    ignore_index: void category; void pixels are ignore_index *
      label_divisor.
    center_threshold: a center's heatmap value must exceed this.
    nms_kernel: odd side of the max-pool window of center NMS.
    top_k: the number of centers kept per image (and of instance slots).
    stuff_area: stuff classes covering fewer pixels become void.
    chunk_size: pixels per grouping chunk; bounds memory at
      B x chunk_size x top_k.

  Returns:
    A dict: 'panoptic', 'semantic' and 'instance_ids' [B, H, W] int32 (id k
    is the k-th kept center in descending heatmap order, 0 = none);
    'instance_scores' [B, top_k] float32 (0 where invalid);
    'instance_classes' [B, top_k] int32 (ignore_index where invalid);
    'instance_valid' [B, top_k] bool (center kept and >= 1 pixel).

  Raises:
    ValueError: naming the argument, for bad options or inconsistent shapes
      (raised when the call is traced, before anything is computed).
  """
  global trace_count
  trace_count += 1
  _validate(semantic_logits, center_heatmap, center_offsets, thing_classes,
            label_divisor, ignore_index, nms_kernel, top_k, stuff_area,
            chunk_size)
  b, h, w, _ = semantic_logits.shape
  one = functools.partial(
      _one_image, thing_classes=thing_classes, label_divisor=label_divisor,
      ignore_index=ignore_index, center_threshold=center_threshold,
      nms_kernel=nms_kernel, top_k=top_k, stuff_area=stuff_area,
      chunk_size=chunk_size)
  return jax.vmap(one)(semantic_logits.astype(jnp.float32),
                       center_heatmap.reshape(b, h, w).astype(jnp.float32),
                       center_offsets.astype(jnp.float32))


def instance_masks(instance_ids, top_k):
  """[B, H, W] instance ids -> [B, top_k, H, W] bool, mask k-1 for id k.

  Materialises B x top_k x H x W booleans: use it on small images or
  slices, not on full Cityscapes batches.
  """
  ks = jnp.arange(1, top_k + 1, dtype=jnp.int32)
  return jnp.asarray(instance_ids)[:, None, :, :] == ks[None, :, None, None]
