"""The binary (sigmoid) task in the trainer: config checks, the loss of the
foreground and boundary channels, the train step's pixel accuracy, and the
DSB2018 binary / boundary recipes end to end on the synthetic copy."""

import json
import math
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import synthetic_dsb
from experiments import dsb2018_unet
from segjax import models
from segjax.errors import ConfigError
from segjax import tasks
from segjax.tasks import binary as binary_lib
from segjax.training import steps as steps_lib
from segjax.training import train

# Its module-scoped fixtures build once, on one pytest-xdist worker.
pytestmark = pytest.mark.xdist_group('binary_task')

IGNORE = 255
DSB_SPEC = types.SimpleNamespace(num_classes=2, thing_classes=(1,),
                                 class_names=('background', 'nucleus'))


def _config(**binary):
  config = dsb2018_unet.get_config('boundary_tiny')
  for key, value in binary.items():
    config.binary[key] = value
  return config


@pytest.mark.parametrize('field,value', [
    ('threshold', 1.5), ('threshold', 0), ('boundary', 1),
    ('boundary_width', 0), ('boundary_width', 1.5),
    ('boundary_weight', -1.0), ('instances', 'yes'), ('min_area', 0),
    ('max_instances', 1), ('max_dets', 0), ('mask_ap', None)])
def test_bad_binary_field_is_a_config_error_naming_it(field, value):
  config = _config()
  # A new block, so ConfigDict's type checks do not cast or refuse values.
  config.binary = ml_collections.ConfigDict({**config.binary, field: value})
  with pytest.raises(ConfigError) as error:
    binary_lib.options(config, DSB_SPEC)
  assert f'config.binary.{field}={value!r}' in str(error.value)


def test_unknown_field_and_inconsistent_fields_are_config_errors():
  config = _config()
  with config.unlocked():
    config.binary.threshhold = 0.4
  with pytest.raises(ConfigError, match=r"unknown field\(s\) \['threshhold'\]"):
    binary_lib.options(config, DSB_SPEC)
  with pytest.raises(ConfigError, match='max_instances=2000 must not exceed'):
    binary_lib.options(_config(max_instances=2000), DSB_SPEC)
  three = types.SimpleNamespace(num_classes=3, thing_classes=(1, 2),
                                class_names=('a', 'b', 'c'))
  with pytest.raises(ConfigError, match='two classes'):
    binary_lib.options(_config(), three)
  no_things = types.SimpleNamespace(num_classes=2, thing_classes=(),
                                    class_names=('a', 'b'))
  with pytest.raises(ConfigError, match='instance maps'):
    binary_lib.options(_config(), no_things)
  opts = binary_lib.options(_config(boundary=False, instances=False),
                            no_things)  # Foreground only: fine.
  with pytest.raises(ConfigError, match=r"\['cross_entropy'\] are not losses"):
    binary_lib.build_loss({'cross_entropy': 1.0}, opts, IGNORE)


def test_trainer_stops_on_a_bad_field_before_any_work(tmp_path):
  config = _config(threshold=2.0)
  config.data.manual_dir = str(tmp_path / 'nowhere')
  with pytest.raises(ConfigError, match='config.binary.threshold=2.0'):
    train.train_and_evaluate(config, tmp_path / 'work')


def test_task_and_output_channels():
  spec = types.SimpleNamespace(ignore_index=IGNORE, **vars(DSB_SPEC))
  assert tasks.task_name(_config()) == 'binary'
  assert tasks.get_task(_config(), spec).num_outputs() == 2
  assert tasks.get_task(_config(boundary=False), spec).num_outputs() == 1
  tiny = dsb2018_unet.get_config('tiny')
  assert tasks.task_name(tiny) == 'semantic'
  assert tasks.get_task(tiny, spec).num_outputs() == 2
  panoptic_model = _config()
  panoptic_model.model.name = 'panoptic_deeplab'
  with pytest.raises(ConfigError, match="the 'binary' task needs a model"):
    tasks.get_task(panoptic_model, spec)


def _bce(x, y):
  return np.logaddexp(0, -x) * y + np.logaddexp(0, x) * (1 - y)


def _np_binary_loss(x, labels):
  """BCE + soft Dice in float64 over the non-void pixels."""
  valid = labels != IGNORE
  y = (labels == 1).astype(np.float64)
  p = 1 / (1 + np.exp(-x))
  bce = _bce(x, y)[valid].mean()
  dice = 1 - (2 * (p * y)[valid].sum() + 1) / (p[valid].sum() +
                                                 y[valid].sum() + 1)
  return bce, dice


def test_loss_adds_the_boundary_channel_times_its_weight():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 5, 6, 2)) * 3
  labels = rng.integers(0, 2, (2, 5, 6))
  labels[0, 0] = IGNORE
  boundaries = rng.integers(0, 2, (2, 5, 6))
  boundaries[labels == IGNORE] = IGNORE
  boundaries[1, 2] = IGNORE
  opts = binary_lib.options(_config(boundary_weight=0.5), DSB_SPEC)
  loss_fn = binary_lib.build_loss(
      {'binary_cross_entropy': 1.0, 'binary_dice': 2.0}, opts, IGNORE)
  total, terms = loss_fn(jnp.asarray(logits, jnp.float32),
                         {'labels': labels, 'boundaries': boundaries})
  fg = _np_binary_loss(logits[..., 0], labels)
  edge = _np_binary_loss(logits[..., 1], boundaries)
  np.testing.assert_allclose(terms['binary_cross_entropy'], fg[0], rtol=1e-5)
  np.testing.assert_allclose(terms['binary_dice'], fg[1], rtol=1e-5)
  np.testing.assert_allclose(terms['boundary_binary_cross_entropy'], edge[0],
                             rtol=1e-5)
  np.testing.assert_allclose(terms['boundary_binary_dice'], edge[1],
                             rtol=1e-5)
  np.testing.assert_allclose(
      total, fg[0] + 2 * fg[1] + 0.5 * (edge[0] + 2 * edge[1]), rtol=1e-5)


def test_train_step_pixel_accuracy_thresholds_the_sigmoid():
  import optax  # pylint: disable=g-import-not-at-top
  from segjax.models.inputs import model_inputs  # pylint: disable=g-import-not-at-top
  from segjax.training import state as state_lib  # pylint: disable=g-import-not-at-top
  model = models.build('unet', 1, features=(4, 8))
  rng = np.random.default_rng(1)
  batch = {'image': rng.integers(0, 256, (2, 8, 8, 3), np.uint8),
           'labels': rng.integers(0, 2, (2, 8, 8)).astype(np.int32)}
  batch['labels'][0, :2] = IGNORE
  tx = optax.sgd(0.0)
  variables = state_lib.init_variables(model, (8, 8, 3),
                                       jax.random.PRNGKey(0))
  state = state_lib.from_variables(variables, tx, jax.random.PRNGKey(0))
  config = _config(boundary=False, threshold=0.6)
  config.loss = {'binary_cross_entropy': 1.0}
  task = binary_lib.BinaryTask(
      config, types.SimpleNamespace(ignore_index=IGNORE, **vars(DSB_SPEC)))
  step = steps_lib.make_train_step(model, tx, task.loss_fn(), lambda s: 0.0,
                                   metrics_fn=task.train_metrics)
  _, metrics = jax.jit(step)(state, batch)
  logits, _ = model.apply(variables, model_inputs(batch['image']),
                          train=True, mutable=['batch_stats'])
  prob = 1 / (1 + np.exp(-np.asarray(logits[..., 0], np.float64)))
  valid = batch['labels'] != IGNORE
  expected = ((prob >= 0.6) == (batch['labels'] == 1))[valid].mean()
  np.testing.assert_allclose(metrics['pixel_accuracy'], expected, rtol=1e-6)


@pytest.fixture(scope='module')
def dsb(tmp_path_factory):
  """(manual_dir, tfds data_dir) of the synthetic DSB2018 copy."""
  root = tmp_path_factory.mktemp('dsb')
  synthetic_dsb.write_copy(root)
  return root, tmp_path_factory.mktemp('tfds')


def _run(variant, dsb, workdir):
  config = dsb2018_unet.get_config(variant)
  config.data.manual_dir, config.data.data_dir = map(str, dsb)
  results = train.train_and_evaluate(config, workdir)
  rows = [json.loads(line) for line in
          (workdir / 'metrics.jsonl').read_text().splitlines()]
  [row] = [r for r in rows if r['split'] == 'validation']
  last_train = [r for r in rows if r['split'] == 'train'][-1]
  return results, row, last_train


SCORES = ('iou', 'dice', 'precision', 'recall', 'pq', 'sq', 'rq',
          'pq_things', 'pq/nucleus', 'mask_ap', 'mask_ap50', 'mask_ap75')


def _check_scores(row):
  for key in SCORES:
    assert 0.0 <= row[key] <= 1.0, (key, row[key])
  # Two views of one count: the foreground's IoU from binary_stats and the
  # nucleus IoU of the thresholded map's confusion matrix.
  np.testing.assert_allclose(row['iou'], row['iou/nucleus'], rtol=1e-6)


def test_binary_recipe_scores_foreground_and_components(dsb, tmp_path):
  results, row, last_train = _run('binary_tiny', dsb, tmp_path / 'work')
  assert row['num_examples'] == 3
  _check_scores(row)
  assert results['validation']['iou'] == row['iou']  # The best metric.
  assert {'loss_binary_cross_entropy', 'loss_binary_dice'} <= set(last_train)
  assert not any(k.startswith('loss_boundary') for k in last_train)
  assert math.isfinite(last_train['loss'])
  assert 0.0 <= last_train['pixel_accuracy'] <= 1.0
  assert list((tmp_path / 'work' / 'images').glob('*validation.png'))


def test_boundary_recipe_trains_both_channels_and_scores_pq(dsb, tmp_path):
  from segjax.inference import report as evaluate_lib  # pylint: disable=g-import-not-at-top
  from segjax.inference import run as run_lib  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / 'work'
  _, row, last_train = _run('boundary_tiny', dsb, workdir)
  _check_scores(row)
  assert {'loss_boundary_binary_cross_entropy',
          'loss_boundary_binary_dice'} <= set(last_train)
  assert list((workdir / 'images').glob('*validation.png'))
  # The run through segjax.evaluate and load_run.
  report = evaluate_lib.evaluate(workdir, 'latest', 'validation')
  assert report['num_images'] == 3
  # The trainer scored the same checkpoint with the same loop: the same
  # integers (confusion matrix, foreground counts, PQ counts, mask AP).
  for key in ('miou', 'iou', 'dice', 'precision', 'recall', 'pq', 'sq',
              'rq', 'mask_ap', 'mask_ap50', 'mask_ap75', 'mask_ar'):
    np.testing.assert_equal(report[key], row[key], err_msg=key)
  for key in ('iou', 'dice', 'precision', 'recall', 'pq', 'mask_ap50'):
    assert 0.0 <= report[key] <= 1.0, (key, report[key])
  assert 'pq' in report['per_class']['nucleus']
  _, _, _, predict_fn = run_lib.load_run(workdir, 'latest')
  image = np.zeros((14, 19, 3), np.uint8)
  image[4:9, 5:10] = 220
  out = predict_fn([image, image[:10]])
  assert out[0]['labels'].shape == (14, 19)
  assert out[0]['probabilities'].shape == (14, 19, 2)
  assert out[1]['instance_ids'].shape == (10, 19)
  assert out[0]['scores'].shape == (out[0]['instance_ids'].max(),)
  # segjax.predict writes the mask and the instances as a panoptic PNG.
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from segjax.inference import export as export_lib  # pylint: disable=g-import-not-at-top
  from segjax.inference import predict as predict_lib  # pylint: disable=g-import-not-at-top
  Image.fromarray(image).save(tmp_path / 'cell.png')
  failed = predict_lib.predict(workdir, [str(tmp_path / 'cell.png')],
                               str(tmp_path / 'out'), checkpoint='latest')
  assert not failed
  assert (tmp_path / 'out' / 'cell_panoptic.json').exists()
  # An exported program returns the thresholded foreground.
  config, model, variables, predict_fn = run_lib.load_run(workdir, 'latest')
  serve = export_lib.serving_fn(config, model, variables, predict_fn.task,
                                14, 19)
  labels = np.asarray(serve(image[None]))
  assert labels.shape == (1, 14, 19) and set(np.unique(labels)) <= {0, 1}
