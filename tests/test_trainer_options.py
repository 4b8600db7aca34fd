"""Trainer options from the config: schedules, decay masks, freezing, learning
rate multipliers, gradient accumulation, EMA, the auxiliary loss, bf16."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
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


def _opt_config(**optimizer_fields):
  fields = {'name': 'sgd', 'learning_rate': 0.1, 'momentum': 0.0}
  fields.update(optimizer_fields)
  return ml_collections.ConfigDict({
      'optimizer': fields, 'schedule': {'name': 'constant'}})


def _batch(seed=0, n=8, size=16, ignored_rows=0):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, NUM_CLASSES, (n, size, size)).astype(np.int32)
  labels[:, :ignored_rows] = 255
  return {'image': rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
          'labels': labels}


def _unet():
  return models.build('unet', NUM_CLASSES, features=(4, 8))


@pytest.mark.parametrize('name,step,expected', [
    # peak 0.1, warm-up 10 of 110 steps, then 100 steps of decay.
    ('cosine', 60, 0.1 * 0.5 * (1 + math.cos(math.pi * 50 / 100))),
    ('cosine', 85, 0.1 * 0.5 * (1 + math.cos(math.pi * 75 / 100))),
    ('poly', 60, 0.1 * (1 - 50 / 100) ** 0.9),
    ('poly', 100, 0.1 * (1 - 90 / 100) ** 0.9),
    ('step', 39, 0.1),
    ('step', 40, 0.01),
    ('step', 80, 0.001),
    ('constant', 77, 0.1),
    ('cosine', 5, 0.05),  # Linear warm-up from 0.
])
def test_schedules_match_their_closed_forms(name, step, expected):
  config = ml_collections.ConfigDict({
      'optimizer': {'name': 'sgd', 'learning_rate': 0.1},
      'schedule': {'name': name, 'warmup_steps': 10, 'power': 0.9,
                   'boundaries': (40, 80), 'decay_factor': 0.1}})
  _, schedule = optimizer.build_optimizer(config, 110)
  np.testing.assert_allclose(float(schedule(step)), expected, rtol=1e-5)


@pytest.mark.parametrize('name', ['sgd', 'adamw'])
def test_weight_decay_leaves_biases_and_norm_parameters_untouched(name):
  params = jax.eval_shape(lambda: _unet().init(
      jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)), train=False))['params']
  params = jax.tree.map(lambda s: jnp.ones(s.shape, s.dtype), params)
  tx, _ = optimizer.build_optimizer(_opt_config(name=name, weight_decay=0.5),
                                    10)
  zero_grads = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zero_grads, tx.init(params), params)
  for path, update in optimizer.param_paths(updates).items():
    if update.ndim == 1:  # Biases, BN scales and offsets.
      assert not np.asarray(update).any(), path
    else:  # Kernels shrink: -lr * wd * 1.
      np.testing.assert_allclose(update, -0.05, rtol=1e-6, err_msg=path)


def _train(model, config, batches, mesh=None, **step_kwargs):
  mesh = mesh or sharding.make_mesh(jax.devices()[:1])
  params = jax.eval_shape(lambda: state_lib.init_variables(
      model, (16, 16, 3), jax.random.PRNGKey(0)))['params']
  tx, schedule = optimizer.build_optimizer(config, 10, params)
  state, shardings = state_lib.create_train_state(
      model, tx, (16, 16, 3), jax.random.PRNGKey(0), mesh,
      ema=bool(step_kwargs.get('ema_decay')))
  loss_fn = losses.build_loss(step_kwargs.pop('loss', {'cross_entropy': 1.0}))
  step = jax.jit(steps.make_train_step(model, tx, loss_fn, schedule,
                                       **step_kwargs),
                 in_shardings=(shardings, sharding.batch_sharding(mesh)))
  initial = jax.device_get(state)
  history = []
  for batch in batches:
    state, metrics = step(state, sharding.to_global_array(batch, mesh))
    history.append(jax.device_get(metrics))
  return initial, jax.device_get(state), history


def test_frozen_parameters_stay_bit_identical():
  config = _opt_config(name='adamw', weight_decay=0.1, grad_clip_norm=1.0,
                       freeze=('ConvBlock_0/.*',))
  before, after, _ = _train(_unet(), config, [_batch(i) for i in range(3)])
  paths_before = optimizer.param_paths(before.params)
  for path, value in optimizer.param_paths(after.params).items():
    if path.startswith('ConvBlock_0/'):
      np.testing.assert_array_equal(value, paths_before[path], err_msg=path)
    elif value.ndim > 1:
      assert not np.array_equal(value, paths_before[path]), path


def test_a_freeze_pattern_that_matches_nothing_is_a_clear_error():
  params = {'Conv_0': {'kernel': jnp.ones((3, 3, 1, 1))}}
  with pytest.raises(ValueError, match="'backbone/.\\*' matches no parameter"):
    optimizer.build_optimizer(_opt_config(freeze=('backbone/.*',)), 10, params)


def test_learning_rate_multiplier_scales_the_update_of_matching_parameters():
  params = {'a': {'kernel': jnp.ones((2, 2))}, 'b': {'kernel': jnp.ones((2, 2))}}
  grads = jax.tree.map(jnp.ones_like, params)
  tx, _ = optimizer.build_optimizer(
      _opt_config(lr_multipliers=(('a/.*', 0.1),)), 10, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(updates['a']['kernel'], -0.01, rtol=1e-6)
  np.testing.assert_allclose(updates['b']['kernel'], -0.1, rtol=1e-6)


class _NoNormNet(nn.Module):
  """Two convolutions, no batch norm: accumulation must be exact for it."""

  @nn.compact
  def __call__(self, images, train=False):
    del train
    x = nn.relu(nn.Conv(8, (3, 3))(images))
    return nn.Conv(NUM_CLASSES, (1, 1))(x)


def test_accumulating_k_micro_batches_matches_one_step_on_all_of_them():
  mesh = sharding.make_mesh()  # 8 devices: micro-batches stay sharded.
  config = _opt_config(name='adamw', weight_decay=1e-2)
  batches = [_batch(i, n=16) for i in range(2)]
  _, whole, m1 = _train(_NoNormNet(), config, batches, mesh)
  _, accumulated, m4 = _train(_NoNormNet(), config, batches, mesh,
                              accum_steps=2)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5,
                                                       atol=1e-6),
               whole.params, accumulated.params)
  np.testing.assert_allclose(m1[0]['loss'], m4[0]['loss'], rtol=1e-5)
  np.testing.assert_allclose(m1[1]['grad_norm'], m4[1]['grad_norm'],
                             rtol=1e-4)


def test_ema_follows_its_recurrence_for_params_and_batch_stats():
  config = _opt_config()
  initial, once, _ = _train(_unet(), config, [_batch(0)], ema_decay=0.75)
  _, twice, _ = _train(_unet(), config, [_batch(0), _batch(1)],
                       ema_decay=0.75)
  # Effective decay min(0.75, (1 + t) / (10 + t)): 0.1 at t=0, 2/11 at t=1.
  def mix(d, old, new):
    return jax.tree.map(lambda o, n: d * o + (1 - d) * n, old, new)
  vars_of = lambda s: (s.params, s.batch_stats)
  ema1 = mix(0.1, vars_of(initial), vars_of(once))
  jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
      (once.ema_params, once.ema_batch_stats), ema1)
  final = twice
  expected = mix(2 / 11, ema1, vars_of(twice))
  jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
      (final.ema_params, final.ema_batch_stats), expected)


def test_aux_head_loss_is_added_with_its_weight():
  model = models.build('fcn8s', NUM_CLASSES, backbone='resnet18',
                       aux_head=True)
  batch = _batch(0, n=2, size=32)
  mesh = sharding.make_mesh(jax.devices()[:1])
  tx, schedule = optimizer.build_optimizer(_opt_config(), 10)
  state, _ = state_lib.create_train_state(model, tx, (32, 32, 3),
                                          jax.random.PRNGKey(0), mesh)
  loss_fn = losses.build_loss({'cross_entropy': 1.0})
  step = jax.jit(steps.make_train_step(model, tx, loss_fn, schedule,
                                       aux_loss_weight=0.4))
  _, metrics = step(state, batch)
  assert metrics['loss_aux'] > 0
  np.testing.assert_allclose(
      metrics['loss'],
      metrics['loss_cross_entropy'] + 0.4 * metrics['loss_aux'], rtol=1e-6)


def test_bf16_compute_keeps_float32_params_and_losses():
  model = models.build('unet', NUM_CLASSES, features=(4, 8),
                       dtype=jnp.bfloat16)
  _, final, history = _train(model, _opt_config(name='adamw'),
                             [_batch(i) for i in range(3)])
  assert all(p.dtype == np.float32 for p in jax.tree.leaves(final.params))
  assert all(np.isfinite(h['loss']) and h['loss'].dtype == np.float32
             for h in history)
  assert history[-1]['loss'] < history[0]['loss']
