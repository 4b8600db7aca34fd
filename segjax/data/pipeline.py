"""tf.data input pipelines: a deterministic, resumable training stream and
padded, masked evaluation passes. TensorFlow stays on the host side; batches
leave as NumPy arrays for `segjax.parallel.sharding.to_global_array`.

For training, every process follows the same global stream and keeps its
rows of each global batch; for evaluation, each process reads its own slice
of the split (`tfds.split_for_jax_process`).

Determinism and resume: the training stream is a pure function of
(data set, seed, global batch size), whatever the process layout: epoch e is
a permutation seeded by (seed, e), and example i of it is augmented with
stateless random ops seeded by (seed, e, i). The position (e, i) of step s
follows from s (`stream_position`), and a resumed run starts right there.

Map functions are plain TF ops marked `do_not_convert`: autograph would
re-read their source at trace time, for no benefit here.
"""

import math

import numpy as np

from segjax.data import augment
from segjax.data import buckets as buckets_lib
from segjax.data import datasets
from segjax.data import targets as targets_lib
from segjax.data.tf_host import tf
from segjax.errors import ConfigError
import tensorflow_datasets as tfds  # pylint: disable=g-bad-import-order


_FOREVER = 2**62  # Epoch count of the infinite training stream.


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


def _key(*parts):
  """A [2] int64 stateless seed from integers (Python or scalar tensors)."""
  key = tf.constant([0, 0], tf.int64)
  for part in parts:
    key = tf.random.experimental.stateless_fold_in(
        key, tf.cast(part, tf.int64))
  return tf.cast(key, tf.int64)


def num_train_examples(data_config):
  """Examples per epoch of the training stream (the whole training split)."""
  builder = datasets.builder_for(data_config)
  return builder.info.splits[data_config.train_split].num_examples


def stream_position(step, global_batch_size, examples_per_epoch):
  """(epoch, index in epoch) of the first example of training step `step`.

  Every epoch holds exactly `examples_per_epoch` examples and global batches
  run across epoch boundaries, so the position follows from the step; a
  checkpoint that holds the step holds the position.
  """
  return divmod(step * global_batch_size, examples_per_epoch)


def train_dataset(data_config, global_batch_size, *, seed, start_step=0,
                  start_position=None, process_index=0, process_count=1,
                  targets=None):
  """This process's part of the training stream, an infinite tf.data.Dataset.

  The global stream is a pure function of (seed, epoch, example index), the
  same however many processes share it: epoch e is the whole split read in
  file order and shuffled with a seed drawn from (seed, e); the example at
  position i of epoch e is augmented with a stateless seed from
  (seed, e, i). Global batch s is positions [s * B, (s + 1) * B) of the
  endless sequence of epochs, and process p keeps rows [p * b, (p + 1) * b)
  of it (b = B / processes), so 2 processes x 2 devices train on exactly the
  batches of 1 process x 4. (Each process reads, and with `cache` decodes
  and holds, the whole split; only its own rows are augmented.)

  A resumed run starts at `stream_position(start_step, ...)` by building
  epoch e and skipping i examples of it (read, not augmented): the cost of
  resuming is bounded by one epoch, not by the step count.

  Args:
    data_config: `config.data`: name, data_dir, manual_dir, train_split,
      shuffle_buffer, cache, augment (a `segjax.data.augment` spec) and
      optionally train_preprocess (seedless ops such as 'resize(h, w)',
      applied to each example before the cache, so once per example when
      cached; `augment` then starts from their output).
    global_batch_size: examples per step over all processes.
    seed: data seed (shuffle order and augmentation).
    start_step: first step to produce (resume).
    start_position: (epoch, index) to start at instead, e.g. a checkpoint's
      saved position when the batch size changed since.
    process_index, process_count: this process's place among the hosts.
    targets: {name: kwargs} of `segjax.data.targets` makers (a task's
      `train_targets()`), applied to each augmented example's label and
      instance maps, e.g. Panoptic-DeepLab's heatmaps or boundary labels.

  Returns:
    A tf.data.Dataset of dicts of local batches: 'image' [b, H, W, 3] uint8
    (float32 if the spec ends in `normalize`), 'labels' [b, H, W] int32
    (the spec's ignore value on void), and the fields of `targets` (e.g.
    'center_heatmap' [b, H, W] float32, 'boundaries' [b, H, W] int32).
    H and W are static when the
    augmentation ends in a fixed size (e.g. `crop(h, w)`).
  """
  spec = datasets.get_spec(data_config.name)
  builder = datasets.builder_for(data_config)
  local_batch = _local_batch_size(global_batch_size, process_count)
  base = _read(builder, data_config.train_split, spec)
  prepare = augment.build_deterministic(
      data_config.train_preprocess, 'config.data.train_preprocess')
  if prepare is not None:
    base = base.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
  if data_config.cache:
    base = base.cache()  # Decoded (and prepared) once, in memory.
  num_examples = builder.info.splits[data_config.train_split].num_examples
  buffer = min(data_config.shuffle_buffer, num_examples)
  start_epoch, start_index = start_position or stream_position(
      start_step, global_batch_size, num_examples)
  first = start_epoch * num_examples + start_index  # Global row 0.
  transform = augment.build(data_config.augment)
  targets_lib.check(targets)
  need_instances = bool(targets)
  if need_instances and 'instances' not in base.element_spec:
    raise ConfigError(f'{data_config.name!r} has no instance maps, which '
                      f'the training targets {sorted(targets)} are made '
                      'from.')

  @tf.autograph.experimental.do_not_convert
  def epoch_stream(epoch):
    # Dataset.shuffle takes a tensor seed: one fresh permutation per epoch.
    shuffle_seed = tf.random.stateless_uniform(
        [], _key(seed, epoch), minval=None, maxval=None, dtype=tf.int64)
    ds = base.shuffle(buffer, seed=shuffle_seed,
                      reshuffle_each_iteration=False)
    return ds.enumerate().map(
        lambda index, example: (epoch, index, example))

  @tf.autograph.experimental.do_not_convert
  def mine(epoch, index, example):
    del example
    row = (epoch * num_examples + index - first) % global_batch_size
    return row // local_batch == process_index

  @tf.autograph.experimental.do_not_convert
  def augment_one(epoch, index, example):
    if not need_instances:
      example.pop('instances', None)  # Not needed: not augmented.
    example = transform(example, _key(seed, epoch, index))
    out = {'image': example['image'],
           'labels': tf.cast(example['labels'], tf.int32)}
    if targets:
      # From the augmented maps (e.g. centers of the visible parts).
      out.update(targets_lib.make(targets, out['labels'],
                                  example['instances']))
    return out

  ds = tf.data.Dataset.range(start_epoch, _FOREVER).flat_map(epoch_stream)
  ds = ds.skip(start_index)
  if process_count > 1:
    ds = ds.filter(mine)
  ds = ds.map(augment_one, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(local_batch, drop_remainder=True)
  return ds.prefetch(tf.data.AUTOTUNE).with_options(_options())


def eval_dataset(data_config, split, global_batch_size, *, process_index=0,
                 process_count=1, with_instances=False, preprocess=None,
                 buckets=True):
  """One pass over `split`, padded so every example is seen exactly once.

  Examples go through `config.data.eval_preprocess` (deterministic ops such
  as `resize(h, w)` or `pad(h, w)`; none by default). Every process yields
  the same number of batches (so jitted steps across hosts stay in
  lock-step); the last batches are padded with all-zero examples whose
  'mask' is False. Scoring must weight by 'mask'.

  Examples of mixed sizes (e.g. dsb2018) are each padded to their size
  bucket (`segjax.data.buckets`: labels with 255, which no metric
  counts) and a batch to its largest member, so they are evaluated whole at
  their own resolution with a handful of compiled programs; several
  processes need one fixed size (e.g. `eval_preprocess='pad(1040, 1388)'`),
  since their batches must have equal shapes.

  Args:
    with_instances: also yield 'instances' [b, H, W] int32 (0 = none), for
      panoptic and instance scores.
    preprocess: the deterministic ops to apply instead of
      `config.data.eval_preprocess` ('' for none: full resolution).
    buckets: pad mixed sizes to size buckets (else batch them as they are:
      with a batch of 1, each example keeps its own size).

  Returns:
    (num_batches, dataset) where dataset yields local batches with 'image'
    [b, H, W, 3] uint8, 'labels' [b, H, W] int32, 'mask' [b] bool (and
    'instances').
  """
  spec = datasets.get_spec(data_config.name)
  builder = datasets.builder_for(data_config)
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
  if preprocess is None:
    preprocess = data_config.eval_preprocess
  transform = augment.build(preprocess)

  @tf.autograph.experimental.do_not_convert
  def keep(example):
    if not with_instances:
      example.pop('instances', None)
    elif 'instances' not in example:
      raise ConfigError(f'{data_config.name!r} has no instance maps.')
    example = transform(example, tf.constant([0, 0], tf.int64))
    out = {'image': example['image'],
           'labels': tf.cast(example['labels'], tf.int32),
           'mask': tf.constant(True)}
    if with_instances:
      out['instances'] = tf.cast(example['instances'], tf.int32)
    return out

  @tf.autograph.experimental.do_not_convert
  def blank(example):
    return tf.nest.map_structure(tf.zeros_like, example)

  ds = _read(builder, local_split, spec).map(
      keep, num_parallel_calls=tf.data.AUTOTUNE)
  if process_count > 1 and not ds.element_spec['image'].shape.is_fully_defined():
    raise ConfigError(
        f'config.data.eval_preprocess={preprocess!r}'
        f' leaves {data_config.name!r} images without one fixed size, which '
        'evaluation over several processes needs; end it with pad(h, w) or '
        'resize(h, w).')
  if buckets and not ds.element_spec['image'].shape.is_fully_defined():
    ds = ds.map(lambda x: _pad_to_bucket(x, spec.ignore_index),
                num_parallel_calls=tf.data.AUTOTUNE)
  if ds.element_spec['image'].shape.is_fully_defined():
    padding = tf.data.Dataset.from_tensors(tf.nest.map_structure(
        lambda t: tf.zeros(t.shape, t.dtype), ds.element_spec))
  else:  # A blank copy of the first example (fixed-size data has one).
    padding = ds.take(1).map(blank)
  padding_values = {
      'image': tf.zeros([], ds.element_spec['image'].dtype),
      'labels': tf.constant(spec.ignore_index, tf.int32),
      'mask': tf.constant(False)}
  if with_instances:
    padding_values['instances'] = tf.constant(0, tf.int32)
  ds = ds.concatenate(padding.repeat()).padded_batch(
      local_batch, padding_values=padding_values)
  ds = ds.take(num_batches)
  return num_batches, ds.prefetch(tf.data.AUTOTUNE).with_options(_options())


@tf.autograph.experimental.do_not_convert
def _pad_to_bucket(example, ignore_index):
  """Pads an example's maps at the bottom / right to its size bucket.

  Each side goes up to the smallest of `buckets.BUCKETS` that holds it (past
  the largest: a multiple of 32), as `segjax.inference` does, so mixed-size
  data compiles one eval program per bucket, not per image size. Padding is
  zeros in the image, ignore in the labels and 0 in the instances.
  """
  buckets = tf.constant(buckets_lib.BUCKETS, tf.int32)

  def side(n):
    fits = buckets >= n
    return tf.where(tf.reduce_any(fits),
                    tf.reduce_min(tf.where(fits, buckets, tf.int32.max)),
                    (n + buckets_lib.MULTIPLE - 1) // buckets_lib.MULTIPLE *
                    buckets_lib.MULTIPLE)

  shape = tf.shape(example['labels'])
  pad_h = side(shape[0]) - shape[0]
  pad_w = side(shape[1]) - shape[1]
  fill = {'labels': ignore_index, 'instances': 0, 'image': 0}
  out = dict(example)
  for key, value in fill.items():
    if key in example:
      x = example[key]
      paddings = [[0, pad_h], [0, pad_w]] + [[0, 0]] * (len(x.shape) - 2)
      out[key] = tf.pad(x, paddings, constant_values=tf.cast(value, x.dtype))
  return out


def as_numpy(ds):
  """Iterates a tf.data.Dataset as dicts of NumPy arrays."""
  for batch in ds.as_numpy_iterator():
    yield {k: np.asarray(v) for k, v in batch.items()}
