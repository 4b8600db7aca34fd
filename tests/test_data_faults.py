"""Manual data sets: prepared data follows its source files; damaged files
stop the build, naming the file, and leave nothing prepared.

Small copies of each layout are written here (CamVid's SegNet layout, ADE20K,
Cityscapes) or by `synthetic_dsb` (DSB2018); the real copies in
`../shared/data` are only scanned, where present.
"""

import logging
import os
import pathlib
import shutil
import time

import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

import synthetic_dsb
from segjax.data import datasets
from segjax.data import fingerprint
from segjax.errors import ConfigError
from segjax.errors import DataError

SHARED = pathlib.Path(__file__).resolve().parents[2] / 'shared' / 'data'


def _write_camvid(root, labels=None):
  """A SegNet-layout CamVid copy: train a, b, c and val d, 12x8 pixels.

  Args:
    root: the folder to write.
    labels: {name: [8, 12] raw label map} to write instead of random ones.

  Returns:
    {name: raw label map}.
  """
  rng = np.random.default_rng(0)
  out = {}
  for folder, names in (('train', 'abc'), ('val', 'd')):
    (root / folder).mkdir(parents=True)
    (root / f'{folder}annot').mkdir()
    for name in names:
      image = rng.integers(0, 256, (8, 12, 3), dtype=np.uint8)
      label = rng.integers(0, 12, (8, 12), dtype=np.uint8)  # 11 = void.
      label = (labels or {}).get(name, label)
      Image.fromarray(image).save(root / folder / f'{name}.png')
      Image.fromarray(label).save(root / f'{folder}annot' / f'{name}.png')
      out[name] = label
  return out


def _labels(builder, split='train'):
  """{image id: [H, W] stored labels} of a prepared CamVid split."""
  return {ex['image_id'].decode(): ex['segmentation'][..., 0]
          for ex in tfds.as_numpy(builder.as_dataset(split))}


def _stored(raw):
  return np.where(raw == 11, 255, raw)


def _snapshot(folder):
  """{relative path: bytes} of every file under `folder`."""
  return {p.relative_to(folder): p.read_bytes()
          for p in sorted(pathlib.Path(folder).rglob('*')) if p.is_file()}


def _camvid(manual, data_dir, **kw):
  return datasets.get_builder('camvid', str(data_dir), manual_dir=str(manual),
                              **kw)


@pytest.fixture
def absl_log(caplog):
  caplog.set_level(logging.INFO, logger='absl')
  return caplog


def _no_rebuild(monkeypatch):
  """Makes any preparation fail the test."""
  def fail(self, *args, **kwargs):
    raise AssertionError(f'{self.name} was prepared again')
  monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare', fail)


# Stale prepared data: the prepared set follows its source folder.


def test_another_source_folder_is_prepared_again_into_its_own_folder(
    tmp_path, absl_log):
  old_labels = _write_camvid(tmp_path / 'A')
  data_dir = tmp_path / 'tfds'
  first = _camvid(tmp_path / 'A', data_dir)
  assert pathlib.Path(first.data_path) == data_dir / 'camvid' / '1.0.0'
  before = _snapshot(first.data_path)
  # Another folder (a copy keeping times) whose label map of 'b' changed.
  shutil.copytree(tmp_path / 'A', tmp_path / 'B')
  new_label = np.full((8, 12), 3, np.uint8)
  Image.fromarray(new_label).save(tmp_path / 'B' / 'trainannot' / 'b.png')

  second = _camvid(tmp_path / 'B', data_dir)

  assert second.data_path != first.data_path
  assert pathlib.Path(second.data_path).is_relative_to(
      data_dir / datasets.BY_SOURCE)
  np.testing.assert_array_equal(_labels(second)['b'], new_label)
  np.testing.assert_array_equal(_labels(second)['a'], _stored(old_labels['a']))
  message = next(r.getMessage() for r in absl_log.records
                 if 'source folder changed since' in r.getMessage())
  assert f'since {first.data_path} was prepared from {tmp_path / "A"}' in (
      message)
  assert (f'1 file differs; preparing again in {second.data_path} (in '
          f'{tmp_path / "B"}: 0 new, 0 gone, 1 changed, e.g. '
          'trainannot/b.png)') in message
  # The old set is untouched and still reads the old labels.
  assert _snapshot(first.data_path) == before
  np.testing.assert_array_equal(_labels(first)['b'], _stored(old_labels['b']))
  # Each folder records its own source.
  assert fingerprint.read_record(first.data_path)['source'] == str(
      tmp_path / 'A')
  assert fingerprint.read_record(second.data_path)['source'] == str(
      tmp_path / 'B')


def test_builder_for_follows_config_data_manual_dir(tmp_path):
  """What training reads: config.data, with and without preparing."""
  from segjax.configs import base  # pylint: disable=g-import-not-at-top
  _write_camvid(tmp_path / 'A')
  shutil.copytree(tmp_path / 'A', tmp_path / 'B')
  Image.fromarray(np.zeros((8, 12), np.uint8)).save(
      tmp_path / 'B' / 'valannot' / 'd.png')

  def config(manual):
    return base.merge(base.get_config().data, {
        'name': 'camvid', 'data_dir': str(tmp_path / 'tfds'),
        'manual_dir': str(tmp_path / manual)})

  old = datasets.builder_for(config('A'))
  with pytest.raises(ConfigError, match='not prepared from the files in .*B.*'
                     '1 file differs'):
    datasets.builder_for(config('B'), prepare=False)
  new = datasets.builder_for(config('B'))
  assert datasets.builder_for(config('B'), prepare=False).data_path == (
      new.data_path)
  assert datasets.builder_for(config('A'), prepare=False).data_path == (
      old.data_path)
  np.testing.assert_array_equal(_labels(new, 'validation')['d'], 0)


def test_an_unchanged_source_folder_reuses_its_prepared_set(
    tmp_path, monkeypatch, absl_log):
  _write_camvid(tmp_path / 'A')
  data_dir = tmp_path / 'tfds'
  first = _camvid(tmp_path / 'A', data_dir)
  shutil.copytree(tmp_path / 'A', tmp_path / 'B')
  (tmp_path / 'B' / 'trainannot' / 'c.png').unlink()
  (tmp_path / 'B' / 'train' / 'c.png').unlink()
  second = _camvid(tmp_path / 'B', data_dir)
  assert second.info.splits['train'].num_examples == 2
  assert '2 files differ' in absl_log.text
  _no_rebuild(monkeypatch)
  assert _camvid(tmp_path / 'A', data_dir).data_path == first.data_path
  assert _camvid(tmp_path / 'B', data_dir).data_path == second.data_path
  # The same files elsewhere (moved, or copied with their times) are the
  # same source.
  shutil.copytree(tmp_path / 'A', tmp_path / 'moved')
  assert _camvid(tmp_path / 'moved', data_dir).data_path == first.data_path
  # A hidden file is no source file.
  (tmp_path / 'A' / 'train' / '.DS_Store').write_bytes(b'x')
  assert _camvid(tmp_path / 'A', data_dir).data_path == first.data_path


def test_a_label_value_outside_the_classes_in_the_new_folder_is_an_error(
    tmp_path):
  """The reported case: a folder with a label of 50 no longer trains on the
  old prepared data; preparing it fails, naming the file."""
  _write_camvid(tmp_path / 'A')
  data_dir = tmp_path / 'tfds'
  first = _camvid(tmp_path / 'A', data_dir)
  before = _snapshot(first.data_path)
  bad = np.zeros((8, 12), np.uint8)
  bad[0, 0] = 50
  _write_camvid(tmp_path / 'B', labels={'c': bad})
  with pytest.raises(DataError, match=r'trainannot/c\.png holds values \[50\]'):
    _camvid(tmp_path / 'B', data_dir)
  assert _snapshot(first.data_path) == before
  # Nothing half-prepared that a later run could take for the data set.
  assert [p.parent for p in data_dir.rglob('dataset_info.json')] == [
      pathlib.Path(first.data_path)]


def test_a_set_prepared_without_a_record_is_kept_unless_files_are_newer(
    tmp_path, monkeypatch, absl_log):
  """Sets prepared before sources were recorded are not all prepared again."""
  _write_camvid(tmp_path / 'A')
  data_dir = tmp_path / 'tfds'
  first = _camvid(tmp_path / 'A', data_dir)
  folder = pathlib.Path(first.data_path)
  (folder / fingerprint.RECORD).unlink()
  (folder / fingerprint.LISTING).unlink()
  with monkeypatch.context() as m:
    _no_rebuild(m)
    assert _camvid(tmp_path / 'A', data_dir).data_path == first.data_path
  assert 'has no record of its source' in absl_log.text
  assert fingerprint.read_record(folder)['source'] == str(tmp_path / 'A')
  # Without a record again, and a file edited after preparing.
  (folder / fingerprint.RECORD).unlink()
  label = tmp_path / 'A' / 'trainannot' / 'a.png'
  Image.fromarray(np.ones((8, 12), np.uint8)).save(label)
  later = fingerprint.mtime_ns(folder / 'dataset_info.json') + 10**9
  os.utime(label, ns=(later, later))
  again = _camvid(tmp_path / 'A', data_dir)
  assert again.data_path != first.data_path
  np.testing.assert_array_equal(_labels(again)['a'], 1)
  assert 'it kept no record of its source): 1 file is newer than it; ' in (
      absl_log.text)
  assert f'{tmp_path / "A"}, e.g. trainannot/a.png)' in absl_log.text


def test_without_source_files_the_prepared_set_is_read(tmp_path, absl_log):
  _write_camvid(tmp_path / 'A')
  data_dir = tmp_path / 'tfds'
  first = _camvid(tmp_path / 'A', data_dir)
  shutil.rmtree(tmp_path / 'A')
  assert _camvid(tmp_path / 'A', data_dir).data_path == first.data_path
  assert f'no source files in {tmp_path / "A"}; reading' in absl_log.text


def test_scan_lists_names_sizes_and_times_without_hidden_files(tmp_path):
  (tmp_path / 'd' / 'e').mkdir(parents=True)
  (tmp_path / 'd' / 'e' / 'f.png').write_bytes(b'123')
  (tmp_path / 'g.txt').write_bytes(b'12345')
  (tmp_path / '.hidden').mkdir()
  (tmp_path / '.hidden' / 'x').write_bytes(b'1')
  files = fingerprint.scan(tmp_path)
  assert list(files) == ['d/e/f.png', 'g.txt']
  assert [size for size, _ in files.values()] == [3, 5]
  assert fingerprint.scan(tmp_path, ['d', 'missing']) == {
      'd/e/f.png': files['d/e/f.png']}
  key = fingerprint.digest(files, 'x/1.0.0')
  assert key != fingerprint.digest(files, 'x/1.0.1')
  os.utime(tmp_path / 'g.txt', ns=(1, 1))
  changed = fingerprint.scan(tmp_path)
  assert fingerprint.digest(changed, 'x/1.0.0') != key
  assert fingerprint.differences(files, changed) == ([], [], ['g.txt'])


@pytest.mark.skipif(not (SHARED / 'dsb2018' / 'stage1_train').is_dir(),
                    reason=f'real DSB2018 copy not found under {SHARED}')
def test_scanning_the_real_dsb2018_copy_is_cheap():
  start = time.perf_counter()
  files = fingerprint.scan(SHARED / 'dsb2018' / 'stage1_train')
  seconds = time.perf_counter() - start
  assert len(files) == 548 + 23_872  # Images and masks.
  assert seconds < 5, seconds


# Damaged files: the build decodes every file and names the one that fails.


def _truncate(path, keep):
  data = path.read_bytes()
  path.write_bytes(data[:keep(len(data))])
  return data


@pytest.mark.parametrize('how,message', [
    ('half', 'cannot decode image .* image file is truncated'),
    # PIL decodes a PNG without its end chunk; TensorFlow does not.
    ('end', 'TensorFlow cannot decode image'),
])
def test_a_truncated_camvid_image_fails_the_build_and_is_prepared_when_fixed(
    tmp_path, how, message):
  _write_camvid(tmp_path / 'A')
  image = tmp_path / 'A' / 'train' / 'b.png'
  data = _truncate(image, (lambda n: n // 2) if how == 'half'
                   else (lambda n: n - 4))
  data_dir = tmp_path / 'tfds'
  with pytest.raises(DataError, match=f'camvid: {message}') as e:
    _camvid(tmp_path / 'A', data_dir)
  assert str(image) in str(e.value) and '\n' not in str(e.value)
  assert not list(data_dir.rglob('dataset_info.json'))
  assert not tfds.builder('camvid', data_dir=str(data_dir)).is_prepared()
  image.write_bytes(data)  # Fixed.
  builder = _camvid(tmp_path / 'A', data_dir)
  assert sorted(_labels(builder)) == ['a', 'b', 'c']
  images = {ex['image_id'].decode(): ex['image']
            for ex in tfds.as_numpy(builder.as_dataset('train'))}
  np.testing.assert_array_equal(images['b'], np.asarray(Image.open(image)))


def test_a_truncated_camvid_label_map_names_the_file(tmp_path):
  _write_camvid(tmp_path / 'A')
  label = tmp_path / 'A' / 'valannot' / 'd.png'
  _truncate(label, lambda n: n // 2)
  with pytest.raises(DataError, match=f'label map {label}.*truncated'):
    _camvid(tmp_path / 'A', tmp_path / 'tfds')


def test_a_truncated_dsb2018_image_fails_the_build_and_is_prepared_when_fixed(
    tmp_path):
  manual = tmp_path / 'dsb'
  synthetic_dsb.write_copy(manual)
  image_id = synthetic_dsb.ids()['train'][1]
  image = manual / 'stage1_train' / image_id / 'images' / f'{image_id}.png'
  data = _truncate(image, lambda n: n // 2)
  data_dir = tmp_path / 'tfds'
  with pytest.raises(DataError, match='unreadable PNG') as e:
    datasets.get_builder('dsb2018', str(data_dir), manual_dir=str(manual))
  assert str(image) in str(e.value) and '\n' not in str(e.value)
  assert not list(data_dir.rglob('dataset_info.json'))
  image.write_bytes(data)
  builder = datasets.get_builder('dsb2018', str(data_dir),
                                 manual_dir=str(manual))
  ids = {ex['image_id'].decode()
         for ex in tfds.as_numpy(builder.as_dataset('train'))}
  assert image_id in ids


def _write_ade(root):
  for folder, prefix in (('training', 'train'), ('validation', 'val')):
    (root / 'images' / folder).mkdir(parents=True)
    (root / 'annotations' / folder).mkdir(parents=True)
    stem = f'ADE_{prefix}_00000001'
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 48, 3), np.uint8)).save(
        root / 'images' / folder / f'{stem}.jpg')
    Image.fromarray(np.ones((40, 48), np.uint8)).save(
        root / 'annotations' / folder / f'{stem}.png')


def test_a_truncated_ade20k_jpeg_names_the_file(tmp_path):
  root = tmp_path / 'manual' / 'ADEChallengeData2016'
  _write_ade(root)
  image = root / 'images' / 'validation' / 'ADE_val_00000001.jpg'
  _truncate(image, lambda n: n - 40)
  data_dir = tmp_path / 'tfds'
  with pytest.raises(DataError, match=f'ade20k: .*decode image {image}'):
    datasets.get_builder('ade20k', str(data_dir),
                         manual_dir=str(tmp_path / 'manual'))
  assert not list(data_dir.rglob('dataset_info.json'))


def test_a_truncated_cityscapes_image_names_the_file(tmp_path):
  root = tmp_path / 'manual'
  stem = 'aachen_000000_000019'
  (root / 'leftImg8bit' / 'train' / 'aachen').mkdir(parents=True)
  (root / 'gtFine' / 'train' / 'aachen').mkdir(parents=True)
  image = root / 'leftImg8bit' / 'train' / 'aachen' / f'{stem}_leftImg8bit.png'
  Image.fromarray(np.full((8, 16, 3), 7, np.uint8)).save(image)
  Image.fromarray(np.full((8, 16), 7, np.uint16)).save(
      root / 'gtFine' / 'train' / 'aachen' / f'{stem}_gtFine_instanceIds.png')
  _truncate(image, lambda n: n - 4)
  with pytest.raises(DataError,
                     match=f'TensorFlow cannot decode image {image}'):
    datasets.get_builder('cityscapes_panoptic', str(tmp_path / 'tfds'),
                         manual_dir=str(root))
