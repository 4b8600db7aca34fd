"""Panoptic quality (Kirillov et al., CVPR 2019) as summable stats, in `jit`.

Panoptic maps are `category * label_divisor + instance` (deeplab2's
convention; stuff has instance 0). A pixel whose category equals
`ignore_index` is void, whatever its instance. The rules are panopticapi's
`pq_compute` (github.com/cocodataset/panopticapi, evaluation.py), per image:

  * segments are the (category, instance) pairs present in the image; void
    pixels form no segment, in the ground truth or in the prediction (a
    stuff category with several instance ids is several segments, as in
    panopticapi and deeplab2: give stuff instance 0);
  * a ground-truth segment g and a predicted segment p of the same category
    match when IoU > 0.5, with IoU = I / (A_g + A_p - I - V_p): I their
    intersection, A the areas and V_p the pixels of p on ground-truth void
    (the union leaves out the part of p that lies on void);
  * an unmatched ground-truth segment is a false negative (FN);
  * an unmatched predicted segment is a false positive (FP) unless more than
    half of it lies on void (V_p / A_p > 0.5).

torchmetrics' PanopticQuality departs from these rules where the prediction
is void: it also takes the gt pixels predicted void out of the union, and
does not count a gt segment mostly predicted void as a FN.

Crowd: panopticapi also exempts predictions that lie mostly on a crowd region
of their own category. segjax label maps have no crowd flag: the data
adapters (segjax/data/coco_panoptic.py, cityscapes_panoptic.py) turn crowd
regions into void, so a crowd region here is void for every category, and
the part of a prediction on it is left out of that prediction's unions.

How it runs without sorting, `unique` or a pair histogram
---------------------------------------------------------
Segment (c, i) of an image has the dense index c * M + i (M = max_instances,
S = C * M indices), so per-segment counts are bincounts over S + 2 rows (row
S: void pixels, row S + 1: pixels with no index). A joint (g, p) histogram
would need S^2 bins (COCO's 133 categories and M = 256: 1.2e9), so it is
never formed. Instead, with r the smallest power of two with r^2 >= M, an
instance id is two base-r digits, and three bincounts do it:

  1. A match needs I > A_g / 2, because the union is at least A_g: p's
     pixels outside g lie either on void (V_p) or in A_p - I - V_p >= 0. So
     the only pred segment that can match g holds a strict majority of g's
     pixels, and its high digit is then the most frequent one among them.
     Pass 1 counts g's pixels by the high digit of their pred instance (an
     extra column takes pixels of another pred category or pred void): row
     sums are A_g, the argmax is the candidate high digit h.
  2. Pass 2 counts g's pixels whose pred segment is (category of g, high
     digit h) by their low digit: column j holds exactly I(g, (c, h*r + j)).
     The candidate is the argmax j, with I its count. If g has a majority
     segment, this is it; otherwise the candidate is some segment with
     I <= A_g / 2 (or none, I = 0), and fails the IoU test as every pair
     with g does.
  3. A_p and V_p come from one bincount over (pred index, gt is void).

So every pair with IoU > 0.5 is examined and scored with panopticapi's
formula (tested in integers as 2 I > U: IoU exactly 0.5 is no match), and no
other pair can match. Each p matches at most one g (by the same bound, I >
(A_p - V_p) / 2, and different g's intersections with p are disjoint), so
matched flags scattered from g to p are 0 or 1, like panopticapi's sets.
The stats are then panopticapi's, exactly (IoUs summed in float32).

Cost per image of P pixels: 3 P scatter-adds, P gathers and a few
elementwise passes, whatever the number of segments; memory: two
(S + 2) x (r + 1) int32 tables (COCO, C = 133 and M = 256: 2.3 MB each) beside
the inputs. On CPUs the images of a batch run one after another inside the
jitted call (see `_panoptic_stats`), so that memory does not grow with B.

Instance ids >= max_instances have no dense index: their pixels are counted
in `overflow` (never merged into another segment), and the scores of stats
with overflow are NaN.
"""

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from segjax import kernels as kernels_lib
from segjax.metrics import confusion


def _split(panoptic, *, num_categories, label_divisor, ignore_index,
           max_instances):
  """Dense segment indices of [P] int32 panoptic ids.

  Returns:
    (index, category, instance, void), each [P]: index c * M + i of segment
    (c, i) in [0, S), S = C * M; S for void pixels; S + 1 for pixels with no
    index (instance >= M, or a category outside [0, C) that is not void).
  """
  m, s = max_instances, num_categories * max_instances
  # Floor division with one integer division (the costly op on CPUs): the
  # truncated quotient is one too high exactly when the remainder is < 0.
  category = jax.lax.div(panoptic, jnp.int32(label_divisor))
  instance = panoptic - category * label_divisor
  category = jnp.where(instance < 0, category - 1, category)
  instance = jnp.where(instance < 0, instance + label_divisor, instance)
  void = category == ignore_index
  valid = (category >= 0) & (category < num_categories) & (instance < m)
  index = jnp.where(void, s, jnp.where(valid, category * m + instance, s + 1))
  return index, category, instance, void


def _digit_base(max_instances):
  """The smallest power of two r with r * r >= max_instances."""
  r = 1
  while r * r < max_instances:
    r *= 2
  return r


def _counts(index, length):
  """bincount of an int32 index that is in [0, length) by construction."""
  return jnp.zeros(length, jnp.int32).at[index].add(
      1, mode='promise_in_bounds')


def _image_stats(pred, gt, *, num_categories, label_divisor, ignore_index,
                 max_instances):
  """Stats of one image, [P] int32 panoptic ids, in three bincounts."""
  c, m = num_categories, max_instances
  s = c * m
  r = _digit_base(m)
  kwargs = dict(num_categories=c, label_divisor=label_divisor,
                ignore_index=ignore_index, max_instances=m)
  gt, gt_category, _, gt_void = _split(gt, **kwargs)
  pred, pred_category, pred_instance, _ = _split(pred, **kwargs)
  # Pred pixels that can be part of their gt segment's match: a pred
  # segment of the gt pixel's category (rows s and s + 1 never match).
  same = (pred < s) & (pred_category == gt_category)
  shift = r.bit_length() - 1  # r is a power of two.
  high = pred_instance >> shift
  # Pass 1: per gt segment, its pixels by the high digit of their predicted
  # instance; column r takes the pixels that cannot match (other category,
  # pred void). Row sums are the gt areas.
  table = _counts(gt * (r + 1) + jnp.where(same, high, r), (s + 2) * (r + 1))
  table = table.reshape(s + 2, r + 1)
  gt_area = table.sum(1)
  best_high = jnp.argmax(table[:, :r], 1).astype(jnp.int32)
  # Pass 2: the same, by the low digit, of the pixels whose high digit is
  # their segment's best: column j counts exactly the intersection with the
  # pred segment (category of g, best_high * r + j).
  in_best = same & (high == best_high[gt])
  table = _counts(gt * (r + 1) + jnp.where(in_best, pred_instance & (r - 1), r),
                  (s + 2) * (r + 1)).reshape(s + 2, r + 1)
  best_low = jnp.argmax(table[:, :r], 1).astype(jnp.int32)
  inter = jnp.max(table[:, :r], 1)
  # Pass 3: pred areas and their overlap with gt void.
  pred_counts = _counts(pred * 2 + gt_void, (s + 2) * 2).reshape(s + 2, 2)
  pred_void = pred_counts[:, 1]
  pred_area = pred_counts[:, 0] + pred_void
  # Each gt row's candidate pred row. Rows with inter = 0 can match nothing,
  # and any in-range row will do for them: the void and unindexed rows, and
  # those whose best digits form an instance >= m (no pred pixel has one).
  row = jnp.arange(s + 2, dtype=jnp.int32)
  candidate = (jnp.minimum(row - row % m, s - m)
               + jnp.minimum(best_high * r + best_low, m - 1))
  union = gt_area + pred_area[candidate] - inter - pred_void[candidate]
  matched = (2 * inter > union) & (inter > 0) & (row < s)
  iou = jnp.where(matched, inter / jnp.maximum(union, 1), 0.0)
  pred_matched = jnp.zeros(s + 2, bool).at[candidate].max(matched)
  fp = (pred_area > 0) & ~pred_matched & (2 * pred_void <= pred_area)
  fn = (gt_area > 0) & ~matched

  def per_category(x, dtype):
    return x[:s].reshape(c, m).sum(1, dtype=dtype)

  return {
      'tp': per_category(matched, jnp.int32),
      'fp': per_category(fp, jnp.int32),
      'fn': per_category(fn, jnp.int32),
      'iou_sum': per_category(iou, jnp.float32),
      'overflow': gt_area[s + 1] + pred_area[s + 1],
  }


@functools.partial(jax.jit, static_argnames=(
    'num_categories', 'label_divisor', 'ignore_index', 'max_instances',
    'loop'))
def _panoptic_stats(pred, gt, *, num_categories, label_divisor, ignore_index,
                    max_instances, loop=None):
  """Stats of [B, H, W] maps, summed over the B images.

  `loop`: True runs the images one after another (`lax.map`), False vmaps
  them, None decides per platform when the program is lowered
  (segjax.kernels): the loop on CPUs, vmap elsewhere. On CPUs a loop keeps
  every per-pixel buffer one image large, and warm after the first image:
  XLA:CPU allocates them afresh per call and pays page faults on every
  first touch, which made a vmapped batch of 8 512x1024 images about 3x
  slower (docs/performance.md). Accelerators allocate from a pool and run
  a vmapped batch in parallel (not measured here).
  """
  b = gt.shape[0]
  one_image = functools.partial(
      _image_stats, num_categories=num_categories,
      label_divisor=label_divisor, ignore_index=ignore_index,
      max_instances=max_instances)
  images = (pred.reshape(b, -1).astype(jnp.int32),
            gt.reshape(b, -1).astype(jnp.int32))

  def looped(*images):
    return jax.lax.map(lambda x: one_image(*x), images)

  def vmapped(*images):
    return jax.vmap(one_image)(*images)

  if loop is None:
    per_image = kernels_lib.choose('auto', 'panoptic_images', looped,
                                   vmapped, *images)
  else:
    per_image = (looped if loop else vmapped)(*images)
  return {k: v.sum(0) for k, v in per_image.items()}


def panoptic_stats(pred, gt, *, num_categories, label_divisor,
                   ignore_index=255, max_instances=256):
  """Per-category panoptic-quality counts, summed over the images given.

  Args:
    pred: [H, W] or [B, H, W] integer predicted panoptic map,
      `category * label_divisor + instance`.
    gt: ground truth of the same shape and convention. Images are matched
      independently (segments never span two images).
    num_categories: C, a Python int: categories are 0 .. C - 1.
    label_divisor: the multiplier of the category in a panoptic id.
    ignore_index: the category of void pixels (in `gt`: left out of
      matching as described at the top of this module; in `pred`: pixels
      the model leaves unlabelled, which form no segment).
    max_instances: static bound M on instance ids: ids in [0, M) are
      segments, others are counted in 'overflow'. Memory and the cost of
      scoring the tables grow with C * M * sqrt(M); time per pixel does not.

  Returns:
    dict of sums over the B images: 'tp', 'fp', 'fn' [C] int32, 'iou_sum'
    [C] float32 (sum of the IoUs of the matched pairs), 'overflow' []
    int32 (pixels, gt and pred, with an instance id >= M; under `jit`
    also non-void pixels whose category lies outside [0, C)). Every entry
    is a sum, so stats of batches, devices and hosts add up entry by entry
    (`jax.tree.map(jnp.add, a, b)`); on inputs sharded over a mesh the
    result is already the global sum. Score the total with
    `panoptic_scores`.

  Raises:
    ValueError (concrete inputs only): shape mismatch, non-integer or wrong
    rank inputs, bad static arguments, or a pixel of a category outside
    [0, C) that is not `ignore_index`.
  """
  for name, value, low in (('num_categories', num_categories, 1),
                           ('label_divisor', label_divisor, 1),
                           ('max_instances', max_instances, 1)):
    if not isinstance(value, (int, np.integer)) or value < low:
      raise ValueError(f'{name} must be a positive int, got {value!r}.')
  confusion._check_shapes_and_dtypes(  # pylint: disable=protected-access
      gt, pred)
  if np.ndim(gt) not in (2, 3):
    raise ValueError(f'panoptic maps must be [H, W] or [B, H, W], got shape '
                     f'{np.shape(gt)}.')
  pred, gt = jnp.asarray(pred), jnp.asarray(gt)
  if gt.ndim == 2:
    pred, gt = pred[None], gt[None]
  # Instance ids are below label_divisor, so a larger bound only costs memory.
  max_instances = min(max_instances, label_divisor)
  table_size = (num_categories * max_instances + 2) * (
      _digit_base(max_instances) + 1)
  if table_size >= 2**31:
    raise ValueError(
        f'num_categories * max_instances = {num_categories * max_instances} '
        'is too large: the digit tables would need int64 indices. Lower '
        'max_instances.')
  stats = _panoptic_stats(
      pred, gt, num_categories=int(num_categories),
      label_divisor=int(label_divisor), ignore_index=int(ignore_index),
      max_instances=int(max_instances))
  overflow = stats['overflow']
  if confusion.is_concrete(overflow) and int(overflow):
    _raise_for_bad_categories(pred, gt, num_categories, label_divisor,
                              ignore_index)
  return stats


def _raise_for_bad_categories(pred, gt, num_categories, label_divisor,
                              ignore_index):
  """Raises a ValueError that names the offending categories (slow path)."""
  for name, x in (('gt', gt), ('pred', pred)):
    category = np.floor_divide(np.asarray(x, np.int64), label_divisor)
    bad = (category != ignore_index) & ((category < 0)
                                        | (category >= num_categories))
    if bad.any():
      raise ValueError(
          f'{name} holds categories {np.unique(category[bad])[:8].tolist()} '
          f'outside [0, {num_categories}) that are not ignore_index='
          f'{ignore_index} (panoptic id = category * {label_divisor} + '
          'instance).')


def panoptic_scores(stats, thing_ids):
  """PQ, SQ and RQ, overall and over things and stuff, from summed stats.

  Per category k (panopticapi's definitions): SQ = iou_sum / TP (0 when
  TP = 0), RQ = TP / (TP + FP / 2 + FN / 2), PQ = SQ * RQ. Categories with
  no TP, FP or FN are NaN here and left out of every average; an average
  over no category is NaN.

  Args:
    stats: the dict of `panoptic_stats` (summed as needed). NumPy stats are
      scored in float64 NumPy; JAX arrays (also inside `jit`) in float32.
    thing_ids: iterable of the thing categories; every other category in
      [0, C) is stuff.

  Returns:
    dict: 'pq', 'sq', 'rq', 'pq_things', 'sq_things', 'rq_things',
    'pq_stuff', 'sq_stuff', 'rq_stuff' scalars; 'pq_per_category',
    'sq_per_category', 'rq_per_category' [C]; 'n', 'n_things', 'n_stuff':
    how many categories each average is over. With a non-zero 'overflow'
    every score is NaN, and (outside `jit`) a warning says why.
  """
  tp, fp, fn = stats['tp'], stats['fp'], stats['fn']
  xp = jnp if isinstance(tp, jax.Array) else np
  dtype = jnp.float32 if xp is jnp else np.float64
  tp, fp, fn = (xp.asarray(x).astype(dtype) for x in (tp, fp, fn))
  iou_sum = xp.asarray(stats['iou_sum']).astype(dtype)
  c = tp.shape[0]
  thing_ids = sorted({int(k) for k in thing_ids})
  if any(not 0 <= k < c for k in thing_ids):
    raise ValueError(f'thing_ids {thing_ids} must lie in [0, {c}).')
  is_thing = np.zeros(c, bool)
  is_thing[thing_ids] = True
  overflow = stats['overflow']
  if confusion.is_concrete(overflow) and int(overflow):
    warnings.warn(
        f'panoptic_scores: {int(overflow)} pixels had no segment index (an '
        'instance id >= max_instances, or a category outside [0, '
        'num_categories) under jit), so segments may have been lost and '
        'every score is NaN. Raise max_instances in panoptic_stats.',
        RuntimeWarning, stacklevel=2)
  present = (tp + fp + fn > 0) & (overflow == 0)
  sq = xp.where(tp > 0, iou_sum / xp.maximum(tp, 1), 0.0)
  rq = tp / xp.maximum(tp + 0.5 * fp + 0.5 * fn, 1)
  per_category = {
      'pq': xp.where(present, sq * rq, xp.nan),
      'sq': xp.where(present, sq, xp.nan),
      'rq': xp.where(present, rq, xp.nan),
  }
  scores = {f'{k}_per_category': v for k, v in per_category.items()}
  for suffix, group in (('', np.ones(c, bool)), ('_things', is_thing),
                        ('_stuff', ~is_thing)):
    keep = present & group
    n = keep.sum()
    for k, v in per_category.items():
      scores[k + suffix] = xp.where(
          n > 0, xp.where(keep, v, 0).sum() / xp.maximum(n, 1), xp.nan)
    scores['n' + suffix] = n
  return scores
