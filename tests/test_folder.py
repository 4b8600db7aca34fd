"""The `folder` data set: a user's folders prepared as the built-in sets are.

Equivalence with the dedicated builders (CamVid's SegNet layout, DSB2018's
per-nucleus masks merged here by a NumPy loop of the test's own), every mask
kind against expectations computed from the written arrays, each split
source, each error, and preparing again when a file or field changes.
"""

import hashlib
import pathlib
import shutil

import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from segjax.configs import base
from segjax.data import camvid
from segjax.data import datasets
from segjax.data import folder_files
from segjax.errors import ConfigError
from segjax.errors import DataError

import synthetic_dsb  # pylint: disable=g-bad-import-order
import synthetic_folder  # pylint: disable=g-bad-import-order
from synthetic_camvid import write_split  # pylint: disable=g-bad-import-order

SHARED = pathlib.Path(__file__).resolve().parents[2] / 'shared' / 'data'


def _config(tmp_path, images, masks, **fields):
  data = base.get_config().data
  data.name = 'folder'
  data.images_dir, data.masks_dir = str(images), str(masks)
  data.data_dir = str(tmp_path / 'tfds')
  for k, v in fields.items():
    data[k] = v
  return data


def _examples(builder):
  """{image_id: example} over every split of a prepared builder."""
  out = {}
  for split in builder.info.splits:
    for ex in tfds.as_numpy(builder.as_dataset(split)):
      out[ex['image_id'].decode()] = (split, ex)
  return out


# CamVid: a folder version of the SegNet layout gives the camvid builder's
# examples (the real copy's first images when ../shared has it).


def _camvid_source(tmp_path, real):
  root = tmp_path / 'CamVid'
  if not real:
    write_split(root, 'train', ['a', 'b', 'c'])
    write_split(root, 'val', ['d', 'e'], seed=1)
    return root
  for folder, n in (('train', 6), ('val', 3)):
    for sub in (folder, f'{folder}annot'):
      (root / sub).mkdir(parents=True)
    for image in sorted((SHARED / 'camvid' / folder).glob('*.png'))[:n]:
      shutil.copy(image, root / folder / image.name)
      shutil.copy(SHARED / 'camvid' / f'{folder}annot' / image.name,
                  root / f'{folder}annot' / image.name)
  return root


@pytest.mark.parametrize('real', [False, True], ids=['synthetic', 'real'])
def test_a_camvid_folder_gives_the_camvid_builders_examples(tmp_path, real):
  if real and not (SHARED / 'camvid').is_dir():
    pytest.skip(f'no real CamVid copy at {SHARED / "camvid"}')
  root = _camvid_source(tmp_path, real)
  reference = _examples(datasets.get_builder(
      'camvid', str(tmp_path / 'ref'), manual_dir=str(root)))
  images, masks = tmp_path / 'images', tmp_path / 'masks'
  for folder in ('train', 'val'):
    shutil.copytree(root / folder, images / folder)
    shutil.copytree(root / f'{folder}annot', masks / folder)
  config = _config(tmp_path, images, masks,
                   class_names=camvid.CLASS_NAMES, ignore_value=11)
  got = _examples(datasets.builder_for(config))
  folder_of = {'train': 'train', 'validation': 'val'}
  assert sorted(got) == sorted(f'{folder_of[s]}/{k}'
                               for k, (s, _) in reference.items())
  for key, (split, ex) in reference.items():
    got_split, got_ex = got[f'{folder_of[split]}/{key}']
    assert got_split == split
    np.testing.assert_array_equal(got_ex['image'], ex['image'])
    np.testing.assert_array_equal(got_ex['segmentation'], ex['segmentation'])


# DSB2018: per-nucleus masks merged into instance-id maps (painted in sorted
# file name order, the later mask winning) give the dsb2018 builder's.


def _merge_masks(mask_dir, shape):
  ids = np.zeros(shape, np.uint16)
  for i, path in enumerate(sorted(mask_dir.glob('*.png')), start=1):
    ids[np.asarray(Image.open(path)) > 0] = i
  return ids


def _dsb_source(tmp_path, real):
  root = tmp_path / 'dsb'
  if not real:
    synthetic_dsb.write_copy(root)
    return root
  for d in sorted((SHARED / 'dsb2018' / 'stage1_train').iterdir())[:8]:
    shutil.copytree(d, root / 'stage1_train' / d.name)
  return root


@pytest.mark.parametrize('real', [False, True], ids=['synthetic', 'real'])
def test_a_dsb2018_folder_gives_the_dsb2018_builders_examples(tmp_path, real):
  if real and not (SHARED / 'dsb2018').is_dir():
    pytest.skip(f'no real DSB2018 copy at {SHARED / "dsb2018"}')
  root = _dsb_source(tmp_path, real)
  reference = _examples(datasets.get_builder(
      'dsb2018', str(tmp_path / 'ref'), manual_dir=str(root)))
  images, masks = tmp_path / 'images', tmp_path / 'masks'
  images.mkdir()
  masks.mkdir()
  lists = {}
  for d in sorted((root / 'stage1_train').iterdir()):
    shutil.copy(d / 'images' / f'{d.name}.png', images / f'{d.name}.png')
    size = Image.open(d / 'images' / f'{d.name}.png').size
    Image.fromarray(_merge_masks(d / 'masks', size[::-1])).save(
        masks / f'{d.name}.png')
    lists.setdefault(reference[d.name][0], []).append(d.name)
  split_lists = {}
  for split, names in lists.items():
    (tmp_path / f'{split}.txt').write_text('\n'.join(names) + '\n')
    split_lists[split] = str(tmp_path / f'{split}.txt')
  config = _config(tmp_path, images, masks, mask_kind='instances',
                   splits='lists', split_lists=split_lists)
  got = _examples(datasets.builder_for(config))
  assert sorted(got) == sorted(reference)
  for key, (split, ex) in reference.items():
    got_split, got_ex = got[key]
    assert got_split == split
    for field in ('image', 'segmentation', 'instances'):
      np.testing.assert_array_equal(got_ex[field], ex[field], err_msg=field)


# Mask kinds, against the arrays the scenes were drawn from.


@pytest.fixture
def scenes(tmp_path):
  return tmp_path, synthetic_folder.write_scenes(tmp_path / 'src', 40,
                                                 classes=True)


def test_semantic_binary_and_instance_masks(scenes):
  tmp_path, drawn = scenes
  src = tmp_path / 'src'
  kinds = {
      'semantic': dict(class_names=('a', 'b', 'c', 'd', 'e')),
      'binary': {},
      'instances': dict(classes_dir=str(src / 'classes'),
                        class_names=('a', 'b', 'c', 'd', 'e'),
                        thing_classes=('c', 'd', 'e')),
  }
  for kind, fields in kinds.items():
    config = _config(tmp_path, src / 'images', src / f'masks_{kind}',
                     mask_kind=kind, split_fractions=(0.5, 0.3, 0.2),
                     **fields)
    spec = datasets.spec_for(config)
    got = _examples(datasets.builder_for(config))
    assert sorted(got) == sorted(drawn)
    for key, scene in drawn.items():
      ex = got[key][1]
      np.testing.assert_array_equal(ex['image'], scene['image'])
      labels = ex['segmentation'][..., 0]
      things = scene['instances'] > 0
      if kind == 'semantic':
        np.testing.assert_array_equal(labels, scene['segmentation'])
      elif kind == 'binary':
        np.testing.assert_array_equal(labels, things.astype(np.uint8))
      else:
        np.testing.assert_array_equal(ex['instances'][..., 0],
                                      scene['instances'])
        np.testing.assert_array_equal(
            labels, np.where(things, scene['segmentation'], 0))
    if kind == 'instances':
      assert spec.thing_classes == (2, 3, 4)


def test_rgb_masks_through_a_palette(tmp_path):
  palette = ((0, 0, 0), (255, 0, 0), (0, 128, 255))
  rng = np.random.default_rng(0)
  (tmp_path / 'im').mkdir()
  (tmp_path / 'mk').mkdir()
  truth = {}
  for i in range(30):
    ids = rng.integers(0, 4, (6, 7))  # 3 = void
    rgb = np.array(palette + ((9, 9, 9),), np.uint8)[ids]
    Image.fromarray(rgb).save(tmp_path / 'mk' / f'{i}.png')
    Image.fromarray(rng.integers(0, 256, (6, 7, 3), np.uint8)).save(
        tmp_path / 'im' / f'{i}.png')
    truth[str(i)] = np.where(ids == 3, 255, ids)
  config = _config(tmp_path, tmp_path / 'im', tmp_path / 'mk',
                   class_names=('x', 'y', 'z'), palette=palette,
                   ignore_color=(9, 9, 9), split_fractions=(0.6, 0.4, 0.0))
  got = _examples(datasets.builder_for(config))
  for key, labels in truth.items():
    np.testing.assert_array_equal(got[key][1]['segmentation'][..., 0], labels)


def _png16_rgb(path, values):
  """Writes a 16-bit RGB PNG by hand (Pillow cannot)."""
  import struct  # pylint: disable=g-import-not-at-top
  import zlib  # pylint: disable=g-import-not-at-top
  h, w, _ = values.shape
  raw = b''.join(b'\x00' + values[r].astype('>u2').tobytes() for r in range(h))

  def chunk(tag, data):
    return (struct.pack('>I', len(data)) + tag + data +
            struct.pack('>I', zlib.crc32(tag + data) & 0xffffffff))
  path.write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(
      b'IHDR', struct.pack('>IIBBBBB', w, h, 16, 2, 0, 0, 0)) +
                   chunk(b'IDAT', zlib.compress(raw)) + chunk(b'IEND', b''))


def test_image_formats_become_8_bit_rgb_by_one_rule(tmp_path):
  rng = np.random.default_rng(1)
  images, masks = tmp_path / 'im', tmp_path / 'mk'
  images.mkdir()
  masks.mkdir()
  v16 = rng.integers(0, 65536, (5, 6), dtype=np.uint16)
  v16[0, :4] = [0, 257, 65535, 128]
  rgb16 = rng.integers(0, 65536, (5, 6, 3)).astype(np.uint16)
  rgba = rng.integers(0, 256, (5, 6, 4), dtype=np.uint8)
  gray = rng.integers(0, 256, (5, 6), dtype=np.uint8)

  def round257(v):  # The rule, in float64.
    return np.floor(v.astype(np.float64) / 257 + 0.5).astype(np.uint8)
  expected = {
      'gray16': np.repeat(round257(v16)[..., None], 3, -1),
      'rgb16': round257(rgb16),
      'rgba': rgba[..., :3],  # alpha dropped
      'gray': np.repeat(gray[..., None], 3, -1),
      'tiff': rgba[..., :3],
      'rgb16_tiff': round257(rgb16),  # Pillow cannot: read by tifffile.
  }
  Image.fromarray(v16).save(images / 'gray16.png')
  _png16_rgb(images / 'rgb16.png', rgb16)
  Image.fromarray(rgba).save(images / 'rgba.png')
  Image.fromarray(gray).save(images / 'gray.png')
  Image.fromarray(rgba[..., :3]).save(images / 'tiff.tif')
  tifffile = pytest.importorskip('tifffile', reason='the data extra has it')
  tifffile.imwrite(images / 'rgb16_tiff.tif', rgb16, photometric='rgb')
  for key in expected:
    Image.fromarray(np.zeros((5, 6), np.uint8)).save(masks / f'{key}.png')
  # Enough names for every hash split to get one; their masks too.
  for i in range(30):
    Image.fromarray(gray).save(images / f'pad{i}.png')
    Image.fromarray(np.zeros((5, 6), np.uint8)).save(masks / f'pad{i}.png')
  config = _config(tmp_path, images, masks, class_names=('bg',),
                   split_fractions=(0.7, 0.3, 0.0))
  got = _examples(datasets.builder_for(config))
  for key, want in expected.items():
    np.testing.assert_array_equal(got[key][1]['image'], want, err_msg=key)


# Split sources.


def _hash_split(key, fractions):
  u = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], 'big') / 2**64
  edges = np.cumsum(fractions)
  return ('train', 'validation', 'test')[int(np.sum(u >= edges))]


def test_the_hash_split_is_pinned():
  # `printf a | sha256sum` starts ca978112ca1bbdca: the split of a name is
  # this number against the fractions, on any machine.
  assert folder_files.hash_fraction('a') == 0xca978112ca1bbdca / 2**64
  keys = ['a'] + [f'k{i}' for i in range(100)]
  for fractions, want in (((0.8, 0.1, 0.1), 'train'),
                          ((0.7, 0.2, 0.1), 'validation'),
                          ((0.5, 0.2, 0.3), 'test')):
    assert 'a' in folder_files.split_keys(keys, 'hash', fractions)[want]


def test_splits_by_hash_folders_and_lists(scenes):
  tmp_path, drawn = scenes
  src = tmp_path / 'src'
  config = _config(tmp_path, src / 'images', src / 'masks_semantic',
                   class_names=tuple('abcde'),
                   split_fractions=(0.5, 0.3, 0.2))
  got = _examples(datasets.builder_for(config))
  for key in drawn:
    assert got[key][0] == _hash_split(key, (0.5, 0.3, 0.2))
  # Subfolders train/ val/ test/ of both folders.
  images, masks = tmp_path / 'f_im', tmp_path / 'f_mk'
  keys = sorted(drawn)
  want = {}
  for i, key in enumerate(keys):
    folder = ('train', 'val', 'test')[i % 3]
    want[f'{folder}/{key}'] = ('train', 'validation', 'test')[i % 3]
    for s, d in ((src / 'images', images), (src / 'masks_semantic', masks)):
      (d / folder).mkdir(parents=True, exist_ok=True)
      shutil.copy(s / f'{key}.png', d / folder / f'{key}.png')
  got = _examples(datasets.builder_for(_config(
      tmp_path, images, masks, class_names=tuple('abcde'))))
  assert {k: s for k, (s, _) in got.items()} == want
  # List files; a line may carry the image's extension.
  (tmp_path / 'tr.txt').write_text('\n'.join(keys[:30]))
  (tmp_path / 'va.txt').write_text('\n'.join(f'{k}.png' for k in keys[30:]))
  got = _examples(datasets.builder_for(_config(
      tmp_path, src / 'images', src / 'masks_semantic',
      class_names=tuple('abcde'), splits='lists',
      split_lists={'train': str(tmp_path / 'tr.txt'),
                   'validation': str(tmp_path / 'va.txt')})))
  assert {k: s for k, (s, _) in got.items()} == {
      k: 'train' if i < 30 else 'validation' for i, k in enumerate(keys)}


def test_suffixes_one_shared_folder_and_subfolders(tmp_path):
  drawn = synthetic_folder.write_scenes(tmp_path / 'src', 30,
                                        mask_suffix='_mask')
  mixed = tmp_path / 'mixed' / 'sub'
  mixed.mkdir(parents=True)
  for key in drawn:
    shutil.copy(tmp_path / 'src' / 'images' / f'{key}.png',
                mixed / f'{key}.png')
    shutil.copy(tmp_path / 'src' / 'masks_instances' / f'{key}_mask.png',
                mixed / f'{key}_mask.png')
  config = _config(tmp_path, mixed.parent, mixed.parent,
                   mask_kind='instances', mask_suffix='_mask',
                   split_fractions=(0.6, 0.4, 0.0))
  got = _examples(datasets.builder_for(config))
  assert sorted(got) == sorted(f'sub/{k}' for k in drawn)
  for key, scene in drawn.items():
    np.testing.assert_array_equal(got[f'sub/{key}'][1]['instances'][..., 0],
                                  scene['instances'])


# Errors: one DataError naming the file (or field) at fault.


def _semantic(tmp_path, **fields):
  src = tmp_path / 'src'
  return _config(tmp_path, src / 'images', src / 'masks_semantic',
                 class_names=tuple('abcde'), **fields)


@pytest.mark.parametrize('fault, message', [
    ('no_mask', r'1 images in .* without a mask .*: scene003\.png'),
    ('no_image', r'1 masks in .* without an image .*: scene004\.png'),
    ('size', r'masks_semantic/scene005\.png: mask is 3x2 but its image'),
    ('values', r'masks_semantic/scene006\.png: values \[7\] are neither'),
    ('truncated', r'images/scene007\.png: cannot read image'),
    ('empty', r'the test split got none of the 40 images'),
])
def test_errors_name_the_file(scenes, fault, message):
  tmp_path, _ = scenes
  src = tmp_path / 'src'
  fields = {'split_fractions': (0.5, 0.3, 0.2)}
  if fault == 'no_mask':
    (src / 'masks_semantic' / 'scene003.png').unlink()
  elif fault == 'no_image':
    (src / 'images' / 'scene004.png').unlink()
  elif fault == 'size':
    Image.fromarray(np.zeros((2, 3), np.uint8)).save(
        src / 'masks_semantic' / 'scene005.png')
  elif fault == 'values':
    Image.fromarray(np.full((40, 40), 7, np.uint8)).save(
        src / 'masks_semantic' / 'scene006.png')
  elif fault == 'truncated':
    path = src / 'images' / 'scene007.png'
    path.write_bytes(path.read_bytes()[:100])
  elif fault == 'empty':
    fields = {'split_fractions': (0.5, 0.5 - 1e-9, 1e-9)}
  config = _semantic(tmp_path, **fields)
  with pytest.raises(DataError, match=message):
    datasets.builder_for(config)
  # Nothing prepared is left behind to be read later.
  assert not list((tmp_path / 'tfds').rglob('dataset_info.json'))
  with pytest.raises((DataError, ConfigError)):
    datasets.builder_for(config, prepare=False)


def test_a_changed_file_or_field_is_prepared_again(scenes):
  tmp_path, _ = scenes
  config = _semantic(tmp_path, split_fractions=(0.5, 0.3, 0.2))
  first = datasets.builder_for(config)
  assert datasets.builder_for(config).data_path == first.data_path
  mask = tmp_path / 'src' / 'masks_semantic' / 'scene000.png'
  Image.fromarray(np.zeros((40, 40), np.uint8)).save(mask)
  second = datasets.builder_for(config)
  assert second.data_path != first.data_path
  assert first.is_prepared()  # The earlier set is left as it was.
  ex = _examples(second)['scene000'][1]
  assert not ex['segmentation'].any()
  config.ignore_value = 254
  third = datasets.builder_for(config)
  assert third.data_path not in (first.data_path, second.data_path)


def _pairs(tmp_path, masks, size=(5, 6)):
  """Writes one random image per mask: {name: mask array}; returns dirs."""
  rng = np.random.default_rng(2)
  images, mask_dir = tmp_path / 'im', tmp_path / 'mk'
  images.mkdir(exist_ok=True)
  mask_dir.mkdir(exist_ok=True)
  for name, (mask, mode) in masks.items():
    Image.fromarray(rng.integers(0, 256, size + (3,), np.uint8)).save(
        images / f'{name}.png')
    (Image.fromarray(mask) if mode is None else
     Image.fromarray(mask).convert(mode)).save(mask_dir / f'{name}.png')
  return images, mask_dir


def test_binary_masks_of_every_scale_and_palette_masks(tmp_path):
  rng = np.random.default_rng(3)
  fg = rng.random((5, 6)) < 0.5
  forms = {
      'zero_one': (fg.astype(np.uint8), None),
      'zero_255': (fg.astype(np.uint8) * 255, None),
      'one_bit': (fg.astype(np.uint8) * 255, '1'),
      'sixteen': (fg.astype(np.uint16) * 65535, None),
  }
  masks = {f'{name}{i}': form for name, form in forms.items()
           for i in range(12)}
  images, mask_dir = _pairs(tmp_path, masks)
  got = _examples(datasets.builder_for(_config(
      tmp_path, images, mask_dir, mask_kind='binary',
      split_fractions=(0.6, 0.4, 0.0))))
  for key in masks:
    np.testing.assert_array_equal(got[key][1]['segmentation'][..., 0],
                                  fg.astype(np.uint8), err_msg=key)
  # Palette PNGs hold class ids as palette indices.
  ids = rng.integers(0, 3, (5, 6)).astype(np.uint8)
  p_masks = {}
  for i in range(20):
    im = Image.fromarray(ids, 'P')
    im.putpalette([0, 0, 0, 200, 0, 0, 0, 200, 0] * 85 + [0, 0, 0])
    p_masks[f'p{i}'] = im
  for folder in ('pal', 'pim'):
    (tmp_path / folder).mkdir()
  for name, im in p_masks.items():
    im.save(tmp_path / 'pal' / f'{name}.png')
    shutil.copy(images / 'zero_one0.png', tmp_path / 'pim' / f'{name}.png')
  got = _examples(datasets.builder_for(_config(
      tmp_path, tmp_path / 'pim', tmp_path / 'pal', class_names=tuple('abc'),
      split_fractions=(0.6, 0.4, 0.0))))
  for key in p_masks:
    np.testing.assert_array_equal(got[key][1]['segmentation'][..., 0], ids)


@pytest.mark.parametrize('case, error, message', [
    ('two_masks', DataError, r'two files for .x.: x\.png and x\.tif'),
    ('rgb_no_palette', DataError, r'mk/x\.png: an RGB mask; set .*palette'),
    ('colour', DataError, r'mk/x\.png: colours \[\(1, 2, 3\)\] are in '),
    ('stray', DataError, r'im/x: not under a split folder'),
    ('listed_twice', DataError,
     r"va\.txt, line 1: 'x\.png' is also in the train"),
    ('things', ConfigError, r'instance masks without classes_dir have one'),
    ('ignore_is_a_class', ConfigError, r'ignore_value=1 is the id of class'),
    ('palette', ConfigError, r'palette: \(1, 2\) is not an \(r, g, b\)'),
])
def test_more_errors_name_the_file_or_field(tmp_path, case, error, message):
  mask = np.zeros((5, 6), np.uint8)
  names = {f'n{i}': (mask, None) for i in range(20)}
  names['x'] = (mask, None)
  images, masks = _pairs(tmp_path, names)
  fields = dict(class_names=('bg', 'fg'), split_fractions=(0.6, 0.4, 0.0))
  if case == 'two_masks':
    Image.fromarray(mask).save(masks / 'x.tif')
  elif case in ('rgb_no_palette', 'colour'):
    Image.fromarray(np.full((5, 6, 3), (1, 2, 3), np.uint8)).save(
        masks / 'x.png')
    if case == 'colour':
      fields['palette'] = ((0, 0, 0), (255, 255, 255))
  elif case == 'stray':
    for d in (images, masks):
      (d / 'train').mkdir()
      for i in range(20):
        (d / f'n{i}.png').rename(d / 'train' / f'n{i}.png')
  elif case == 'listed_twice':
    (tmp_path / 'tr.txt').write_text('x\nn0\n')
    (tmp_path / 'va.txt').write_text('x.png\n')
    fields['split_lists'] = {'train': str(tmp_path / 'tr.txt'),
                             'validation': str(tmp_path / 'va.txt')}
  elif case == 'things':
    fields.update(mask_kind='instances', class_names=('bg', 'a', 'b'))
  elif case == 'ignore_is_a_class':
    fields['ignore_value'] = 1
  elif case == 'palette':
    fields['palette'] = ((1, 2), (3, 4, 5))
  with pytest.raises(error, match=message):
    datasets.builder_for(_config(tmp_path, images, masks, **fields))
