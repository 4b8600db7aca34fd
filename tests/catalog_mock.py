"""Offline stand-ins for TFDS catalog data sets, for tests.

`mock_catalog(name, splits, tmp_path)` runs the real TFDS builder class of
`name` (its features, shapes and dtypes) on examples the test writes:

  * it writes the builder's metadata (dataset_info.json with the split sizes)
    into a folder under `tmp_path`, so `builder.is_prepared()` is True,
    `info.splits[...].num_examples` and `tfds.split_for_jax_process` work,
    and segjax's `get_builder` neither downloads nor prepares anything;
  * inside `tfds.testing.mock_data(policy=USE_FILES)`, every
    `tfds.builder(...)` reads that metadata whatever data_dir it is given
    (nothing touches ~/tensorflow_datasets) and nothing is downloaded;
  * `builder.as_dataset` yields the test's examples, decoded, with the
    output signature of the real features: a test example whose static
    shape or dtype differs from the real data set's fails.

Features an example leaves out are filled with zeros (unknown dimensions: 1,
or the length of a sibling sequence feature), so a test writes only what an
adapter reads.
"""

import contextlib
from unittest import mock

import numpy as np

from segjax.data.tf_host import tf
import tensorflow_datasets as tfds  # pylint: disable=g-bad-import-order


def _signature(tensor_info):
  return tf.nest.map_structure(
      lambda t: tf.TensorSpec(t.shape, t.tf_dtype), tensor_info)


def _fill(info, given, lead=None):
  """`given` completed to the structure of `info` (TensorInfo leaves)."""
  if isinstance(info, dict):
    given = dict(given or {})
    if lead is None:  # Sequence siblings share their leading dimension.
      lead = next((len(v) for k, v in given.items()
                   if not isinstance(info[k], dict) and
                   info[k].shape and info[k].shape[0] is None), None)
    return {k: _fill(v, given.get(k), lead) for k, v in info.items()}
  if given is not None:
    if info.tf_dtype == tf.string:
      return np.asarray(given, dtype=object)
    return np.asarray(given, dtype=info.np_dtype)
  shape = [d if d is not None else (lead if i == 0 and lead is not None else 1)
           for i, d in enumerate(info.shape)]
  if info.tf_dtype == tf.string:
    return np.full(shape, b'', dtype=object)
  return np.zeros(shape, info.np_dtype)


def _split_name(split):
  """'train' of 'train' or of `tfds.split_for_jax_process('train')` (1 of 1)."""
  if isinstance(split, str):
    return split
  if getattr(split, 'count', 1) != 1:
    raise NotImplementedError(f'mock_catalog reads whole splits, not {split}.')
  return split.split


def write_metadata(name, sizes, data_dir):
  """Writes `name`'s dataset_info.json with {split: num_examples}."""
  builder = tfds.builder(name, data_dir=data_dir)
  template = tfds.core.ShardedFileTemplate(
      data_dir=builder.data_dir, template='{DATASET}-{SPLIT}.{FILEFORMAT}-'
      '{SHARD_X_OF_Y}', dataset_name=builder.name, filetype_suffix='tfrecord')
  builder.info.set_splits(tfds.core.SplitDict([
      tfds.core.SplitInfo(name=s, shard_lengths=[n], num_bytes=0,
                          filename_template=template.replace(split=s))
      for s, n in sizes.items()]))
  tf.io.gfile.makedirs(builder.data_dir)
  builder.info.write_to_directory(builder.data_dir)


@contextlib.contextmanager
def mock_catalog(name, splits, tmp_path):
  """Serves `splits` ({split: [example dict]}) as the TFDS data set `name`.

  Args:
    name: a TFDS name, e.g. 'coco/2017_panoptic' (not a segjax alias).
    splits: the examples of each split, as decoded feature dicts.
    tmp_path: a folder for the metadata.

  Yields:
    The data_dir holding the metadata (any data_dir works inside).
  """
  data_dir = str(tmp_path / 'mock_tfds')
  write_metadata(name, {s: len(e) for s, e in splits.items()}, data_dir)

  def as_dataset(self, split=None, **kwargs):
    if kwargs.get('as_supervised') or kwargs.get('batch_size'):
      raise NotImplementedError(f'mock_catalog: as_dataset({kwargs})')
    info = self.info.features.get_tensor_info()
    examples = [_fill(info, e) for e in splits[_split_name(split)]]
    return tf.data.Dataset.from_generator(
        lambda: iter(examples), output_signature=_signature(info))

  with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_FILES,
                              data_dir=data_dir):
    # Replaces mock_data's own as_dataset, which swaps the whole process's
    # epath file system for a fake while it runs: Orbax's checkpoint thread
    # then fails on the real workdir now and then.
    with mock.patch.object(tfds.core.DatasetBuilder, 'as_dataset',
                           as_dataset):
      yield data_dir
