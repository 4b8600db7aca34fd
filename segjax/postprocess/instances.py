"""Instances of a binary (sigmoid) segmentation: host connected components.

A U-Net with a foreground channel, and optionally a boundary channel (the
pixels of a nucleus next to another nucleus or to background, see
`segjax.data.boundary_targets`), gives instances in three steps:

  1. seeds: the connected components of (foreground >= t) & (boundary < t)
     (of foreground >= t alone without a boundary channel); seeds of fewer
     than `min_area` pixels are dropped;
  2. growth: every other foreground pixel joins the nearest seed (Euclidean
     distance, `scipy.ndimage.distance_transform_edt`) of its own
     foreground component, so the boundary pixels are given back to the
     nuclei they surround;
  3. a foreground component that holds no seed (a small nucleus that is
     all boundary, or, without a boundary channel, a component below
     `min_area`) becomes one instance if it has `min_area` pixels, else
     background.

An instance's score is its mean foreground probability (what COCO mask AP
ranks by). Without a boundary channel, step 2 has nothing to do and the
instances are the connected components of the thresholded mask of at least
`min_area` pixels. Components use 4-connectivity (pixels sharing an edge):
a boundary line one pixel wide on a diagonal then still separates two
nuclei.

Growth stays inside a foreground component (a deviation from growing over
the whole mask): a component's pixels never join a seed across background,
which would make an instance of two disjoint pieces.

This runs in NumPy / SciPy on the host, not in `jit`: connected-component
labelling is a sequential flood fill, and the number of instances is
data-dependent, which XLA's static shapes cannot express without a fixed
cap and an iterative (slow) label propagation.
"""

import numpy as np
from scipy import ndimage


def _check_map(name, x, shape=None):
  x = np.asarray(x)
  if x.ndim != 2:
    raise ValueError(f'{name} must be an [H, W] map, got shape {x.shape}.')
  if shape is not None and x.shape != shape:
    raise ValueError(f'{name} {x.shape} and foreground {shape} must have '
                     'the same shape.')
  return x


def binary_instances(foreground, boundary=None, *, threshold=0.5, min_area=1,
                     max_instances=None):
  """Instance ids and scores of one image from sigmoid probabilities.

  Args:
    foreground: [H, W] float foreground probabilities.
    boundary: [H, W] float boundary probabilities, or None (instances are
      the connected components of the thresholded foreground).
    threshold: foreground is `foreground >= threshold`; a pixel is a seed
      pixel if also `boundary < threshold`.
    min_area: seeds, and foreground components without a seed, of fewer
      pixels are dropped (a dropped component becomes background).
    max_instances: keep at most this many instances, those of highest
      score (ties: the lower id); None keeps all. The pixels of the others
      become background.

  Returns:
    ids: [H, W] int32, 0 = no instance, k = the k-th instance (1..N,
      numbered in raster order of their seeds, seedless components after).
    scores: [N] float32, scores[k - 1] the mean foreground probability over
      instance k's pixels.
  """
  foreground = _check_map('foreground', foreground).astype(np.float64)
  fg = foreground >= threshold
  if boundary is None:
    core = fg
  else:
    boundary = _check_map('boundary', boundary, foreground.shape)
    core = fg & (boundary < threshold)
  seeds, n = ndimage.label(core)
  if n:
    area = np.bincount(seeds.ravel(), minlength=n + 1)
    keep = area >= min_area
    keep[0] = False
    new_id = np.where(keep, np.cumsum(keep), 0).astype(np.int32)
    seeds = new_id[seeds]
  seeds = seeds.astype(np.int32)
  ids = seeds.copy()  # Seeds, then the grown instances.
  next_id = int(ids.max()) + 1 if ids.size else 1

  components, _ = ndimage.label(fg)
  unassigned = fg & (ids == 0)
  if unassigned.any() and next_id > 1:
    # One transform over the image: the indices of each pixel's nearest
    # seed pixel. Where that seed is in the pixel's own component, it is
    # also the nearest of that component's seeds.
    _, (rows, cols) = ndimage.distance_transform_edt(seeds == 0,
                                                     return_indices=True)
    ys, xs = np.nonzero(unassigned)
    near_y, near_x = rows[ys, xs], cols[ys, xs]
    same = components[near_y, near_x] == components[ys, xs]
    ids[ys[same], xs[same]] = seeds[near_y[same], near_x[same]]
    unassigned[ys[same], xs[same]] = False
  # The rest: pixels nearer to another component's seed, and components
  # without a seed; one component (its bounding box) at a time.
  todo = np.unique(components[unassigned])
  slices = ndimage.find_objects(components) if todo.size else []
  for k in todo:
    box = slices[k - 1]
    inside = components[box] == k
    local = np.where(inside, seeds[box], 0)
    out = ids[box]  # A view: writes go into `ids`.
    grow = inside & (out == 0)
    if local.any():
      # Indices of the nearest zero of the input: the nearest seed pixel.
      _, (rows, cols) = ndimage.distance_transform_edt(
          local == 0, return_indices=True)
      out[grow] = local[rows[grow], cols[grow]]
    elif inside.sum() >= min_area:
      out[grow] = next_id
      next_id += 1

  count = next_id - 1
  if count == 0:
    return ids, np.zeros([0], np.float32)
  sums = np.bincount(ids.ravel(), weights=foreground.ravel(),
                     minlength=count + 1)[1:]
  sizes = np.bincount(ids.ravel(), minlength=count + 1)[1:]
  scores = sums / np.maximum(sizes, 1)
  if max_instances is not None and count > max_instances:
    order = np.argsort(-scores, kind='stable')[:max_instances]
    kept = np.zeros(count + 1, bool)
    kept[order + 1] = True
    new_id = np.where(kept, np.cumsum(kept), 0).astype(np.int32)
    ids = new_id[ids]
    scores = scores[kept[1:]]
  return ids.astype(np.int32), scores.astype(np.float32)


def instance_panoptic(ids, *, thing_class, label_divisor, background=0):
  """[H, W] instance ids -> [H, W] int32 panoptic ids.

  Instance k becomes `thing_class * label_divisor + k`, every other pixel
  the stuff segment `background * label_divisor` (instance 0).
  """
  ids = np.asarray(ids)
  if ids.size and ids.max() >= label_divisor:
    raise ValueError(f'instance id {ids.max()} does not fit label_divisor '
                     f'{label_divisor}.')
  return np.where(ids > 0, thing_class * label_divisor + ids,
                  background * label_divisor).astype(np.int32)
