"""Catalog adapters (cityscapes, coco/2017_panoptic, oxford_iiit_pet) on
mocked TFDS data shaped like the real features, and their class tables
against the official definitions, written out here independently."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from catalog_mock import mock_catalog
from segjax.configs import base
from segjax.data import cityscapes
from segjax.data import coco_panoptic
from segjax.data import datasets
from segjax.data import pipeline
from segjax.errors import ConfigError
from segjax.errors import DataError
import tensorflow_datasets as tfds  # pylint: disable=g-bad-import-order

# cityscapesScripts helpers/labels.py: name, id, trainId, category,
# hasInstances, ignoreInEval.
OFFICIAL_CITYSCAPES = """
unlabeled 0 255 void False True
ego_vehicle 1 255 void False True
rectification_border 2 255 void False True
out_of_roi 3 255 void False True
static 4 255 void False True
dynamic 5 255 void False True
ground 6 255 void False True
road 7 0 flat False False
sidewalk 8 1 flat False False
parking 9 255 flat False True
rail_track 10 255 flat False True
building 11 2 construction False False
wall 12 3 construction False False
fence 13 4 construction False False
guard_rail 14 255 construction False True
bridge 15 255 construction False True
tunnel 16 255 construction False True
pole 17 5 object False False
polegroup 18 255 object False True
traffic_light 19 6 object False False
traffic_sign 20 7 object False False
vegetation 21 8 nature False False
terrain 22 9 nature False False
sky 23 10 sky False False
person 24 11 human True False
rider 25 12 human True False
car 26 13 vehicle True False
truck 27 14 vehicle True False
bus 28 15 vehicle True False
caravan 29 255 vehicle True True
trailer 30 255 vehicle True True
train 31 16 vehicle True False
motorcycle 32 17 vehicle True False
bicycle 33 18 vehicle True False
license_plate -1 -1 vehicle False True
"""

# panopticapi panoptic_coco_categories.json: id name (isthing = id <= 90).
OFFICIAL_COCO_PANOPTIC = """
1 person|2 bicycle|3 car|4 motorcycle|5 airplane|6 bus|7 train|8 truck|9 boat
10 traffic light|11 fire hydrant|13 stop sign|14 parking meter|15 bench
16 bird|17 cat|18 dog|19 horse|20 sheep|21 cow|22 elephant|23 bear|24 zebra
25 giraffe|27 backpack|28 umbrella|31 handbag|32 tie|33 suitcase|34 frisbee
35 skis|36 snowboard|37 sports ball|38 kite|39 baseball bat|40 baseball glove
41 skateboard|42 surfboard|43 tennis racket|44 bottle|46 wine glass|47 cup
48 fork|49 knife|50 spoon|51 bowl|52 banana|53 apple|54 sandwich|55 orange
56 broccoli|57 carrot|58 hot dog|59 pizza|60 donut|61 cake|62 chair|63 couch
64 potted plant|65 bed|67 dining table|70 toilet|72 tv|73 laptop|74 mouse
75 remote|76 keyboard|77 cell phone|78 microwave|79 oven|80 toaster|81 sink
82 refrigerator|84 book|85 clock|86 vase|87 scissors|88 teddy bear
89 hair drier|90 toothbrush|92 banner|93 blanket|95 bridge|100 cardboard
107 counter|109 curtain|112 door-stuff|118 floor-wood|119 flower|122 fruit
125 gravel|128 house|130 light|133 mirror-stuff|138 net|141 pillow
144 platform|145 playingfield|147 railroad|148 river|149 road|151 roof
154 sand|155 sea|156 shelf|159 snow|161 stairs|166 tent|168 towel
171 wall-brick|175 wall-stone|176 wall-tile|177 wall-wood|178 water-other
180 window-blind|181 window-other|184 tree-merged|185 fence-merged
186 ceiling-merged|187 sky-other-merged|188 cabinet-merged|189 table-merged
190 floor-other-merged|191 pavement-merged|192 mountain-merged
193 grass-merged|194 dirt-merged|195 paper-merged|196 food-other-merged
197 building-other-merged|198 rock-merged|199 wall-other-merged|200 rug-merged
"""


def _official_cityscapes():
  rows = []
  for line in OFFICIAL_CITYSCAPES.split('\n'):
    if line:
      name, i, train, category, things, ignored = line.split()
      rows.append((name.replace('_', ' '), int(i), int(train), category,
                   things == 'True', ignored == 'True'))
  return rows


def _official_coco():
  entries = OFFICIAL_COCO_PANOPTIC.replace('\n', '|').strip('|').split('|')
  return [(int(e.split(' ', 1)[0]), e.split(' ', 1)[1]) for e in entries]


def test_cityscapes_table_matches_cityscapes_scripts_labels():
  official = _official_cityscapes()
  assert [tuple(l) for l in cityscapes.LABELS] == official
  evaluated = sorted((r for r in official if not r[5]), key=lambda r: r[2])
  assert [r[2] for r in evaluated] == list(range(19))
  assert cityscapes.CLASS_NAMES == tuple(r[0] for r in evaluated)
  assert cityscapes.THING_CLASSES == tuple(r[2] for r in evaluated if r[4])
  assert [cityscapes.CLASS_NAMES[c] for c in cityscapes.THING_CLASSES] == [
      'person', 'rider', 'car', 'truck', 'bus', 'train', 'motorcycle',
      'bicycle']


def test_coco_panoptic_classes_are_panopticapi_categories_in_id_order():
  official = _official_coco()
  assert len(official) == 133
  assert [(c.id, c.name) for c in coco_panoptic.CATEGORIES] == official
  ids = [i for i, _ in official]
  assert ids == sorted(ids)  # TFDS's label = position in the json's list.
  assert [c.is_thing for c in coco_panoptic.CATEGORIES] == [
      i <= 90 for i in ids]
  assert coco_panoptic.THING_CLASSES == tuple(range(80))
  assert datasets.get_spec('coco/2017_panoptic').num_classes == 133


def test_get_spec_resolves_full_names_before_base_names():
  assert datasets.get_spec('coco/2017_panoptic:1.1.0').num_classes == 133
  assert datasets.get_spec('cityscapes/semantic_segmentation').num_classes == 19
  assert datasets.get_spec('shapes/tiny') is datasets.DATASETS['shapes']
  with pytest.raises(ConfigError, match="unknown data set 'coco'.*"
                     "'coco/2017_panoptic'"):
    datasets.get_spec('coco/2017')
  with pytest.raises(ConfigError, match='instance annotations.*ade20k'):
    datasets.get_spec('scene_parse150')
  with pytest.raises(ConfigError, match='no segmentation labels'):
    datasets.get_spec('cityscapes/stereo_disparity:1.0.0')
  assert datasets.tfds_name('oxford_iiit_pet_trimap:4.0.0') == (
      'oxford_iiit_pet:4.0.0')
  assert datasets.tfds_name('coco/2017_panoptic') == 'coco/2017_panoptic'


def _standardized(name, data_dir, split='train'):
  builder = datasets.get_builder(name, data_dir)
  ds = builder.as_dataset(split=split).map(datasets.get_spec(name).standardize)
  return list(tfds.as_numpy(ds))


def test_cityscapes_maps_label_ids_to_train_ids_and_the_rest_to_255(tmp_path):
  official = {r[1]: r[2] for r in _official_cityscapes() if r[1] >= 0}
  label_ids = (np.arange(1024 * 2048) % 256).reshape(1024, 2048, 1)
  example = {'image_left': np.ones((1024, 2048, 3), np.uint8),
             'segmentation_label': label_ids}
  with mock_catalog('cityscapes', {'train': [example]}, tmp_path):
    [out] = _standardized('cityscapes', 'ignored')
  expected = np.vectorize(lambda i: official.get(i, 255))(label_ids[..., 0])
  np.testing.assert_array_equal(out['labels'], expected)
  assert out['labels'].dtype == np.uint8
  assert out['image'].shape == (1024, 2048, 3)
  assert sorted(np.unique(out['labels'])) == list(range(19)) + [255]


def _rgb(ids):
  ids = np.asarray(ids)
  return np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1)


def test_coco_panoptic_decodes_segments_to_classes_and_instances(tmp_path):
  names = [n for _, n in _official_coco()]
  person, car, road = names.index('person'), names.index('car'), names.index(
      'road')
  ids = np.array([[0, 6202563, 6202563, 5000, 5000, 5000],
                  [42, 6202563, 77777, 77777, 300, 5000],
                  [0, 0, 77777, 300, 300, 5000]])
  objects = [  # (id, label, is_crowd) in TFDS's segment order.
      (6202563, person, False), (5000, road, False), (77777, car, True),
      (300, person, False), (123, car, False)]
  example = {
      'image': np.zeros((3, 6, 3), np.uint8), 'panoptic_image': _rgb(ids),
      'panoptic_objects': {'id': [o[0] for o in objects],
                           'label': [o[1] for o in objects],
                           'is_crowd': [o[2] for o in objects]}}
  empty = {'image': np.zeros((2, 2, 3), np.uint8),
           'panoptic_image': np.zeros((2, 2, 3), np.uint8),
           'panoptic_objects': {'id': [], 'label': [], 'is_crowd': []}}
  with mock_catalog('coco/2017_panoptic', {'train': [example, empty]},
                    tmp_path):
    out, out_empty = _standardized('coco/2017_panoptic', 'ignored')
  # Independent expectation: crowd and unknown ids are void; things are
  # numbered in segment order among the non-crowd things.
  label_of = {6202563: person, 5000: road, 300: person}
  number_of = {6202563: 1, 300: 2}
  np.testing.assert_array_equal(
      out['labels'], np.vectorize(lambda i: label_of.get(i, 255))(ids))
  np.testing.assert_array_equal(
      out['instances'], np.vectorize(lambda i: number_of.get(i, 0))(ids))
  assert out['instances'].dtype == np.int32
  np.testing.assert_array_equal(out_empty['labels'], np.full((2, 2), 255))
  np.testing.assert_array_equal(out_empty['instances'], np.zeros((2, 2)))


def test_coco_panoptic_runs_in_the_training_stream(tmp_path):
  example = {'image': np.full((5, 7, 3), 9, np.uint8),
             'panoptic_image': _rgb(np.full((5, 7), 1000)),
             'panoptic_objects': {'id': [1000], 'label': [100],
                                  'is_crowd': [False]}}
  cfg = base.merge(base.get_config().data, {
      'name': 'coco/2017_panoptic', 'data_dir': str(tmp_path),
      'augment': 'resize(4, 4)'})
  with mock_catalog('coco/2017_panoptic', {'train': [example] * 3}, tmp_path):
    batch = next(pipeline.as_numpy(pipeline.train_dataset(cfg, 2, seed=0)))
  assert batch['image'].shape == (2, 4, 4, 3)
  np.testing.assert_array_equal(batch['labels'], np.full((2, 4, 4), 100))


@pytest.mark.parametrize('name, expected', [
    # Trimap values 1 pet, 2 background, 3 border; 0 and 4 never occur.
    ('oxford_iiit_pet', {1: 1, 2: 0, 3: 255, 0: 255, 4: 255}),
    ('oxford_iiit_pet_trimap', {1: 1, 2: 0, 3: 2, 0: 255, 4: 255}),
])
def test_pets_trimap_values_map_to_classes(name, expected, tmp_path):
  trimap = np.array([[1, 2, 3, 0, 4], [3, 3, 1, 1, 2]], np.uint8)[..., None]
  example = {'image': np.zeros((2, 5, 3), np.uint8),
             'segmentation_mask': trimap}
  with mock_catalog('oxford_iiit_pet', {'test': [example]}, tmp_path):
    [out] = _standardized(name, 'ignored', split='test')
  np.testing.assert_array_equal(
      out['labels'], np.vectorize(expected.get)(trimap[..., 0]))
  assert datasets.get_spec(name).class_names[:2] == ('background', 'pet')


def test_pets_binary_labels_are_sigmoid_targets_with_the_border_ignored():
  from segjax import losses  # pylint: disable=g-import-not-at-top
  labels = jnp.array([[0, 1, 255]])
  logits = jnp.array([[0.5, -1.0, 3.0]])
  grad = jax.grad(lambda x: losses.sigmoid_binary_cross_entropy(x, labels))(
      logits)
  assert grad[0, 2] == 0.0  # The border pixel does not train the head.
  expected = np.mean([np.log1p(np.exp(0.5)), np.log1p(np.exp(1.0))])
  np.testing.assert_allclose(
      losses.sigmoid_binary_cross_entropy(logits, labels), expected,
      rtol=1e-6)


def test_download_data_sets_are_prepared_by_tfds_without_a_manual_dir(
    tmp_path, monkeypatch):
  calls = []
  monkeypatch.setattr(
      tfds.core.DatasetBuilder, 'download_and_prepare',
      lambda self, download_config=None: calls.append(
          (self.name, download_config)))
  builder = datasets.get_builder('oxford_iiit_pet_trimap', str(tmp_path))
  assert builder.name == 'oxford_iiit_pet'
  assert calls == [('oxford_iiit_pet', None)]
  with pytest.raises(ConfigError, match='not prepared'):
    datasets.get_builder('coco/2017_panoptic', str(tmp_path), prepare=False)


def test_cityscapes_without_its_zips_is_an_error_naming_them(tmp_path):
  manual = tmp_path / 'manual'
  manual.mkdir()
  (manual / 'README').write_text('not the data')
  with pytest.raises(DataError, match='(?s)leftImg8bit_trainvaltest.zip.*'
                     'cityscapes-dataset.com'):
    datasets.get_builder('cityscapes', str(tmp_path / 'tfds'),
                         manual_dir=str(manual))
