"""The `cityscapes_panoptic` builder on a synthetic copy of the official
layout: train ids and instances from 16-bit instanceIds, crowd handling,
zips, and errors that name the file."""

import zipfile

import numpy as np
from PIL import Image
import pytest

from segjax.data import datasets
from segjax.errors import DataError
import tensorflow_datasets as tfds  # pylint: disable=g-bad-import-order

# label id -> trainId of cityscapesScripts' labels.py (ids not listed: 255).
TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8,
             22: 9, 23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16,
             32: 17, 33: 18}
THINGS = {11, 12, 13, 14, 15, 16, 17, 18}  # person .. bicycle train ids.

# Raw instanceIds: road, sky, ego vehicle, static, a crowd of cars (bare 26),
# cars 26000 / 26002, a person 24001, a caravan 29000 (unevaluated), a
# bicycle 33000.
RAW = np.array([
    [7, 7, 7, 23, 23, 23, 23, 1],
    [7, 26000, 26000, 26, 26, 24001, 24001, 1],
    [7, 26000, 26002, 26002, 26, 24001, 29000, 4],
    [33000, 33000, 26002, 7, 7, 7, 29000, 4],
], np.uint16)


def _expected(raw):
  """(train ids with crowd kept, instances) by a per-pixel loop."""
  raw = raw.astype(np.int64)
  train = np.full(raw.shape, 255)
  for (y, x), v in np.ndenumerate(raw):
    train[y, x] = TRAIN_IDS.get(v // 1000 if v >= 1000 else v, 255)
  counted = sorted({v for (y, x), v in np.ndenumerate(raw)
                    if v >= 1000 and train[y, x] != 255})
  instances = np.zeros(raw.shape, np.int64)
  for (y, x), v in np.ndenumerate(raw):
    if v in counted:
      instances[y, x] = counted.index(v) + 1
  return train, instances


def _write(root, split, city, frame, raw, seed=0):
  stem = f'{city}_000000_{frame:06d}'
  rng = np.random.default_rng(seed)
  image_dir = root / 'leftImg8bit' / split / city
  label_dir = root / 'gtFine' / split / city
  image_dir.mkdir(parents=True, exist_ok=True)
  label_dir.mkdir(parents=True, exist_ok=True)
  image = rng.integers(0, 256, raw.shape + (3,), dtype=np.uint8)
  Image.fromarray(image).save(image_dir / f'{stem}_leftImg8bit.png')
  Image.fromarray(raw.astype(np.uint16)).save(
      label_dir / f'{stem}_gtFine_instanceIds.png')
  return stem


@pytest.fixture
def copy(tmp_path):
  root = tmp_path / 'cityscapes_copy'
  stems = {
      'train': [_write(root, 'train', 'aachen', 19, RAW),
                _write(root, 'train', 'aachen', 20, RAW[:, ::-1], seed=1),
                _write(root, 'train', 'bremen', 3, RAW[::-1], seed=2)],
      'validation': [_write(root, 'val', 'lindau', 1, RAW[:, ::-1], seed=3)],
  }
  raws = {stems['train'][0]: RAW, stems['train'][1]: RAW[:, ::-1],
          stems['train'][2]: RAW[::-1], stems['validation'][0]: RAW[:, ::-1]}
  return root, raws


def _build(manual_dir, tmp_path):
  return datasets.get_builder('cityscapes_panoptic', str(tmp_path / 'tfds'),
                              manual_dir=str(manual_dir))


def test_builds_train_ids_and_renumbered_instances(copy, tmp_path):
  root, raws = copy
  builder = _build(root, tmp_path)
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {
      'train': 3, 'validation': 1}
  seen = 0
  for split in ('train', 'validation'):
    for ex in tfds.as_numpy(builder.as_dataset(split)):
      train, instances = _expected(raws[ex['image_id'].decode()])
      np.testing.assert_array_equal(ex['segmentation'][..., 0], train)
      np.testing.assert_array_equal(ex['instances'][..., 0], instances)
      seen += 1
  assert seen == 4
  # Cars 26000, 26002, person 24001, bicycle 33000: 4 instances, 1..4.
  assert sorted(np.unique(_expected(RAW)[1])) == [0, 1, 2, 3, 4]


def test_standardize_makes_crowd_pixels_ignore(copy, tmp_path):
  root, raws = copy
  builder = _build(root, tmp_path)
  spec = datasets.get_spec('cityscapes_panoptic')
  ds = builder.as_dataset('validation').map(spec.standardize)
  [ex] = tfds.as_numpy(ds)
  train, instances = _expected(RAW[:, ::-1])
  crowd = np.isin(train, list(THINGS)) & (instances == 0)
  assert crowd.sum() == 3  # The bare-26 car group.
  np.testing.assert_array_equal(ex['labels'], np.where(crowd, 255, train))
  np.testing.assert_array_equal(ex['instances'], instances)
  assert ex['instances'].dtype == np.int32


def test_reads_the_official_zips(copy, tmp_path):
  root, _ = copy
  manual = tmp_path / 'manual'
  manual.mkdir()
  for folder, zip_name in (('leftImg8bit', 'leftImg8bit_trainvaltest.zip'),
                           ('gtFine', 'gtFine_trainvaltest.zip')):
    with zipfile.ZipFile(manual / zip_name, 'w') as z:
      for path in sorted((root / folder).rglob('*.png')):
        z.write(path, path.relative_to(root).as_posix())
      z.writestr('README', 'license text')
  builder = _build(manual, tmp_path)
  assert builder.info.splits['train'].num_examples == 3


def test_missing_data_is_an_error_with_instructions(tmp_path):
  with pytest.raises(DataError, match='(?s)does not exist.*leftImg8bit'):
    _build(tmp_path / 'nowhere', tmp_path)
  (tmp_path / 'empty').mkdir()
  (tmp_path / 'empty' / 'notes.txt').write_text('x')
  with pytest.raises(DataError, match='(?s)found neither.*cityscapes-dataset'):
    _build(tmp_path / 'empty', tmp_path)


def test_image_without_instance_map_names_the_file(copy, tmp_path):
  root, _ = copy
  label = next((root / 'gtFine' / 'train' / 'bremen').glob('*.png'))
  label.unlink()
  with pytest.raises(DataError, match=r'bremen_000000_000003_leftImg8bit\.png'
                     r' has no instance map'):
    _build(root, tmp_path)


def test_instance_map_of_another_size_names_the_file(copy, tmp_path):
  root, _ = copy
  label = next((root / 'gtFine' / 'val' / 'lindau').glob('*.png'))
  Image.fromarray(np.full((3, 3), 7, np.uint16)).save(label)
  with pytest.raises(DataError, match=r'lindau_000000_000001_gtFine_'
                     r'instanceIds\.png is 3x3 \(WxH\) but its image is 8x4'):
    _build(root, tmp_path)


# 40 is no label id; 7001 would be an instance of road, which has none.
@pytest.mark.parametrize('value', [40, 7001])
def test_unknown_id_names_the_file_and_value(copy, tmp_path, value):
  root, _ = copy
  label = next((root / 'gtFine' / 'train' / 'aachen').glob('*19_*.png'))
  raw = RAW.copy()
  raw[0, 0] = value
  Image.fromarray(raw).save(label)
  with pytest.raises(DataError, match=rf'aachen_000000_000019_gtFine_'
                     rf'instanceIds\.png holds values \[{value}\]'):
    _build(root, tmp_path)
