"""The sharded train and eval steps (8 fake CPU devices, see conftest)."""

import functools
import types

import jax
import ml_collections
import numpy as np
import pytest

from segjax import losses
from segjax import models
from segjax.training import optimizer
from segjax.parallel import sharding
from segjax.training import state as state_lib
from segjax.training import steps

NUM_CLASSES = 3


def _setup():
  model = models.build_model({'name': 'unet', 'features': (4, 8)},
                             NUM_CLASSES)
  config = ml_collections.ConfigDict({
      'optimizer': {'name': 'adamw', 'learning_rate': 1e-2,
                    'weight_decay': 1e-4, 'grad_clip_norm': 1.0},
      'schedule': {'name': 'cosine', 'warmup_steps': 1}})
  tx, schedule = optimizer.build_optimizer(config, 10)
  loss_fn = losses.build_loss({'cross_entropy': 1.0, 'dice': 0.5})
  return model, tx, loss_fn, schedule


def _batch(seed=0, n=8, size=16):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, NUM_CLASSES, (n, size, size)).astype(np.int32)
  labels[:, :2] = 255
  return {'image': rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
          'labels': labels}


def _run_steps(mesh, num_steps=2):
  model, tx, loss_fn, schedule = _setup()
  state, shardings = state_lib.create_train_state(
      model, tx, (16, 16, 3), jax.random.PRNGKey(0), mesh)
  step = jax.jit(steps.make_train_step(model, tx, loss_fn, schedule),
                 in_shardings=(shardings, sharding.batch_sharding(mesh)),
                 out_shardings=(shardings, sharding.replicated(mesh)))
  history = []
  for i in range(num_steps):
    state, metrics = step(state, sharding.to_global_array(_batch(i), mesh))
    history.append(jax.device_get(metrics))
  return jax.device_get(state), history


def test_eight_devices_and_one_device_give_the_same_update():
  assert jax.device_count() == 8
  state8, metrics8 = _run_steps(sharding.make_mesh(jax.devices()))
  state1, metrics1 = _run_steps(sharding.make_mesh(jax.devices()[:1]))
  for m8, m1 in zip(metrics8, metrics1):
    np.testing.assert_allclose(m8['loss'], m1['loss'], rtol=1e-5)
  assert int(state8.step) == int(state1.step) == 2
  # Parameters, batch statistics and optimizer moments all agree: batch norm
  # sees the global batch on 8 devices just as on one.
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-4,
                                 atol=1e-6),
               (state8.params, state8.batch_stats, state8.opt_state),
               (state1.params, state1.batch_stats, state1.opt_state))
  assert metrics8[0]['loss'] != metrics8[1]['loss']  # It did train.


def test_eval_step_counts_only_real_examples_of_a_padded_batch():
  mesh = sharding.make_mesh()
  model, tx, _, _ = _setup()
  state, shardings = state_lib.create_train_state(
      model, tx, (16, 16, 3), jax.random.PRNGKey(1), mesh)
  batch = _batch(3)
  batch['mask'] = np.array([True] * 5 + [False] * 3)
  from segjax.evaluation import loop  # pylint: disable=g-import-not-at-top
  from segjax.tasks import semantic  # pylint: disable=g-import-not-at-top
  spec = types.SimpleNamespace(num_classes=NUM_CLASSES, ignore_index=255,
                               class_names=[str(c) for c in
                                            range(NUM_CLASSES)])
  task = semantic.SemanticTask(ml_collections.ConfigDict(), spec)
  evaluator = loop.Evaluator(task, *loop.make_forward(model, task), mesh,
                             shardings.variables())
  stats, predictions = evaluator._step(  # pylint: disable=protected-access
      state.variables(), sharding.to_global_array(batch, mesh))
  predictions = np.asarray(predictions['labels'])
  assert predictions.shape == (8, 16, 16)
  expected = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
  for i in range(5):
    for l, p in zip(batch['labels'][i].ravel(), predictions[i].ravel()):
      if l != 255:
        expected[l, p] += 1
  np.testing.assert_array_equal(stats['confusion_matrix'], expected)
  assert int(stats['num_examples']) == 5


@pytest.mark.parametrize('name', ['cosine', 'poly', 'constant'])
def test_schedules_warm_up_linearly_to_the_peak(name):
  config = ml_collections.ConfigDict({
      'optimizer': {'name': 'sgd', 'learning_rate': 0.1},
      'schedule': {'name': name, 'warmup_steps': 10}})
  _, schedule = optimizer.build_optimizer(config, 100)
  np.testing.assert_allclose(
      [schedule(0), schedule(5), schedule(10)], [0.0, 0.05, 0.1], rtol=1e-6)
  if name != 'constant':
    assert schedule(99) < 0.01
