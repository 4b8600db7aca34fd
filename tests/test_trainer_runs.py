"""Whole tiny runs: the NaN guard, EMA evaluation, logging, model_init."""

import io
import json

import flax
import jax
import numpy as np
import pytest

from saved_checkpoints import read_state
from experiments import shapes_unet
from segjax import losses
from segjax import models
from segjax.training import monitoring
from segjax.training import optimizer
from segjax.parallel import sharding
from segjax.training import state as state_lib
from segjax.training import steps
from segjax.training import train


def _config(tfds_dir, **overrides):
  config = shapes_unet.get_config('tiny')
  config.data.data_dir = tfds_dir
  config.num_train_steps = 4
  config.log_every_steps = 2
  config.eval_every_steps = 4
  config.checkpoint_every_steps = 2
  config.num_images_to_save = 0
  config.data.final_eval_splits = ()
  for key, value in overrides.items():
    target = config
    *parents, leaf = key.split('.')
    for p in parents:
      target = target[p]
    target[leaf] = value
  return config


def _rows(workdir):
  return [json.loads(line) for line in
          (workdir / 'metrics.jsonl').read_text().splitlines()]


def _saved_params(workdir, step):
  return read_state(workdir, step)['params']


def test_guard_names_the_step_and_the_first_non_finite_term():
  ok = {'loss': 1.0, 'loss_dice': 0.5, 'grad_norm': 2.0}
  bad = {'loss': float('nan'), 'loss_dice': float('nan'),
         'grad_norm': float('inf')}
  with pytest.raises(monitoring.NonFiniteError,
                     match=r'at step 12: loss_dice=nan, loss=nan, '
                     r'grad_norm=inf'):
    monitoring.summarize([ok, ok, bad], first_step=10)
  assert monitoring.summarize([ok, ok], 1)['loss'] == 1.0


class _Clock:
  now = 0.0

  def __call__(self):
    return self.now


def test_eta_averages_the_last_log_intervals():
  clock = _Clock()
  progress = monitoring.Progress(0, 1000, 8, None, window=3, clock=clock)
  assert progress.eta_seconds(0) is None
  # 10-step intervals: the first holds the compile (100 s); one holds an
  # evaluation (40 s).
  for step, seconds in zip((10, 20, 30, 40, 50), (100, 10, 10, 40, 10)):
    clock.now += seconds
    means = progress.measure(step)
    if step == 10:  # One interval so far: that one.
      assert progress.eta_seconds(10) == pytest.approx(990 * 10.0)
  assert means['step_time_s'] == pytest.approx(1.0)  # The last interval.
  # The last three intervals: (10 + 40 + 10) s over 30 steps.
  assert progress.eta_seconds(50) == pytest.approx(950 * 2.0)
  means['loss'] = 0.5
  assert progress.line(50, means).endswith('| loss 0.5000 | ETA 31m40s')


def test_progress_bar_redraws_at_most_twice_a_second():
  clock, stream = _Clock(), io.StringIO()
  progress = monitoring.Progress(0, 40, 8, None, bar_stream=stream,
                                 clock=clock)
  clock.now = 1.0
  progress.tick(10)
  assert stream.getvalue() == '\r[' + '#' * 7 + '.' * 23 + '] 10/40 ETA ?\033[K'
  clock.now = 1.2
  progress.tick(11)  # Too soon: not redrawn.
  progress.measure(20)
  progress.tick(40)  # The last step is always drawn.
  assert stream.getvalue().count('\r[') == 2
  assert stream.getvalue().endswith('] 40/40 ETA 0m00s\033[K')
  progress.clear()
  assert stream.getvalue().endswith('\r\033[K')


def test_a_poisoned_batch_trips_the_guard():
  model = models.build('unet', 3, features=(4, 8))
  config = shapes_unet.get_config('tiny')
  tx, schedule = optimizer.build_optimizer(config, 10)
  state, _ = state_lib.create_train_state(
      model, tx, (16, 16, 3), jax.random.PRNGKey(0),
      sharding.make_mesh(jax.devices()[:1]))
  step = jax.jit(steps.make_train_step(
      model, tx, losses.build_loss({'cross_entropy': 1.0, 'dice': 1.0}),
      schedule))
  image = np.zeros((2, 16, 16, 3), np.float32)
  image[0, 3, 3, 0] = np.nan  # A float image is taken as normalised.
  batch = {'image': image, 'labels': np.zeros((2, 16, 16), np.int32)}
  _, metrics = step(state, batch)
  with pytest.raises(monitoring.NonFiniteError,
                     match='at step 1: loss_cross_entropy=nan, '
                     'loss_dice=nan, loss=nan, grad_norm=nan'):
    monitoring.summarize([jax.device_get(metrics)], first_step=1)


def test_diverging_run_stops_before_saving_the_bad_step(tfds_dir, tmp_path):
  # The warm-up's lr is 0 at step 0: step 1 is good and saved; then the
  # update overflows.
  config = _config(tfds_dir, **{'optimizer.learning_rate': 1e30,
                                'optimizer.grad_clip_norm': 0.0,
                                'schedule.warmup_steps': 4,
                                'checkpoint_every_steps': 1,
                                'log_every_steps': 1, 'num_train_steps': 8})
  with pytest.raises(monitoring.NonFiniteError, match=r'at step (\d+)') as e:
    train.train_and_evaluate(config, tmp_path)
  bad_step = int(e.value.args[0].split('at step ')[1].split(':')[0])
  saved = sorted(int(p.name) for p in (tmp_path / 'checkpoints').iterdir()
                 if p.name.isdigit())
  assert saved == list(range(1, bad_step))  # Every good step, complete.
  logged = [r['step'] for r in _rows(tmp_path) if r['split'] == 'train']
  assert max(logged) < bad_step


def test_ema_is_evaluated_and_every_training_value_is_logged(tfds_dir,
                                                             tmp_path):
  config = _config(tfds_dir, ema_decay=0.5)
  results = train.train_and_evaluate(config, tmp_path)
  assert set(results) == {'validation', 'validation_ema'}
  rows = _rows(tmp_path)
  assert {r['split'] for r in rows} == {'train', 'validation',
                                        'validation_ema'}
  last = [r for r in rows if r['split'] == 'train'][-1]
  for key in ('loss', 'loss_cross_entropy', 'loss_dice', 'learning_rate',
              'grad_norm', 'param_norm', 'update_norm', 'pixel_accuracy',
              'step_time_s', 'images_per_s', 'achieved_flops_per_s', 'epoch'):
    assert key in last and np.isfinite(last[key]), key
  assert last['achieved_flops_per_s'] > 0
  # EMA and raw weights were both saved; they differ after training.
  restored = read_state(tmp_path, 4)
  raw, ema = restored['params'], restored['ema_params']
  assert jax.tree.structure(raw) == jax.tree.structure(ema)
  assert any(not np.array_equal(a, b) for a, b in
             zip(jax.tree.leaves(raw), jax.tree.leaves(ema)))


def test_model_init_starts_from_another_runs_parameters(tfds_dir, tmp_path):
  first = tmp_path / 'first'
  train.train_and_evaluate(_config(tfds_dir), first)
  source = _saved_params(first, 4)
  second = tmp_path / 'second'
  # A learning rate of 0 keeps the parameters where model_init put them.
  config = _config(tfds_dir, num_train_steps=2, **{
      'optimizer.learning_rate': 0.0, 'model_init.path': str(first),
      'model_init.exclude': ('Conv_1/.*',)})
  train.train_and_evaluate(config, second)
  loaded = flax.traverse_util.flatten_dict(_saved_params(second, 2))
  for path, value in flax.traverse_util.flatten_dict(source).items():
    same = np.array_equal(value, loaded[path])
    assert same == (path[0] != 'Conv_1'), path


def test_model_init_pointing_at_nothing_is_a_clear_error(tfds_dir, tmp_path):
  (tmp_path / 'empty').mkdir()
  config = _config(tfds_dir, **{'model_init.path': str(tmp_path / 'empty')})
  with pytest.raises(ValueError, match='holds no segjax checkpoint'):
    train.train_and_evaluate(config, tmp_path / 'work')
