"""Faulty checkpoints and changed configs on resume.

A checkpoint is moved aside only when it is unreadable on its own terms
(its files against its own metadata, or an array against its checksum);
one that reads but does not fit the config is a one-line ConfigError that
leaves every file, config.json included, where it was; transient storage
errors are retried and never move anything.

Every test starts from a copy of one tiny run (EMA on, checkpoints at steps
4 and 8), trained in-process once. Re-runs whose exit status and stderr
are the point are child processes; the others run in-process.
"""

import errno
import json
import logging
import pathlib
import re
import shutil
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import tensorstore as ts

from saved_checkpoints import read_state
from experiments import shapes_unet
from segjax.errors import ConfigError
from segjax.inference import report
from segjax.training import checkpointing
from segjax.training import train

# Its module-scoped fixtures build once, on one pytest-xdist worker.
pytestmark = pytest.mark.xdist_group('checkpoint_faults')

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG = str(REPO / 'experiments' / 'shapes_unet.py')
EMA = 0.99
STEPS = 8  # Checkpoints at 4 and 8.


def _config(tfds_dir):
  """The tiny U-Net of `shapes_unet.py:tiny` with an EMA, for STEPS steps
  and a checkpoint every STEPS // 2."""
  config = shapes_unet.get_config('tiny')
  config.data.data_dir = tfds_dir
  config.num_images_to_save = 0
  config.data.final_eval_splits = ()
  config.ema_decay = EMA
  config.num_train_steps = STEPS
  config.checkpoint_every_steps = config.log_every_steps = STEPS // 2
  config.eval_every_steps = STEPS
  return config


@pytest.fixture(scope='module')
def trained(tfds_dir, tmp_path_factory):
  """(workdir, final state as NumPy) of the run every test copies."""
  workdir = tmp_path_factory.mktemp('trained')
  train.train_and_evaluate(_config(tfds_dir), workdir)
  assert _entries(workdir) == ['4', '8']
  return workdir, read_state(workdir, STEPS)


@pytest.fixture
def workdir(trained, tmp_path):
  """A fresh copy of the trained run."""
  copy = tmp_path / 'run'
  shutil.copytree(trained[0], copy)
  return copy


def _entries(workdir):
  """Every name in checkpoints/, moved-aside ones included."""
  return sorted(p.name for p in (workdir / 'checkpoints').iterdir())


def _messages(caplog, level=None):
  return [r.getMessage() for r in caplog.records
          if level is None or r.levelname == level]


def _assert_same_state(a, b):
  leaves_a, tree_a = jax.tree.flatten(a)
  leaves_b, tree_b = jax.tree.flatten(b)
  assert tree_a == tree_b
  for x, y in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(x, y)


def _main(workdir, env, *flags):
  """`python -m segjax.main` on `workdir` with `_config`'s fields but EMA
  (off unless `flags` set it)."""
  return subprocess.run(
      [sys.executable, '-m', 'segjax.main', f'--config={CONFIG}:tiny',
       f'--workdir={workdir}', '--config.num_images_to_save=0',
       f'--config.data.data_dir={env["TFDS_DATA_DIR"]}',
       '--config.data.final_eval_splits=()',
       f'--config.num_train_steps={STEPS}',
       f'--config.checkpoint_every_steps={STEPS // 2}',
       f'--config.log_every_steps={STEPS // 2}',
       f'--config.eval_every_steps={STEPS}', *flags],
      env=env, cwd=REPO, capture_output=True, text=True, timeout=300,
      check=False)


def _error_lines(stderr):
  return [line for line in stderr.splitlines()
          if line.startswith('segjax: error:')]


# Fault: a config change made the trainer rename every valid checkpoint
# `<step>.corrupt` and train from step 0.


def test_resuming_an_ema_run_without_ema_is_one_line_and_moves_nothing(
    workdir, subprocess_env):
  config_json = (workdir / 'config.json').read_bytes()
  result = _main(workdir, subprocess_env)  # No --config.ema_decay.
  assert result.returncode == 2, result.stderr[-3000:]
  errors = _error_lines(result.stderr)
  assert len(errors) == 1, result.stderr[-3000:]
  assert errors[0].startswith(
      f'segjax: error: checkpoint 8 in {workdir / "checkpoints"} has EMA '
      'state; this config has ema_decay=0 (it stays there'), errors[0]
  assert f'ema_decay: {EMA} -> 0.0' in errors[0]
  assert 'Traceback' not in result.stderr
  assert 'Training from step' not in result.stderr
  assert _entries(workdir) == ['4', '8']
  assert (workdir / 'config.json').read_bytes() == config_json


@pytest.mark.parametrize('change,message', [
    ({'optimizer.name': 'sgd'},
     r"has no opt_state/\S+; this config's optimizer \(config\.optimizer\) "
     r'has float32\[[\d, ]+\] \(it stays there.*\)\. Changed since '
     r'config\.json: optimizer\.name: "adamw" -> "sgd"\.$'),
    ({'model.features': (4, 8)},
     r"has params/\S+ float32\[[\d, ]+\]; this config's model has "
     r'float32\[[\d, ]+\] \(it stays there.*\)\. Changed since '
     r'config\.json: model\.features: \[8, 16\] -> \[4, 8\]\.$'),
    ({'model.param_dtype': 'bfloat16'},
     r"has params/\S+ float32(\[[\d, ]*\]); this config's model has "
     r'bfloat16\1 \(it stays there.*\)\. Changed since config\.json: '
     r'model\.param_dtype: \(unset\) -> "bfloat16"\.$'),
], ids=['optimizer', 'width', 'dtype'])
def test_a_checkpoint_that_does_not_fit_is_a_config_error(
    tfds_dir, workdir, change, message):
  config = _config(tfds_dir)
  for field, value in change.items():
    parent, _, name = field.rpartition('.')
    config[parent][name] = value
  config_json = (workdir / 'config.json').read_bytes()
  with pytest.raises(ConfigError) as raised:
    train.train_and_evaluate(config, workdir)
  text = str(raised.value)
  assert '\n' not in text
  assert text.startswith(f'checkpoint 8 in {workdir / "checkpoints"} '), text
  assert re.search(message, text), text
  assert _entries(workdir) == ['4', '8']
  assert (workdir / 'config.json').read_bytes() == config_json
  assert not (workdir / 'config.1.json').exists()


# Fault: a rejected config still replaced config.json, after which
# evaluation built the wrong model (Flax ScopeParamShapeError).


def test_a_rejected_config_leaves_config_json_and_evaluation_works(
    workdir, subprocess_env):
  config_json = (workdir / 'config.json').read_bytes()
  result = _main(workdir, subprocess_env, f'--config.ema_decay={EMA}',
                 '--config.model.features=(4, 8)')
  assert result.returncode == 2, result.stderr[-3000:]
  errors = _error_lines(result.stderr)
  assert len(errors) == 1 and 'params/' in errors[0], result.stderr[-3000:]
  assert (workdir / 'config.json').read_bytes() == config_json
  assert not (workdir / 'config.1.json').exists()
  assert _entries(workdir) == ['4', '8']
  scores = report.evaluate(workdir, checkpoint='latest')
  assert scores['checkpoint_step'] == 8 and scores['num_images'] > 0


# Fault: a transient storage error counted as corruption.


@pytest.fixture
def fast_retries(monkeypatch):
  monkeypatch.setattr(checkpointing, 'RETRY_DELAYS_S', (0.01, 0.01, 0.01),
                      raising=False)


def _failing_restore(monkeypatch, error, times):
  """Makes the first `times` restores of a TrainState raise `error`."""
  restore = ocp.CheckpointManager.restore
  calls = []

  def flaky(self, step, *args, **kwargs):
    if len(calls) < times and 'state' in (kwargs.get('args') or ()):
      calls.append(step)
      raise error
    return restore(self, step, *args, **kwargs)

  monkeypatch.setattr(ocp.CheckpointManager, 'restore', flaky)
  return calls


def test_a_transient_read_error_is_retried_and_moves_nothing(
    tfds_dir, workdir, monkeypatch, fast_retries, caplog):
  del fast_retries
  caplog.set_level(logging.INFO)
  calls = _failing_restore(
      monkeypatch, OSError(errno.EIO, 'Input/output error'), times=1)
  train.train_and_evaluate(_config(tfds_dir), workdir)
  assert calls == [8]
  assert _entries(workdir) == ['4', '8']
  assert any('retrying' in m and 'Input/output error' in m
             for m in _messages(caplog, 'WARNING'))
  assert 'Resuming from checkpoint at step 8' in ' '.join(
      _messages(caplog))


def test_a_lasting_transient_error_is_raised_and_moves_nothing(
    tfds_dir, workdir, monkeypatch, fast_retries):
  del fast_retries
  _failing_restore(monkeypatch, TimeoutError('read timed out'), times=100)
  with pytest.raises(TimeoutError, match='read timed out'):
    train.train_and_evaluate(_config(tfds_dir), workdir)
  assert _entries(workdir) == ['4', '8']


def test_a_restore_that_fails_on_a_readable_checkpoint_moves_nothing(
    tfds_dir, workdir, monkeypatch):
  # Not a storage error and not the files: they read on their own.
  _failing_restore(monkeypatch, ValueError('target trouble'), times=100)
  with pytest.raises(ValueError, match='target trouble'):
    train.train_and_evaluate(_config(tfds_dir), workdir)
  assert _entries(workdir) == ['4', '8']


def test_only_process_0_moves_a_checkpoint_aside(workdir, monkeypatch):
  checkpointer = checkpointing.Checkpointer(workdir / 'checkpoints', 4, 3)
  move_aside = checkpointer._move_aside  # pylint: disable=protected-access
  try:
    monkeypatch.setattr(jax, 'process_index', lambda: 1)
    move_aside(8, 'unreadable')
    monkeypatch.undo()
    assert _entries(workdir) == ['4', '8']
    move_aside(8, 'unreadable')
    assert _entries(workdir) == ['4', '8.corrupt']
    assert checkpointer.latest_step() == 4
  finally:
    checkpointer.close()


# Fault: array data that reads back wrong, without an error, was resumed
# from silently.


def _flip_bytes_of_the_largest_array(step_dir, count=40):
  """Flips `count` bytes in the middle of the stored bytes of the largest
  array chunk (as found in its OCDBT data file); returns the array's
  path with '/' separators."""
  state = step_dir / 'state'
  store = ts.KvStore.open(
      {'driver': 'ocdbt', 'base': f'file://{state}/'}).result()
  chunks = {key: store.read(key).result().value
            for key in store.list().result()
            if not key.endswith((b'.zarray', b'zarr.json'))}
  key = max(chunks, key=lambda k: len(chunks[k]))
  stored = chunks[key]
  flipped = 0
  for path in sorted(state.glob('**/d/*')):
    data = bytearray(path.read_bytes())
    at = data.find(stored)
    while at >= 0:  # Every copy, so no intact one can be read instead.
      middle = at + (len(stored) - count) // 2
      data[middle:middle + count] = bytes(b ^ 0xFF for b in
                                          data[middle:middle + count])
      flipped += 1
      at = data.find(stored, at + 1)
    path.write_bytes(bytes(data))
  assert flipped, key
  return key.decode().split('/')[0].replace('.', '/')


def _assert_moved_aside_and_resumed(workdir, caplog, array, reference):
  warnings = [m for m in _messages(caplog, 'WARNING')
              if 'checkpoints/8 cannot be read' in m]
  assert len(warnings) == 1, _messages(caplog, 'WARNING')
  # A chunk that no longer decompresses names it in TensorStore's key
  # ('a.b.c/0.0'); one that decodes to other values fails its checksum.
  assert array in warnings[0] or array.replace('/', '.') in warnings[0]
  assert 'moved it to' in warnings[0]
  assert 'Resuming from checkpoint at step 4' in ' '.join(
      _messages(caplog))
  assert _entries(workdir) == ['4', '8', '8.corrupt']
  _assert_same_state(read_state(workdir, STEPS), reference)


def test_flipped_bytes_in_an_array_move_the_checkpoint_aside(
    tfds_dir, trained, workdir, caplog):
  caplog.set_level(logging.INFO)
  array = _flip_bytes_of_the_largest_array(workdir / 'checkpoints' / '8')
  train.train_and_evaluate(_config(tfds_dir), workdir)
  _assert_moved_aside_and_resumed(workdir, caplog, array, trained[1])


def test_an_array_that_reads_back_wrong_fails_its_checksum(
    tfds_dir, trained, workdir, caplog):
  caplog.set_level(logging.INFO)
  # A well-formed write of other values: the chunk decodes without error,
  # so only the checksum can tell.
  array = ts.open({'driver': 'zarr', 'kvstore': {
      'driver': 'ocdbt',
      'base': f'file://{workdir / "checkpoints" / "8" / "state"}/',
      'path': 'params.Conv_0.kernel/'}}).result()
  values = array.read().result()
  values[0, 0, 0, 0] += 1.0
  array.write(values).result()
  train.train_and_evaluate(_config(tfds_dir), workdir)
  _assert_moved_aside_and_resumed(workdir, caplog, 'params/Conv_0/kernel',
                                  trained[1])
  assert any('params/Conv_0/kernel does not match its checksum' in m
             for m in _messages(caplog, 'WARNING'))


def test_a_checkpoint_without_checksums_is_restored_unverified(
    tfds_dir, workdir, caplog):
  caplog.set_level(logging.INFO)
  # As written before checkpoints carried checksums: no item, and none in
  # the step's metadata.
  step = workdir / 'checkpoints' / '8'
  shutil.rmtree(step / 'checksums', ignore_errors=True)
  metadata = json.loads((step / '_CHECKPOINT_METADATA').read_text())
  metadata['item_handlers'].pop('checksums', None)
  (step / '_CHECKPOINT_METADATA').write_text(json.dumps(metadata))
  train.train_and_evaluate(_config(tfds_dir), workdir)
  unverified = [m for m in _messages(caplog)
                if 'checkpoints/8 has no checksums' in m]
  assert len(unverified) == 1 and 'restored unverified' in unverified[0]
  assert 'Resuming from checkpoint at step 8' in ' '.join(
      _messages(caplog))
  assert _entries(workdir) == ['4', '8']


def test_every_saved_array_has_a_checksum_of_its_bytes(trained):
  workdir, state = trained
  saved = json.loads((workdir / 'checkpoints' / '8' / 'checksums' /
                      'metadata').read_text())
  assert saved['algorithm'] == 'sha256'
  flat = jax.tree_util.tree_flatten_with_path(state)[0]
  assert len(saved['arrays']) == len(flat)
  assert saved == checkpointing.array_checksums(state)
