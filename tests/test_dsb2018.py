"""The `dsb2018` builder: merge rule, splits and errors on synthetic copies of
Kaggle's layout, and the real 548-image copy where `../shared/data` has it.

Expected instance maps are computed here from the definition: a pixel belongs
to the covering mask that comes last in sorted file name order.
"""

import collections
import hashlib
import logging
import pathlib
import re

import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from segjax.data import dsb2018
from segjax.data.tf_host import tf
from segjax.errors import DataError

# Its module-scoped fixtures build once, on one pytest-xdist worker.
pytestmark = pytest.mark.xdist_group('dsb2018')

REAL = (pathlib.Path(__file__).resolve().parents[1].parent / 'shared' /
        'data' / 'dsb2018')
needs_real = pytest.mark.skipif(
    not (REAL / 'stage1_train').is_dir(),
    reason=f'real DSB 2018 copy not found at {REAL}')

# The 548-image copy in ../shared/data, measured once; documented in the
# module docstring of segjax/data/dsb2018.py.
REAL_SPLITS = {'train': 425, 'validation': 63, 'test': 60}
REAL_NUM_MASKS = 23_872

# Ids chosen so that each split gets an image: split_of gives '0000', '0001'
# train, '0002' validation, '0005' test.
IDS = ('0000', '0001', '0002', '0005')


def _disc(shape, cy, cx, r):
  yy, xx = np.mgrid[:shape[0], :shape[1]]
  return (yy - cy)**2 + (xx - cx)**2 <= r * r


def _synthetic_images():
  """Per id: (PIL image, expected [H, W, 3] RGB, {mask file name: [H, W] bool}).

  Mask names are listed out of order, and '10.png' sorts before '9.png', so a
  builder that painted in listing or numeric order would differ.
  """
  rng = np.random.default_rng(0)
  out = {}
  # 0000: RGBA (Kaggle's mode) with a pixel claimed by three masks.
  rgba = rng.integers(0, 256, (12, 16, 4), np.uint8)
  shape = (12, 16)
  a = np.zeros(shape, bool)
  a[2:6, 2:9] = True
  b = np.zeros(shape, bool)
  b[4:9, 7:12] = True
  c = np.zeros(shape, bool)
  c[5, 5:8] = True
  out['0000'] = (Image.fromarray(rgba, 'RGBA'), rgba[..., :3],
                 {'9.png': a, 'b.png': c, '10.png': b})
  # 0001: grayscale L, no overlap, a 1-pixel nucleus.
  gray = rng.integers(0, 256, (9, 7), np.uint8)
  one = np.zeros((9, 7), bool)
  one[8, 6] = True
  out['0001'] = (Image.fromarray(gray, 'L'), np.repeat(gray[..., None], 3, -1),
                 {'m1.png': _disc((9, 7), 3, 3, 2), 'm2.png': one})
  # 0002: palette image; two discs that overlap.
  palette = rng.integers(0, 256, (256, 3), np.uint8)
  index = rng.integers(0, 256, (10, 10), np.uint8)
  pal = Image.fromarray(index, 'P')
  pal.putpalette(palette.ravel().tolist())
  out['0002'] = (pal, palette[index],
                 {'x.png': _disc((10, 10), 4, 4, 3),
                  'y.png': _disc((10, 10), 6, 6, 3)})
  # 0005: RGB, one mask covering the whole image.
  rgb = rng.integers(0, 256, (6, 5, 3), np.uint8)
  out['0005'] = (Image.fromarray(rgb, 'RGB'), rgb,
                 {'only.png': np.ones((6, 5), bool)})
  return out


def _expected(masks):
  """(instances [H, W] int, overlap pixels) by the definition."""
  names = sorted(masks)
  stack = np.stack([masks[n] for n in names])  # [N, H, W] bool
  ranks = np.arange(1, len(names) + 1)[:, None, None]
  return (stack * ranks).max(0), int(np.sum(stack.sum(0) > 1))


def _write_copy(root, images=None):
  """Writes `images` (default: the synthetic set) in Kaggle's layout."""
  images = images or _synthetic_images()
  for image_id, (image, _, masks) in images.items():
    d = root / 'stage1_train' / image_id
    (d / 'images').mkdir(parents=True)
    (d / 'masks').mkdir()
    image.save(d / 'images' / f'{image_id}.png')
    for name, mask in masks.items():
      Image.fromarray(mask.astype(np.uint8) * 255).save(d / 'masks' / name)
  return root


def _build(manual_dir, data_dir, **download_kwargs):
  builder = dsb2018.Dsb2018(data_dir=str(data_dir))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=str(manual_dir), **download_kwargs))
  return builder


def _examples(builder, split):
  return list(tfds.as_numpy(builder.as_dataset(split)))


@pytest.fixture(scope='module')
def synthetic(tmp_path_factory):
  """A built synthetic copy: (builder, the images written)."""
  manual = _write_copy(tmp_path_factory.mktemp('manual'))
  builder = _build(manual, tmp_path_factory.mktemp('tfds'))
  builder.manual = manual
  return builder, _synthetic_images()


def test_instances_follow_sorted_file_names_later_mask_wins(synthetic):
  builder, images = synthetic
  seen = set()
  for split in dsb2018.SPLITS:
    for ex in _examples(builder, split):
      image_id = ex['image_id'].decode()
      seen.add(image_id)
      _, rgb, masks = images[image_id]
      instances, overlap = _expected(masks)
      np.testing.assert_array_equal(ex['image'], rgb)
      assert ex['instances'].dtype == np.uint16
      np.testing.assert_array_equal(ex['instances'][..., 0], instances)
      np.testing.assert_array_equal(ex['segmentation'][..., 0],
                                    (instances > 0).astype(np.uint8))
      assert ex['num_instances'] == len(masks)
      assert ex['overlap_pixels'] == overlap
  assert seen == set(images)


def test_overlap_counts_a_pixel_once_however_many_masks_claim_it(synthetic):
  builder, _ = synthetic
  # 0000: masks '9' and '10' share rows 4-5, cols 7-8 (4 px); 'b' adds (5, 5)
  # and (5, 6) over '9', and (5, 7) lies under all three: 6 pixels, not 7.
  example = dsb2018.load_example(builder.manual / 'stage1_train' / '0000')
  assert example['overlap_pixels'] == 6
  # String order: '10.png' < '9.png' < 'b.png', so '9' wins over '10'.
  assert example['instances'][4, 7, 0] == 2
  assert example['instances'][5, 7, 0] == 3


def test_accepts_a_gray_alpha_image_and_a_1_bit_mask(tmp_path):
  rng = np.random.default_rng(1)
  la = rng.integers(0, 256, (5, 6, 2), np.uint8)
  mask = _disc((5, 6), 2, 2, 1)
  root = _write_copy(tmp_path, {'la': (Image.fromarray(la, 'LA'), None, {})})
  Image.fromarray(mask).convert('1').save(
      root / 'stage1_train' / 'la' / 'masks' / 'm.png')
  example = dsb2018.load_example(root / 'stage1_train' / 'la')
  np.testing.assert_array_equal(example['image'],
                                np.repeat(la[..., :1], 3, axis=-1))
  np.testing.assert_array_equal(example['instances'][..., 0], mask)


def test_instance_ids_above_255_survive_the_build(tmp_path):
  # Real images have up to 375 nuclei: ids must not wrap at 8 bits.
  shape = (20, 20)
  masks = {}
  for i in range(300):
    mask = np.zeros(shape, bool)
    mask.flat[i] = True
    masks[f'{i:03d}.png'] = mask
  gray = np.zeros(shape, np.uint8)
  images = {'0000': (Image.fromarray(gray, 'L'), None, masks)}
  builder = _build(_write_copy(tmp_path / 'manual', images), tmp_path / 'tfds')
  [example] = _examples(builder, 'train')
  np.testing.assert_array_equal(example['instances'][..., 0],
                                _expected(masks)[0])
  assert example['instances'].max() == 300


def test_each_image_lands_in_the_split_of_its_id(synthetic):
  builder, images = synthetic
  splits = collections.defaultdict(set)
  for split in dsb2018.SPLITS:
    for ex in _examples(builder, split):
      splits[split].add(ex['image_id'].decode())
  expected = collections.defaultdict(set)
  for image_id in images:
    expected[dsb2018.split_of(image_id)].add(image_id)
  assert splits == expected
  assert {s: len(v) for s, v in splits.items()} == {
      'train': 2, 'validation': 1, 'test': 1}


def test_info_names_the_classes(synthetic):
  builder, _ = synthetic
  info = builder.info
  assert info.metadata['class_names'] == list(dsb2018.CLASS_NAMES)
  assert info.metadata['thing_classes'] == [1]
  assert info.metadata['stuff_classes'] == [0]
  assert info.supervised_keys == ('image', 'segmentation')
  assert dsb2018.CLASS_NAMES == ('background', 'nucleus')
  assert dsb2018.THING_CLASSES == (1,)


def test_registered_as_dsb2018(tmp_path):
  builder = tfds.builder('dsb2018', data_dir=str(tmp_path))
  assert isinstance(builder, dsb2018.Dsb2018)
  assert str(builder.version) == '1.0.0'
  assert 'stage1_train.zip' in builder.MANUAL_DOWNLOAD_INSTRUCTIONS


def test_standardize_gives_labels_and_int32_instances(synthetic):
  builder, images = synthetic
  ds = builder.as_dataset('train').map(dsb2018.standardize)
  for ex in tfds.as_numpy(ds):
    assert set(ex) == {'image', 'labels', 'instances'}
    h, w = ex['labels'].shape
    assert ex['image'].shape == (h, w, 3) and ex['image'].dtype == np.uint8
    assert ex['labels'].dtype == np.uint8
    assert ex['instances'].dtype == np.int32
    np.testing.assert_array_equal(ex['labels'], ex['instances'] > 0)
  # Eagerly too, on one example.
  ex = dsb2018.standardize(next(iter(builder.as_dataset('test'))))
  assert ex['instances'].dtype == tf.int32
  _, _, masks = images['0005']
  np.testing.assert_array_equal(ex['instances'].numpy(), _expected(masks)[0])


def test_two_builds_write_identical_files(tmp_path, synthetic):
  """Example order is deterministic although masks decode on threads."""
  builder, _ = synthetic
  manual = _write_copy(tmp_path / 'manual')
  again = _build(manual, tmp_path / 'tfds')
  for split in dsb2018.SPLITS:
    a = sorted(pathlib.Path(builder.data_dir).glob(f'*-{split}.tfrecord*'))
    b = sorted(pathlib.Path(again.data_dir).glob(f'*-{split}.tfrecord*'))
    assert a and [p.name for p in a] == [p.name for p in b]
    for pa, pb in zip(a, b):
      assert pa.read_bytes() == pb.read_bytes()


def test_accepts_a_dsb2018_subfolder(tmp_path):
  _write_copy(tmp_path / 'manual' / 'dsb2018')
  builder = _build(tmp_path / 'manual', tmp_path / 'tfds')
  assert sum(s.num_examples for s in builder.info.splits.values()) == 4


def test_a_copy_without_a_test_image_builds_without_that_split(tmp_path):
  images = _synthetic_images()
  del images['0005']
  builder = _build(_write_copy(tmp_path / 'manual', images), tmp_path / 'tfds')
  assert set(builder.info.splits) == {'train', 'validation'}


def test_logs_overlaps_per_image_and_per_split(tmp_path, caplog):
  caplog.set_level(logging.INFO, logger='absl')
  _build(_write_copy(tmp_path / 'manual'), tmp_path / 'tfds')
  text = caplog.text
  assert re.search(r'0000: 6 pixels claimed by more than one mask', text)
  assert re.search(r'0002: \d+ pixels claimed', text)
  assert 'dsb2018 train: 1 images with overlapping masks, 6 pixels' in text
  _, overlap = _expected(_synthetic_images()['0002'][2])
  assert (f'dsb2018 validation: 1 images with overlapping masks, {overlap} '
          'pixels') in text


# Errors: each names the offending file.


def _break(root, how):
  """Damages the synthetic copy at `root`; returns the path to name."""
  d = root / 'stage1_train' / '0001'
  image = d / 'images' / '0001.png'
  mask = d / 'masks' / 'm1.png'
  if how == 'missing_image':
    image.rename(image.with_name('other.png'))
    return image
  if how == 'no_masks':
    for m in (d / 'masks').iterdir():
      m.unlink()
    return d / 'masks'
  if how == 'no_masks_folder':
    for m in (d / 'masks').iterdir():
      m.unlink()
    (d / 'masks').rmdir()
    return d / 'masks'
  if how == 'mask_size':
    Image.fromarray(np.zeros((9, 8), np.uint8)).save(mask)
    return mask
  if how == 'mask_values':
    values = np.zeros((9, 7), np.uint8)
    values[0, :3] = (1, 128, 255)
    Image.fromarray(values).save(mask)
    return mask
  if how == 'mask_zero_one':
    Image.fromarray(_disc((9, 7), 3, 3, 2).astype(np.uint8)).save(mask)
    return mask
  if how == 'mask_empty':
    Image.fromarray(np.zeros((9, 7), np.uint8)).save(mask)
    return mask
  if how == 'mask_rgb':
    Image.fromarray(np.zeros((9, 7, 3), np.uint8)).save(mask)
    return mask
  if how == 'mask_garbage':
    mask.write_bytes(b'not a png at all')
    return mask
  if how == 'image_truncated':
    data = image.read_bytes()
    image.write_bytes(data[:len(data) // 2])
    return image
  if how == 'image_16_bit':
    Image.fromarray(np.zeros((9, 7), np.uint16)).save(image)
    return image
  raise ValueError(how)


ERRORS = {
    'missing_image': 'no image file',
    'no_masks': 'no mask files',
    'no_masks_folder': 'no mask files',
    'mask_size': 'mask is 8x9 but its image',
    'mask_values': r'mask values \[1, 128\]',
    'mask_zero_one': r'mask values \[1\]',
    'mask_empty': 'mask is all 0',
    'mask_rgb': "mask mode 'RGB'",
    'mask_garbage': 'unreadable PNG',
    'image_truncated': 'unreadable PNG',
    'image_16_bit': 'image mode',
}


@pytest.mark.parametrize('how', sorted(ERRORS))
def test_malformed_file_is_a_data_error_naming_it(tmp_path, how):
  root = _write_copy(tmp_path / 'manual')
  path = _break(root, how)
  with pytest.raises(DataError, match=re.escape(str(path))) as e:
    _build(root, tmp_path / 'tfds')
  assert re.search(ERRORS[how], str(e.value)), str(e.value)
  if how == 'mask_size':  # Names the image and both sizes as well.
    image = root / 'stage1_train' / '0001' / 'images' / '0001.png'
    assert f'its image {image} is 7x9' in str(e.value)


@pytest.mark.parametrize('exists', [False, True])
def test_missing_manual_folder_error_says_how_to_download(tmp_path, exists):
  manual = tmp_path / 'manual'
  if exists:  # Not empty, but without stage1_train/.
    (manual / 'stage1_test').mkdir(parents=True)
  with pytest.raises(DataError, match=re.escape(str(manual))) as e:
    _build(manual, tmp_path / 'tfds')
  message = str(e.value)
  assert dsb2018.MANUAL_DOWNLOAD_INSTRUCTIONS.strip() in message
  if exists:
    assert str(manual / 'stage1_train') in message
    assert str(manual / 'dsb2018' / 'stage1_train') in message


# Splits.


def test_split_of_is_a_deterministic_function_of_the_id():
  ids = [f'{i:064x}' for i in range(200)]
  first = [dsb2018.split_of(i) for i in ids]
  assert [dsb2018.split_of(i) for i in reversed(ids)] == first[::-1]
  assert set(first) <= {'train', 'validation', 'test'}
  # The rule written out, independently of the code.
  for i, split in zip(ids, first):
    bucket = int.from_bytes(hashlib.sha256(i.encode()).digest(), 'big') % 10
    assert split == ('train' if bucket < 8 else
                     'validation' if bucket == 8 else 'test')


def test_split_of_is_about_80_10_10():
  counts = collections.Counter(
      dsb2018.split_of(f'image-{i}') for i in range(5000))
  assert abs(counts['train'] / 5000 - 0.8) < 0.02, counts
  assert abs(counts['validation'] / 5000 - 0.1) < 0.015, counts
  assert abs(counts['test'] / 5000 - 0.1) < 0.015, counts


@needs_real
def test_real_ids_split_as_documented():
  ids = [p.name for p in (REAL / 'stage1_train').iterdir() if p.is_dir()]
  assert collections.Counter(map(dsb2018.split_of, ids)) == REAL_SPLITS


# The real copy.


def _real_instances(image_id):
  """Instance map and overlap of a real image, from its mask PNGs."""
  masks = {p.name: np.asarray(Image.open(p)) == 255
           for p in (REAL / 'stage1_train' / image_id / 'masks').glob('*.png')}
  return _expected(masks)


@needs_real
def test_real_examples_match_their_mask_files(tmp_path):
  builder = _build(REAL.parent, tmp_path, max_examples_per_split=2)
  for split in dsb2018.SPLITS:
    examples = _examples(builder, split)
    assert len(examples) == 2
    for ex in examples:
      image_id = ex['image_id'].decode()
      assert dsb2018.split_of(image_id) == split
      instances, overlap = _real_instances(image_id)
      np.testing.assert_array_equal(ex['instances'][..., 0], instances)
      assert ex['overlap_pixels'] == overlap
      rgba = np.asarray(Image.open(
          REAL / 'stage1_train' / image_id / 'images' / f'{image_id}.png'))
      np.testing.assert_array_equal(ex['image'], rgba[..., :3])


@needs_real
def test_real_overlapping_masks_follow_the_tie_rule():
  # One of the few real images whose masks overlap (2 pixels).
  image_id = '72e8c49dea44787114fd191f9e97e260f961c6e7ae4715bc95cc91db8d91a4e3'
  example = dsb2018.load_example(REAL / 'stage1_train' / image_id)
  instances, overlap = _real_instances(image_id)
  assert overlap == example['overlap_pixels'] == 2
  np.testing.assert_array_equal(example['instances'][..., 0], instances)


@needs_real
def test_full_real_build(tmp_path):
  builder = _build(REAL.parent, tmp_path)
  splits = builder.info.splits
  assert {s: splits[s].num_examples for s in splits} == REAL_SPLITS
  skip = tfds.decode.SkipDecoding()
  num_masks = overlap = overlapping = 0
  for split in REAL_SPLITS:
    ds = builder.as_dataset(split, decoders={
        'image': skip, 'segmentation': skip, 'instances': skip})
    for ex in tfds.as_numpy(ds):
      num_masks += int(ex['num_instances'])
      overlap += int(ex['overlap_pixels'])
      overlapping += int(ex['overlap_pixels'] > 0)
  assert num_masks == REAL_NUM_MASKS
  # Measured with an independent NumPy pass over the masks.
  assert (overlapping, overlap) == (5, 7)
