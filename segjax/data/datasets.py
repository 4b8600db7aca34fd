"""The data sets segjax knows, and how to get their TFDS builders.

A `DatasetSpec` says what a data set's labels mean (classes, which of them are
things) and how to turn one raw TFDS example into segjax's standard example:

  {'image': [H, W, 3] uint8, 'labels': [H, W] uint8 (255 = ignore),
   'instances': [H, W] int32 (0 = no instance)}

`config.data.name` is a TFDS name with an optional builder config, e.g.
`shapes/default`, `shapes/tiny`, `camvid` or `dsb2018`. Data sets users download by hand
(`camvid`, `dsb2018`) follow TFDS's `manual_dir` convention: segjax prepares
them on first use from `config.data.manual_dir` (default: TFDS's manual
folder, `<data_dir>/downloads/manual`) into `config.data.data_dir` (default:
TFDS's data folder).
"""

import dataclasses
import os
from typing import Callable, Optional, Sequence

from absl import logging
from etils import epath

from segjax.data.tf_host import tf  # First: hides accelerators from TF.
import tensorflow_datasets as tfds  # pylint: disable=g-bad-import-order

from segjax.data import camvid
from segjax.data import dsb2018
from segjax.data import shapes
from segjax.data import shapes_render
from segjax.errors import ConfigError
from segjax.errors import DataError

IGNORE_INDEX = 255
# Importing a builder's module registers it with TFDS under its name.
_BUILDER_MODULES = (camvid, dsb2018, shapes)


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """What a data set's labels mean and how to standardise its examples."""
  num_classes: int
  class_names: Sequence[str]
  thing_classes: Sequence[int]
  standardize: Callable[[dict], dict]
  # How segjax may prepare the data set on first use: 'generated' (no files
  # needed), 'manual' (from `config.data.manual_dir`) or None (never).
  prepare: Optional[str] = None


@tf.autograph.experimental.do_not_convert
def _standardize_shapes(example):
  return {
      'image': example['image'],
      'labels': example['segmentation'][..., 0],
      'instances': tf.cast(example['instances'][..., 0], tf.int32),
  }


@tf.autograph.experimental.do_not_convert
def _standardize_semantic(example):
  return {'image': example['image'],
          'labels': example['segmentation'][..., 0]}


DATASETS = {
    'shapes': DatasetSpec(
        num_classes=shapes_render.NUM_CLASSES,
        class_names=shapes_render.CLASS_NAMES,
        thing_classes=shapes_render.THING_CLASSES,
        standardize=_standardize_shapes,
        prepare='generated',
    ),
    'camvid': DatasetSpec(
        num_classes=len(camvid.CLASS_NAMES),
        class_names=camvid.CLASS_NAMES,
        thing_classes=(),
        standardize=_standardize_semantic,
        prepare='manual',
    ),
    'dsb2018': DatasetSpec(
        num_classes=len(dsb2018.CLASS_NAMES),
        class_names=dsb2018.CLASS_NAMES,
        thing_classes=dsb2018.THING_CLASSES,
        standardize=dsb2018.standardize,
        prepare='manual',
    ),
}


def get_spec(name):
  """The `DatasetSpec` of `config.data.name` (e.g. 'shapes/tiny')."""
  base = name.split('/')[0].split(':')[0]
  if base not in DATASETS:
    raise ConfigError(f'config.data.name={name!r}: unknown data set '
                     f'{base!r}; known: {sorted(DATASETS)}.')
  return DATASETS[base]


def default_data_dir():
  """TFDS's default data folder (respects $TFDS_DATA_DIR)."""
  return tfds.core.constants.DATA_DIR


def get_builder(name, data_dir: Optional[str] = None, prepare=True,
                manual_dir: Optional[str] = None):
  """Returns the TFDS builder of `name`, prepared first if segjax can.

  Args:
    name: TFDS name, e.g. 'shapes/default' or 'camvid'.
    data_dir: where prepared data lives; None means TFDS's default folder.
    prepare: prepare the data set if it is not prepared yet: generated ones
      from code, manual ones from `manual_dir`.
    manual_dir: the folder holding a manually downloaded data set; None means
      TFDS's manual folder (`<data_dir>/downloads/manual`).

  Raises:
    ConfigError (a ValueError): unknown name, or a data set that is not
      prepared and cannot be prepared here (the message says where it
      looked); DataError: missing or malformed files, named.
  """
  spec = get_spec(name)
  data_dir = data_dir or default_data_dir()
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except (tfds.core.registered.DatasetNotFoundError, ValueError) as e:
    raise ConfigError(f'config.data.name={name!r}: {e}') from e
  if builder.is_prepared():
    return builder
  if not prepare or spec.prepare is None:
    raise ConfigError(
        f'Data set {name!r} is not prepared in data_dir={data_dir!r}; '
        'prepare it first (see its builder\'s instructions).')
  epath.Path(data_dir).mkdir(parents=True, exist_ok=True)
  download_config = None
  if spec.prepare == 'manual':
    manual_dir = manual_dir or os.path.join(data_dir, 'downloads', 'manual')
    if not epath.Path(manual_dir).is_dir():
      raise DataError(
          f'Data set {name!r}: the manual folder {manual_dir!r} does not '
          'exist (set config.data.manual_dir).\n'
          f'{builder.MANUAL_DOWNLOAD_INSTRUCTIONS}')
    logging.info('Preparing %r from %s into %s.', name, manual_dir, data_dir)
    download_config = tfds.download.DownloadConfig(manual_dir=manual_dir)
  builder.download_and_prepare(download_config=download_config)
  return builder


def builder_for(data_config, prepare=True):
  """`get_builder` with the fields of `config.data`."""
  return get_builder(data_config.name, data_config.get('data_dir'),
                     prepare=prepare,
                     manual_dir=data_config.get('manual_dir'))
