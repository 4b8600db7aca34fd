"""Instance post-processing of sigmoid outputs (segjax.postprocess.instances)
against hand-made maps and a pure-Python flood fill + nearest-seed search."""

import collections

import numpy as np
import pytest

from segjax.postprocess import instances


def _components(mask):
  """4-connected components by breadth-first search: [H, W] int64 labels
  numbered in raster order of their first pixel."""
  height, width = mask.shape
  out = np.zeros(mask.shape, np.int64)
  n = 0
  for y in range(height):
    for x in range(width):
      if mask[y, x] and not out[y, x]:
        n += 1
        out[y, x] = n
        queue = collections.deque([(y, x)])
        while queue:
          cy, cx = queue.popleft()
          for ny, nx in ((cy - 1, cx), (cy + 1, cx), (cy, cx - 1),
                         (cy, cx + 1)):
            if (0 <= ny < height and 0 <= nx < width and mask[ny, nx]
                and not out[ny, nx]):
              out[ny, nx] = n
              queue.append((ny, nx))
  return out, n


def reference(foreground, boundary, threshold, min_area):
  """The documented rules, pixel by pixel.

  Returns:
    {pixel: set of acceptable instance keys}, where a key is a frozenset of
    the seed pixels the instance grew from (or of the whole seedless
    component), and the set of all keys.
  """
  fg = foreground >= threshold
  core = fg if boundary is None else fg & (boundary < threshold)
  seeds, n_seeds = _components(core)
  seed_pixels = {k: frozenset(zip(*np.nonzero(seeds == k)))
                 for k in range(1, n_seeds + 1)}
  seed_pixels = {k: v for k, v in seed_pixels.items() if len(v) >= min_area}
  comps, n_comps = _components(fg)
  accept, keys = {}, set()
  for c in range(1, n_comps + 1):
    pixels = list(zip(*np.nonzero(comps == c)))
    mine = {k: v for k, v in seed_pixels.items()
            if comps[next(iter(v))] == c}
    if not mine:
      if len(pixels) >= min_area:
        key = frozenset(pixels)
        keys.add(key)
        for p in pixels:
          accept[p] = {key}
      continue
    keys.update(mine.values())
    for p in pixels:
      owner = [v for v in mine.values() if p in v]
      if owner:
        accept[p] = {owner[0]}
        continue
      dist = {v: min((p[0] - q[0])**2 + (p[1] - q[1])**2 for q in v)
              for v in mine.values()}
      best = min(dist.values())
      accept[p] = {v for v, d in dist.items() if d == best}
  return accept, keys


def assert_matches_reference(foreground, boundary, threshold=0.5,
                             min_area=1):
  ids, scores = instances.binary_instances(
      foreground, boundary, threshold=threshold, min_area=min_area)
  assert ids.dtype == np.int32 and scores.dtype == np.float32
  accept, keys = reference(foreground, boundary, threshold, min_area)
  assert ids.max(initial=0) == len(keys) == len(scores)
  # Each instance id stands for one reference key: the seed it holds.
  id_of_key = {}
  for p, allowed in accept.items():
    if len(allowed) == 1:
      [key] = allowed
      if ids[p] and ids[p] != id_of_key.setdefault(key, ids[p]):
        raise AssertionError(f'pixel {p}: id {ids[p]}, its seed has '
                             f'{id_of_key[key]}')
  assert len(id_of_key) == len(keys)
  for p in zip(*np.nonzero(ids)):
    assert p in accept, f'pixel {p} is no instance in the reference'
  for p, allowed in accept.items():
    assert ids[p] in {id_of_key[k] for k in allowed}, p
  for k in range(1, len(scores) + 1):
    np.testing.assert_allclose(
        scores[k - 1], np.mean(foreground[ids == k], dtype=np.float64),
        rtol=1e-6)
  return ids, scores


def test_touching_nuclei_split_at_their_boundary_and_grow_back():
  # Two 4x4 nuclei side by side, the boundary on their outer ring and on
  # the seam between them.
  truth = np.zeros([8, 12], np.int32)
  truth[2:6, 2:6] = 1
  truth[2:6, 6:10] = 2
  foreground = np.where(truth > 0, 0.9, 0.1)
  boundary = np.zeros([8, 12])
  for k in (1, 2):
    ys, xs = np.nonzero(truth == k)
    inner = (truth[ys.min() + 1:ys.max(), xs.min() + 1:xs.max()] == k)
    ring = truth == k
    ring[ys.min() + 1:ys.max(), xs.min() + 1:xs.max()] &= ~inner
    boundary[ring] = 0.8
  ids, scores = assert_matches_reference(foreground, boundary)
  # Without a boundary channel they are one component.
  merged, _ = instances.binary_instances(foreground, None)
  np.testing.assert_array_equal(merged, (truth > 0).astype(np.int32))
  # With it, the two nuclei exactly (ids in raster order of their seeds).
  np.testing.assert_array_equal(ids, truth)
  np.testing.assert_allclose(scores, [0.9, 0.9], rtol=1e-6)


def test_small_components_are_dropped_and_seedless_ones_kept():
  foreground = np.zeros([9, 12])
  foreground[1:3, 1:3] = 0.7  # 4 px: below min_area 5, dropped.
  foreground[5:8, 1:3] = 0.8  # 6 px, no seed (all boundary): kept whole.
  foreground[1:8, 6:11] = 0.9  # 35 px nucleus with a 3x3 seed.
  boundary = np.zeros_like(foreground)
  boundary[5:8, 1:3] = 0.9
  boundary[1:8, 6:11] = 0.9
  boundary[3:6, 7:10] = 0.1
  ids, scores = assert_matches_reference(foreground, boundary, min_area=5)
  expected = np.zeros([9, 12], np.int32)
  expected[1:8, 6:11] = 1  # The seeded nucleus first,
  expected[5:8, 1:3] = 2  # then the seedless component.
  np.testing.assert_array_equal(ids, expected)
  np.testing.assert_allclose(scores, [0.9, 0.8], rtol=1e-6)


def test_growth_never_crosses_background():
  # A seeded nucleus and, across background, an all-boundary L-shaped blob
  # wrapped around it (its bounding box holds the nucleus): the blob stays
  # its own instance.
  foreground = np.zeros([7, 11])
  foreground[1:4, 1:6] = 0.9
  blob = np.zeros([7, 11], bool)
  blob[5, 1:9] = blob[1:6, 8] = True
  foreground[blob] = 0.8
  boundary = np.where(blob, 0.9, 0.0)
  ids, scores = assert_matches_reference(foreground, boundary)
  expected = np.zeros([7, 11], np.int32)
  expected[1:4, 1:6] = 1
  expected[blob] = 2
  np.testing.assert_array_equal(ids, expected)
  np.testing.assert_allclose(scores, [0.9, 0.8], rtol=1e-6)


def test_empty_and_all_background_inputs():
  for foreground in (np.zeros([0, 0]), np.zeros([4, 5]),
                     np.full([4, 5], 0.49)):
    for boundary in (None, np.zeros_like(foreground)):
      ids, scores = instances.binary_instances(foreground, boundary)
      assert ids.shape == foreground.shape and not ids.any()
      assert scores.shape == (0,) and scores.dtype == np.float32


@pytest.mark.parametrize('seed', range(4))
@pytest.mark.parametrize('with_boundary', [False, True])
def test_random_maps_match_the_reference(seed, with_boundary):
  rng = np.random.default_rng(seed)
  # Blobs: smoothed noise, so components have shape and seeds several px.
  noise = rng.random([18, 21])
  smooth = (noise + np.roll(noise, 1, 0) + np.roll(noise, 1, 1) +
            np.roll(noise, -1, 0) + np.roll(noise, -1, 1)) / 5
  foreground = np.clip((smooth - 0.35) * 3, 0, 1)
  boundary = rng.random([18, 21]) if with_boundary else None
  assert_matches_reference(foreground, boundary, threshold=0.5, min_area=3)


def test_max_instances_keeps_the_highest_scores():
  foreground = np.zeros([3, 11])
  for k, score in enumerate([0.6, 0.95, 0.7, 0.9]):
    foreground[1, 3 * k:3 * k + 2] = score  # Four 2-px components.
  ids, scores = instances.binary_instances(foreground, max_instances=2)
  expected = np.zeros([3, 11], np.int32)
  expected[1, 3:5] = 1
  expected[1, 9:11] = 2
  np.testing.assert_array_equal(ids, expected)
  np.testing.assert_allclose(scores, [0.95, 0.9], rtol=1e-6)


def test_instance_panoptic_ids():
  ids = np.array([[0, 1], [2, 0]])
  np.testing.assert_array_equal(
      instances.instance_panoptic(ids, thing_class=1, label_divisor=1000),
      [[0, 1001], [1002, 0]])
  with pytest.raises(ValueError, match='label_divisor'):
    instances.instance_panoptic(ids, thing_class=1, label_divisor=2)
