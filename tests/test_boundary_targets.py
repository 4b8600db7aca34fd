"""segjax.data.boundary_targets against a NumPy loop over each pixel's window."""

import numpy as np
import pytest

from segjax.data.boundary_targets import boundary_targets
from segjax.data.tf_host import tf

IGNORE = 255


def reference(labels, instances, width, ignore_index=IGNORE):
  """Straight from the definition: an instance pixel is boundary when a
  non-void pixel within `width` (per axis) has another instance number."""
  height, w = labels.shape
  out = np.zeros([height, w], np.int64)
  for y in range(height):
    for x in range(w):
      if labels[y, x] == ignore_index:
        out[y, x] = ignore_index
        continue
      if instances[y, x] <= 0:
        continue
      for yy in range(max(0, y - width), min(height, y + width + 1)):
        for xx in range(max(0, x - width), min(w, x + width + 1)):
          if (labels[yy, xx] != ignore_index and
              instances[yy, xx] != instances[y, x]):
            out[y, x] = 1
  return out


def _random_maps(seed, shape=(17, 23)):
  """Rectangular nuclei (some touching, numbers up to 300), background and
  a void patch."""
  rng = np.random.default_rng(seed)
  instances = np.zeros(shape, np.int32)
  for number in rng.choice(np.arange(1, 300), 7, replace=False):
    y, x = rng.integers(0, shape[0] - 3), rng.integers(0, shape[1] - 3)
    h, w = rng.integers(2, 7, 2)
    instances[y:y + h, x:x + w] = number
  labels = (instances > 0).astype(np.int32)
  y, x = rng.integers(0, shape[0] - 4), rng.integers(0, shape[1] - 4)
  labels[y:y + 4, x:x + 4] = IGNORE
  instances[y:y + 4, x:x + 4] = 0
  return labels, instances


@pytest.mark.parametrize('seed,width', [(0, 1), (1, 1), (2, 2), (3, 3)])
def test_boundaries_match_the_window_definition(seed, width):
  labels, instances = _random_maps(seed)
  got = boundary_targets(labels, instances, width=width)
  assert got.dtype == tf.int32
  np.testing.assert_array_equal(got.numpy(), reference(labels, instances,
                                                       width))


def test_touching_nuclei_get_a_band_on_each_side():
  instances = np.zeros([5, 8], np.int32)
  instances[1:4, 1:4] = 1
  instances[1:4, 4:7] = 2
  labels = (instances > 0).astype(np.int32)
  got = boundary_targets(labels, instances, width=1).numpy()
  # 3x3 nuclei: every pixel touches background or the other nucleus
  # except the middle one of each that touches neither.
  expected = (instances > 0).astype(np.int64)
  expected[2, 2] = 0  # Nucleus 1's middle: its 3x3 window is all 1.
  expected[2, 5] = 0  # Nucleus 2's middle.
  np.testing.assert_array_equal(got, expected)


def test_void_and_the_image_edge_are_nobodys_neighbours():
  instances = np.ones([4, 6], np.int32)  # One nucleus filling the image,
  labels = np.ones([4, 6], np.int32)
  labels[:, 4:] = IGNORE  # cut by void on the right.
  instances[:, 4:] = 0
  got = boundary_targets(labels, instances, width=1).numpy()
  expected = np.zeros([4, 6], np.int64)
  expected[:, 4:] = IGNORE
  np.testing.assert_array_equal(got, expected)


def test_dynamic_shapes_inside_tf_data():
  labels, instances = _random_maps(4, shape=(11, 9))
  ds = tf.data.Dataset.from_generator(
      lambda: iter([(labels, instances)]),
      output_signature=(tf.TensorSpec([None, None], tf.int32),
                        tf.TensorSpec([None, None], tf.int32)))
  [got] = list(ds.map(lambda l, i: boundary_targets(l, i, width=2))
               .as_numpy_iterator())
  np.testing.assert_array_equal(got, reference(labels, instances, 2))


def test_bad_width_is_an_error():
  with pytest.raises(ValueError, match='width'):
    boundary_targets(np.zeros([3, 3]), np.zeros([3, 3]), width=0)
