r"""`cityscapes_panoptic`: Cityscapes with instance maps, from official files.

TFDS's `cityscapes` builder keeps only the label ids (`*_labelIds.png`); this
builder reads the instance ids too. It takes the folders the official zips
unpack to (www.cityscapes-dataset.com, after registering), in the manual
download folder or its `cityscapes/` subfolder:

  leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
  gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_instanceIds.png

or the zips themselves (`leftImg8bit_trainvaltest.zip`,
`gtFine_trainvaltest.zip`: the files TFDS's `cityscapes` reads, so one manual
folder serves both), which are extracted first.

`*_instanceIds.png` are 16-bit: a pixel of an object with an instance holds
`label_id * 1000 + k` (k = 0, 1, ... per class and image); any other pixel
holds its bare label id, stuff and also crowd regions ("cargroup", ...) of
classes with instances. At build time label ids become train ids (the table
in `segjax/data/cityscapes.py`; 255 = ignore) and instances are renumbered
1..K per image in increasing raw id order (Cityscapes' own k starts at 0,
segjax's instance 0 means "none"); instances of unevaluated classes
(caravan, trailer) become 0.

Crowd: the stored 'segmentation' keeps the class of crowd pixels, as the
official pixel-level benchmark does; they have instance 0. `standardize`, the
segjax adapter, turns them into the ignore label 255, as the COCO panoptic
adapter does: a crowd region is neither a countable instance nor background.
For the semantic benchmark use `cityscapes` (TFDS's builder), whose labels
are the official ones.

Splits: `train` (2975 images) and `validation` (500, from `val/`); the test
labels are placeholders and are not read. Malformed files stop the build with
a `DataError` naming the file: an image without its instanceIds file, a size
mismatch, an id that is no Cityscapes label id, a file that does not decode
completely (every image and map is decoded while preparing; images by
TensorFlow's decoder too, since their PNG bytes are stored as they are).
"""

import os

from absl import logging
from etils import epath
import numpy as np

from segjax.data import cityscapes
from segjax.data import image_files
from segjax.data.tf_host import tf  # First: hides accelerators from TF.
import tensorflow_datasets as tfds  # pylint: disable=g-bad-import-order

from segjax.errors import DataError

IGNORE_INDEX = 255
# TFDS split name -> folder name in the official layout.
_SPLIT_FOLDERS = {'train': 'train', 'validation': 'val'}
_ZIPS = ('leftImg8bit_trainvaltest.zip', 'gtFine_trainvaltest.zip')

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Register at https://www.cityscapes-dataset.com/ and download
`leftImg8bit_trainvaltest.zip` and `gtFine_trainvaltest.zip`. Either put
the two zips in <manual_dir> (or <manual_dir>/cityscapes/), or unzip them
there so that <manual_dir>/leftImg8bit/train/ and <manual_dir>/gtFine/train/
exist. In segjax, point `config.data.manual_dir` at <manual_dir>.
"""


def convert_instance_ids(raw, path='instanceIds'):
  """Train ids and renumbered instances from a Cityscapes instanceIds map.

  Args:
    raw: [H, W] integer array of a `*_instanceIds.png`.
    path: the file, for error messages.

  Returns:
    (segmentation [H, W] uint8 train ids (255 = ignore; crowd pixels keep
    their class), instances [H, W] uint16: 0 none, 1..K the instances of
    evaluated classes in increasing raw id order).

  Raises:
    DataError naming the file and the values that are no label id, or an
    instance id of a class that has no instances.
  """
  values, inverse = np.unique(np.asarray(raw, np.int64), return_inverse=True)
  label_ids = np.where(values >= 1000, values // 1000, values)
  has_instance = np.isin(label_ids, cityscapes.INSTANCE_LABEL_IDS)
  bad = values[(values < 0) | (label_ids >= cityscapes.NUM_LABEL_IDS) |
               ((values >= 1000) & ~has_instance)]
  if bad.size:
    raise DataError(
        f'cityscapes_panoptic: {path} holds values {bad.tolist()[:10]}, which '
        'are neither label ids (0..33) nor label_id * 1000 + k of a class '
        'with instances.')
  train_ids = cityscapes.train_id_table()[label_ids]
  counted = (values >= 1000) & (train_ids != IGNORE_INDEX)
  # `values` is sorted, so the cumulative count numbers instances 1..K in
  # increasing raw id order.
  numbers = np.where(counted, np.cumsum(counted), 0)
  shape = np.shape(raw)
  return (train_ids[inverse].reshape(shape),
          numbers[inverse].reshape(shape).astype(np.uint16))


def _read_label(path, image_size):
  with image_files.decoded(path, 'cityscapes_panoptic', 'instance map') as im:
    if im.mode not in ('I;16', 'I', 'L'):
      raise DataError(f'cityscapes_panoptic: {path} has mode {im.mode!r}; '
                      'expected a 16-bit single-channel PNG.')
    size, raw = im.size, np.asarray(im)
  if size != image_size:
    raise DataError(
        f'cityscapes_panoptic: {path} is {size[0]}x{size[1]} (WxH) but its '
        f'image is {image_size[0]}x{image_size[1]}.')
  return convert_instance_ids(raw, path)


def _image_size(path):
  """Decodes an RGB image completely (by TensorFlow too: its bytes are
  stored as they are); returns its (width, height)."""
  with image_files.decoded(path, 'cityscapes_panoptic', 'image') as im:
    if im.mode != 'RGB':
      raise DataError(f'cityscapes_panoptic: image {path} has mode '
                      f'{im.mode!r}; expected RGB.')
    size = im.size
  image_files.check_stored(path, 'cityscapes_panoptic', 'image')
  return size


def find_sources(manual_dir):
  """Where the data is: ('folders', root) or ('zips', root).

  Looks in `manual_dir` and `manual_dir/cityscapes` for `leftImg8bit/` +
  `gtFine/`, then for the two official zips.

  Raises:
    DataError naming the folders searched, with the download instructions.
  """
  manual_dir = epath.Path(manual_dir)
  candidates = [manual_dir, manual_dir / 'cityscapes']
  for root in candidates:
    if (root / 'leftImg8bit').is_dir() and (root / 'gtFine').is_dir():
      return 'folders', root
  for root in candidates:
    if all((root / z).exists() for z in _ZIPS):
      return 'zips', root
  raise DataError(
      'cityscapes_panoptic: found neither leftImg8bit/ + gtFine/ nor '
      f'{" + ".join(_ZIPS)} in {" or ".join(str(c) for c in candidates)}.\n'
      f'{MANUAL_DOWNLOAD_INSTRUCTIONS}')


def sources(manual_dir):
  """(root, names): the files and folders under root the builder reads.

  For the fingerprint of the prepared data (`segjax.data.fingerprint`).

  Raises:
    DataError: neither folders nor zips (see `find_sources`).
  """
  kind, root = find_sources(manual_dir)
  if kind == 'zips':
    return root, list(_ZIPS)
  return root, [f'{top}/{folder}' for top in ('leftImg8bit', 'gtFine')
                for folder in _SPLIT_FOLDERS.values()]


def list_pairs(images_root, labels_root):
  """[(image id, image path, instanceIds path)] of one split, sorted by id.

  Raises:
    DataError naming an image whose instanceIds file is missing.
  """
  pairs = []
  for image in sorted(epath.Path(images_root).glob('*/*_leftImg8bit.png')):
    image_id = image.name[:-len('_leftImg8bit.png')]
    label = (epath.Path(labels_root) / image.parent.name /
             f'{image_id}_gtFine_instanceIds.png')
    if not label.exists():
      raise DataError(f'cityscapes_panoptic: image {image} has no instance '
                      f'map; expected {label}.')
    pairs.append((image_id, image, label))
  return pairs


class CityscapesPanoptic(tfds.core.GeneratorBasedBuilder):
  """Cityscapes gtFine: train ids, instance ids (crowd kept, instance 0)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'First release: train and val of gtFine.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS

  def _info(self):
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(None, None, 3)),
            # Train ids 0..18, 255 = ignore; crowd pixels keep their class.
            'segmentation': tfds.features.Image(
                shape=(None, None, 1), encoding_format='png'),
            # 0 none (stuff, crowd, ignored classes), 1..K instances.
            'instances': tfds.features.Image(
                shape=(None, None, 1), dtype=np.uint16, encoding_format='png'),
            'image_id': tfds.features.Text(),
        }),
        supervised_keys=('image', 'segmentation'),
        homepage='https://www.cityscapes-dataset.com',
        metadata=tfds.core.MetadataDict(
            class_names=list(cityscapes.CLASS_NAMES),
            thing_classes=list(cityscapes.THING_CLASSES)),
    )

  def _split_generators(self, dl_manager):
    try:
      manual_dir = dl_manager.manual_dir
    except AssertionError as e:  # TFDS's check: missing or empty folder.
      raise DataError(f'cityscapes_panoptic: {str(e).splitlines()[0]}\n'
                      f'{MANUAL_DOWNLOAD_INSTRUCTIONS}') from e
    kind, root = find_sources(manual_dir)
    if kind == 'zips':
      logging.info('cityscapes_panoptic: extracting the zips in %s', root)
      images = epath.Path(dl_manager.extract(os.fspath(root / _ZIPS[0])))
      labels = epath.Path(dl_manager.extract(os.fspath(root / _ZIPS[1])))
      images, labels = images / 'leftImg8bit', labels / 'gtFine'
    else:
      images, labels = root / 'leftImg8bit', root / 'gtFine'
    return {
        split: self._generate_examples(images / folder, labels / folder)
        for split, folder in _SPLIT_FOLDERS.items()
        if (images / folder).is_dir()
    }

  def _generate_examples(self, images_root, labels_root):
    for image_id, image, label in list_pairs(images_root, labels_root):
      segmentation, instances = _read_label(label, _image_size(image))
      yield image_id, {
          'image': image,  # TFDS copies the PNG bytes as they are.
          'segmentation': segmentation[..., None],
          'instances': instances[..., None],
          'image_id': image_id,
      }


@tf.autograph.experimental.do_not_convert
def standardize(example):
  """A `cityscapes_panoptic` example as segjax's standard example.

  Args:
    example: 'image' [H, W, 3] uint8, 'segmentation' [H, W, 1] uint8 train
      ids, 'instances' [H, W, 1] uint16.

  Returns:
    {'image': [H, W, 3] uint8, 'labels': [H, W] uint8 (train ids; 255 =
    ignore, including crowd: thing pixels without an instance),
    'instances': [H, W] int32 (0 = none)}.
  """
  labels = example['segmentation'][..., 0]
  instances = tf.cast(example['instances'][..., 0], tf.int32)
  is_thing = tf.gather(tf.constant(cityscapes.thing_table()),
                       tf.cast(labels, tf.int32))
  crowd = is_thing & tf.equal(instances, 0)
  return {
      'image': example['image'],
      'labels': tf.where(crowd, tf.constant(IGNORE_INDEX, tf.uint8), labels),
      'instances': instances,
  }
