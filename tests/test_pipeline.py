"""tf.data pipelines: deterministic resumable training stream, exact eval."""

import numpy as np
import pytest

from segjax.configs import base
from segjax.data import pipeline


def _data_config(tfds_dir):
  return base.merge(base.get_config().data, {
      'name': 'shapes/tiny', 'data_dir': tfds_dir, 'shuffle_buffer': 64,
      'augment': 'flip_lr'})


def _batches(ds, n):
  return [b for _, b in zip(range(n), pipeline.as_numpy(ds))]


def test_train_stream_is_deterministic_and_resumes_mid_stream(tfds_dir):
  cfg = _data_config(tfds_dir)
  full = _batches(pipeline.train_dataset(cfg, 8, seed=1), 12)
  again = _batches(pipeline.train_dataset(cfg, 8, seed=1), 12)
  resumed = _batches(pipeline.train_dataset(cfg, 8, seed=1, start_step=9), 3)
  other = _batches(pipeline.train_dataset(cfg, 8, seed=2), 1)
  for a, b in zip(full, again):
    np.testing.assert_array_equal(a['image'], b['image'])
  # 12 batches of 8 cross the 64-example epoch boundary at step 8.
  for a, b in zip(full[9:], resumed):
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_array_equal(a['labels'], b['labels'])
  assert not np.array_equal(full[0]['image'], other[0]['image'])
  assert full[0]['image'].shape == (8, 32, 32, 3)
  assert full[0]['labels'].dtype == np.int32


def test_each_epoch_is_a_permutation_of_the_split(tfds_dir):
  cfg = _data_config(tfds_dir)
  cfg.augment = ''
  epoch = np.concatenate(
      [b['image'] for b in _batches(pipeline.train_dataset(cfg, 8, seed=0), 8)])
  keys = {x.tobytes() for x in epoch}
  assert len(keys) == 64  # 64 distinct examples: none repeated or dropped.


def test_stream_position_counts_examples_across_epochs():
  assert pipeline.stream_position(0, 8, 64) == (0, 0)
  assert pipeline.stream_position(9, 8, 64) == (1, 8)
  assert pipeline.stream_position(16, 8, 60) == (2, 8)


def test_epochs_are_different_permutations_and_resume_at_any_position(
    tfds_dir):
  cfg = _data_config(tfds_dir)
  # 64 examples, batch 6: epochs end mid-batch, so resuming at step 11
  # (example 66) starts 2 examples into epoch 1.
  stream = np.concatenate([b['image'] for b in _batches(
      pipeline.train_dataset(cfg, 6, seed=3), 14)])
  epoch0, epoch1 = stream[:64], stream[64:128]
  key = lambda images: [x.tobytes() for x in images]
  cfg.augment = ''
  plain = np.concatenate([b['image'] for b in _batches(
      pipeline.train_dataset(cfg, 8, seed=3), 16)])
  assert sorted(key(plain[:64])) == sorted(key(plain[64:]))
  assert key(plain[:64]) != key(plain[64:])  # A new order each epoch.
  cfg.augment = 'flip_lr'
  resumed = np.concatenate([b['image'] for b in _batches(
      pipeline.train_dataset(cfg, 6, seed=3, start_step=11), 3)])
  np.testing.assert_array_equal(resumed, stream[66:84])
  assert not np.array_equal(epoch0, epoch1)


def test_processes_split_each_global_batch_of_the_one_process_stream(
    tfds_dir):
  cfg = _data_config(tfds_dir)
  whole = _batches(pipeline.train_dataset(cfg, 8, seed=0, start_step=5), 10)
  parts = [_batches(pipeline.train_dataset(
      cfg, 8, seed=0, start_step=5, process_index=p, process_count=2), 10)
           for p in range(2)]
  for s, batch in enumerate(whole):  # Crosses the epoch end at step 8.
    for key in ('image', 'labels'):
      np.testing.assert_array_equal(
          np.concatenate([parts[0][s][key], parts[1][s][key]]), batch[key])


@pytest.mark.parametrize('process_count', [1, 2])
def test_eval_pass_sees_every_example_exactly_once(tfds_dir, process_count):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  cfg = _data_config(tfds_dir)
  builder = tfds.builder('shapes/tiny', data_dir=tfds_dir)
  reference = sorted(
      x['image'].tobytes()
      for x in tfds.as_numpy(builder.as_dataset('validation')))
  seen, batch_counts = [], set()
  for p in range(process_count):
    # 24 examples, global batch 16: 2 batches, 8 padding slots in the last.
    num_batches, ds = pipeline.eval_dataset(
        cfg, 'validation', 16, process_index=p, process_count=process_count)
    batches = list(pipeline.as_numpy(ds))
    assert len(batches) == num_batches == 2
    batch_counts.add(len(batches))
    for b in batches:
      assert b['image'].shape[0] == 16 // process_count
      assert not b['image'][~b['mask']].any()  # Padding is all zeros.
      seen += [x.tobytes() for x in b['image'][b['mask']]]
  assert sorted(seen) == reference


def test_eval_rejects_a_missing_split(tfds_dir):
  with pytest.raises(ValueError, match="split 'val' is not in"):
    pipeline.eval_dataset(_data_config(tfds_dir), 'val', 8)


def test_train_preprocess_runs_once_before_the_random_ops(tfds_dir):
  """'resize' before the cache gives what the per-visit op gives, in the
  same shuffled order, and the random ops then start from its output."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  cfg = _data_config(tfds_dir)
  cfg.augment = ''
  raw = _batches(pipeline.train_dataset(cfg, 8, seed=4), 8)
  cfg.augment = 'resize(16, 16)'
  per_visit = _batches(pipeline.train_dataset(cfg, 8, seed=4), 8)
  cfg.augment = ''
  cfg.train_preprocess = 'resize(16, 16)'
  once = _batches(pipeline.train_dataset(cfg, 8, seed=4), 8)
  for r, a, b in zip(raw, per_visit, once):
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_array_equal(a['labels'], b['labels'])
    for image, small in zip(r['image'], b['image']):  # PIL: independent.
      want = np.asarray(Image.fromarray(image).resize((16, 16),
                                                      Image.BILINEAR))
      assert np.abs(small.astype(int) - want).mean() < 2.0
  cfg.augment = 'crop(12, 12)|flip_lr'
  cropped = _batches(pipeline.train_dataset(cfg, 8, seed=4), 2)
  assert cropped[0]['image'].shape == (8, 12, 12, 3)


@pytest.mark.parametrize('spec', ['flip_lr', 'resize(16, 16)|scale(1, 2)',
                                  'normalize', 'resize(0, 16)', 'nosuch'])
def test_train_preprocess_refuses_random_ops(tfds_dir, spec):
  from segjax.errors import ConfigError  # pylint: disable=g-import-not-at-top
  cfg = _data_config(tfds_dir)
  cfg.train_preprocess = spec
  with pytest.raises(ConfigError, match=r'config\.data\.train_preprocess'):
    pipeline.train_dataset(cfg, 8, seed=0)
