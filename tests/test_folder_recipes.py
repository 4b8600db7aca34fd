"""The folder recipes train, evaluate and predict end to end on a user's
folders (synthetic `shapes` scenes written as images and masks), with
nothing but config fields pointing at them."""

import importlib.util
import json
import pathlib

import numpy as np
from PIL import Image
import pytest

from segjax.inference import predict as predict_lib
from segjax.inference import report
from segjax.training import train

import synthetic_folder  # pylint: disable=g-bad-import-order

EXPERIMENTS = pathlib.Path(__file__).resolve().parents[1] / 'experiments'


def _recipe(name, variant):
  spec = importlib.util.spec_from_file_location(
      name, EXPERIMENTS / f'{name}.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant)


@pytest.fixture(scope='module')
def folders(tmp_path_factory):
  root = tmp_path_factory.mktemp('folders')
  synthetic_folder.write_scenes(root, 40, mask_suffix='_mask', classes=True)
  return root


# recipe, variant, mask folder, extra data fields, validation scores.
CASES = [
    ('folder_semantic', 'tiny', 'masks_semantic',
     {'class_names': ('stripes', 'checker', 'circle', 'triangle',
                      'rectangle')}, ('miou',)),
    ('folder_binary', 'tiny', 'masks_binary', {}, ('iou', 'dice')),
    ('folder_instances', 'tiny', 'masks_instances', {},
     ('iou', 'pq', 'mask_ap')),
    ('folder_instances', 'binary_tiny', 'masks_instances', {},
     ('iou', 'pq', 'mask_ap')),
    ('folder_instances', 'panoptic_tiny', 'masks_instances',
     {'classes_dir': 'classes', 'class_names': (
         'stripes', 'checker', 'circle', 'triangle', 'rectangle'),
      'thing_classes': ('circle', 'triangle', 'rectangle')},
     ('pq', 'miou', 'mask_ap')),
]


@pytest.mark.parametrize('name, variant, masks, fields, scores', CASES,
                         ids=[f'{c[0]}:{c[1]}' for c in CASES])
def test_recipe_trains_evaluates_and_predicts(folders, tmp_path, name,
                                              variant, masks, fields, scores):
  config = _recipe(name, variant)
  config.data.images_dir = str(folders / 'images')
  config.data.masks_dir = str(folders / masks)
  config.data.mask_suffix = '_mask'
  config.data.data_dir = str(tmp_path / 'tfds')
  config.data.split_fractions = (0.6, 0.4, 0.0)
  for key, value in fields.items():
    config.data[key] = (str(folders / value) if key == 'classes_dir'
                        else value)
  workdir = tmp_path / 'run'
  results = train.train_and_evaluate(config, workdir)
  for score in scores:
    assert 0.0 <= results['validation'][score] <= 1.0, (score, results)
  # segjax.evaluate's path: the run read back from its workdir alone.
  scored = report.evaluate(workdir, 'latest', 'validation')
  assert scored['num_images'] == results['validation']['num_examples']
  for score in scores:
    assert scored[score] == pytest.approx(results['validation'][score],
                                          abs=1e-6), score
  image = np.random.default_rng(0).integers(0, 256, (40, 48, 3), np.uint8)
  Image.fromarray(image).save(tmp_path / 'photo.png')
  failed = predict_lib.predict(workdir, [str(tmp_path / 'photo.png')],
                               str(tmp_path / 'out'), checkpoint='latest')
  assert not failed
  labels = np.asarray(Image.open(tmp_path / 'out' / 'photo_labels.png'))
  assert labels.shape == (40, 48)
  info = json.loads((workdir / 'run_info.json').read_text())
  assert info['class_names'] == list(config.data.class_names or (
      ('background', 'foreground') if masks == 'masks_binary'
      else ('background', 'object')))
