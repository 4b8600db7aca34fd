"""The command line, end to end, in child processes (the process boundary is
the point: exit statuses, what a user sees). Kill / SIGTERM and resume:
tests/test_resume.py."""

import json
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG = str(REPO / 'experiments' / 'shapes_unet.py')


def _command(workdir, *overrides, arg='tiny'):
  return [sys.executable, '-m', 'segjax.main', f'--config={CONFIG}:{arg}',
          f'--workdir={workdir}', *overrides]


def _summary_tags(folder):
  """{(step, tag, plugin)} of every summary in `folder`'s event files."""
  from segjax.data.tf_host import tf  # pylint: disable=g-import-not-at-top
  found = set()
  for path in folder.glob('events.out.tfevents.*'):
    for event in tf.compat.v1.train.summary_iterator(str(path)):
      for value in event.summary.value:
        found.add((event.step, value.tag,
                   value.metadata.plugin_data.plugin_name))
  return found


def _run(cmd, env, timeout=300, cwd=REPO):
  return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True,
                        text=True, timeout=timeout, check=False)


def test_tiny_run_writes_everything_a_notebook_needs(tmp_path, subprocess_env):
  # A relative workdir, as in the README (Orbax itself needs absolute paths).
  result = _run(_command('run', '--config.profile_steps=(12,14)'),
                subprocess_env, cwd=tmp_path)
  workdir = tmp_path / 'run'
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'step 20/20' in result.stderr  # The progress line.
  assert '\r[' not in result.stderr  # No progress bar outside a terminal.

  config = json.loads((workdir / 'config.json').read_text())
  assert config['data']['name'] == 'shapes/tiny'
  info = json.loads((workdir / 'run_info.json').read_text())
  assert info['num_params'] > 0 and info['flops_per_train_step'] > 0
  assert info['devices']['device_count'] == 8
  assert 'jax' in info['packages']
  rows = [json.loads(line)
          for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
  splits = {(r['step'], r['split']) for r in rows}
  assert {(20, 'train'), (10, 'validation'), (20, 'validation'),
          (20, 'test')} <= splits
  final_val = [r for r in rows if r['split'] == 'validation'][-1]
  assert 0 <= final_val['miou'] <= 1 and final_val['num_examples'] == 24
  assert (workdir / 'images' / 'step_0000020_validation.png').exists()
  # The profile of steps 12-14, where TensorBoard's profile plugin looks.
  assert list((workdir / 'tensorboard' / 'plugins' / 'profile').glob(
      '*/*.xplane.pb'))
  # TensorBoard gets the scalars and, at each evaluation, the panel.
  tags = _summary_tags(workdir / 'tensorboard')
  assert {(20, 'validation/miou', 'scalars'),
          (10, 'validation/predictions', 'images'),
          (20, 'validation/predictions', 'images')} <= tags
  assert sorted(p.name for p in (workdir / 'checkpoints').iterdir()
                if p.name.isdigit()) == ['10', '20']


@pytest.mark.parametrize('overrides,message', [
    (['--config.num_train_stepz=5'], 'num_train_stepz'),
    (['--config.batch_size=6'],
     'config.batch_size=6 is not divisible by the number of devices (8)'),
    (['--config.model.stem_stride=3'],
     'config.model: stem_stride must be 1 or 2, got 3.'),
])
def test_bad_config_is_one_clear_line(tmp_path, subprocess_env, overrides,
                                      message):
  result = _run(_command(tmp_path / 'run', *overrides), subprocess_env)
  assert result.returncode != 0
  assert message in result.stderr
  assert 'Traceback' not in result.stderr


def test_missing_config_file_is_a_clear_error(tmp_path, subprocess_env):
  cmd = [sys.executable, '-m', 'segjax.main',
         '--config=experiments/nosuch.py', f'--workdir={tmp_path}']
  result = _run(cmd, subprocess_env)
  assert result.returncode != 0
  assert 'experiments/nosuch.py' in result.stderr
  assert 'Traceback' not in result.stderr


def test_unwritable_workdir_is_a_clear_error(tmp_path, subprocess_env):
  blocker = tmp_path / 'a_file'
  blocker.write_text('not a folder')
  result = _run(_command(blocker / 'run'), subprocess_env)
  assert result.returncode == 2
  assert f"workdir '{blocker / 'run'}' is not writable" in result.stderr
  assert 'Traceback' not in result.stderr
  assert blocker.read_text() == 'not a folder'  # Nothing clobbered.
