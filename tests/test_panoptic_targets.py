"""Tests of segjax.data.panoptic_targets against a float64 NumPy loop."""

import math

import numpy as np
import pytest

from segjax.data.panoptic_targets import panoptic_targets
from segjax.data.tf_host import tf

THINGS = (3, 5)
STUFF = (0, 1, 2)
IGNORE = 255


def reference(labels, instances, thing_classes, sigma=8.0,
              small_instance_area=4096, small_instance_weight=3.0,
              ignore_index=255):
  """Per-pixel loops straight from the definitions, in float64."""
  height, width = labels.shape
  heatmap = np.zeros([height, width])
  offsets = np.zeros([height, width, 2])
  semantic = np.ones([height, width])
  offset_weights = np.zeros([height, width])
  radius = math.ceil(3 * sigma)
  pairs = {(int(l), int(i)) for l, i in zip(labels.ravel(), instances.ravel())
           if int(l) in thing_classes and i > 0}
  for label, instance in sorted(pairs):
    ys, xs = np.nonzero((labels == label) & (instances == instance))
    cy = math.floor(ys.mean() + 0.5)
    cx = math.floor(xs.mean() + 0.5)
    for y, x in zip(ys, xs):
      offsets[y, x] = (cy - y, cx - x)
      offset_weights[y, x] = 1
      if len(ys) < small_instance_area:
        semantic[y, x] = small_instance_weight
    for y in range(height):
      for x in range(width):
        if abs(y - cy) <= radius and abs(x - cx) <= radius:
          g = math.exp(-((y - cy)**2 + (x - cx)**2) / (2 * sigma**2))
          heatmap[y, x] = max(heatmap[y, x], g)
  return {
      'center_heatmap': heatmap,
      'center_offsets': offsets,
      'center_weights': (labels != ignore_index).astype(np.float64),
      'offset_weights': offset_weights,
      'semantic_weights': semantic,
  }


def assert_matches(labels, instances, **kwargs):
  got = panoptic_targets(labels, instances, **kwargs)
  want = reference(labels, instances, **kwargs)
  assert set(got) == set(want)
  for key, value in want.items():
    assert got[key].dtype == tf.float32, key
    assert tuple(got[key].shape) == value.shape, key
    np.testing.assert_allclose(got[key].numpy(), value, atol=1e-6,
                               err_msg=key)
  return got


def random_maps(seed, height=37, width=53):
  """Blocky random maps with every awkward case of the definitions."""
  rng = np.random.default_rng(seed)
  # Coarse cells give segments of several pixels, fine noise gives
  # scattered ones (a segment need not be connected).
  cells = rng.integers(0, 6, size=[height // 4 + 1, width // 4 + 1])
  labels = np.kron(cells, np.ones([4, 4], np.int64))[:height, :width]
  choices = np.array(STUFF + THINGS + (IGNORE,))
  labels = np.where(labels < len(choices), choices[labels], IGNORE)
  noise = rng.random([height, width]) < 0.1
  labels = np.where(noise, rng.choice(choices, size=[height, width]), labels)
  # Few numbers, so each number is used by both thing classes; stuff gets
  # numbers too, and some thing pixels get 0.
  numbers = rng.integers(0, 4, size=cells.shape)
  instances = np.kron(numbers, np.ones([4, 4], np.int64))[:height, :width]
  noise = rng.random([height, width]) < 0.1
  instances = np.where(noise, rng.integers(0, 4, size=[height, width]),
                       instances)
  return labels.astype(np.uint8), instances.astype(np.int32)


def segment_areas(labels, instances):
  pairs = np.stack([labels.ravel(), instances.ravel()], 1)
  pairs = pairs[np.isin(pairs[:, 0], THINGS) & (pairs[:, 1] > 0)]
  return np.unique(pairs, axis=0, return_counts=True)[1]


@pytest.mark.parametrize('seed', [0, 1, 2, 3])
def test_random_maps(seed):
  labels, instances = random_maps(seed)
  is_thing = np.isin(labels, THINGS)
  # The cases the generator is meant to produce, checked rather than hoped.
  assert (is_thing & (instances == 0)).any()
  assert (np.isin(labels, STUFF) & (instances > 0)).any()
  assert (labels == IGNORE).any()
  for number in range(1, 4):
    assert all(((labels == c) & (instances == number)).any() for c in THINGS)
  # A threshold inside the range of areas, so both weights occur.
  area = int(np.median(segment_areas(labels, instances))) + 1
  got = assert_matches(labels, instances, thing_classes=THINGS, sigma=2.0,
                       small_instance_area=area, small_instance_weight=2.5)
  assert np.any(got['semantic_weights'].numpy() == 2.5)
  assert np.any(got['semantic_weights'].numpy()[is_thing & (instances > 0)]
                == 1.0)


def test_int32_labels_and_large_sigma():
  labels, instances = random_maps(7, height=20, width=31)
  assert_matches(labels.astype(np.int32), instances, thing_classes=[5, 3],
                 sigma=8.0)


def test_no_segments():
  labels, instances = random_maps(4, height=9, width=11)
  # Stuff with instance numbers and things numbered 0: still no segment.
  labels = np.where(np.isin(labels, THINGS), 0, labels).astype(np.uint8)
  got = assert_matches(labels, instances, thing_classes=THINGS, sigma=1.5)
  assert not np.any(got['center_heatmap'].numpy())
  assert_matches(labels, instances, thing_classes=(), sigma=1.5)
  empty = np.zeros([6, 7], np.int32)
  got = assert_matches(empty, empty, thing_classes=THINGS)
  for value in got.values():
    assert np.all(np.isfinite(value.numpy()))


def test_border_segments_clip_their_window():
  labels = np.zeros([15, 12], np.uint8)
  instances = np.zeros([15, 12], np.int32)
  labels[:3, :1] = 3  # Left edge, near the top: center (1, 0).
  instances[:3, :1] = 1
  labels[12:, 9:] = 5  # Bottom-right corner: center (13, 10); same
  # number, other class.
  instances[12:, 9:] = 1
  labels[7, 11] = 3  # Right edge.
  instances[7, 11] = 2
  got = assert_matches(labels, instances, thing_classes=THINGS, sigma=2.0)
  assert got['center_heatmap'].numpy()[1, 0] == 1.0
  assert got['center_heatmap'].numpy()[13, 10] == 1.0


def test_single_pixel_segment():
  labels = np.full([8, 10], 1, np.uint8)
  instances = np.zeros([8, 10], np.int32)
  labels[4, 6], instances[4, 6] = 5, 9
  got = assert_matches(labels, instances, thing_classes=THINGS, sigma=1.0,
                       small_instance_area=1)
  heatmap = got['center_heatmap'].numpy()
  assert heatmap[4, 6] == 1.0
  assert heatmap[4, 6 + 3] > 0 and heatmap[4, 6 - 4] == 0  # r = 3.
  # Area 1 is not < 1: the weight stays 1.
  assert np.all(got['semantic_weights'].numpy() == 1.0)


def test_half_rounds_up():
  labels = np.zeros([7, 9], np.uint8)
  instances = np.zeros([7, 9], np.int32)
  labels[2:4, 1:5] = 3  # Mean (2.5, 2.5): center (3, 3).
  instances[2:4, 1:5] = 4
  got = assert_matches(labels, instances, thing_classes=THINGS, sigma=1.0)
  assert got['center_heatmap'].numpy()[3, 3] == 1.0
  np.testing.assert_array_equal(got['center_offsets'].numpy()[2, 1], [1, 2])


def test_dynamic_shapes_in_dataset_map():
  fn = tf.function(
      lambda l, i: panoptic_targets(l, i, thing_classes=THINGS, sigma=2.0,
                                    small_instance_area=40),
      input_signature=[tf.TensorSpec([None, None], tf.uint8),
                       tf.TensorSpec([None, None], tf.int32)])
  # Traced once, with unknown H and W.
  out = fn.get_concrete_function().structured_outputs
  assert out['center_heatmap'].shape.as_list() == [None, None]
  assert out['center_offsets'].shape.as_list() == [None, None, 2]
  for seed, (height, width) in enumerate([(21, 34), (13, 8)]):
    labels, instances = random_maps(seed, height, width)
    ds = tf.data.Dataset.from_tensors((labels, instances)).map(fn)
    got = next(iter(ds))
    want = reference(labels, instances, THINGS, sigma=2.0,
                     small_instance_area=40)
    for key, value in want.items():
      np.testing.assert_allclose(got[key].numpy(), value, atol=1e-6,
                                 err_msg=key)


def test_static_shapes_kept():
  spec = [tf.TensorSpec([16, 24], tf.uint8), tf.TensorSpec([16, 24], tf.int32)]
  fn = tf.function(
      lambda l, i: panoptic_targets(l, i, thing_classes=THINGS),
      input_signature=spec)
  out = fn.get_concrete_function().structured_outputs
  assert out['center_heatmap'].shape.as_list() == [16, 24]
  assert out['center_offsets'].shape.as_list() == [16, 24, 2]


@pytest.mark.parametrize('kwargs, name', [
    (dict(sigma=0.0), 'sigma'),
    (dict(sigma=-1.0), 'sigma'),
    (dict(small_instance_area=-1), 'small_instance_area'),
])
def test_bad_arguments(kwargs, name):
  zeros = np.zeros([4, 4], np.int32)
  with pytest.raises(ValueError, match=name):
    panoptic_targets(zeros, zeros, thing_classes=THINGS, **kwargs)
