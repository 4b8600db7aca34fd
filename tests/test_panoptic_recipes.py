"""The Panoptic-DeepLab recipes train and score end to end on synthetic
copies of their data: DSB2018 (Kaggle layout), Cityscapes (official
layout, segjax's builder) and COCO panoptic (TFDS's builder, mocked)."""

import json
import math

import numpy as np

import synthetic_dsb
from catalog_mock import mock_catalog
from experiments import cityscapes_panoptic_deeplab
from experiments import coco_panoptic_deeplab
from experiments import dsb2018_panoptic
from segjax.training import train
from test_cityscapes_panoptic import RAW
from test_cityscapes_panoptic import _write


def _short(config, tmp_path):
  config.data.data_dir = str(tmp_path / 'tfds')
  config.num_train_steps = 2
  config.log_every_steps = config.eval_every_steps = 2
  config.checkpoint_every_steps = 2
  config.data.final_eval_splits = ()
  return config


def _evaluation(workdir, split='validation'):
  rows = [json.loads(line) for line in
          (workdir / 'metrics.jsonl').read_text().splitlines()]
  assert math.isfinite([r for r in rows if r['split'] == 'train'][-1]['loss'])
  [row] = [r for r in rows if r['split'] == split]
  return row


def test_dsb2018_recipe_scores_pq_and_mask_ap(tmp_path):
  manual = tmp_path / 'dsb'
  synthetic_dsb.write_copy(manual)
  config = _short(dsb2018_panoptic.get_config('tiny'), tmp_path)
  config.data.manual_dir = str(manual)
  assert config.panoptic.top_k >= 500 and config.panoptic.max_dets >= 1000
  train.train_and_evaluate(config, tmp_path / 'work')
  row = _evaluation(tmp_path / 'work')
  assert row['num_examples'] == 3  # Mixed sizes, whole images.
  assert {'pq', 'pq/nucleus', 'mask_ap', 'mask_ap50'} <= set(row)


def test_cityscapes_recipe_on_the_official_layout(tmp_path):
  root = tmp_path / 'cityscapes'
  for i in range(3):
    _write(root, 'train', 'aachen', i, RAW[:, ::-1] if i else RAW, seed=i)
  _write(root, 'val', 'lindau', 0, RAW, seed=9)
  config = _short(cityscapes_panoptic_deeplab.get_config('tiny'), tmp_path)
  config.data.manual_dir = str(root)
  train.train_and_evaluate(config, tmp_path / 'work')
  row = _evaluation(tmp_path / 'work')
  assert row['num_examples'] == 1
  assert {'pq_things', 'pq_stuff', 'pq/car', 'mask_ap'} <= set(row)


def test_coco_recipe_on_mocked_catalog_data(tmp_path):
  rng = np.random.default_rng(0)

  def example(h, w):
    ids = np.zeros((h, w), np.int64)
    ids[: h // 2] = 5000  # A stuff segment (class 80).
    ids[h // 2:, : w // 2] = 300  # A thing (class 0, person).
    ids[h // 2:, w // 2:] = 301  # Another thing (class 2).
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1)
    return {'image': rng.integers(0, 256, (h, w, 3), np.uint8),
            'panoptic_image': rgb.astype(np.uint8),
            'panoptic_objects': {'id': [5000, 300, 301], 'label': [80, 0, 2],
                                 'is_crowd': [False, False, False]}}

  config = _short(coco_panoptic_deeplab.get_config('tiny'), tmp_path)
  splits = {'train': [example(40, 60), example(50, 44)],
            'validation': [example(36, 48), example(30, 30)]}
  with mock_catalog('coco/2017_panoptic', splits, tmp_path):
    train.train_and_evaluate(config, tmp_path / 'work')
  row = _evaluation(tmp_path / 'work')
  assert row['num_examples'] == 2
  assert {'pq', 'pq/person', 'mask_ap'} <= set(row)
