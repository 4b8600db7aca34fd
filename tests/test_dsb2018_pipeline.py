"""dsb2018 through segjax's pipeline: mixed-size evaluation and its recipe."""

import json

import numpy as np
import pytest

import synthetic_dsb
from segjax.data import pipeline


@pytest.fixture(scope='module')
def dsb_copy(tmp_path_factory):
  """(manual_dir, truth): see synthetic_dsb.write_copy."""
  root = tmp_path_factory.mktemp('dsb')
  return root, synthetic_dsb.write_copy(root)


def _data_config(manual_dir, data_dir, **kw):
  from segjax.configs import base  # pylint: disable=g-import-not-at-top
  return base.merge(base.get_config().data, {
      'name': 'dsb2018', 'data_dir': str(data_dir),
      'manual_dir': str(manual_dir), **kw})


def test_mixed_size_eval_pads_each_batch_with_ignored_labels(dsb_copy,
                                                            tmp_path):
  manual, truth = dsb_copy
  cfg = _data_config(manual, tmp_path / 'tfds')
  num_batches, ds = pipeline.eval_dataset(cfg, 'validation', 2)
  batches = list(pipeline.as_numpy(ds))
  assert num_batches == len(batches) == 2
  seen = []
  for b in batches:
    for image, labels, real in zip(b['image'], b['labels'], b['mask']):
      if not real:
        continue
      # The example's own size is where its labels are not padding.
      rows, cols = np.nonzero(labels != 255)
      h, w = rows.max() + 1, cols.max() + 1
      assert (labels[h:] == 255).all() and (labels[:, w:] == 255).all()
      assert not image[h:].any() and not image[:, w:].any()
      seen.append(labels[:h, :w])
  expected = [truth[i] for i in synthetic_dsb.ids()['validation']]
  assert len(seen) == 3
  for want in expected:
    assert any(s.shape == want.shape and (s == want).all() for s in seen)


def test_several_processes_need_one_eval_size(dsb_copy, tmp_path):
  manual, _ = dsb_copy
  cfg = _data_config(manual, tmp_path / 'tfds')
  with pytest.raises(ValueError, match='one fixed size'):
    pipeline.eval_dataset(cfg, 'validation', 2, process_count=2)
  cfg.eval_preprocess = 'pad(24, 24)'
  _, ds = pipeline.eval_dataset(cfg, 'validation', 2, process_index=1,
                                process_count=2)
  assert next(pipeline.as_numpy(ds))['image'].shape == (1, 24, 24, 3)


def test_training_needs_a_fixed_crop_for_mixed_sizes(dsb_copy, tmp_path):
  from experiments import dsb2018_unet  # pylint: disable=g-import-not-at-top
  from segjax.training import train  # pylint: disable=g-import-not-at-top
  manual, _ = dsb_copy
  config = dsb2018_unet.get_config('tiny')
  config.data.manual_dir = str(manual)
  config.data.data_dir = str(tmp_path / 'tfds')
  config.data.augment = 'flip_lr'
  with pytest.raises(ValueError, match=r'no fixed size.*crop\(h, w\)'):
    train.train_and_evaluate(config, tmp_path / 'work')


def test_tiny_recipe_trains_and_evaluates_whole_images(dsb_copy, tmp_path):
  from experiments import dsb2018_unet  # pylint: disable=g-import-not-at-top
  from segjax.training import train  # pylint: disable=g-import-not-at-top
  manual, _ = dsb_copy
  config = dsb2018_unet.get_config('tiny')
  config.data.manual_dir = str(manual)
  config.data.data_dir = str(tmp_path / 'tfds')
  results = train.train_and_evaluate(config, tmp_path / 'work')
  rows = [json.loads(line) for line in
          (tmp_path / 'work' / 'metrics.jsonl').read_text().splitlines()]
  evals = [r for r in rows if r['split'] == 'validation']
  assert evals[-1]['num_examples'] == 3
  assert set(results) == {'validation'}
