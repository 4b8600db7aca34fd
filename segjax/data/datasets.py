"""The data sets segjax knows, and how to get their TFDS builders.

A `DatasetSpec` says what a data set's labels mean (classes, which of them are
things) and how to turn one raw TFDS example into segjax's standard example:

  {'image': [H, W, 3] uint8, 'labels': [H, W] uint8 (255 = ignore),
   'instances': [H, W] int32 (0 = no instance)}

`config.data.name` is a TFDS name with an optional builder config, e.g.
`shapes/default` or `shapes/tiny`.
"""

import dataclasses
from typing import Callable, Optional, Sequence

from etils import epath

from segjax.data.tf_host import tf  # First: hides accelerators from TF.
import tensorflow_datasets as tfds  # pylint: disable=g-bad-import-order

from segjax.data import shapes  # pylint: disable=unused-import  (registers)
from segjax.data import shapes_render
from segjax.errors import ConfigError

IGNORE_INDEX = 255


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """What a data set's labels mean and how to standardise its examples."""
  num_classes: int
  class_names: Sequence[str]
  thing_classes: Sequence[int]
  standardize: Callable[[dict], dict]
  # True when `download_and_prepare` needs no download or manual files, so
  # segjax may build the data set on first use.
  generated: bool = False


@tf.autograph.experimental.do_not_convert
def _standardize_shapes(example):
  return {
      'image': example['image'],
      'labels': example['segmentation'][..., 0],
      'instances': tf.cast(example['instances'][..., 0], tf.int32),
  }


DATASETS = {
    'shapes': DatasetSpec(
        num_classes=shapes_render.NUM_CLASSES,
        class_names=shapes_render.CLASS_NAMES,
        thing_classes=shapes_render.THING_CLASSES,
        standardize=_standardize_shapes,
        generated=True,
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


def get_builder(name, data_dir: Optional[str] = None, prepare=True):
  """Returns the TFDS builder of `name`, built first if segjax can build it.

  Args:
    name: TFDS name, e.g. 'shapes/default'.
    data_dir: where prepared data lives; None means TFDS's default folder.
    prepare: build generated data sets that are not prepared yet.

  Raises:
    ConfigError (a ValueError): unknown name, or a data set that is not
      prepared and cannot be built here (the message says where it looked).
  """
  spec = get_spec(name)
  data_dir = data_dir or default_data_dir()
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except (tfds.core.registered.DatasetNotFoundError, ValueError) as e:
    raise ConfigError(f'config.data.name={name!r}: {e}') from e
  if not builder.is_prepared():
    if not (prepare and spec.generated):
      raise ConfigError(
          f'Data set {name!r} is not prepared in data_dir={data_dir!r}; '
          'prepare it first (see its builder\'s instructions).')
    epath.Path(data_dir).mkdir(parents=True, exist_ok=True)
    builder.download_and_prepare()
  return builder
