"""tf.data input pipelines: a deterministic, resumable training stream and
padded, masked evaluation passes. TensorFlow stays on the host side; batches
leave as NumPy arrays for `segjax.training.sharding.to_global_array`.

Each process reads its own slice of a split (`tfds.split_for_jax_process`)
and produces the local part of the global batch.

Determinism and resume: the training stream is a pure function of
(data set, seed, global batch size, process layout). Element k of a process's
stream is the same on every run, its augmentation is seeded by k (stateless
random ops), and a run resumed at step s starts at element s * local_batch.

Map functions are plain TF ops marked `do_not_convert`: autograph would
re-read their source at trace time, for no benefit here.
"""

import math

import numpy as np

from segjax.data import augment
from segjax.data import datasets
from segjax.data.tf_host import tf
from segjax.errors import ConfigError
import tensorflow_datasets as tfds  # pylint: disable=g-bad-import-order


def _local_batch_size(global_batch_size, process_count):
  if global_batch_size % process_count:
    raise ConfigError(f'batch size {global_batch_size} is not divisible '
                     f'by the number of processes ({process_count}).')
  return global_batch_size // process_count


def _read(builder, split, spec):
  ds = builder.as_dataset(split=split, shuffle_files=False)
  return ds.map(spec.standardize, num_parallel_calls=tf.data.AUTOTUNE)


def _options():
  options = tf.data.Options()
  options.deterministic = True  # Order must not depend on thread timing.
  return options


def train_dataset(data_config, global_batch_size, *, seed, start_step=0,
                  process_index=0, process_count=1):
  """The training stream of this process, as an infinite tf.data.Dataset.

  Args:
    data_config: `config.data` (name, data_dir, train_split, shuffle_buffer,
      cache, augmentation fields; see experiments/).
    global_batch_size: examples per step over all processes.
    seed: data seed (shuffle order and augmentation).
    start_step: first step to produce (resume); the elements of earlier
      steps are skipped before augmentation (they are still read, and
      decoded once into the cache).
    process_index, process_count: this process's place among the hosts.

  Returns:
    A tf.data.Dataset of dicts of local batches: 'image' [b, H, W, 3] uint8,
    'labels' [b, H, W] int32 (255 = ignore), with b = global / processes.
  """
  spec = datasets.get_spec(data_config.name)
  builder = datasets.get_builder(data_config.name, data_config.data_dir)
  local_batch = _local_batch_size(global_batch_size, process_count)
  split = tfds.split_for_jax_process(
      data_config.train_split, process_index=process_index,
      process_count=process_count, drop_remainder=True)
  ds = _read(builder, split, spec)
  if data_config.get('cache', True):
    ds = ds.cache()
  num_examples = builder.info.splits[split].num_examples
  buffer = min(data_config.get('shuffle_buffer', 10_000), num_examples)
  # Shuffle before repeat: every epoch is a permutation of the split; with a
  # fixed seed the sequence of permutations is the same on every run.
  ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True).repeat()
  ds = ds.enumerate()  # (k, example): k is the element's stream position.
  ds = ds.skip(start_step * local_batch)

  @tf.autograph.experimental.do_not_convert
  def transform(k, example):
    rng = tf.random.experimental.stateless_fold_in(
        tf.constant([seed, process_index], tf.int64), k)
    example = augment.train_transform(example, rng, data_config)
    return {'image': example['image'],
            'labels': tf.cast(example['labels'], tf.int32)}

  ds = ds.map(transform, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(local_batch, drop_remainder=True)
  return ds.prefetch(tf.data.AUTOTUNE).with_options(_options())


def eval_dataset(data_config, split, global_batch_size, *, process_index=0,
                 process_count=1):
  """One pass over `split`, padded so every example is seen exactly once.

  Every process yields the same number of batches (so jitted steps across
  hosts stay in lock-step); the last batches are padded with all-zero
  examples whose 'mask' is False. Scoring must weight by 'mask'.

  Returns:
    (num_batches, dataset) where dataset yields local batches with 'image'
    [b, H, W, 3] uint8, 'labels' [b, H, W] int32, 'mask' [b] bool.
  """
  spec = datasets.get_spec(data_config.name)
  builder = datasets.get_builder(data_config.name, data_config.data_dir)
  if split not in builder.info.splits:
    raise ConfigError(f'config.data: split {split!r} is not in '
                     f'{data_config.name!r}; it has '
                     f'{sorted(builder.info.splits)}.')
  local_batch = _local_batch_size(global_batch_size, process_count)
  num_total = builder.info.splits[split].num_examples
  num_batches = math.ceil(num_total / global_batch_size)
  local_split = tfds.split_for_jax_process(
      split, process_index=process_index, process_count=process_count,
      drop_remainder=False)

  @tf.autograph.experimental.do_not_convert
  def keep(example):
    return {'image': example['image'],
            'labels': tf.cast(example['labels'], tf.int32),
            'mask': tf.constant(True)}

  ds = _read(builder, local_split, spec).map(keep)
  padding = tf.data.Dataset.from_tensors(
      tf.nest.map_structure(lambda t: tf.zeros(t.shape, t.dtype),
                            ds.element_spec)).repeat()
  ds = ds.concatenate(padding).batch(local_batch).take(num_batches)
  return num_batches, ds.prefetch(tf.data.AUTOTUNE).with_options(_options())


def as_numpy(ds):
  """Iterates a tf.data.Dataset as dicts of NumPy arrays."""
  for batch in ds.as_numpy_iterator():
    yield {k: np.asarray(v) for k, v in batch.items()}
