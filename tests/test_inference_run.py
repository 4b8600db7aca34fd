"""Trained runs outside the trainer: load_run, evaluate, predict, export."""

import json
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from experiments import shapes_panoptic
from experiments import shapes_unet
from segjax.inference import report as evaluate_lib
from segjax.inference import export as export_lib
from segjax.inference import predict as predict_lib
from segjax.errors import ConfigError
from segjax.inference import run as run_lib
from segjax.models.inputs import normalize_images
from segjax.training import train

# Its module-scoped fixtures build once, on one pytest-xdist worker.
pytestmark = pytest.mark.xdist_group('inference_run')


def _train(config, tfds_dir, workdir):
  config.data.data_dir = tfds_dir
  config.num_train_steps = 4
  config.log_every_steps = config.eval_every_steps = 2
  config.checkpoint_every_steps = 2
  config.num_images_to_save = 0
  config.data.final_eval_splits = ()
  train.train_and_evaluate(config, workdir)
  return workdir


@pytest.fixture(scope='module')
def semantic_run(tfds_dir, tmp_path_factory):
  return _train(shapes_unet.get_config('tiny'), tfds_dir,
                tmp_path_factory.mktemp('semantic_run'))


@pytest.fixture(scope='module')
def panoptic_run(tfds_dir, tmp_path_factory):
  return _train(shapes_panoptic.get_config('tiny'), tfds_dir,
                tmp_path_factory.mktemp('panoptic_run'))


def test_checkpoint_names_resolve(semantic_run):
  config = run_lib.load_config(semantic_run)
  assert run_lib.saved_steps(semantic_run) == [2, 4]
  assert run_lib.resolve_step(semantic_run, config, 'latest') == 4
  assert run_lib.resolve_step(semantic_run, config, '2') == 2
  rows = [json.loads(r) for r in
          (semantic_run / 'metrics.jsonl').read_text().splitlines()]
  evals = {r['step']: r['miou'] for r in rows if r['split'] == 'validation'}
  assert run_lib.resolve_step(semantic_run, config, 'best') == max(
      evals, key=lambda s: (evals[s], s))
  with pytest.raises(ConfigError, match=r'checkpoint 3 is not in'):
    run_lib.resolve_step(semantic_run, config, 3)
  with pytest.raises(ConfigError, match='no field'):
    run_lib.load_config(semantic_run, ['--config.data.nope=1'])


def test_predict_fn_equals_the_model_and_keeps_each_size(semantic_run):
  config, model, variables, predict_fn = run_lib.load_run(
      semantic_run, 'latest', buckets=(32,))
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (32, 32, 3), np.uint8)
  logits = model.apply(variables, normalize_images(jnp.asarray(image)[None]))
  np.testing.assert_array_equal(predict_fn(image),
                                np.argmax(np.asarray(logits[0]), -1))
  assert config.model.name == 'unet'
  # Mixed sizes in one bucket: one program; each map at its image's size.
  _, _, _, predict_fn = run_lib.load_run(semantic_run, 'latest')
  out = predict_fn([rng.integers(0, 256, (h, w, 3), np.uint8)
                    for h, w in ((30, 40), (64, 17), (100, 100))])
  assert [o.shape for o in out] == [(30, 40), (64, 17), (100, 100)]
  # All in the 256 x 256 bucket: one program.
  assert predict_fn.jitted._cache_size() == 1  # pylint: disable=protected-access
  assert predict_fn(rng.integers(0, 256, (2, 20, 24, 3), np.uint8)).shape == (
      2, 20, 24)


def test_evaluate_reproduces_the_trainers_validation_score(semantic_run):
  report = evaluate_lib.evaluate(
      semantic_run, 'latest', 'validation',
      overrides=['--config.inference.buckets=(32,)'])
  rows = [json.loads(r) for r in
          (semantic_run / 'metrics.jsonl').read_text().splitlines()]
  [trainer] = [r for r in rows if r['split'] == 'validation' and
               r['step'] == 4]
  assert report['num_images'] == trainer['num_examples'] == 24
  # One loop, the same batches: the same integers, so the same floats.
  assert report['miou'] == trainer['miou']
  for name, row in report['per_class'].items():
    np.testing.assert_equal(row['iou'], trainer[f'iou/{name}'])
  for suffix in ('.json', '_confusion.png', '_iou.png'):
    assert (semantic_run / 'eval' / f'validation_step4{suffix}').exists()
  tta = evaluate_lib.evaluate(
      semantic_run, 'latest', 'validation', tag='tta',
      overrides=['--config.inference.scales=(0.75, 1.0, 1.25)',
                 '--config.inference.flip=True'])
  assert tta['inference']['flip'] and len(tta['inference']['scales']) == 3
  assert 0.0 <= tta['miou'] <= 1.0


def test_panoptic_run_predicts_and_scores_instances(panoptic_run):
  _, _, _, predict_fn = run_lib.load_run(panoptic_run, 'latest')
  out = predict_fn(np.zeros((40, 36, 3), np.uint8))
  assert out['panoptic'].shape == out['labels'].shape == (40, 36)
  report = evaluate_lib.evaluate(panoptic_run, 'latest', 'validation')
  assert {'pq', 'pq_things', 'mask_ap', 'mask_ap50'} <= set(report)
  # The trainer's last validation pass scored the same checkpoint with the
  # same loop: the same PQ counts, confusion matrix and mask AP.
  rows = [json.loads(r) for r in
          (panoptic_run / 'metrics.jsonl').read_text().splitlines()]
  step = run_lib.saved_steps(panoptic_run)[-1]
  [trainer] = [r for r in rows if r['split'] == 'validation' and
               r['step'] == step]
  for key in ('miou', 'pq', 'sq', 'rq', 'pq_things', 'pq_stuff', 'mask_ap',
              'mask_ap50', 'mask_ap75', 'mask_ar'):
    np.testing.assert_equal(report[key], trainer[key], err_msg=key)
  for name, row in report['per_class'].items():
    np.testing.assert_equal(row['iou'], trainer[f'iou/{name}'])
    np.testing.assert_equal(row['pq'], trainer[f'pq/{name}'])


def test_predict_writes_every_readable_image_and_reports_the_rest(
    panoptic_run, tmp_path):
  rng = np.random.default_rng(0)
  inputs = tmp_path / 'in'
  inputs.mkdir()
  Image.fromarray(rng.integers(0, 256, (30, 40, 3), np.uint8)).save(
      inputs / 'rgb.png')
  Image.fromarray(rng.integers(0, 256, (25, 20), np.uint8)).save(
      inputs / 'gray.jpg')
  Image.fromarray(rng.integers(0, 256, (20, 20, 4), np.uint8)).save(
      inputs / 'alpha.png')
  Image.fromarray(np.zeros((300, 300, 3), np.uint8)).save(inputs / 'big.png')
  (inputs / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n not really')
  failed = predict_lib.predict(panoptic_run, [str(inputs)],
                               str(tmp_path / 'out'), checkpoint='latest',
                               max_pixels=50_000)
  assert sorted(p.rsplit('/', 1)[-1] for p in failed) == ['big.png',
                                                          'broken.png']
  assert 'max_pixels' in failed[str(inputs / 'big.png')]
  for stem, shape in (('rgb', (30, 40)), ('gray', (25, 20)),
                      ('alpha', (20, 20))):
    labels = np.asarray(Image.open(tmp_path / 'out' / f'{stem}_labels.png'))
    assert labels.shape == shape
    segments = json.loads(
        (tmp_path / 'out' / f'{stem}_panoptic.json').read_text())
    assert segments['file_name'] == f'{stem}_panoptic.png'


def test_exported_function_reloads_in_a_fresh_process(semantic_run,
                                                       tmp_path):
  path = export_lib.export(semantic_run, tmp_path / 'model.jaxexport',
                           height=32, width=32, checkpoint='latest',
                           overrides=['--config.inference.buckets=(32,)'])
  images = np.random.default_rng(1).integers(0, 256, (1, 32, 32, 3),
                                             np.uint8)
  np.save(tmp_path / 'images.npy', images)
  # Only JAX in the child: no segjax, no Flax, no checkpoint.
  script = (
      'import sys, jax, numpy as np\n'
      'serve = jax.export.deserialize(open(sys.argv[1], "rb").read())\n'
      'np.save(sys.argv[3], np.asarray(serve.call(np.load(sys.argv[2]))))\n'
      'assert "segjax" not in sys.modules and "flax" not in sys.modules\n')
  subprocess.run([sys.executable, '-c', script, str(path),
                  str(tmp_path / 'images.npy'), str(tmp_path / 'out.npy')],
                 check=True, cwd=tmp_path, timeout=300)
  _, _, _, predict_fn = run_lib.load_run(semantic_run, 'latest',
                                         buckets=(32,))
  np.testing.assert_array_equal(np.load(tmp_path / 'out.npy'),
                                predict_fn(images))
  with pytest.raises(ConfigError, match='positive'):
    export_lib.export(semantic_run, tmp_path / 'x', height=0, width=3)
