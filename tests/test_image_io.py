"""Tests for segjax.imaging.image_io: reading users' images, writing outputs.

Small files written with Pillow into tmp_path; no JAX.
"""

import json
import pathlib
import struct
import warnings
import zlib

import numpy as np
from PIL import Image
from PIL import ImageFile
import pytest

from segjax.errors import DataError
from segjax.imaging import image_io
from segjax.imaging import visualize


def _read(path, **kw):
  with warnings.catch_warnings():
    warnings.simplefilter('error')  # nothing (bomb warnings included) prints
    out = image_io.read_image(path, **kw)
  assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[-1] == 3
  return out


def _gray3(g):
  return np.repeat(np.asarray(g, np.uint8)[..., None], 3, axis=-1)


# ----------------------------------------------------------------- read_image


def test_rgb_and_l(tmp_path):
  rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
  Image.fromarray(rgb).save(tmp_path / 'a.png')
  np.testing.assert_array_equal(_read(tmp_path / 'a.png'), rgb)
  gray = np.arange(35, dtype=np.uint8).reshape(5, 7) * 7
  Image.fromarray(gray).save(tmp_path / 'g.png')
  np.testing.assert_array_equal(_read(str(tmp_path / 'g.png')), _gray3(gray))


def test_16_bit_gray_is_rounded_v_over_257(tmp_path):
  v = np.array([[0, 128, 129, 257, 385, 386, 32896, 65535]], np.uint16)
  Image.fromarray(v).save(tmp_path / 'v.png')
  assert Image.open(tmp_path / 'v.png').mode.startswith('I;16')
  expected = np.array([[round(int(x) / 257) for x in v[0]]])
  assert expected.tolist() == [[0, 0, 1, 1, 1, 2, 128, 255]]
  np.testing.assert_array_equal(_read(tmp_path / 'v.png'), _gray3(expected))


def test_32_bit_int_and_float_gray(tmp_path):
  i = np.array([[-5, 257, 65535, 70000]], np.int32)
  Image.fromarray(i).save(tmp_path / 'i.tif')
  assert Image.open(tmp_path / 'i.tif').mode == 'I'
  np.testing.assert_array_equal(_read(tmp_path / 'i.tif'),
                                _gray3([[0, 1, 255, 255]]))
  f = np.array([[-5.0, 0.4, 100.6, 300.0]], np.float32)
  Image.fromarray(f).save(tmp_path / 'f.tif')
  np.testing.assert_array_equal(_read(tmp_path / 'f.tif'),
                                _gray3([[0, 0, 101, 255]]))


def test_palette_with_and_without_transparency(tmp_path):
  idx = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)
  palette = [10, 20, 30, 200, 100, 50, 0, 255, 7]
  im = Image.fromarray(idx, 'P')
  im.putpalette(palette + [0] * (768 - len(palette)))
  im.save(tmp_path / 'p.png')
  colours = np.array(palette, np.uint8).reshape(3, 3)
  np.testing.assert_array_equal(_read(tmp_path / 'p.png'), colours[idx])
  im.save(tmp_path / 'pt.png', transparency=1)  # index 1 fully transparent
  expected = colours[idx].copy()
  expected[idx == 1] = 0  # composited on black
  np.testing.assert_array_equal(_read(tmp_path / 'pt.png'), expected)


def test_alpha_is_composited_on_black(tmp_path):
  g = np.array([[200, 200, 100, 255]], np.uint8)
  a = np.array([[255, 0, 128, 51]], np.uint8)
  Image.fromarray(np.stack([g, a], -1), 'LA').save(tmp_path / 'la.png')
  expected = np.round(g.astype(float) * a / 255).astype(np.uint8)
  assert expected.tolist() == [[200, 0, 50, 51]]
  np.testing.assert_array_equal(_read(tmp_path / 'la.png'), _gray3(expected))
  rgb = np.array([[[255, 10, 100]] * 4], np.uint8)
  Image.fromarray(np.concatenate([rgb, a[..., None]], -1), 'RGBA').save(
      tmp_path / 'rgba.png')
  expected = np.round(rgb.astype(float) * a[..., None] / 255)
  np.testing.assert_array_equal(_read(tmp_path / 'rgba.png'), expected)


def test_trns_colour_and_unsupported_mode(tmp_path):
  rgb = np.array([[[1, 2, 3], [9, 9, 9]]], np.uint8)
  Image.fromarray(rgb).save(tmp_path / 't.png', transparency=(1, 2, 3))
  np.testing.assert_array_equal(_read(tmp_path / 't.png'),
                                [[[0, 0, 0], [9, 9, 9]]])
  Image.new('LAB', (2, 2), (50, 0, 0)).save(tmp_path / 'lab.tif')
  with pytest.raises(image_io.ImageReadError, match="colour mode 'LAB'"):
    _read(tmp_path / 'lab.tif')


def test_cmyk(tmp_path):
  cmyk = np.array([[[10, 20, 30, 0], [255, 0, 128, 0]]], np.uint8)
  Image.fromarray(cmyk, 'CMYK').save(tmp_path / 'c.tif')
  np.testing.assert_array_equal(_read(tmp_path / 'c.tif'),
                                255 - cmyk[..., :3])  # with K = 0


def test_exif_orientation_is_applied(tmp_path):
  # 40 wide x 20 tall, white top-left 10 x 10 block; orientation 6 means
  # "rotate 90 degrees clockwise to display".
  a = np.zeros((20, 40, 3), np.uint8)
  a[:10, :10] = 255
  exif = Image.Exif()
  exif[0x0112] = 6
  Image.fromarray(a).save(tmp_path / 'r.jpg', exif=exif, quality=95)
  out = _read(tmp_path / 'r.jpg')
  assert out.shape == (40, 20, 3)
  expected = np.rot90(a, k=-1)  # clockwise: the block ends up top-right
  assert np.abs(out.astype(int) - expected).max() < 40  # JPEG noise


def _huge_png_header(width, height):
  """A PNG with a real header but a few bytes of pixel data."""
  def chunk(kind, data):
    return (struct.pack('>I', len(data)) + kind + data
            + struct.pack('>I', zlib.crc32(kind + data)))
  return (b'\x89PNG\r\n\x1a\n'
          + chunk(b'IHDR', struct.pack('>IIBBBBB', width, height, 8, 0, 0,
                                       0, 0))
          + chunk(b'IDAT', zlib.compress(b'\0' * 16)) + chunk(b'IEND', b''))


def test_too_many_pixels_is_refused_from_the_header(tmp_path):
  path = tmp_path / 'bomb.png'
  path.write_bytes(_huge_png_header(100_000, 100_000))  # 1e10 pixels
  for kw in ({}, {'max_pixels': 1_000_000}):
    with pytest.raises(image_io.ImageReadError) as e:
      _read(path, **kw)
    msg = str(e.value)
    assert str(path) in msg and '100000 x 100000' in msg
    assert '--max_pixels' in msg
  assert '1000000 pixels' in msg


def test_size_check_comes_before_decoding(tmp_path, monkeypatch):
  Image.new('L', (2000, 2000)).save(tmp_path / 'big.png')

  def no_decoding(self):
    raise AssertionError('decoded')
  monkeypatch.setattr(ImageFile.ImageFile, 'load', no_decoding)
  with pytest.raises(image_io.ImageReadError, match=r'2000 x 2000.*1000 pix'):
    _read(tmp_path / 'big.png', max_pixels=1000)


def test_max_pixels_replaces_pillows_own_limit(tmp_path, monkeypatch):
  # Pillow would warn above 100 pixels and raise above 200; read_image uses
  # its own limit instead, silently, and leaves Pillow's setting as it was.
  monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 100)
  Image.new('L', (300, 200), 9).save(tmp_path / 'big.png')
  np.testing.assert_array_equal(_read(tmp_path / 'big.png'),
                                np.full((200, 300, 3), 9, np.uint8))
  assert Image.MAX_IMAGE_PIXELS == 100


def test_bad_files_name_the_file(tmp_path):
  noise = np.random.default_rng(1).integers(0, 256, (64, 64, 3), np.uint8)
  Image.fromarray(noise).save(tmp_path / 'full.png')
  data = (tmp_path / 'full.png').read_bytes()
  (tmp_path / 'truncated.png').write_bytes(data[:len(data) // 2])
  (tmp_path / 'text.png').write_text('not an image\n')
  (tmp_path / 'empty.png').write_bytes(b'')
  (tmp_path / 'folder.png').mkdir()
  for name in ('truncated.png', 'text.png', 'empty.png', 'missing.png',
               'folder.png'):
    with pytest.raises(image_io.ImageReadError) as e:
      _read(tmp_path / name)
    assert str(e.value).startswith(str(tmp_path / name) + ':'), str(e.value)
    assert isinstance(e.value, DataError)


# ---------------------------------------------------------------- find_images


def test_find_images(tmp_path):
  for name in ('b.png', 'a.JPG', 'd.tiff', 'c.txt', '.hidden.png', 'e.Webp'):
    (tmp_path / name).write_bytes(b'x')
  (tmp_path / 'sub.png').mkdir()
  (tmp_path / 'sub.png' / 'deep.png').write_bytes(b'x')
  names = [p.name for p in image_io.find_images([tmp_path])]
  assert names == ['a.JPG', 'b.png', 'd.tiff', 'e.Webp']
  # Explicit files are kept whatever their extension, order kept, no dups.
  found = image_io.find_images([str(tmp_path / 'c.txt'), tmp_path,
                                tmp_path / 'b.png'])
  assert [p.name for p in found] == ['c.txt', 'a.JPG', 'b.png', 'd.tiff',
                                     'e.Webp']


def test_find_images_errors(tmp_path):
  with pytest.raises(DataError, match='nowhere'):
    image_io.find_images([tmp_path / 'nowhere'])
  (tmp_path / 'empty').mkdir()
  (tmp_path / 'empty' / 'notes.txt').write_text('x')
  with pytest.raises(DataError, match=r'no image files.*empty'):
    image_io.find_images([tmp_path / 'empty'])


# ------------------------------------------------------------------- writers


def _image(h, w, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (h, w, 3), np.uint8)


def test_write_semantic_round_trip(tmp_path):
  labels = np.random.default_rng(2).integers(0, 21, (6, 9))
  labels[0, :3] = 255
  image = _image(6, 9)
  paths = image_io.write_semantic(tmp_path / 'out', 'x', image, labels,
                                  alpha=0.25)
  assert {k: p.name for k, p in paths.items()} == {
      'labels': 'x_labels.png', 'color': 'x_color.png',
      'overlay': 'x_overlay.png'}
  assert sorted(p.name for p in (tmp_path / 'out').iterdir()) == sorted(
      p.name for p in paths.values())  # no temp files left behind
  with Image.open(paths['labels']) as im:
    assert im.mode == 'L'
    np.testing.assert_array_equal(np.asarray(im), labels)
  np.testing.assert_array_equal(np.asarray(Image.open(paths['color'])),
                                visualize.colorize(labels))
  overlay = np.asarray(Image.open(paths['overlay']))
  assert overlay.shape == (6, 9, 3) and overlay.dtype == np.uint8
  blend = np.round(0.75 * image + 0.25 * visualize.colorize(labels))
  np.testing.assert_array_equal(overlay[1:], blend[1:])
  np.testing.assert_array_equal(overlay[0, :3], image[0, :3])  # ignored


def test_write_semantic_16_bit(tmp_path):
  labels = np.array([[0, 255, 300], [1000, 65535, 7]])
  paths = image_io.write_semantic(tmp_path, 'y', _image(2, 3), labels,
                                  ignore_index=-1)
  with Image.open(paths['labels']) as im:
    assert im.mode in ('I;16', 'I')
    np.testing.assert_array_equal(np.asarray(im), labels)


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
  labels = np.zeros((2, 2), np.int32)
  old = image_io.write_semantic(tmp_path / 'a', 'z', _image(2, 2), labels)
  before = old['labels'].read_bytes()

  real_write = pathlib.Path.write_bytes

  def broken_write(self, data):  # The disk fills half-way through a file.
    real_write(self, data[:len(data) // 2])
    raise OSError('disk full')
  monkeypatch.setattr(pathlib.Path, 'write_bytes', broken_write)
  for folder in ('a', 'b'):
    with pytest.raises(OSError, match='disk full'):
      image_io.write_semantic(tmp_path / folder, 'z', _image(2, 2), labels)
  assert list((tmp_path / 'b').iterdir()) == []  # no half file, no temp
  assert sorted(p.name for p in (tmp_path / 'a').iterdir()) == [
      'z_color.png', 'z_labels.png', 'z_overlay.png']
  assert old['labels'].read_bytes() == before  # the old file is untouched


def _check_panoptic(paths, panoptic, divisor, things, names=None,
                    scores=None):
  record = json.loads(paths['panoptic_json'].read_text())
  assert record['file_name'] == paths['panoptic'].name
  rgb = np.asarray(Image.open(paths['panoptic'])).astype(np.int64)
  seg = rgb[..., 0] + 256 * rgb[..., 1] + 256 ** 2 * rgb[..., 2]
  info = {s['id']: s for s in record['segments_info']}
  # Independent reference: plain Python over the pixels.
  ids = sorted({int(p) for p in panoptic.ravel() if p // divisor != 255})
  assert sorted(info) == list(range(1, len(ids) + 1))
  for y in range(panoptic.shape[0]):
    for x in range(panoptic.shape[1]):
      p = int(panoptic[y, x])
      if p // divisor == 255:
        assert seg[y, x] == 0
      else:
        assert seg[y, x] == ids.index(p) + 1
        assert info[seg[y, x]]['category_id'] == p // divisor
  for k, p in enumerate(ids, start=1):
    s = info[k]
    ys, xs = np.nonzero(panoptic == p)
    assert s['area'] == len(ys)
    assert s['bbox'] == [xs.min(), ys.min(), xs.max() - xs.min() + 1,
                         ys.max() - ys.min() + 1]
    assert s['isthing'] == int(p // divisor in things)
    assert s['iscrowd'] == 0
    if names is not None:
      assert s['category_name'] == names[p // divisor]
    assert s.get('score') == (scores or {}).get(p)
  np.testing.assert_array_equal(
      np.asarray(Image.open(paths['panoptic_color'])),
      visualize.colorize_panoptic(panoptic, divisor))
  return record


def test_write_panoptic_round_trip(tmp_path):
  d = 1000
  pan = np.full((12, 16), 1 * d)  # stuff class 1
  pan[:4, :5] = 0  # stuff class 0
  pan[5:9, 2:6] = 3 * d + 2  # thing class 3, instance 2
  pan[6:11, 9:15] = 3 * d + 1
  pan[1:3, 10:12] = 4 * d + 7
  pan[11, :] = 255 * d  # void
  pan[10, 0] = 255 * d + 4  # void with an instance part is still void
  names = ['sky', 'road', 'x', 'car', 'person']
  scores = {3 * d + 1: 0.75, 4 * d + 7: 0.5}
  paths = image_io.write_panoptic(tmp_path, 'p', pan, label_divisor=d,
                                  thing_classes=(3, 4), class_names=names,
                                  scores=scores)
  record = _check_panoptic(paths, pan, d, {3, 4}, names, scores)
  assert record['image_id'] == 'p'
  assert [s['category_id'] for s in record['segments_info']] == [0, 1, 3, 3, 4]
  assert sorted(p.name for p in tmp_path.iterdir()) == [
      'p_panoptic.json', 'p_panoptic.png', 'p_panoptic_color.png']


def test_write_panoptic_many_segments_no_void(tmp_path):
  # 300 segments: ids above 255 use the G channel.
  pan = (np.arange(300).reshape(15, 20) % 7) * 1000 + np.arange(300).reshape(
      15, 20) // 7 + 1
  paths = image_io.write_panoptic(tmp_path, 'q', pan, label_divisor=1000,
                                  thing_classes=[2], image_id=42)
  record = _check_panoptic(paths, pan, 1000, {2})
  assert record['image_id'] == 42 and len(record['segments_info']) == 300
