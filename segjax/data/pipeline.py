"""tf.data input pipelines: a deterministic, resumable training stream and
padded, masked evaluation passes. TensorFlow stays on the host side; batches
leave as NumPy arrays for `segjax.parallel.sharding.to_global_array`.

For training, every process follows the same global stream and keeps (and
decodes) only its rows of each global batch; for evaluation, examples are
grouped by padded size and each process takes its rows of every global
batch (`eval_plan`).

Determinism and resume: the training stream is a pure function of
(data set, seed, global batch size), whatever the process layout: epoch e is
a permutation seeded by (seed, e), and example i of it is augmented with
stateless random ops seeded by (seed, e, i). The position (e, i) of step s
follows from s (`stream_position`), and a resumed run starts right there.

Map functions are plain TF ops marked `do_not_convert`: autograph would
re-read their source at trace time, for no benefit here.
"""


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


def _read_encoded(builder, split, spec, counter=None):
  """The split's records with images left encoded, and their decoder.

  Returns:
    (dataset, decode): `dataset` yields examples whose image features
    (`tfds.features.Image`: photos, label and instance PNGs) are still the
    stored bytes; `decode(example)` decodes them as TFDS would and applies
    `spec.standardize`, giving what TFDS's own decoding and the spec give, and adds 1 to `counter`
    (a tf.Variable int64) when one is given.
  """
  features = builder.info.features
  images = [k for k, f in features.items()
            if isinstance(f, tfds.features.Image)]
  ds = builder.as_dataset(
      split=split, shuffle_files=False,
      decoders={k: tfds.decode.SkipDecoding() for k in images})

  @tf.autograph.experimental.do_not_convert
  def decode(example):
    example = dict(example)
    for k in images:
      if example[k].dtype == tf.string:  # (TFDS's mock data comes decoded.)
        example[k] = features[k].decode_example(example[k])
    if counter is not None:
      with tf.control_dependencies([counter.assign_add(1)]):
        example = tf.nest.map_structure(tf.identity, example)
    return spec.standardize(example)

  return ds, decode


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
                  targets=None, decode_counter=None):
  """This process's part of the training stream, an infinite tf.data.Dataset.

  The global stream is a pure function of (seed, epoch, example index), the
  same however many processes share it: epoch e is the whole split read in
  file order and shuffled with a seed drawn from (seed, e); the example at
  position i of epoch e is augmented with a stateless seed from
  (seed, e, i). Global batch s is positions [s * B, (s + 1) * B) of the
  endless sequence of epochs, and process p keeps rows [p * b, (p + 1) * b)
  of it (b = B / processes), so 2 processes x 2 devices train on exactly the
  batches of 1 process x 4.

  What each process reads: one process decodes every example (once, with
  `cache`, which then holds the decoded split). With several, each reads
  every record but keeps the images encoded (TFDS `SkipDecoding`) through
  the shuffle and the row selection, then decodes, prepares and augments
  only its own rows: about 1 / processes of the split per epoch; `cache`
  then holds the whole split's encoded bytes. The shuffle's order depends
  only on its seed and the number of examples, not on their contents, so
  the stream is the same either way.

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
    decode_counter: optional tf.Variable int64 to which each decoded
      example adds 1 (what the multi-process tests count).

  Returns:
    A tf.data.Dataset of dicts of local batches: 'image' [b, H, W, 3] uint8
    (float32 if the spec ends in `normalize`), 'labels' [b, H, W] int32
    (the spec's ignore value on void), and the fields of `targets` (e.g.
    'center_heatmap' [b, H, W] float32, 'boundaries' [b, H, W] int32).
    H and W are static when the
    augmentation ends in a fixed size (e.g. `crop(h, w)`).
  """
  spec = datasets.spec_for(data_config)
  builder = datasets.builder_for(data_config)
  local_batch = _local_batch_size(global_batch_size, process_count)
  encoded, decode = _read_encoded(builder, data_config.train_split, spec,
                                  decode_counter)
  prepare = augment.build_deterministic(
      data_config.train_preprocess, 'config.data.train_preprocess')

  @tf.autograph.experimental.do_not_convert
  def decoded(example):
    example = decode(example)
    return example if prepare is None else prepare(example)

  # One process decodes (and prepares) every example, before the cache if
  # any; several each decode only the rows they keep, after the selection,
  # and cache (if asked) the encoded bytes.
  per_host = process_count > 1
  base = encoded if per_host else encoded.map(
      decoded, num_parallel_calls=tf.data.AUTOTUNE)
  if data_config.cache:
    base = base.cache()
  num_examples = builder.info.splits[data_config.train_split].num_examples
  buffer = min(data_config.shuffle_buffer, num_examples)
  start_epoch, start_index = start_position or stream_position(
      start_step, global_batch_size, num_examples)
  first = start_epoch * num_examples + start_index  # Global row 0.
  transform = augment.build(data_config.augment)
  targets_lib.check(targets)
  need_instances = bool(targets)
  if need_instances and 'instances' not in encoded.map(
      decoded).element_spec:
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
  if per_host:
    ds = ds.filter(mine).map(
        lambda epoch, index, example: (epoch, index, decoded(example)),
        num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.map(augment_one, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(local_batch, drop_remainder=True)
  return ds.prefetch(tf.data.AUTOTUNE).with_options(_options())


def eval_plan(keys, global_batch_size, process_index=0, process_count=1):
  """Which examples each evaluation batch of this process holds.

  Examples are grouped by `keys` (their padded shape); each group fills
  global batches in split order, the last one completed with blanks, and
  process p takes rows [p * b, (p + 1) * b) of every global batch
  (b = B / processes). So every global batch has one shape, every process
  makes the same number of batches, and an example's padded size and
  batch do not depend on the process count.

  Args:
    keys: per example of the split, in order, a sortable group key.
    global_batch_size: B.
    process_index, process_count: this process's place.

  Returns:
    [(key, rows)] in key order: `rows` lists this process's example
    indices of that group's batches, -1 for a blank (at the end only).
  """
  local = _local_batch_size(global_batch_size, process_count)
  groups = {}
  for index, key in enumerate(keys):
    groups.setdefault(key, []).append(index)
  plan = []
  for key in sorted(groups):
    rows = groups[key] + [-1] * (-len(groups[key]) % global_batch_size)
    first = process_index * local
    plan.append((key, [row for start in range(0, len(rows), global_batch_size)
                       for row in rows[start + first:start + first + local]]))
  return plan


def eval_dataset(data_config, split, global_batch_size, *, process_index=0,
                 process_count=1, with_instances=False, preprocess=None,
                 buckets=True):
  """One pass over `split`, padded so every example is seen exactly once.

  Examples go through `config.data.eval_preprocess` (deterministic ops such
  as `resize(h, w)` or `pad(h, w)`; none by default). Examples that then
  differ in size (e.g. dsb2018) are each padded at the bottom / right to
  their size bucket (`segjax.data.buckets`), so they are evaluated whole
  at their own resolution with a handful of compiled programs; a batch
  holds one bucket only (`eval_plan`), so an example's padded size never
  depends on its batch companions or the process count. Padding is zeros
  in the image, the spec's ignore value in the labels (no metric counts
  it) and 0 in the instances. Every process yields the same number of
  batches, of the same shapes; the last batch of each size is completed
  with blank examples whose 'mask' is False. Scoring must weight by 'mask'.

  Each process decodes only its own examples; with mixed sizes, it first
  reads every example's size (one decoding pass over the split).

  Args:
    with_instances: also yield 'instances' [b, H, W] int32 (0 = none), for
      panoptic and instance scores.
    preprocess: the deterministic ops to apply instead of
      `config.data.eval_preprocess` ('' for none: full resolution).
    buckets: pad mixed sizes to size buckets (else group examples by
      their exact size).

  Returns:
    (num_batches, dataset) where dataset yields local batches with 'image'
    [b, H, W, 3] uint8, 'labels' [b, H, W] int32, 'mask' [b] bool,
    'index' [b] int32 (the example's position in the split; -1 for a
    blank) and, if asked, 'instances'.
  """
  spec = datasets.spec_for(data_config)
  builder = datasets.builder_for(data_config)
  if split not in builder.info.splits:
    raise ConfigError(f'config.data: split {split!r} is not in '
                     f'{data_config.name!r}; it has '
                     f'{sorted(builder.info.splits)}.')
  local_batch = _local_batch_size(global_batch_size, process_count)
  num_total = builder.info.splits[split].num_examples
  if preprocess is None:
    preprocess = data_config.eval_preprocess
  transform = augment.build(preprocess)
  encoded, decode = _read_encoded(builder, split, spec)

  @tf.autograph.experimental.do_not_convert
  def keep(index, example):
    example = decode(example)
    if not with_instances:
      example.pop('instances', None)
    elif 'instances' not in example:
      raise ConfigError(f'{data_config.name!r} has no instance maps.')
    example = transform(example, tf.constant([0, 0], tf.int64))
    out = {'image': example['image'],
           'labels': tf.cast(example['labels'], tf.int32),
           'mask': tf.constant(True),
           'index': tf.cast(index, tf.int32)}
    if with_instances:
      out['instances'] = tf.cast(example['instances'], tf.int32)
    return out

  examples = encoded.enumerate().map(keep,
                                     num_parallel_calls=tf.data.AUTOTUNE)
  element = examples.element_spec
  fixed = element['image'].shape.is_fully_defined()
  if fixed:
    keys = [tuple(element['labels'].shape)] * num_total
  else:
    sizes = examples.map(lambda x: tf.shape(x['labels'])[:2],
                         num_parallel_calls=tf.data.AUTOTUNE)
    keys = [tuple(int(v) for v in size) for size in sizes.as_numpy_iterator()]
    if buckets:
      keys = [buckets_lib.bucket_shape(*key) for key in keys]
  plan = eval_plan(keys, global_batch_size, process_index, process_count)
  parts = [_group_batches(encoded, keep, key, rows, local_batch, element,
                          spec.ignore_index)
           for key, rows in plan if rows]
  ds = parts[0]
  for part in parts[1:]:
    ds = ds.concatenate(part)
  num_batches = sum(len(rows) for _, rows in plan) // local_batch
  return num_batches, ds.prefetch(tf.data.AUTOTUNE).with_options(_options())


def _group_batches(encoded, keep, shape, rows, local_batch, element,
                   ignore_index):
  """Batches of one size group: the examples `rows` (split indices, -1 for
  blanks) decoded by `keep` and padded to `shape` = (H, W)."""
  wanted = tf.constant([r for r in rows if r >= 0] or [-1], tf.int64)
  blanks = sum(r < 0 for r in rows)
  fill = {'image': 0, 'labels': ignore_index, 'instances': 0}

  @tf.autograph.experimental.do_not_convert
  def pad(example):
    out = dict(example)
    for key, value in fill.items():
      if key in example:
        x = example[key]
        size = tf.shape(x)
        paddings = ([[0, shape[0] - size[0]], [0, shape[1] - size[1]]] +
                    [[0, 0]] * (len(x.shape) - 2))
        x = tf.pad(x, paddings, constant_values=tf.cast(value, x.dtype))
        out[key] = tf.ensure_shape(x, list(shape) + x.shape[2:].as_list())
    return out

  def blank_of(spec, key):
    full = list(shape) + spec.shape[2:].as_list() if spec.shape.rank >= 2 \
        else spec.shape.as_list()
    value = {'labels': ignore_index, 'mask': False, 'index': -1}.get(key, 0)
    return tf.fill(full, tf.cast(value, spec.dtype))

  ds = encoded.enumerate().filter(
      lambda index, _: tf.reduce_any(tf.equal(index, wanted)))
  ds = ds.map(keep, num_parallel_calls=tf.data.AUTOTUNE).map(
      pad, num_parallel_calls=tf.data.AUTOTUNE)
  if blanks:
    blank = {key: blank_of(spec, key) for key, spec in element.items()}
    ds = ds.concatenate(tf.data.Dataset.from_tensors(blank).repeat(blanks))
  return ds.batch(local_batch, drop_remainder=True)


def as_numpy(ds):
  """Iterates a tf.data.Dataset as dicts of NumPy arrays."""
  for batch in ds.as_numpy_iterator():
    yield {k: np.asarray(v) for k, v in batch.items()}
