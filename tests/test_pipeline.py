"""tf.data pipelines: deterministic resumable training stream, exact eval."""

import ml_collections
import numpy as np
import pytest

from segjax.data import augment
from segjax.data import pipeline


def _data_config(tfds_dir):
  return ml_collections.ConfigDict({
      'name': 'shapes/tiny', 'data_dir': tfds_dir, 'train_split': 'train',
      'shuffle_buffer': 64, 'cache': True, 'flip_lr': True})


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
  cfg.flip_lr = False
  epoch = np.concatenate(
      [b['image'] for b in _batches(pipeline.train_dataset(cfg, 8, seed=0), 8)])
  keys = {x.tobytes() for x in epoch}
  assert len(keys) == 64  # 64 distinct examples: none repeated or dropped.


def test_flip_moves_image_and_label_maps_together():
  from segjax.data.tf_host import tf  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  example = {
      'image': rng.integers(0, 255, (6, 5, 3), dtype=np.uint8),
      'labels': rng.integers(0, 5, (6, 5), dtype=np.uint8),
      'instances': rng.integers(0, 9, (6, 5)).astype(np.int32),
  }
  cfg = ml_collections.ConfigDict({'flip_lr': True})
  flipped_count = 0
  for k in range(20):
    out = augment.train_transform(
        {key: tf.constant(v) for key, v in example.items()},
        tf.constant([0, k], tf.int64), cfg)
    out = {key: v.numpy() for key, v in out.items()}
    flipped = not np.array_equal(out['labels'], example['labels'])
    flipped_count += flipped
    for key, v in example.items():
      np.testing.assert_array_equal(out[key], v[:, ::-1] if flipped else v)
  assert 0 < flipped_count < 20


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
