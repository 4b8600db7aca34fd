"""`dsb2018`: cell nuclei from the Kaggle Data Science Bowl 2018, as a TFDS builder.

The stage 1 training images of the 2018 Data Science Bowl (Kaggle competition
`data-science-bowl-2018`; the images are the Broad Bioimage Benchmark
Collection set BBBC038): microscope images of cell nuclei, fluorescence and
bright-field mixed, of mixed sizes (256x256 most often, up to 1388x1040), each
with one binary mask per nucleus. License: CC0 (public domain).

Kaggle's layout, read from the manual download folder as the user unzipped it:

  stage1_train/<id>/images/<id>.png   one RGBA image (alpha is dropped; L, LA,
                                      RGB and P images are converted to RGB)
  stage1_train/<id>/masks/*.png       one 0/255 mask PNG per nucleus

Every example carries an RGB image, a semantic map (0 background, 1 nucleus),
an instance map (0 none, 1..N the masks in sorted file name order), so the data
serves semantic, instance and panoptic segmentation (one "thing" class on one
"stuff" class).

Merge rule: masks are painted in sorted file name order (Python string order)
and the later mask wins where masks overlap. Kaggle's masks are meant not to
overlap; on the 548-image copy segjax is developed on, 5 images have overlaps,
7 pixels in all (1 or 2 per image). The builder counts them per example
(`overlap_pixels`) and logs them. `num_instances` counts mask files; a mask
wholly covered by later ones would leave its id out of the instance map (none
is on the real data).

Splits: Kaggle gives no labelled validation or test set, so the split of an
image is a function of its id alone (`split_of`): the SHA-256 of the id, as an
integer, mod 10 gives 0-7 train, 8 validation, 9 test. Any copy of the data
(the 548-image copy, the full 664-image stage 1 set, a copy with community
fixes) is split the same way for the images it shares. On the 548-image copy:
train 425, validation 63, test 60 images. A copy so small that a split gets
no image is prepared without that split.

The builder rejects malformed data with a `segjax.errors.DataError` naming the
file: an image folder without `images/<id>.png`, an image without masks, a
mask whose size differs from its image, a mask with values other than 0 and
255 (or with no nucleus pixel at all), an unreadable or truncated PNG (every
image and mask is decoded completely; images are stored re-encoded, so the
prepared data never holds the bytes of a damaged file).

Build it once (about 16 s on 2 CPU cores for the 548 images: it decodes ~24k
mask PNGs) with

  tfds.builder('dsb2018', data_dir=...).download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=...))

where `manual_dir` holds `stage1_train/` (or `dsb2018/stage1_train/`); segjax
does this from `config.data.manual_dir`.
"""

import collections
from concurrent import futures
import hashlib
import os

from absl import logging
import numpy as np
from PIL import Image

from segjax.data.tf_host import tf  # First: hides accelerators from TF.
import tensorflow_datasets as tfds  # pylint: disable=g-bad-import-order

from segjax.data import image_files
from segjax.errors import DataError

CLASS_NAMES = ('background', 'nucleus')
STUFF_CLASSES = (0,)
THING_CLASSES = (1,)

SPLITS = ('train', 'validation', 'test')

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download `stage1_train.zip` from the Kaggle competition "data-science-bowl-2018"
(https://www.kaggle.com/competitions/data-science-bowl-2018/data; accept the
competition rules first, or use `kaggle competitions download -c
data-science-bowl-2018 -f stage1_train.zip`). Optionally use the community's
fixed masks instead: https://github.com/lopuhin/kaggle-dsb2018-data-fixes
(its `stage1_train/` folder). Unzip so that

  <manual_dir>/stage1_train/<id>/images/<id>.png
  <manual_dir>/stage1_train/<id>/masks/*.png

exist (e.g. `unzip stage1_train.zip -d <manual_dir>/stage1_train`; the zip has
no top folder), or put it under <manual_dir>/dsb2018/stage1_train/. In segjax,
point `config.data.manual_dir` at <manual_dir>; with TFDS directly pass
`download_config=tfds.download.DownloadConfig(manual_dir=<manual_dir>)`.
"""

# Decoding the masks (~6 GB of inflated pixels on the 548-image copy) and
# encoding the images are most of the build. PIL releases the GIL in zlib, so
# threads use every core and overlap TFDS's work in the main thread.
_NUM_WORKERS = 4
# Examples decoded ahead of the one TFDS is encoding; bounds memory.
_PREFETCH = 2 * _NUM_WORKERS
# The instance map is uint16.
_MAX_INSTANCES = np.iinfo(np.uint16).max

_IMAGE_MODES = ('RGB', 'RGBA', 'L', 'LA', 'P')


def split_of(image_id: str) -> str:
  """The split of an image: 'train', 'validation' or 'test', from its id alone.

  SHA-256 of the id mod 10: 0-7 train, 8 validation, 9 test (~80/10/10).
  """
  bucket = int(hashlib.sha256(image_id.encode('utf-8')).hexdigest(), 16) % 10
  if bucket < 8:
    return 'train'
  return 'validation' if bucket == 8 else 'test'


@tf.autograph.experimental.do_not_convert
def standardize(example):
  """A `dsb2018` example as segjax's standard example.

  Args:
    example: a decoded TFDS example: 'segmentation' [H, W, 1] uint8,
      'instances' [H, W, 1] uint16, 'image' [H, W, 3] uint8.

  Returns:
    {'image': [H, W, 3] uint8, 'labels': [H, W] uint8 (0 background,
    1 nucleus), 'instances': [H, W] int32 (0 none, 1..N nuclei)}.
  """
  return {
      'image': example['image'],
      'labels': example['segmentation'][..., 0],
      'instances': tf.cast(example['instances'][..., 0], tf.int32),
  }


def _open_png(path):
  """Opens `path` lazily (header only); a DataError if it is not an image."""
  try:
    return Image.open(path)
  except (OSError, SyntaxError, ValueError) as e:
    raise DataError(f'{path}: unreadable PNG ({e}).') from e


def _load(image, path):
  """Decodes an opened PIL image in place; a DataError if that fails."""
  try:
    image.load()
  except (OSError, SyntaxError, ValueError) as e:
    raise DataError(f'{path}: unreadable PNG ({e}).') from e


def _read_image(path):
  """The image at `path` as [H, W, 3] uint8 (alpha dropped)."""
  with _open_png(path) as im:
    if im.mode not in _IMAGE_MODES:
      raise DataError(f'{path}: image mode {im.mode!r}; expected one of '
                      f'{_IMAGE_MODES} (8 bits per channel).')
    _load(im, path)
    return np.asarray(im.convert('RGB') if im.mode != 'RGB' else im)


def _mask_pixels(path, image_size, image_path):
  """The flat indices of a mask's nucleus pixels: [K] int64.

  Args:
    path: the mask PNG.
    image_size: (width, height) of the image the mask belongs to.
    image_path: that image's path, for error messages.

  Raises:
    DataError: unreadable, a size other than `image_size`, a value other than
      0 and 255, or no nucleus pixel.
  """
  with _open_png(path) as im:
    if im.size != image_size:
      raise DataError(
          f'{path}: mask is {im.size[0]}x{im.size[1]} but its image '
          f'{image_path} is {image_size[0]}x{image_size[1]} (width x height).')
    if im.mode not in ('L', '1'):
      raise DataError(f'{path}: mask mode {im.mode!r}; expected a '
                      'single-channel 8-bit (L) or 1-bit PNG of 0 and 255.')
    _load(im, path)
    # A nucleus covers a small part of its image: copying out only the
    # bounding box of the nonzero pixels (found in C) nearly halves the time
    # per mask compared with a full-size array.
    bbox = im.getbbox()
    if bbox is None:
      raise DataError(f'{path}: mask is all 0; expected 255 on its nucleus.')
    left, top = bbox[:2]
    box = np.asarray(im.crop(bbox))
  rows, cols = np.nonzero(box)
  values = box[rows, cols]
  # 1-bit PNGs decode to bool and hold only 0 and 1 = white.
  if box.dtype != bool and np.any(values != 255):
    bad = np.unique(values[values != 255]).tolist()
    raise DataError(f'{path}: mask values {bad}; expected only 0 (background) '
                    'and 255 (nucleus).')
  return (rows + top) * image_size[0] + (cols + left)


def load_example(image_dir):
  """Reads one image folder of the Kaggle layout and merges its masks.

  Args:
    image_dir: `.../stage1_train/<id>` (an `os.PathLike` or str).

  Returns:
    A TFDS example: 'image' [H, W, 3] uint8, 'segmentation' [H, W, 1] uint8,
    'instances' [H, W, 1] uint16, 'num_instances' and 'overlap_pixels' ints,
    'image_id' str. Masks are painted in sorted file name order; the later
    mask wins where they overlap.

  Raises:
    DataError: a missing or malformed file; the message names it.
  """
  image_dir = os.fspath(image_dir)
  image_id = os.path.basename(image_dir.rstrip(os.sep))
  image_path = os.path.join(image_dir, 'images', image_id + '.png')
  if not os.path.isfile(image_path):
    raise DataError(f'{image_dir}: no image file {image_path}.')
  mask_dir = os.path.join(image_dir, 'masks')
  mask_names = []
  if os.path.isdir(mask_dir):
    mask_names = sorted(n for n in os.listdir(mask_dir) if n.endswith('.png'))
  if not mask_names:
    # Every stage 1 train image has masks; none means a broken download.
    raise DataError(f'{image_dir}: no mask files in {mask_dir}; every image '
                    'needs one masks/*.png per nucleus.')
  if len(mask_names) > _MAX_INSTANCES:
    raise DataError(f'{mask_dir}: {len(mask_names)} masks; at most '
                    f'{_MAX_INSTANCES} fit the uint16 instance map.')
  image = _read_image(image_path)
  height, width = image.shape[:2]
  instances = np.zeros(height * width, np.uint16)
  claims = np.zeros(height * width, np.uint8)  # Masks per pixel, capped at 2.
  for i, name in enumerate(mask_names, start=1):
    pixels = _mask_pixels(
        os.path.join(mask_dir, name), (width, height), image_path)
    instances[pixels] = i
    claims[pixels] = np.minimum(claims[pixels] + 1, 2)
  overlap = int(np.count_nonzero(claims > 1))
  if overlap:
    logging.info('dsb2018 %s: %d pixels claimed by more than one mask; the '
                 'later mask (sorted file name) wins.', image_id, overlap)
  instances = instances.reshape(height, width, 1)
  return {
      'image': image,
      'segmentation': (instances > 0).astype(np.uint8),
      'instances': instances,
      'num_instances': len(mask_names),
      'overlap_pixels': overlap,
      'image_id': image_id,
  }


def _load_encoded(image_dir):
  """`load_example`, with 'image' already PNG-encoded for TFDS."""
  example = load_example(image_dir)
  # Label maps stay with TFDS: cheap to encode, and it checks them.
  example['image'] = image_files.encode_png(example['image'])
  return example


def find_stage1_train(manual_dir):
  """`<manual_dir>/stage1_train` or `<manual_dir>/dsb2018/stage1_train`.

  Raises:
    DataError: neither exists; the message names both and says how to
      download the data.
  """
  candidates = [os.path.join(os.fspath(manual_dir), 'stage1_train'),
                os.path.join(os.fspath(manual_dir), 'dsb2018', 'stage1_train')]
  for path in candidates:
    if os.path.isdir(path):
      return path
  raise DataError(f'dsb2018: no stage1_train/ folder in {candidates[0]} or '
                  f'{candidates[1]}.\n{MANUAL_DOWNLOAD_INSTRUCTIONS}')


def sources(manual_dir):
  """(root, names): the folder the builder reads, `stage1_train/` whole.

  For the fingerprint of the prepared data (`segjax.data.fingerprint`).

  Raises:
    DataError: no stage1_train/ (see `find_stage1_train`).
  """
  return find_stage1_train(manual_dir), ['']


def _ordered_map(fn, items):
  """Yields fn(item) in order, computed by a thread pool a few items ahead."""
  with futures.ThreadPoolExecutor(_NUM_WORKERS) as pool:
    pending = collections.deque()
    try:
      for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) > _PREFETCH:
          yield pending.popleft().result()
      while pending:
        yield pending.popleft().result()
    finally:
      # An error or an early stop (max_examples_per_split): drop queued work.
      for f in pending:
        f.cancel()


class Dsb2018(tfds.core.GeneratorBasedBuilder):
  """Kaggle Data Science Bowl 2018 stage 1 train: nuclei instance masks."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {
      '1.0.0': 'First release: stage 1 train, split by image id hash.',
  }
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS

  def _info(self):
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(None, None, 3)),
            # 0 background, 1 nucleus; PNG keeps label maps lossless.
            'segmentation': tfds.features.Image(
                shape=(None, None, 1), encoding_format='png'),
            # 0 none, 1..N the masks in sorted file name order.
            'instances': tfds.features.Image(
                shape=(None, None, 1), dtype=np.uint16, encoding_format='png'),
            'num_instances': np.int32,
            'overlap_pixels': np.int32,
            'image_id': tfds.features.Text(),
        }),
        supervised_keys=('image', 'segmentation'),
        homepage='https://www.kaggle.com/competitions/data-science-bowl-2018',
        citation="""\
@article{caicedo2019nucleus,
  title={Nucleus segmentation across imaging experiments: the 2018 Data
         Science Bowl},
  author={Caicedo, Juan C. and Goodman, Allen and Karhohs, Kyle W. and others},
  journal={Nature Methods},
  volume={16},
  pages={1247--1253},
  year={2019}
}""",
        metadata=tfds.core.MetadataDict(
            class_names=list(CLASS_NAMES),
            stuff_classes=list(STUFF_CLASSES),
            thing_classes=list(THING_CLASSES),
        ),
    )

  def _split_generators(self, dl_manager):
    try:
      manual_dir = dl_manager.manual_dir
    except AssertionError as e:  # TFDS's check: missing or empty folder.
      # Its first line names the folder; the rest restates our instructions.
      raise DataError(f'dsb2018: {str(e).splitlines()[0]}\n'
                      f'{MANUAL_DOWNLOAD_INSTRUCTIONS}') from e
    root = find_stage1_train(manual_dir)
    ids = {split: [] for split in SPLITS}
    for name in sorted(os.listdir(root)):
      # Skip stray files (.DS_Store, a labels CSV) and hidden folders.
      if not name.startswith('.') and os.path.isdir(os.path.join(root, name)):
        ids[split_of(name)].append(name)
    if not any(ids.values()):
      raise DataError(f'dsb2018: {root} holds no image folders.\n'
                      f'{MANUAL_DOWNLOAD_INSTRUCTIONS}')
    # TFDS cannot write an empty split; a small copy (a few images) may lack
    # one, and then has no such split rather than failing to build.
    for split in SPLITS:
      if not ids[split]:
        logging.warning('dsb2018: no image of %s falls in split %r; the '
                        'prepared data set has no such split.', root, split)
    return {
        split: self._generate_examples(split, root, split_ids)
        for split, split_ids in ids.items() if split_ids
    }

  def _generate_examples(self, split, root, image_ids):
    overlapping_images = overlap_pixels = 0
    examples = _ordered_map(
        _load_encoded, [os.path.join(root, i) for i in image_ids])
    for image_id, example in zip(image_ids, examples):
      overlapping_images += example['overlap_pixels'] > 0
      overlap_pixels += example['overlap_pixels']
      yield image_id, example
    logging.info('dsb2018 %s: %d images with overlapping masks, %d pixels; '
                 'later mask (sorted file name) wins.',
                 split, overlapping_images, overlap_pixels)
