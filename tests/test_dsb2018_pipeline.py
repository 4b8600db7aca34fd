"""dsb2018 through segjax's pipeline: mixed-size evaluation and its recipe."""

import json

import numpy as np
import pytest

import synthetic_dsb
from segjax.data import pipeline

# Its module-scoped fixtures build once, on one pytest-xdist worker.
pytestmark = pytest.mark.xdist_group('dsb2018_pipeline')


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


@pytest.mark.parametrize('buckets', [True, False])
def test_mixed_sizes_on_two_processes_pad_each_example_as_one_does(
    dsb_copy, tmp_path, buckets):
  """Every example reaches exactly one process, padded to the size it gets
  with one process; each global batch has one shape."""
  manual, truth = dsb_copy
  cfg = _data_config(manual, tmp_path / 'tfds')

  def examples(process_index, process_count):
    n, ds = pipeline.eval_dataset(
        cfg, 'validation', 2, process_index=process_index,
        process_count=process_count, preprocess='', buckets=buckets)
    batches = list(pipeline.as_numpy(ds))
    assert len(batches) == n
    found = {int(i): (image, labels)
             for b in batches
             for i, image, labels, real in zip(
                 b['index'], b['image'], b['labels'], b['mask']) if real}
    return [b['image'].shape for b in batches], found

  shapes0, first = examples(0, 2)
  shapes1, second = examples(1, 2)
  assert shapes0 == shapes1  # Each global batch: one shape.
  _, alone = examples(0, 1)
  assert not set(first) & set(second)
  together = {**first, **second}
  wanted = [truth[i] for i in synthetic_dsb.ids()['validation']]
  assert sorted(together) == sorted(alone) == list(range(3))
  for i, (image, labels) in together.items():
    np.testing.assert_array_equal(image, alone[i][0])
    np.testing.assert_array_equal(labels, alone[i][1])
    rows, cols = np.nonzero(labels != 255)
    crop = labels[:rows.max() + 1, :cols.max() + 1]
    assert any(crop.shape == want.shape and (crop == want).all()
               for want in wanted)
    if not buckets:  # Each example at its exact size.
      assert labels.shape == crop.shape


def test_eval_plan_groups_by_shape_and_splits_rows_over_processes():
  keys = ['b', 'a', 'b', 'b', 'a', 'b', 'c']
  plans = [pipeline.eval_plan(keys, 4, p, 2) for p in range(2)]
  assert [key for key, _ in plans[0]] == ['a', 'b', 'c']
  # Group 'b' (examples 0, 2, 3, 5) is one global batch: rows 0-1 go to
  # process 0, rows 2-3 to process 1; 'a' and 'c' are completed by blanks.
  assert plans[0][1] == ('b', [0, 2]) and plans[1][1] == ('b', [3, 5])
  assert plans[0][0] == ('a', [1, 4]) and plans[1][0] == ('a', [-1, -1])
  assert plans[0][2] == ('c', [6, -1]) and plans[1][2] == ('c', [-1, -1])


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
