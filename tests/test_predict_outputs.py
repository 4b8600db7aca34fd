"""`python -m segjax.predict` never lets two inputs share an output file
(segjax/inference/predict.py has the layout rules)."""

import pathlib
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from experiments import shapes_unet
from segjax.inference import predict as predict_lib
from segjax.training import train

# Its module-scoped fixtures build once, on one pytest-xdist worker.
pytestmark = pytest.mark.xdist_group('predict_outputs')

REPO = pathlib.Path(__file__).resolve().parents[1]


def _image(path, seed=0, size=(20, 24)):
  path.parent.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(seed)
  Image.fromarray(rng.integers(0, 256, size + (3,), np.uint8)).save(path)
  return path


def _layout(plan, output):
  return sorted((str(o.path), str(o.folder.relative_to(output)), o.stem)
                for o in plan)


def test_several_roots_get_a_subfolder_each_and_no_name_is_shared(
    tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  for name in ('x/a.png', 'x/a_png_2.png', 'y/a.png', 'z/a.png'):
    _image(tmp_path / name)
  out = tmp_path / 'out'
  plan = predict_lib.plan_outputs(['x', 'y', 'z'], out)
  assert _layout(plan, out) == [('x/a.png', 'x', 'a'),
                                ('x/a_png_2.png', 'x', 'a_png_2'),
                                ('y/a.png', 'y', 'a'), ('z/a.png', 'z', 'a')]
  # One input keeps the flat layout; a second a.* gets its extension, and
  # a real a_png_2 keeps its own name.
  (tmp_path / 'x' / 'a.jpg').write_bytes(b'')
  (tmp_path / 'x' / 'a_jpg.png').write_bytes(b'')
  assert _layout(predict_lib.plan_outputs(['x'], out), out) == [
      ('x/a.jpg', '.', 'a'), ('x/a.png', '.', 'a_png'),
      ('x/a_jpg.png', '.', 'a_jpg'), ('x/a_png_2.png', '.', 'a_png_2')]


def test_roots_of_the_same_name_get_distinct_subfolders(tmp_path,
                                                        monkeypatch):
  monkeypatch.chdir(tmp_path)
  for name in ('p/x/a.png', 'q/x/a.png', 'x_2/a.png', 'r/A.png', 'r/a.PNG'):
    _image(tmp_path / name)
  out = tmp_path / 'out'
  plan = predict_lib.plan_outputs(['p/x', 'q/x', 'x_2', 'r/A.png',
                                   'r/a.PNG'], out)
  # The second x becomes x_3: x_2 is a real root's own name. Files given
  # one by one share their folder's subfolder; names differing only in
  # case do not share a file on case-insensitive file systems.
  assert _layout(plan, out) == [
      ('p/x/a.png', 'x', 'a'), ('q/x/a.png', 'x_3', 'a'),
      ('r/A.png', 'r', 'A'), ('r/a.PNG', 'r', 'a_png'),
      ('x_2/a.png', 'x_2', 'a')]
  roots = {o.folder.name: o.root for o in plan}
  assert roots['x'] == tmp_path / 'p' / 'x'
  assert roots['x_3'] == tmp_path / 'q' / 'x'


class _PanopticLikeTask:
  """Writes files named as a panoptic run does: `a_panoptic_color.png` is
  a file of stem `a` and of stem `a_panoptic`."""

  def write_outputs(self, folder, stem, image, prediction):
    labels = np.full(image.shape[:2], prediction, np.uint8)
    for kind in ('labels', 'color', 'panoptic', 'panoptic_color'):
      Image.fromarray(labels).save(folder / f'{stem}_{kind}.png')
    (folder / f'{stem}_panoptic.json').write_text(str(prediction))


def test_a_file_name_an_earlier_image_wrote_is_never_overwritten(tmp_path):
  # Solid images whose value is their id; the fake prediction is that id.
  ids = {'a': 1, 'a_panoptic': 2, 'a_panoptic_png': 3}
  for stem, value in ids.items():
    (tmp_path / 'in').mkdir(exist_ok=True)
    Image.fromarray(np.full((4, 4, 3), value, np.uint8)).save(
        tmp_path / 'in' / f'{stem}.png')
  out = tmp_path / 'out'
  out.mkdir()
  plan = predict_lib.plan_outputs(tmp_path / 'in', out)
  assert [o.stem for o in plan] == list(ids)
  failed = predict_lib.write_predictions(
      plan, _PanopticLikeTask(), lambda image: int(image[0, 0, 0]))
  assert not failed
  # a_panoptic.png would rewrite a's a_panoptic_color.png: it is written as
  # a_panoptic_png_2 (a_panoptic_png is another image's own name).
  stems = {'a': 1, 'a_panoptic_png': 3, 'a_panoptic_png_2': 2}
  assert sorted(p.name for p in out.iterdir()) == sorted(
      f'{stem}_{kind}' for stem in stems
      for kind in ('labels.png', 'color.png', 'panoptic.png',
                   'panoptic_color.png', 'panoptic.json'))
  for stem, value in stems.items():
    assert (out / f'{stem}_panoptic.json').read_text() == str(value)
    assert np.asarray(Image.open(out / f'{stem}_panoptic_color.png')).max(
        ) == value


@pytest.fixture(scope='module')
def trained_run(tfds_dir, tmp_path_factory):
  config = shapes_unet.get_config('tiny')
  config.data.data_dir = tfds_dir
  config.num_train_steps = 2
  config.log_every_steps = config.eval_every_steps = 2
  config.checkpoint_every_steps = 2
  config.num_images_to_save = 0
  config.data.final_eval_splits = ()
  workdir = tmp_path_factory.mktemp('predict_run')
  train.train_and_evaluate(config, workdir)
  return workdir


def _predict(args, env, cwd):
  return subprocess.run([sys.executable, '-m', 'segjax.predict', *args],
                        env=env, cwd=cwd, capture_output=True, text=True,
                        timeout=600, check=False)


def test_predict_command_writes_one_output_set_per_input(
    trained_run, tmp_path, subprocess_env):
  env = dict(subprocess_env, PYTHONPATH=str(REPO))
  for i, name in enumerate(('x/a.png', 'x/a_png_2.png', 'y/a.png',
                            'z/a.png')):
    _image(tmp_path / name, seed=i)
  result = _predict([f'--workdir={trained_run}', '--input=x,y,z',
                     '--output=out', '--checkpoint=latest'], env, tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  labels = sorted(str(p.relative_to(tmp_path / 'out'))
                  for p in (tmp_path / 'out').rglob('*_labels.png'))
  assert labels == ['x/a_labels.png', 'x/a_png_2_labels.png',
                    'y/a_labels.png', 'z/a_labels.png']
  # An --output that is a file: one line, status 2, the file untouched.
  (tmp_path / 'taken.png').write_bytes(b'not a folder')
  result = _predict([f'--workdir={trained_run}', '--input=x',
                     '--output=taken.png'], env, tmp_path)
  assert result.returncode == 2, result.stderr[-3000:]
  assert 'Traceback' not in result.stderr
  assert result.stderr.strip().splitlines()[-1] == (
      "segjax.predict: output 'taken.png' is an existing file, not a "
      'folder; give a folder for the predictions.')
  assert (tmp_path / 'taken.png').read_bytes() == b'not a folder'
