"""The embedded `shapes` data set: generator invariants and the TFDS build."""

import numpy as np
import pytest

from segjax.data import shapes_render

PARAMS = shapes_render.RenderParams(image_size=64)


@pytest.mark.parametrize('seed', [[0, 0, i] for i in range(12)])
def test_scene_maps_are_consistent(seed):
  scene = shapes_render.render_scene(seed, PARAMS)
  image, seg, inst = scene['image'], scene['segmentation'], scene['instances']
  assert image.shape == (64, 64, 3) and image.dtype == np.uint8
  assert seg.shape == inst.shape == (64, 64)
  assert seg.max() < shapes_render.NUM_CLASSES
  is_thing = np.isin(seg, shapes_render.THING_CLASSES)
  # Stuff pixels carry no instance; every thing pixel belongs to one.
  assert np.all(inst[~is_thing] == 0)
  assert np.all(inst[is_thing] > 0)
  ids = np.unique(inst[inst > 0])
  np.testing.assert_array_equal(ids, np.arange(1, len(ids) + 1))
  assert scene['num_instances'] == len(ids)
  for i in ids:  # An instance has exactly one class, and it is a thing.
    classes = np.unique(seg[inst == i])
    assert len(classes) == 1 and classes[0] in shapes_render.THING_CLASSES


def test_scenes_are_a_pure_function_of_the_seed():
  a = shapes_render.render_scene([3, 1, 7], PARAMS)
  b = shapes_render.render_scene([3, 1, 7], PARAMS)
  c = shapes_render.render_scene([3, 1, 8], PARAMS)
  for k in ('image', 'segmentation', 'instances'):
    np.testing.assert_array_equal(a[k], b[k])
  assert not np.array_equal(a['image'], c['image'])


def test_every_class_occurs_and_instances_overlap():
  scenes = [shapes_render.render_scene([0, 0, i], PARAMS) for i in range(40)]
  counts = np.bincount(
      np.concatenate([s['segmentation'].ravel() for s in scenes]),
      minlength=shapes_render.NUM_CLASSES)
  assert np.all(counts > 0), counts
  # Occlusion happens: some painted instance ends up partly covered, visible
  # as more instances painted than the largest single-instance area allows.
  assert max(s['num_instances'] for s in scenes) >= 4


def test_tfds_build_matches_the_generator(tfds_dir):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from segjax.data import datasets  # pylint: disable=g-import-not-at-top
  builder = datasets.get_builder('shapes/tiny', tfds_dir)
  assert builder.data_dir.startswith(tfds_dir)
  splits = builder.info.splits
  assert {s: splits[s].num_examples for s in splits} == {
      'train': 64, 'validation': 24, 'test': 24}
  params = builder.builder_config.render_params()
  for split, index in (('validation', 1), ('test', 2)):
    for ex in tfds.as_numpy(builder.as_dataset(split).take(3)):
      i = int(ex['image_id'])
      expected = shapes_render.render_scene([0, index, i], params)
      np.testing.assert_array_equal(ex['image'], expected['image'])
      np.testing.assert_array_equal(ex['segmentation'][..., 0],
                                    expected['segmentation'])
      np.testing.assert_array_equal(ex['instances'][..., 0],
                                    expected['instances'])


def test_unknown_data_set_is_a_clear_error(tfds_dir):
  from segjax.data import datasets  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match="unknown data set 'nosuch'"):
    datasets.get_builder('nosuch/default', tfds_dir)
  with pytest.raises(ValueError, match='shapes/huge'):
    datasets.get_builder('shapes/huge', tfds_dir)
