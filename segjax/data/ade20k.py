r"""`ade20k`: the ADE20K scene parsing benchmark (SceneParse150), 150 classes.

A TFDS builder for the benchmark's official release, `ADEChallengeData2016`
(http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip,
about 920 MB; the data of the MIT Scene Parsing Benchmark, which papers call
"ADE20K"):

  ADEChallengeData2016/images/{training,validation}/ADE_*.jpg
  ADEChallengeData2016/annotations/{training,validation}/ADE_*.png

Label maps are single-channel PNGs: 0 = "other" (unlabelled), 1..150 the
classes of the benchmark's `objectInfo150` (github.com/CSAILVision/
sceneparsing). At build time 0 becomes 255 (ignored) and 1..150 become
0..149, the usual "reduce zero label" of the benchmark; any other value is a
`DataError` naming the file.

Why not TFDS's `scene_parse150`: its builder (version 1.0.0) reads
`ChallengeData2017/annotations_instance.tar`, the Places Challenge 2017
*instance* annotations, whose R channel holds the 100 instance categories
(1..100, `instanceInfo100`) and G the instance ids; stuff (wall, sky, floor,
...) is 0 there. Those are not the 150-class semantic labels.

Splits: `train` (20,210 images) and `validation` (2,000). Images of other
modes than RGB (a few are greyscale) are converted to RGB. Every image and
annotation is decoded completely while preparing (RGB JPEGs by TensorFlow's
decoder too, since their bytes are stored as they are); one that does not
decode stops the build with a `DataError` naming it.
"""

import os

from absl import logging
from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from segjax.data import image_files
from segjax.errors import DataError

IGNORE_INDEX = 255
NUM_CLASSES = 150
_ZIP = 'ADEChallengeData2016.zip'
# TFDS split name -> folder name in the official layout.
_SPLIT_FOLDERS = {'train': 'training', 'validation': 'validation'}

# The first name of each class of objectInfo150.txt, in index order (raw
# label 1 is 'wall': segjax class 0).
CLASS_NAMES = (
    'wall', 'building', 'sky', 'floor', 'tree', 'ceiling', 'road', 'bed',
    'windowpane', 'grass', 'cabinet', 'sidewalk', 'person', 'earth', 'door',
    'table', 'mountain', 'plant', 'curtain', 'chair', 'car', 'water',
    'painting', 'sofa', 'shelf', 'house', 'sea', 'mirror', 'rug', 'field',
    'armchair', 'seat', 'fence', 'desk', 'rock', 'wardrobe', 'lamp',
    'bathtub', 'railing', 'cushion', 'base', 'box', 'column', 'signboard',
    'chest of drawers', 'counter', 'sand', 'sink', 'skyscraper', 'fireplace',
    'refrigerator', 'grandstand', 'path', 'stairs', 'runway', 'case',
    'pool table', 'pillow', 'screen door', 'stairway', 'river', 'bridge',
    'bookcase', 'blind', 'coffee table', 'toilet', 'flower', 'book', 'hill',
    'bench', 'countertop', 'stove', 'palm', 'kitchen island', 'computer',
    'swivel chair', 'boat', 'bar', 'arcade machine', 'hovel', 'bus', 'towel',
    'light', 'truck', 'tower', 'chandelier', 'awning', 'streetlight',
    'booth', 'television', 'airplane', 'dirt track', 'apparel', 'pole',
    'land', 'bannister', 'escalator', 'ottoman', 'bottle', 'buffet',
    'poster', 'stage', 'van', 'ship', 'fountain', 'conveyer belt', 'canopy',
    'washer', 'plaything', 'swimming pool', 'stool', 'barrel', 'basket',
    'waterfall', 'tent', 'bag', 'minibike', 'cradle', 'oven', 'ball', 'food',
    'step', 'tank', 'trade name', 'microwave', 'pot', 'animal', 'bicycle',
    'lake', 'dishwasher', 'screen', 'blanket', 'sculpture', 'hood', 'sconce',
    'vase', 'traffic light', 'tray', 'ashcan', 'fan', 'pier', 'crt screen',
    'plate', 'monitor', 'bulletin board', 'shower', 'radiator', 'glass',
    'clock', 'flag',
)

MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Download the scene parsing benchmark data:
  wget http://data.csail.mit.edu/places/ADEchallenge/{_ZIP}
and either put the zip in <manual_dir> (it is extracted on first use) or
unzip it there, so that <manual_dir>/ADEChallengeData2016/images/training/
exists. In segjax, point `config.data.manual_dir` at <manual_dir>.
"""


def raw_to_classes(raw):
  """[H, W] raw ADE label values -> uint8 classes: 0 -> 255, v -> v - 1."""
  raw = np.asarray(raw)
  return np.where(raw == 0, IGNORE_INDEX, raw.astype(np.int64) - 1).astype(
      np.uint8)


def read_label(path, image_size):
  """Reads an annotation PNG, checks it, returns [H, W] uint8 classes.

  Raises:
    DataError naming the file: unreadable, not single-channel, another size
    than its image (`image_size`, PIL's (width, height)), or a value > 150.
  """
  with image_files.decoded(path, 'ade20k', 'annotation') as im:
    if im.mode not in ('L', 'P', 'I;16', 'I'):
      raise DataError(f'ade20k: annotation {path} has mode {im.mode!r}; '
                      'expected a single-channel PNG of class ids.')
    size, raw = im.size, np.asarray(im)
  if size != image_size:
    raise DataError(
        f'ade20k: annotation {path} is {size[0]}x{size[1]} (WxH) but its '
        f'image is {image_size[0]}x{image_size[1]}.')
  bad = np.setdiff1d(np.unique(raw), np.arange(NUM_CLASSES + 1))
  if bad.size:
    raise DataError(f'ade20k: annotation {path} holds values {bad.tolist()}; '
                    f'expected 0 (other) and 1..{NUM_CLASSES}.')
  return raw_to_classes(raw)


def _image(path):
  """(TFDS image value, (width, height)), the image decoded completely.

  An RGB JPEG is stored as it is (its path), so TensorFlow's decoder must
  read it too; other modes are converted to an RGB array.
  """
  with image_files.decoded(path, 'ade20k', 'image') as im:
    size = im.size
    if im.mode != 'RGB':
      return np.asarray(im.convert('RGB')), size
  image_files.check_stored(path, 'ade20k', 'image')
  return path, size  # TFDS copies the JPEG bytes as they are.


def find_root(manual_dir):
  """('folder', <ADEChallengeData2016>) or ('zip', <the zip>).

  Raises:
    DataError naming the places searched, with the download instructions.
  """
  manual_dir = epath.Path(manual_dir)
  for root in (manual_dir / 'ADEChallengeData2016', manual_dir):
    if (root / 'images' / 'training').is_dir():
      return 'folder', root
  if (manual_dir / _ZIP).exists():
    return 'zip', manual_dir / _ZIP
  raise DataError(
      f'ade20k: no ADEChallengeData2016/images/training/ and no {_ZIP} in '
      f'{manual_dir}.\n{MANUAL_DOWNLOAD_INSTRUCTIONS}')


def sources(manual_dir):
  """(root, names): the files and folders under root the builder reads.

  For the fingerprint of the prepared data (`segjax.data.fingerprint`).

  Raises:
    DataError: neither the folder nor the zip (see `find_root`).
  """
  kind, root = find_root(manual_dir)
  if kind == 'zip':
    return root.parent, [root.name]
  return root, [f'{top}/{folder}' for top in ('images', 'annotations')
                for folder in _SPLIT_FOLDERS.values()]


class Ade20k(tfds.core.GeneratorBasedBuilder):
  """ADE20K / SceneParse150 (ADEChallengeData2016), 150 classes, 0 -> 255."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'First release.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS

  def _info(self):
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(None, None, 3),
                                         encoding_format='jpeg'),
            # 0..149 classes, 255 = "other".
            'segmentation': tfds.features.Image(
                shape=(None, None, 1), encoding_format='png'),
            'image_id': tfds.features.Text(),
        }),
        supervised_keys=('image', 'segmentation'),
        homepage='http://sceneparsing.csail.mit.edu/',
        citation="""\
@inproceedings{zhou2017scene,
  title={Scene Parsing through ADE20K Dataset},
  author={Zhou, Bolei and Zhao, Hang and Puig, Xavier and Fidler, Sanja and
          Barriuso, Adela and Torralba, Antonio},
  booktitle={CVPR},
  year={2017}
}""",
        metadata=tfds.core.MetadataDict(class_names=list(CLASS_NAMES)),
    )

  def _split_generators(self, dl_manager):
    try:
      manual_dir = dl_manager.manual_dir
    except AssertionError as e:  # TFDS's check: missing or empty folder.
      raise DataError(f'ade20k: {str(e).splitlines()[0]}\n'
                      f'{MANUAL_DOWNLOAD_INSTRUCTIONS}') from e
    kind, root = find_root(manual_dir)
    if kind == 'zip':
      logging.info('ade20k: extracting %s', root)
      root = epath.Path(dl_manager.extract(os.fspath(root)))
      root = root / 'ADEChallengeData2016'
    return {
        split: self._generate_examples(root, folder)
        for split, folder in _SPLIT_FOLDERS.items()
        if (root / 'images' / folder).is_dir()
    }

  def _generate_examples(self, root, folder):
    for image_path in sorted((root / 'images' / folder).glob('*.jpg')):
      label_path = root / 'annotations' / folder / f'{image_path.stem}.png'
      if not label_path.exists():
        raise DataError(f'ade20k: image {image_path} has no annotation; '
                        f'expected {label_path}.')
      image, size = _image(image_path)
      yield image_path.stem, {
          'image': image,
          'segmentation': read_label(label_path, size)[..., None],
          'image_id': image_path.stem,
      }
