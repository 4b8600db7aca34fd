"""Every benchmark recipe's `local` variant trains a few steps end to end:
Cityscapes and Pets on mocked TFDS data shaped like the real features,
ADE20K on a synthetic ADEChallengeData2016 copy built by its builder."""

import json
import math

import numpy as np
from PIL import Image
import pytest

from catalog_mock import mock_catalog
from experiments import ade20k_deeplabv3plus
from experiments import cityscapes_deeplabv3plus
from experiments import pets_unet
from segjax.training import train


def _few_steps(config, tmp_path):
  config.data.data_dir = str(tmp_path / 'tfds')
  config.num_train_steps = 2
  config.log_every_steps = config.eval_every_steps = 2
  config.checkpoint_every_steps = 2
  config.num_images_to_save = 0
  return config


def _rows(workdir):
  return [json.loads(line) for line in
          (workdir / 'metrics.jsonl').read_text().splitlines()]


def _check_run(workdir, eval_split, num_examples, num_classes):
  rows = _rows(workdir)
  train_rows = [r for r in rows if r['split'] == 'train']
  assert train_rows[-1]['step'] == 2 and math.isfinite(train_rows[-1]['loss'])
  [evaluation] = [r for r in rows if r['split'] == eval_split]
  assert evaluation['num_examples'] == num_examples
  assert len([k for k in evaluation if k.startswith('iou/')]) == num_classes


def test_cityscapes_local_recipe_runs(tmp_path):
  rng = np.random.default_rng(0)

  def example():
    return {'image_left': rng.integers(0, 256, (1024, 2048, 3), np.uint8),
            'segmentation_label': rng.integers(0, 34, (1024, 2048, 1),
                                               np.uint8)}

  config = _few_steps(cityscapes_deeplabv3plus.get_config('local'), tmp_path)
  config.data.manual_dir = str(tmp_path)  # Never read: the data is mocked.
  splits = {'train': [example() for _ in range(3)],
            'validation': [example() for _ in range(2)]}
  with mock_catalog('cityscapes/semantic_segmentation', splits, tmp_path):
    train.train_and_evaluate(config, tmp_path / 'work')
  _check_run(tmp_path / 'work', 'validation', 2, 19)


def test_pets_local_recipe_runs(tmp_path):
  rng = np.random.default_rng(0)

  def example(h, w):
    return {'image': rng.integers(0, 256, (h, w, 3), np.uint8),
            'segmentation_mask': rng.integers(1, 4, (h, w, 1), np.uint8)}

  config = _few_steps(pets_unet.get_config('local'), tmp_path)
  splits = {'train': [example(50, 70), example(64, 48), example(40, 40)],
            'test': [example(30, 45), example(52, 52), example(20, 33)]}
  with mock_catalog('oxford_iiit_pet', splits, tmp_path):
    train.train_and_evaluate(config, tmp_path / 'work')
  _check_run(tmp_path / 'work', 'test', 3, 2)


@pytest.fixture
def ade_copy(tmp_path):
  root = tmp_path / 'manual' / 'ADEChallengeData2016'
  rng = np.random.default_rng(0)
  for folder, prefix, n in (('training', 'train', 3),
                            ('validation', 'val', 2)):
    (root / 'images' / folder).mkdir(parents=True)
    (root / 'annotations' / folder).mkdir(parents=True)
    for i in range(n):
      shape = (60 + 10 * i, 80)
      Image.fromarray(rng.integers(0, 256, shape + (3,), np.uint8)).save(
          root / 'images' / folder / f'ADE_{prefix}_{i:08d}.jpg')
      Image.fromarray(rng.integers(0, 151, shape, np.uint8)).save(
          root / 'annotations' / folder / f'ADE_{prefix}_{i:08d}.png')
  return tmp_path / 'manual'


def test_ade20k_local_recipe_runs(ade_copy, tmp_path):
  config = _few_steps(ade20k_deeplabv3plus.get_config('local'), tmp_path)
  config.data.manual_dir = str(ade_copy)
  train.train_and_evaluate(config, tmp_path / 'work')
  _check_run(tmp_path / 'work', 'validation', 2, 150)
