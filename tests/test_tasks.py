"""The task interface: a task defined here, outside segjax, runs end to end;
task lookup; and no task branches in the trainer or inference.

`EdgeTask` predicts where the class changes between neighbouring pixels
(one sigmoid logit per pixel), computing its target from the labels inside
the loss. It is registered by nothing but its import path
('test_tasks:EdgeTask') and goes through train -> evaluate in a fresh
process -> predict -> export without any change to segjax.
"""

import json
import os
import pathlib
import re
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from experiments import shapes_unet
from segjax import tasks
from segjax.errors import ConfigError
from segjax.tasks import base

# Its module-scoped fixtures build once, on one pytest-xdist worker.
pytestmark = pytest.mark.xdist_group('tasks')

REPO = pathlib.Path(__file__).resolve().parents[1]


def edges(labels, ignore_index):
  """[B, H, W] labels -> (edge [B, H, W] int32: the pixel's class differs
  from its right or lower neighbour's, valid [B, H, W] bool)."""
  right = jnp.pad(labels[:, :, 1:], ((0, 0), (0, 0), (0, 1)), mode='edge')
  down = jnp.pad(labels[:, 1:], ((0, 0), (0, 1), (0, 0)), mode='edge')
  edge = (labels != right) | (labels != down)
  valid = ((labels != ignore_index) & (right != ignore_index) &
           (down != ignore_index))
  return edge.astype(jnp.int32), valid


class EdgeTask(base.Task):
  """Class boundaries from one sigmoid logit per pixel."""

  name = 'edges'
  activation = 'sigmoid'
  best_metric = 'edge_iou'

  def num_outputs(self):
    return 1

  def loss_fn(self):
    def loss(outputs, batch):
      target, valid = edges(batch['labels'], self.ignore_index)
      x = outputs[..., 0]
      bce = jnp.logaddexp(0.0, x) - x * target
      total = (bce * valid).sum() / jnp.maximum(valid.sum(), 1)
      return total, {'edge_bce': total}
    return loss

  def predict(self, outputs, activated):
    probs = outputs if activated else jax.nn.sigmoid(outputs)
    return {'labels': (probs[..., 0] >= 0.5).astype(jnp.int32)}

  def eval_stats(self, predictions, batch):
    target, valid = edges(self.masked_labels(batch), self.ignore_index)
    pred = predictions['labels'] == 1
    truth = target == 1
    return {'intersection': (pred & truth & valid).sum(),
            'union': ((pred | truth) & valid).sum(),
            'num_examples': batch['mask'].sum().astype(jnp.int32)}

  def score(self, sums, image_results):
    return {'edge_iou': float(sums['intersection']) /
                        max(float(sums['union']), 1.0),
            'num_examples': int(sums['num_examples'])}

  def summary(self, row):
    return f'edge IoU {row["edge_iou"]:.4f}'

  def user_result(self, prediction):
    return prediction['labels']


def _edge_iou(labels, predictions, ignore_index):
  """float64 NumPy loop of `EdgeTask`'s score."""
  inter = union = 0
  for img, pred in zip(labels, predictions):
    h, w = img.shape
    for i in range(h):
      for j in range(w):
        r = img[i, min(j + 1, w - 1)]
        d = img[min(i + 1, h - 1), j]
        if ignore_index in (img[i, j], r, d):
          continue
        t = img[i, j] != r or img[i, j] != d
        p = pred[i, j] == 1
        inter += t and p
        union += t or p
  return inter / max(union, 1)


def test_edge_task_scores_match_a_numpy_loop():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 3, (2, 6, 7)).astype(np.int32)
  labels[0, 2, 3] = 255
  predictions = rng.integers(0, 2, (2, 6, 7)).astype(np.int32)
  spec = types.SimpleNamespace(num_classes=3, ignore_index=255,
                               class_names=('a', 'b', 'c'), thing_classes=())
  task = EdgeTask(shapes_unet.get_config('tiny'), spec)
  sums = jax.device_get(task.eval_stats(
      {'labels': predictions}, {'labels': labels,
                                'mask': np.ones(2, bool)}))
  np.testing.assert_allclose(task.score(sums, [])['edge_iou'],
                             _edge_iou(labels, predictions, 255))


@pytest.fixture(scope='module')
def edge_run(tmp_path_factory):
  from segjax.training import train  # pylint: disable=g-import-not-at-top
  workdir = tmp_path_factory.mktemp('edge_run')
  config = shapes_unet.get_config('tiny')
  config.task = 'test_tasks:EdgeTask'
  config.best_checkpoint_metric = 'validation/edge_iou'
  config.num_train_steps = 10
  return workdir, train.train_and_evaluate(config, workdir)


def test_a_task_of_ones_own_trains_evaluates_predicts_and_exports(
    edge_run, subprocess_env, tmp_path):
  workdir, results = edge_run
  assert 0.0 < results['validation']['edge_iou'] <= 1.0
  info = json.loads((workdir / 'run_info.json').read_text())
  assert info['task'] == 'test_tasks:EdgeTask'
  # A fresh process finds the task from config.json alone.
  env = dict(subprocess_env,
             PYTHONPATH=os.pathsep.join([str(REPO / 'tests'), str(REPO)]))
  subprocess.run(
      [sys.executable, '-m', 'segjax.evaluate', '--workdir', str(workdir),
       '--checkpoint', 'latest', '--split', 'validation'],
      check=True, env=env, cwd=REPO, timeout=600, capture_output=True)
  [report] = (workdir / 'eval').glob('validation_step10.json')
  report = json.loads(report.read_text())
  assert report['edge_iou'] == results['validation']['edge_iou']
  # predict writes the task's files; export serves its outputs.
  from segjax.inference import export as export_lib  # pylint: disable=g-import-not-at-top
  from segjax.inference import predict as predict_lib  # pylint: disable=g-import-not-at-top
  image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), np.uint8)
  Image.fromarray(image).save(tmp_path / 'a.png')
  failed = predict_lib.predict(workdir, [str(tmp_path / 'a.png')],
                               str(tmp_path / 'out'), checkpoint='latest')
  assert not failed
  written = np.asarray(Image.open(tmp_path / 'out' / 'a_labels.png'))
  assert written.shape == (32, 32) and set(np.unique(written)) <= {0, 1}
  path = export_lib.export(workdir, tmp_path / 'edges.jaxexport', height=32,
                           width=32, checkpoint='latest')
  serve = jax.export.deserialize(path.read_bytes())
  # The same function as load_run's where no bucket pads the image.
  from segjax.inference import run as run_lib  # pylint: disable=g-import-not-at-top
  *_, predict_fn = run_lib.load_run(workdir, 'latest', buckets=(32,))
  np.testing.assert_array_equal(np.asarray(serve.call(image[None]))[0],
                                predict_fn(image))


def test_task_lookup_by_name_path_and_legacy_blocks():
  config = shapes_unet.get_config('tiny')
  assert tasks.task_name(config) == 'semantic'
  assert tasks.task_class('semantic').name == 'semantic'
  assert tasks.task_class('test_tasks:EdgeTask') is EdgeTask
  assert tasks.task_class('test_tasks.EdgeTask') is EdgeTask
  legacy = shapes_unet.get_config('tiny')
  del legacy['task']  # A config.json written before config.task.
  legacy.model.name = 'panoptic_deeplab'
  assert tasks.task_name(legacy) == 'panoptic'
  for bad, message in (('nope', 'neither a task name'),
                       ('json:dumps', 'not a segjax.tasks.Task'),
                       ('test_tasks:Missing', 'cannot import')):
    with pytest.raises(ConfigError, match=message):
      tasks.task_class(bad)


# Code in training/ and inference/ that would test which task a run is.
_TASK_TESTS = re.compile(
    r"""==\s*['"](semantic|binary|panoptic)['"]"""
    r"""|['"](semantic|binary|panoptic)['"]\s*(==|!=|in\b)"""
    r"""|isinstance\([^)]*Task"""
    r"""|config\.(binary|panoptic)\b(?!\s*=[^=])"""
    r"""|get\(\s*['"](binary|panoptic|task)['"]"""
    r"""|\[\s*['"](binary|panoptic)['"]\s*\]"""
    r"""|\.activation\s*(==|!=|is)"""
    r"""|outputs_of|PANOPTIC|task\.name""")


def _task_tests(root):
  for path in sorted(root.rglob('*.py')):
    for n, line in enumerate(path.read_text().splitlines(), 1):
      if _TASK_TESTS.search(line.split('#')[0]):
        yield f'{path}:{n}: {line.strip()}'


def test_trainer_and_inference_never_test_which_task_runs():
  found = [hit for folder in ('training', 'inference')
           for hit in _task_tests(REPO / 'segjax' / folder)]
  assert not found, '\n'.join(found)


def test_the_branch_check_finds_a_branch(tmp_path):
  for line in ("if config.get('binary') is not None:",
               "if task.name == 'panoptic':",
               "elif isinstance(task, PanopticTask):",
               "opts = config.panoptic.top_k"):
    (tmp_path / 'x.py').write_text(line + '\n')
    assert list(_task_tests(tmp_path)), line
