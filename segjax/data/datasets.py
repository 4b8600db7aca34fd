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

A manual data set is prepared from the files its builder reads in
`manual_dir` (`DatasetSpec.sources`), and the prepared set records them
(`segjax.data.fingerprint`: names, sizes, modification times, and the
builder's version). Each run compares its source folder with that record:

  * unchanged: the prepared set is read, nothing is prepared again;
  * changed (another folder, or files edited, added or removed): the data
    set is prepared again into a folder of its own,
    `<data_dir>/by_source/<name>-<fingerprint>/` (a TFDS data_dir), and the
    log says why ("source folder changed since ...: N files differ;
    preparing again in ..."). The set prepared before stays as it was, so a
    run reading it is not disturbed, and going back to the old files reads
    it again;
  * the first set prepared in a data_dir lives where TFDS puts it,
    `<data_dir>/<name>/<version>/`, so the usual layout stays;
  * a set prepared before segjax kept records (no record) is taken as
    prepared from the source folder if every source file is older than it
    (a warning says so, and the record is written); a newer file means it is
    prepared again, as for a change;
  * no source files (e.g. the manual folder was deleted after preparing):
    the prepared set in `<data_dir>/<name>/<version>/` is read, and the log
    says from where it was prepared.
"""

import dataclasses
import os
from typing import Callable, Optional, Sequence, Tuple

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
from segjax.data import fingerprint
from segjax.data import folder
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
  # downloads it), 'folder' (from config.data.images_dir / masks_dir) or
  # None (never).
  prepare: Optional[str] = None
  # The TFDS data set to read when it is not the segjax name itself.
  tfds_name: Optional[str] = None
  # The label of void pixels (never a class; losses and metrics skip it,
  # augmentation pads labels with it).
  ignore_index: int = 255
  # For 'manual' data sets: manual_dir -> (root, names under root) of the
  # files and folders the builder reads, which the prepared set records; it
  # raises DataError when they are not there. None: all of manual_dir.
  sources: Optional[Callable[[str], Tuple[os.PathLike, Sequence[str]]]] = None

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


def _cityscapes_sources(manual_dir):
  """The zips in manual_dir that TFDS's `cityscapes` builder reads."""
  names = sorted(p.name for p in epath.Path(manual_dir).glob('*.zip'))
  return manual_dir, names


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
        sources=camvid.sources,
    ),
    'dsb2018': DatasetSpec(
        class_names=dsb2018.CLASS_NAMES,
        thing_classes=dsb2018.THING_CLASSES,
        standardize=dsb2018.standardize,
        prepare='manual',
        sources=dsb2018.sources,
    ),
    # TFDS's builder; configs semantic_segmentation (gtFine, the default)
    # and semantic_segmentation_extra (gtCoarse).
    'cityscapes': DatasetSpec(
        class_names=cityscapes.CLASS_NAMES,
        thing_classes=cityscapes.THING_CLASSES,
        standardize=cityscapes.standardize_semantic,
        prepare='manual',
        sources=_cityscapes_sources,
    ),
    'cityscapes_panoptic': DatasetSpec(
        class_names=cityscapes.CLASS_NAMES,
        thing_classes=cityscapes.THING_CLASSES,
        standardize=cityscapes_panoptic.standardize,
        prepare='manual',
        sources=cityscapes_panoptic.sources,
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
        sources=ade20k.sources,
    ),
    'oxford_iiit_pet': _pets(pets.BINARY_CLASS_NAMES,
                             pets.standardize_binary),
    'oxford_iiit_pet_trimap': _pets(pets.TRIMAP_CLASS_NAMES,
                                    pets.standardize_trimap),
}

# A user's folder of images and masks, described by config.data's fields.
FOLDER = 'folder'

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
  if name == FOLDER:
    raise ConfigError("config.data.name='folder': its classes come from "
                      'config.data; use datasets.spec_for(config.data).')
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
  """The `DatasetSpec` of a catalog name (e.g. 'shapes/tiny')."""
  return _resolve(name)[1]


def spec_for(data_config):
  """The `DatasetSpec` of `config.data`: a catalog name's, or the folder
  data set's, whose classes come from its fields (`segjax.data.folder`)."""
  if data_config.name != FOLDER:
    return get_spec(data_config.name)
  class_names, thing_classes, standardize = folder.spec_fields(data_config)
  return DatasetSpec(class_names=class_names, thing_classes=thing_classes,
                     standardize=standardize, prepare='folder')


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


# Data sets prepared again from a changed source folder live in TFDS
# data_dirs of their own under <data_dir>/by_source/.
BY_SOURCE = fingerprint.BY_SOURCE

# Messages already logged by this process: segjax reads the builder several
# times per run (data set size, training and evaluation streams).
_logged = set()


def _log_once(log, message):
  if message not in _logged:
    _logged.add(message)
    log(message)


def _count(n, noun):
  return f'{n} {noun}' if n == 1 else f'{n} {noun}s'


def _scan_sources(spec, manual_dir):
  """(root, files) the builder would read in `manual_dir`, or None if none.

  None when the folder, its expected layout or any file in it is missing:
  then there is nothing to compare a prepared set with (and preparing
  reports what is missing).
  """
  if not manual_dir or not epath.Path(manual_dir).is_dir():
    return None
  try:
    root, names = (spec.sources(manual_dir) if spec.sources
                   else (manual_dir, ('',)))
  except DataError:
    return None
  files = fingerprint.scan(root, names)
  return (root, files) if files else None


def _is_prepared(builder):
  # Asked first: TFDS warns about every folder it finds unprepared, even
  # one that does not exist, which would name by_source/ folders nobody
  # made.
  return builder.data_path.exists() and builder.is_prepared()


def _prepared_from(record):
  """How a prepared set's record reads in a log line."""
  return f'from {record["source"]} ({record["prepared"]})'


def _source_state(name, builder, root, files, key):
  """Whether `builder`'s prepared set was prepared from `files`.

  Returns:
    (True, None, None) if it was, or if it is a set without a record whose
    files are all older than it (then taken as prepared from `files`, with a
    warning, and its record written); else (False, why, detail): what
    changed, for the log.
  """
  folder = builder.data_path
  record = fingerprint.read_record(folder)
  if record is not None:
    if record['fingerprint'] == key:
      _log_once(logging.info, f'Data set {name!r}: reading {folder}, '
                f'prepared {_prepared_from(record)}; source unchanged.')
      return True, None, None
    added, removed, changed = fingerprint.differences(
        fingerprint.read_listing(folder), files)
    n = len(added) + len(removed) + len(changed)
    example = (added + removed + changed)[:1]
    return False, (
        f'source folder changed since {folder} was prepared '
        f'{_prepared_from(record)}: {_count(n, "file")} '
        f'{"differs" if n == 1 else "differ"}'), (
            f'in {root}: {len(added)} new, {len(removed)} gone, '
            f'{len(changed)} changed'
            f'{", e.g. " + example[0] if example else ""}')
  # Prepared by a segjax that kept no record of its source.
  prepared = fingerprint.mtime_ns(folder / 'dataset_info.json')
  newer = fingerprint.newer_than(files, prepared)
  if newer:
    return False, (
        f'source folder changed since {folder} was prepared (it kept no '
        f'record of its source): {_count(len(newer), "file")} '
        f'{"is" if len(newer) == 1 else "are"} newer than it'), (
            f'in {root}, e.g. {newer[0]}')
  logging.warning(
      'Data set %r: %s has no record of its source; every file in %s is '
      'older than it, so it is taken as prepared from them (delete it to '
      'prepare again).', name, folder, root)
  try:
    fingerprint.write_record(folder, fingerprint=key,
                             identity=builder.info.full_name, source=root,
                             files=files)
  except OSError as e:  # A read-only data_dir: check again next time.
    logging.warning('Data set %r: cannot record its source in %s: %s',
                    name, folder, e)
  return True, None, None


def _prepare(name, spec, builder, data_dir, manual_dir):
  """Prepares `builder` (not prepared yet) the way `spec` says."""
  epath.Path(data_dir).mkdir(parents=True, exist_ok=True)
  download_config = None
  if spec.prepare == 'manual':
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


def _not_prepared(name, data_dir):
  return ConfigError(
      f'Data set {name!r} is not prepared in data_dir={data_dir!r}; '
      'prepare it first (see its builder\'s instructions).')


def _manual_builder(name, spec, builder, data_dir, manual_dir, prepare):
  """The builder of a manual data set prepared from `manual_dir`'s files.

  See the module docstring for where each prepared set lives.
  """
  source = _scan_sources(spec, manual_dir)
  if source is None:
    if _is_prepared(builder):
      record = fingerprint.read_record(builder.data_path)
      origin = (_prepared_from(record) if record
                else 'before segjax recorded sources')
      _log_once(logging.info, f'Data set {name!r}: no source files in '
                f'{manual_dir}; reading {builder.data_path}, prepared '
                f'{origin}.')
      return builder
    if not prepare:
      raise _not_prepared(name, data_dir)
    _prepare(name, spec, builder, data_dir, manual_dir)  # Says what lacks.
    return builder
  root, files = source
  identity = builder.info.full_name
  key = fingerprint.digest(files, identity)
  why = detail = None
  if _is_prepared(builder):
    same, why, detail = _source_state(name, builder, root, files, key)
    if same:
      return builder
  own_dir = os.fspath(epath.Path(data_dir) / BY_SOURCE /
                      f'{builder.name}-{key[:12]}')
  own = tfds.builder(tfds_name(name), data_dir=own_dir)
  if _is_prepared(own):
    _log_once(logging.info, f'Data set {name!r}: reading {own.data_path}, '
              f'prepared from these files of {root}.')
    return own
  if why is None:  # Nothing prepared yet: TFDS's usual folder.
    own, own_dir = builder, data_dir
  if not prepare:
    raise ConfigError(
        f'Data set {name!r} is not prepared from the files in {root} '
        f'(data_dir={data_dir!r}' + (f'; {why}, {detail}' if why else '') +
        '); prepare it first.')
  if why is not None:
    logging.warning('Data set %r: %s; preparing again in %s (%s).', name,
                    why, own.data_path, detail)
  _prepare(name, spec, own, own_dir, manual_dir)
  # The files as scanned before preparing: a change while it ran shows as
  # a difference next time.
  fingerprint.write_record(own.data_path, fingerprint=key, identity=identity,
                           source=root, files=files)
  return own


def get_builder(name, data_dir: Optional[str] = None, prepare=True,
                manual_dir: Optional[str] = None):
  """Returns the TFDS builder of `name`, prepared first if segjax can.

  A manual data set is read from a set prepared from the files now in
  `manual_dir`, prepared again (into a folder of its own) when they changed;
  see the module docstring.

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
  if spec.prepare == 'manual':
    manual_dir = manual_dir or os.path.join(data_dir, 'downloads', 'manual')
    return _manual_builder(name, spec, builder, data_dir, manual_dir,
                           prepare)
  if builder.is_prepared():
    return builder
  if not prepare or spec.prepare is None:
    raise _not_prepared(name, data_dir)
  _prepare(name, spec, builder, data_dir, manual_dir)
  return builder


def builder_for(data_config, prepare=True):
  """`get_builder` with the fields of `config.data` (a folder data set's
  builder from `segjax.data.folder`)."""
  if data_config.name == FOLDER:
    return folder.get_builder(
        data_config, data_config.data_dir or default_data_dir(), prepare)
  return get_builder(data_config.name, data_config.data_dir,
                     prepare=prepare,
                     manual_dir=data_config.manual_dir)
