"""The data sets segjax knows, and how to get their TFDS builders.

A `DatasetSpec` says what a data set's labels mean (classes, which of them are
things) and how to turn one raw TFDS example into segjax's standard example:

  {'image': [H, W, 3] uint8, 'labels': [H, W] uint8 (255 = ignore),
   'instances': [H, W] int32 (0 = no instance)}

`config.data.name` is a TFDS name with an optional builder config and
version, e.g. `shapes/tiny`, `camvid`, `coco/2017_panoptic` or
`cityscapes:1.0.0`. `get_spec` looks the full name up first (without the
version), then the part before '/': `coco/2017_panoptic` is a segjax data set
while the other `coco` configs are not. A spec with a `tfds_name` reads
another TFDS data set with its own label mapping: `oxford_iiit_pet_trimap`
is TFDS's `oxford_iiit_pet` with the border as a third class.

How each data set is prepared on first use (`DatasetSpec.prepare`):
'generated' from code (`shapes`); 'manual' from files users download by
hand, following TFDS's `manual_dir` convention (`camvid`, `dsb2018`,
`cityscapes`, `cityscapes_panoptic`, `ade20k`): from
`config.data.manual_dir` (default: TFDS's manual folder,
`<data_dir>/downloads/manual`) into `config.data.data_dir` (default: TFDS's
data folder); 'download': TFDS downloads it (`coco/2017_panoptic`,
`oxford_iiit_pet`).
"""

import dataclasses
import os
from typing import Callable, Optional, Sequence

from absl import logging
from etils import epath

from segjax.data.tf_host import tf  # First: hides accelerators from TF.
import tensorflow_datasets as tfds  # pylint: disable=g-bad-import-order

from segjax.data import ade20k
from segjax.data import camvid
from segjax.data import cityscapes
from segjax.data import cityscapes_panoptic
from segjax.data import coco_panoptic
from segjax.data import dsb2018
from segjax.data import pets
from segjax.data import shapes
from segjax.data import shapes_render
from segjax.errors import ConfigError
from segjax.errors import DataError

IGNORE_INDEX = 255
# Importing a builder's module registers it with TFDS under its name.
_BUILDER_MODULES = (ade20k, camvid, cityscapes_panoptic, dsb2018, shapes)


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """What a data set's labels mean and how to standardise its examples."""
  class_names: Sequence[str]
  thing_classes: Sequence[int]
  standardize: Callable[[dict], dict]
  # How segjax may prepare the data set on first use: 'generated' (no files
  # needed), 'manual' (from `config.data.manual_dir`), 'download' (TFDS
  # downloads it) or None (never).
  prepare: Optional[str] = None
  # The TFDS data set to read when it is not the segjax name itself.
  tfds_name: Optional[str] = None
  # The label of void pixels (never a class; losses and metrics skip it,
  # augmentation pads labels with it).
  ignore_index: int = 255

  @property
  def num_classes(self):
    return len(self.class_names)


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


def _pets(class_names, standardize):
  return DatasetSpec( class_names=class_names,
      thing_classes=pets.THING_CLASSES, standardize=standardize,
      prepare='download', tfds_name='oxford_iiit_pet')


DATASETS = {
    'shapes': DatasetSpec(
        class_names=shapes_render.CLASS_NAMES,
        thing_classes=shapes_render.THING_CLASSES,
        standardize=_standardize_shapes,
        prepare='generated',
    ),
    'camvid': DatasetSpec(
        class_names=camvid.CLASS_NAMES,
        thing_classes=(),
        standardize=_standardize_semantic,
        prepare='manual',
    ),
    'dsb2018': DatasetSpec(
        class_names=dsb2018.CLASS_NAMES,
        thing_classes=dsb2018.THING_CLASSES,
        standardize=dsb2018.standardize,
        prepare='manual',
    ),
    # TFDS's builder; configs semantic_segmentation (gtFine, the default)
    # and semantic_segmentation_extra (gtCoarse).
    'cityscapes': DatasetSpec(
        class_names=cityscapes.CLASS_NAMES,
        thing_classes=cityscapes.THING_CLASSES,
        standardize=cityscapes.standardize_semantic,
        prepare='manual',
    ),
    'cityscapes_panoptic': DatasetSpec(
        class_names=cityscapes.CLASS_NAMES,
        thing_classes=cityscapes.THING_CLASSES,
        standardize=cityscapes_panoptic.standardize,
        prepare='manual',
    ),
    'coco/2017_panoptic': DatasetSpec(
        class_names=coco_panoptic.CLASS_NAMES,
        thing_classes=coco_panoptic.THING_CLASSES,
        standardize=coco_panoptic.standardize,
        prepare='download',
    ),
    'ade20k': DatasetSpec(
        class_names=ade20k.CLASS_NAMES,
        thing_classes=(),
        standardize=_standardize_semantic,
        prepare='manual',
    ),
    'oxford_iiit_pet': _pets(pets.BINARY_CLASS_NAMES,
                             pets.standardize_binary),
    'oxford_iiit_pet_trimap': _pets(pets.TRIMAP_CLASS_NAMES,
                                    pets.standardize_trimap),
}

# TFDS names segjax deliberately does not read, and why.
_NO_LABELS = ("the stereo configs of TFDS's cityscapes have no segmentation "
              "labels; use 'cityscapes/semantic_segmentation'.")
UNSUPPORTED = {
    'cityscapes/stereo_disparity': _NO_LABELS,
    'cityscapes/stereo_disparity_extra': _NO_LABELS,
    'scene_parse150': (
        "TFDS's scene_parse150 holds the Places Challenge 2017 instance "
        'annotations (annotations_instance.tar: 100 object categories, no '
        "stuff), not the 150-class semantic labels; use 'ade20k', segjax's "
        'builder of the official ADEChallengeData2016 release.'),
}


def _resolve(name):
  """(registry key, spec) of `name`: the full name first, then its base."""
  full = name.split(':')[0]
  base = full.split('/')[0]
  for key in (full, base):
    if key in UNSUPPORTED:
      raise ConfigError(f'config.data.name={name!r}: {UNSUPPORTED[key]}')
    if key in DATASETS:
      return key, DATASETS[key]
  raise ConfigError(f'config.data.name={name!r}: unknown data set '
                    f'{base!r}; known: {sorted(DATASETS)}.')


def get_spec(name):
  """The `DatasetSpec` of `config.data.name` (e.g. 'shapes/tiny')."""
  return _resolve(name)[1]


def tfds_name(name):
  """The TFDS name `name` reads, with its config and version kept.

  E.g. 'oxford_iiit_pet_trimap:4.0.0' -> 'oxford_iiit_pet:4.0.0'; names
  without a `tfds_name` in their spec are returned as they are.
  """
  key, spec = _resolve(name)
  if spec.tfds_name is None:
    return name
  return spec.tfds_name + name[len(key):]


def default_data_dir():
  """TFDS's default data folder (respects $TFDS_DATA_DIR)."""
  return tfds.core.constants.DATA_DIR


def get_builder(name, data_dir: Optional[str] = None, prepare=True,
                manual_dir: Optional[str] = None):
  """Returns the TFDS builder of `name`, prepared first if segjax can.

  Args:
    name: a segjax data set name (a TFDS name, or a spec's alias of one),
      e.g. 'shapes/default', 'camvid' or 'oxford_iiit_pet_trimap'.
    data_dir: where prepared data lives; None means TFDS's default folder.
    prepare: prepare the data set if it is not prepared yet: generated ones
      from code, manual ones from `manual_dir`, 'download' ones by TFDS's
      own download.
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
    builder = tfds.builder(tfds_name(name), data_dir=data_dir)
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
  elif spec.prepare == 'download':
    logging.info('Downloading and preparing %r into %s.', name, data_dir)
  try:
    builder.download_and_prepare(download_config=download_config)
  except AssertionError as e:
    # TFDS's catalog builders (e.g. cityscapes) assert that the manual files
    # exist; segjax's own builders raise DataError themselves.
    raise DataError(f'Data set {name!r}: {e}\n'
                    f'{builder.MANUAL_DOWNLOAD_INSTRUCTIONS or ""}') from e
  return builder


def builder_for(data_config, prepare=True):
  """`get_builder` with the fields of `config.data`."""
  return get_builder(data_config.name, data_config.data_dir,
                     prepare=prepare,
                     manual_dir=data_config.manual_dir)
