"""Interrupted runs end where uninterrupted ones do (issue 8).

Kills and signals need a process boundary, so those runs are child processes
(sharing compiled programs through the persistent compilation cache, see
conftest); corrupt checkpoints, best-N and the memory check run in-process.
"""

import json
import logging
import os
import pathlib
import random
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from saved_checkpoints import read_state
from experiments import shapes_unet
from segjax.errors import ConfigError
from segjax.training import train

# Its module-scoped fixtures build once, on one pytest-xdist worker.
pytestmark = pytest.mark.xdist_group('resume')

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG = str(REPO / 'experiments' / 'shapes_unet.py')
STEPS = 24
# Every run of this file trains the same 24 steps: EMA on, so its state is
# covered too; logs every step, so a test can see which step is running; a
# constant learning rate, so a run may stop early (num_train_steps=12) and
# continue without changing the schedule.
FLAGS = (f'--config.num_train_steps={STEPS}', '--config.ema_decay=0.9',
         '--config.log_every_steps=1', f'--config.eval_every_steps={STEPS}',
         '--config.num_images_to_save=0', '--config.schedule.name=constant',
         '--config.schedule.warmup_steps=0')


def _command(workdir, *flags):
  return [sys.executable, '-m', 'segjax.main', f'--config={CONFIG}:tiny',
          f'--workdir={workdir}', *FLAGS, *flags]


def _env(base, devices=None):
  env = dict(base)
  if devices:
    env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
  return env


def _run(cmd, env):
  result = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stderr


def _logged_steps(workdir):
  path = workdir / 'metrics.jsonl'
  if not path.exists():
    return []
  return [r['step'] for r in map(json.loads, path.read_text().splitlines())
          if r['split'] == 'train']


def _finalized_checkpoints(workdir):
  # Orbax writes into a temporary folder and renames it to `<step>` when the
  # (async) save is complete, so a bare step number means a finished save.
  folder = workdir / 'checkpoints'
  if not folder.exists():
    return []
  return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


def _start_and_interrupt(cmd, env, workdir, at_step, sig,
                         need_checkpoint=False):
  """Starts `cmd`, sends `sig` once step `at_step` is logged (and, with
  `need_checkpoint`, once a save has finished); returns the process's
  stderr."""
  proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 240
  while time.time() < deadline and proc.poll() is None:
    if (max(_logged_steps(workdir), default=0) >= at_step and
        (not need_checkpoint or _finalized_checkpoints(workdir))):
      break
    time.sleep(0.01)
  assert proc.poll() is None, 'the run ended before it could be interrupted'
  proc.send_signal(sig)
  _, stderr = proc.communicate(timeout=300)
  return stderr


def _assert_bit_identical(a, b):
  leaves_a, tree_a = jax.tree.flatten(a)
  leaves_b, tree_b = jax.tree.flatten(b)
  assert tree_a == tree_b
  for x, y in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(x, y)


@pytest.fixture(scope='module')
def reference(tmp_path_factory, subprocess_env):
  """The final state of an uninterrupted run."""
  workdir = tmp_path_factory.mktemp('reference')
  _run(_command(workdir, '--config.checkpoint_every_steps=4'), subprocess_env)
  return read_state(workdir, STEPS)


@pytest.fixture(scope='module')
def subprocess_env(tfds_dir):  # Module scope, unlike conftest's.
  env = dict(os.environ)
  env['TFDS_DATA_DIR'] = tfds_dir
  env['JAX_COMPILATION_CACHE_DIR'] = str(REPO / '.cache' / 'jax_compilation')
  return env


def test_sigkill_at_a_random_step_then_resume_is_bit_identical(
    reference, subprocess_env, tmp_path):
  at_step = random.Random().randrange(5, STEPS - 2)
  cmd = _command(tmp_path, '--config.checkpoint_every_steps=4')
  # The async save of step 4 may still be running at step 5; waiting for a
  # finished one keeps the test about resuming (a kill before any finished
  # save simply restarts from step 0).
  _start_and_interrupt(cmd, subprocess_env, tmp_path, at_step,
                       signal.SIGKILL, need_checkpoint=True)
  saved = _finalized_checkpoints(tmp_path)
  assert saved and saved[-1] < STEPS, (at_step, saved)
  stderr = _run(cmd, subprocess_env)
  assert f'Resuming from checkpoint at step {saved[-1]}' in stderr
  _assert_bit_identical(read_state(tmp_path, STEPS), reference)


def test_sigterm_saves_the_current_step_and_resume_is_bit_identical(
    reference, subprocess_env, tmp_path):
  at_step = random.Random().randrange(3, STEPS - 4)
  # No interval saves: the only checkpoint before the end is SIGTERM's.
  cmd = _command(tmp_path, '--config.checkpoint_every_steps=1000')
  stderr = _start_and_interrupt(cmd, subprocess_env, tmp_path, at_step,
                                signal.SIGTERM)
  saved = _finalized_checkpoints(tmp_path)
  assert len(saved) == 1 and at_step <= saved[0] < STEPS, (at_step, saved)
  assert f'Stop requested (SIGTERM): saved step {saved[0]}' in stderr
  position = json.loads(
      (tmp_path / 'checkpoints' / str(saved[0]) / 'data' /
       'metadata').read_text())
  assert position['step'] == saved[0]
  assert (position['epoch'], position['index']) == divmod(saved[0] * 8, 64)
  _run(cmd, subprocess_env)
  _assert_bit_identical(read_state(tmp_path, STEPS), reference)


def test_checkpoint_from_4_devices_resumes_on_2(reference, subprocess_env,
                                               tmp_path):
  flags = ('--config.checkpoint_every_steps=4',)
  _run(_command(tmp_path, *flags, '--config.num_train_steps=12'),
       _env(subprocess_env, devices=4))
  stderr = _run(_command(tmp_path, *flags), _env(subprocess_env, devices=2))
  assert 'Resuming from checkpoint at step 12' in stderr
  info = json.loads((tmp_path / 'run_info.json').read_text())
  assert info['devices']['device_count'] == 2
  # Other device counts sum gradients in other orders, and Adam turns those
  # last-bit differences into differences of about 1e-4 in elements whose
  # gradients are near zero: equal to float tolerance, not bit for bit,
  # compared with 8 devices throughout, each array as a whole.
  def relative(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12)
  diffs = jax.tree.leaves(jax.tree.map(
      relative, read_state(tmp_path, STEPS)['params'], reference['params']))
  assert max(diffs) < 2e-2, max(diffs)


def _config(tfds_dir, **fields):
  config = shapes_unet.get_config('tiny')
  config.data.data_dir = tfds_dir
  config.num_images_to_save = 0
  config.data.final_eval_splits = ()
  config.update(fields)
  return config


def test_truncated_latest_checkpoint_is_moved_aside_and_the_previous_used(
    tfds_dir, tmp_path, caplog):
  caplog.set_level(logging.INFO)
  config = _config(tfds_dir, num_train_steps=8, checkpoint_every_steps=4,
                   eval_every_steps=8, log_every_steps=4)
  train.train_and_evaluate(config, tmp_path)
  for f in (tmp_path / 'checkpoints' / '8').rglob('*'):
    if f.is_file():
      with open(f, 'r+b') as handle:
        handle.truncate(f.stat().st_size // 3)
  config.num_train_steps = 12
  train.train_and_evaluate(config, tmp_path)
  assert (tmp_path / 'checkpoints' / '8.corrupt').is_dir()
  assert any('checkpoints/8 cannot be read' in r.getMessage() and
             r.levelname == 'WARNING' for r in caplog.records)
  assert any('Resuming from checkpoint at step 4' in r.getMessage()
             for r in caplog.records)
  steps = sorted(int(p.name) for p in (tmp_path / 'checkpoints').iterdir()
                 if p.name.isdigit())
  assert steps[-1] == 12 and 8 in steps  # Step 8 was saved again.


def test_best_checkpoint_is_kept_beside_the_latest(tfds_dir, tmp_path):
  config = _config(tfds_dir, num_train_steps=16, checkpoint_every_steps=4,
                   eval_every_steps=4, log_every_steps=4, keep_checkpoints=1,
                   keep_best_checkpoints=1)
  train.train_and_evaluate(config, tmp_path)
  rows = [json.loads(line) for line in
          (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  evals = {r['step']: r['miou'] for r in rows if r['split'] == 'validation'}
  best = max(evals, key=lambda s: (evals[s], -s))
  steps = {int(p.name) for p in (tmp_path / 'checkpoints').iterdir()
           if p.name.isdigit()}
  assert steps == {best, 16}, (evals, steps)


def test_a_step_over_the_memory_limit_stops_with_the_figures(tfds_dir,
                                                            tmp_path):
  config = _config(tfds_dir, memory_limit_bytes=1000)
  with pytest.raises(ConfigError, match=r'needs [0-9.]+ GiB per device '
                     r'\(arguments .*\) but 0\.00 GiB are available\. Try a '
                     r'smaller config\.batch_size'):
    train.train_and_evaluate(config, tmp_path)
  assert not (tmp_path / 'checkpoints' / '0').exists()
