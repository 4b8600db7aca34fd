r"""`folder`: a user's own folder of images and folder of masks, as a data set.

Configured by `config.data` alone (`config.data.name = 'folder'`):

  images_dir, masks_dir  the folders (local or gs://); may be one folder
                         when mask_suffix tells masks apart
  image_suffix, mask_suffix  name parts before the extension:
                         0001.jpg <-> 0001_mask.png is mask_suffix='_mask'
  mask_kind    'semantic': class-id maps (8 or 16-bit single channel; the
                 value `ignore_value` is void), or RGB maps through
                 `palette` (class id -> (r, g, b)), `ignore_color` void;
               'binary': foreground where value > binary_threshold * range
                 (the range from the mask's largest value: 1 for 0/1
                 masks, else 255, else 65535);
               'instances': instance-id maps, 0 background, 1..N objects
                 (ids up to 65535, not necessarily contiguous); one thing
                 class (class 1) unless `classes_dir` holds a class-id map
                 per mask (same relative name), each instance inside one
                 thing class
  class_names  default: semantic none (required), binary
               ('background', 'foreground'), instances ('background',
               'object')
  thing_classes  names or ids; default: instances every class but 0, else
               none
  splits       'auto', 'folders' (train/ val/ test/ subfolders of both
               folders), 'lists' (`split_lists`: {split: text file of
               keys}), 'hash' (`split_fractions` of train, validation,
               test by the SHA-256 of each key: the same on every machine)

Pairing, image conversion and split rules: `segjax.data.folder_files`.

Prepared through TFDS like the built-in sets: every image and mask is
decoded and checked once, images stored as PNG (converted to 8-bit RGB),
labels as uint8 PNG (255 void), instance ids as uint16 PNG. The prepared
set is keyed by a fingerprint of the source files (names, sizes,
modification times: `segjax.data.fingerprint`) and of the fields above, and
lives in `<data_dir>/by_source/folder-<fingerprint>/`: change a file or a
field and the next run prepares it again in a folder of its own, leaving
the earlier one as it was; unchanged, it is read as it is.
"""

import dataclasses
import json
import os

from absl import logging
from etils import epath
import numpy as np

from segjax.data.tf_host import tf  # First: hides accelerators from TF.
import tensorflow_datasets as tfds  # pylint: disable=g-bad-import-order

from segjax.data import fingerprint
from segjax.data import folder_files
from segjax.data import image_files
from segjax.errors import ConfigError
from segjax.errors import DataError

IGNORE_INDEX = 255
VERSION = '1.0.0'
KINDS = ('semantic', 'binary', 'instances')
_SHOWN = 5  # Colours or values named in an error.
DEFAULT_CLASSES = {'binary': ('background', 'foreground'),
                   'instances': ('background', 'object')}
# The config.data fields that decide the prepared examples.
FIELDS = ('images_dir', 'masks_dir', 'classes_dir', 'image_suffix',
          'mask_suffix', 'mask_kind', 'class_names', 'thing_classes',
          'ignore_value',
          'palette', 'ignore_color', 'binary_threshold', 'splits',
          'split_lists', 'split_fractions')


@dataclasses.dataclass(frozen=True)
class Settings:
  """The checked `config.data` fields of a folder data set."""
  images_dir: str
  masks_dir: str
  classes_dir: str
  image_suffix: str
  mask_suffix: str
  mask_kind: str
  class_names: tuple
  thing_classes: tuple
  ignore_value: int
  palette: tuple
  ignore_color: tuple
  binary_threshold: float
  splits: str
  split_lists: tuple
  split_fractions: tuple

  def identity(self):
    """What decides the prepared examples, as text for the fingerprint."""
    fields = {f: getattr(self, f) for f in FIELDS}
    return f'folder:{VERSION}:' + json.dumps(fields, sort_keys=True)


def _absolute(path):
  """A local path made absolute (a run started elsewhere finds the same
  prepared set); a URI as it is."""
  path = str(path)
  return path if '://' in path else os.path.abspath(os.path.expanduser(path))


def _class_names(d, kind):
  names = tuple(d.class_names or DEFAULT_CLASSES.get(kind, ()))
  if kind == 'semantic' and not names:
    raise ConfigError('config.data.class_names is not set: a semantic '
                      'folder data set needs its class names, in id order.')
  if kind == 'binary' and len(names) != 2:
    raise ConfigError(f'config.data.class_names={names}: a binary data set '
                      'has two classes (background, foreground).')
  if not 1 <= len(names) <= IGNORE_INDEX:
    raise ConfigError(f'config.data.class_names: {len(names)} classes; '
                      f'1 to {IGNORE_INDEX} fit a uint8 label map.')
  return names


def _thing_ids(d, kind, names):
  """Sorted thing class ids from names or ids (the kind's default: None)."""
  things = d.thing_classes
  if things is None:
    things = range(1, len(names)) if kind == 'instances' else ()
  ids = set()
  for t in things:
    if isinstance(t, str) and t in names:
      ids.add(names.index(t))
    elif isinstance(t, int) and 0 <= t < len(names):
      ids.add(t)
    else:
      raise ConfigError(f'config.data.thing_classes: {t!r} is neither a '
                        f'class name nor a class id of {names}.')
  ids = tuple(sorted(ids))
  if kind == 'instances' and not d.classes_dir and (
      len(names) != 2 or ids != (1,)):
    raise ConfigError(
        f'config.data: instance masks without classes_dir have one object '
        f'class: class_names (background, object) and thing_classes (1,), '
        f'not {names} / {ids}; give classes_dir for several classes.')
  return ids


def _colour(value, field):
  colour = tuple(value)
  if len(colour) != 3 or not all(
      isinstance(v, int) and 0 <= v <= 255 for v in colour):
    raise ConfigError(f'config.data.{field}: {value!r} is not an (r, g, b) '
                      'of three ints in 0..255.')
  return colour


def _check_splits(d):
  if d.splits not in ('auto', 'folders', 'lists', 'hash'):
    raise ConfigError(f'config.data.splits={d.splits!r}: use auto, folders, '
                      'lists or hash.')
  lists = tuple(sorted((k, _absolute(v))
                       for k, v in dict(d.split_lists or {}).items() if v))
  if d.splits == 'lists' and not lists:
    raise ConfigError("config.data.splits='lists' needs "
                      'config.data.split_lists.train (and .validation, '
                      '.test): text files of image names.')
  fractions = tuple(float(f) for f in d.split_fractions)
  if (len(fractions) != 3 or min(fractions) < 0 or fractions[0] <= 0
      or abs(sum(fractions) - 1) > 1e-6):
    raise ConfigError(f'config.data.split_fractions={fractions}: three '
                      'fractions (train > 0, validation, test >= 0) summing '
                      'to 1.')
  return lists, fractions


def settings_of(data_config):
  """`config.data` -> Settings; ConfigError naming a bad field."""
  d = data_config
  kind = d.mask_kind
  if kind not in KINDS:
    raise ConfigError(f'config.data.mask_kind={kind!r}: use one of {KINDS}.')
  for field in ('images_dir', 'masks_dir'):
    if not d[field]:
      raise ConfigError(f'config.data.{field} is not set: the folder data '
                        'set needs images_dir and masks_dir.')
  names = _class_names(d, kind)
  palette = tuple(_colour(c, 'palette') for c in (d.palette or ()))
  if palette and len(palette) != len(names):
    raise ConfigError(f'config.data.palette has {len(palette)} colours for '
                      f'{len(names)} classes; give one (r, g, b) per class.')
  ignore_color = (_colour(d.ignore_color, 'ignore_color')
                  if d.ignore_color else ())
  if ignore_color and not palette:
    raise ConfigError('config.data.ignore_color is set without a palette; '
                      'it applies to RGB masks read through the palette.')
  ignore = int(d.ignore_value)
  if kind != 'binary' and 0 <= ignore < len(names):
    raise ConfigError(f'config.data.ignore_value={ignore} is the id of class '
                      f'{names[ignore]!r}; void needs a value of its own.')
  if not 0 <= float(d.binary_threshold) < 1:
    raise ConfigError(f'config.data.binary_threshold={d.binary_threshold}: '
                      'a fraction of the mask scale in [0, 1).')
  lists, fractions = _check_splits(d)
  return Settings(
      images_dir=_absolute(d.images_dir), masks_dir=_absolute(d.masks_dir),
      classes_dir=_absolute(d.classes_dir) if d.classes_dir else '',
      image_suffix=d.image_suffix or '', mask_suffix=d.mask_suffix or '',
      mask_kind=kind, class_names=names,
      thing_classes=_thing_ids(d, kind, names), ignore_value=ignore,
      palette=palette, ignore_color=ignore_color,
      binary_threshold=float(d.binary_threshold), splits=d.splits,
      split_lists=lists, split_fractions=fractions)


def _semantic(mask, settings, path):
  """Class-id map (or RGB through the palette) -> [H, W] uint8, 255 void."""
  num = len(settings.class_names)
  if mask.ndim == 3:
    if not settings.palette:
      raise DataError(f'{path}: an RGB mask; set config.data.palette (one '
                      '(r, g, b) per class) to read colour masks.')
    rgb = mask[..., :3].astype(np.int64)
    code = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    labels = np.full(code.shape, -1, np.int64)
    for class_id, (r, g, b) in enumerate(settings.palette):
      labels[code == (r << 16 | g << 8 | b)] = class_id
    if settings.ignore_color:
      r, g, b = settings.ignore_color
      labels[code == (r << 16 | g << 8 | b)] = IGNORE_INDEX
    if (labels < 0).any():
      bad = np.unique(code[labels < 0])[:_SHOWN].tolist()
      colours = [((c >> 16) & 255, (c >> 8) & 255, c & 255) for c in bad]
      raise DataError(f'{path}: colours {colours} are in neither '
                      'config.data.palette nor ignore_color.')
    return labels.astype(np.uint8)
  values = mask.astype(np.int64)
  void = values == settings.ignore_value
  bad = np.unique(values[~void & ((values < 0) | (values >= num))])
  if bad.size:
    raise DataError(
        f'{path}: values {bad[:_SHOWN].tolist()} are neither classes '
        f'(0..{num - 1}) nor config.data.ignore_value '
        f'({settings.ignore_value}).')
  return np.where(void, IGNORE_INDEX, values).astype(np.uint8)



def _binary(mask, settings, path):
  """A 0/1, 0/255 or 16-bit mask -> [H, W] uint8 0 / 1.

  Foreground where value > binary_threshold * scale; the scale is the
  mask's range read from its largest value: 1 (0/1), 255, or 65535.
  """
  if mask.ndim == 3:
    if not (mask[..., :3] == mask[..., :1]).all():
      raise DataError(f'{path}: a colour binary mask; expected one channel '
                      '(or equal R, G and B).')
    mask = mask[..., 0]
  values = mask.astype(np.int64)
  top = int(values.max(initial=0))
  scale = 1 if top <= 1 else 255 if top <= 255 else 65535
  return (values > settings.binary_threshold * scale).astype(np.uint8)


def _instances(mask, path):
  """An instance-id map -> [H, W] uint16 (0 background)."""
  if mask.ndim != 2:
    raise DataError(f'{path}: instance masks are single-channel id maps '
                    f'(0 background, 1..N objects); this one has shape '
                    f'{mask.shape}.')
  ids = mask.astype(np.int64)
  if ids.min(initial=0) < 0 or ids.max(initial=0) > 65535:
    raise DataError(f'{path}: instance ids must be 0..65535; found '
                    f'{ids.min()}..{ids.max()}.')
  return ids.astype(np.uint16)


def load_example(key, image_path, mask_path, settings):
  """Reads and checks one pair -> the builder's TFDS example.

  Returns:
    {'image': PNG bytes of [H, W, 3] uint8, 'segmentation': [H, W, 1]
    uint8 (class ids, 255 void), 'instances' ('instances' masks only):
    [H, W, 1] uint16, 'image_id': key}.

  Raises:
    DataError naming the file at fault.
  """
  image = folder_files.read_image(image_path)
  mask = folder_files.read_mask(mask_path)
  if mask.shape[:2] != image.shape[:2]:
    raise DataError(
        f'{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image '
        f'{image_path} is {image.shape[1]}x{image.shape[0]} (width x height).')
  example = {'image': image_files.encode_png(image), 'image_id': key}
  kind = settings.mask_kind
  if kind == 'semantic':
    labels = _semantic(mask, settings, mask_path)
  elif kind == 'binary':
    labels = _binary(mask, settings, mask_path)
  else:
    instances = _instances(mask, mask_path)
    labels = (instances > 0).astype(np.uint8)
    if settings.classes_dir:
      labels = _instance_classes(mask_path, instances, settings)
    example['instances'] = instances[..., None]
  example['segmentation'] = labels[..., None]
  return example


def _instance_classes(mask_path, instances, settings):
  """[H, W] uint8 class ids of an instance mask, from `classes_dir`'s map at
  the mask's relative name; each instance must lie in one thing class."""
  rel = str(mask_path)[len(settings.masks_dir):].lstrip('/')
  path = epath.Path(settings.classes_dir) / rel
  if not path.exists():
    raise DataError(f'{mask_path}: no class map {path} in '
                    'config.data.classes_dir.')
  classes = folder_files.read_mask(path)
  if classes.shape[:2] != instances.shape:
    raise DataError(f'{path}: class map is {classes.shape[1]}x'
                    f'{classes.shape[0]}, its mask {mask_path} '
                    f'{instances.shape[1]}x{instances.shape[0]}.')
  labels = _semantic(classes, settings, path)
  # Distinct (instance, class) pairs: an instance in two rows spans classes.
  on = instances > 0
  pairs = np.unique(np.stack([instances[on].astype(np.int64),
                              labels[on].astype(np.int64)]), axis=1)
  ids, counts = np.unique(pairs[0], return_counts=True)
  things = set(settings.thing_classes)
  for i, c in pairs.T:
    if counts[np.searchsorted(ids, i)] > 1 or int(c) not in things:
      found = pairs[1][pairs[0] == i].tolist()
      raise DataError(f'{path}: instance {i} of {mask_path} covers classes '
                      f'{found}; each instance must lie in one thing class '
                      f'(thing classes: {sorted(things)}).')
  return labels


@tf.autograph.experimental.do_not_convert
def standardize_semantic(example):
  return {'image': example['image'],
          'labels': example['segmentation'][..., 0]}


@tf.autograph.experimental.do_not_convert
def standardize_instances(example):
  return {'image': example['image'],
          'labels': example['segmentation'][..., 0],
          'instances': tf.cast(example['instances'][..., 0], tf.int32)}


class Folder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A folder of images and a folder of masks (see the module docstring)."""

  VERSION = tfds.core.Version(VERSION)
  RELEASE_NOTES = {str(VERSION): 'First release.'}

  def __init__(self, *, settings, pairs, splits, **kwargs):
    self._settings, self._pairs, self._splits = settings, pairs, splits
    super().__init__(**kwargs)

  def _info(self):
    features = {
        'image': tfds.features.Image(shape=(None, None, 3)),
        # Class ids, 255 void (binary: 0 / 1).
        'segmentation': tfds.features.Image(shape=(None, None, 1),
                                            encoding_format='png'),
        'image_id': tfds.features.Text(),
    }
    if self._settings.mask_kind == 'instances':
      features['instances'] = tfds.features.Image(
          shape=(None, None, 1), dtype=np.uint16, encoding_format='png')
    return self.dataset_info_from_configs(
        description=__doc__, features=tfds.features.FeaturesDict(features),
        metadata=tfds.core.MetadataDict(
            class_names=list(self._settings.class_names),
            thing_classes=list(self._settings.thing_classes),
            images_dir=self._settings.images_dir))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples(keys)
            for split, keys in self._splits.items()}

  def _generate_examples(self, keys):
    for key in keys:
      image_path, mask_path = self._pairs[key]
      yield key, load_example(key, image_path, mask_path, self._settings)


def spec_fields(data_config):
  """(class_names, thing_classes, standardize) of a folder data set."""
  settings = settings_of(data_config)
  standardize = (standardize_instances if settings.mask_kind == 'instances'
                 else standardize_semantic)
  return settings.class_names, settings.thing_classes, standardize


def _sources(settings):
  """{'images/...', 'masks/...', ...: (size, mtime)} of the source files."""
  files = {}
  roots = [('images', settings.images_dir), ('masks', settings.masks_dir)]
  if settings.classes_dir:
    roots.append(('classes', settings.classes_dir))
  for tag, root in roots:
    files.update({f'{tag}/{k}': v
                  for k, v in fingerprint.scan(root).items()})
  for split, path in settings.split_lists:
    files.update({f'lists/{split}/{k}': v for k, v in
                  fingerprint.scan(os.path.dirname(path) or '.',
                                   [os.path.basename(path)]).items()})
  return files


# (settings, fingerprint, data_dir) -> builder: a run asks for its builder
# several times (size, training and evaluation streams); the source folder
# is scanned each time, but listed and paired once per fingerprint.
_BUILDERS = {}


def _what_changed(data_dir, settings, files):
  """A log phrase: how the folder differs from its last prepared set."""
  latest = None
  for record_path in epath.Path(data_dir, fingerprint.BY_SOURCE).glob(
      f'folder-*/folder/{VERSION}/{fingerprint.RECORD}'):
    record = fingerprint.read_record(record_path.parent)
    if record and record['source'] == settings.images_dir and (
        latest is None or record['prepared'] > latest[1]['prepared']):
      latest = record_path.parent, record
  if latest is None:
    return 'first preparation'
  folder, record = latest
  added, removed, changed = fingerprint.differences(
      fingerprint.read_listing(folder), files)
  if not (added or removed or changed):
    return f'config.data fields changed since {folder}'
  example = (added + removed + changed)[0]
  return (f'files changed since {folder}: {len(added)} new, {len(removed)} '
          f'gone, {len(changed)} changed, e.g. {example}')


def get_builder(data_config, data_dir, prepare=True):
  """The prepared TFDS builder of the folder data set `data_config` names.

  Prepared first (when `prepare`) if no set was prepared from the folder's
  current files and fields; see the module docstring.

  Raises:
    ConfigError: a bad field, or not prepared and `prepare` is False;
    DataError: a file at fault, named.
  """
  settings = settings_of(data_config)
  for name in ('images_dir', 'masks_dir', 'classes_dir'):
    folder = getattr(settings, name)
    if folder and not epath.Path(folder).is_dir():
      raise DataError(f'config.data.{name}={folder!r}: no such folder.')
  files = _sources(settings)
  key = fingerprint.digest(files, settings.identity())
  cached = _BUILDERS.get((settings, key, str(data_dir)))
  if cached is not None and cached.is_prepared():
    return cached
  own_dir = os.fspath(epath.Path(data_dir, fingerprint.BY_SOURCE,
                               f'folder-{key[:16]}'))
  pairs = folder_files.pair_files(
      settings.images_dir, settings.masks_dir, settings.image_suffix,
      settings.mask_suffix, other_dirs=[settings.classes_dir])
  splits = folder_files.split_keys(
      list(pairs), settings.splits, settings.split_fractions,
      dict(settings.split_lists), settings.images_dir)
  builder = Folder(settings=settings, pairs=pairs, splits=splits,
                   data_dir=own_dir)
  if not (builder.data_path.exists() and builder.is_prepared()):
    if not prepare:
      raise ConfigError(f'The folder data set of {settings.images_dir} is '
                        f'not prepared in {own_dir}; prepare it first.')
    logging.info('Preparing the folder data set of %s (%s; %s) into %s: %s.',
                 settings.images_dir, settings.mask_kind,
                 _what_changed(data_dir, settings, files), own_dir,
                 ', '.join(f'{s} {len(k)}' for s, k in splits.items()))
    builder.download_and_prepare()
    fingerprint.write_record(builder.data_path, fingerprint=key,
                             identity=settings.identity(),
                             source=settings.images_dir, files=files)
  _BUILDERS[(settings, key, str(data_dir))] = builder
  return builder
