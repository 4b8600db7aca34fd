"""Known errors of `python -m segjax.main` are one line on stderr, with the
flag as typed; their details only with --verbosity=1 (child processes: the
exit status and what a user sees are the point)."""

import pathlib
import pickle
import subprocess
import sys

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG = str(REPO / 'experiments' / 'shapes_unet.py')


def _run(args, env, timeout=600):
  return subprocess.run([sys.executable, '-m', 'segjax.main', *args],
                        env=env, cwd=REPO, capture_output=True, text=True,
                        timeout=timeout, check=False)


def _error_lines(stderr):
  return [line for line in stderr.splitlines()
          if line.startswith('segjax: error:')]


def _assert_one_line(result, status=2):
  assert result.returncode == status, result.stderr[-3000:]
  assert 'Traceback' not in result.stderr, result.stderr[-3000:]
  errors = _error_lines(result.stderr)
  assert len(errors) == 1, result.stderr[-3000:]
  # Nothing of the error spills onto further lines.
  assert result.stderr.rstrip().endswith(errors[0]), result.stderr[-3000:]
  return errors[0]


def test_a_diverging_run_stops_in_one_line_naming_the_step(tmp_path,
                                                          subprocess_env):
  workdir = tmp_path / 'run'
  result = _run([f'--config={CONFIG}:tiny', f'--workdir={workdir}',
                 '--config.optimizer.learning_rate=1e6',
                 '--config.log_every_steps=1',
                 '--config.checkpoint_every_steps=1'], subprocess_env)
  line = _assert_one_line(result, status=1)
  assert 'Non-finite training values at step ' in line, line
  bad_step = int(line.split('at step ')[1].split(':')[0])
  assert bad_step > 1
  # Every good step's checkpoint is kept, none of the bad one.
  saved = sorted(int(p.name) for p in (workdir / 'checkpoints').iterdir()
                 if p.name.isdigit())
  assert saved == list(range(1, bad_step)), saved


def test_an_unknown_variant_is_one_line_naming_it_and_the_choices(
    tmp_path, subprocess_env):
  result = _run([f'--config={CONFIG}:tinyy', f'--workdir={tmp_path}'],
                subprocess_env)
  line = _assert_one_line(result)
  assert line == (f'segjax: error: --config={CONFIG}:tinyy: Unknown variant '
                  '\'tinyy\' of shapes_unet; use "tiny" or nothing.')
  # The traceback of the config file is there when asked for.
  verbose = _run([f'--config={CONFIG}:tinyy', f'--workdir={tmp_path}',
                  '--verbosity=1'], subprocess_env)
  assert verbose.returncode == 2
  assert 'Traceback' in verbose.stderr and 'shapes_unet.py' in verbose.stderr


@pytest.mark.parametrize('override,expected', [
    (['--config.optimizer.learnig_rate=1'],
     "--config.optimizer.learnig_rate=1: config.optimizer has no field "
     "'learnig_rate'; did you mean --config.optimizer.learning_rate?"),
    (['--config.optimizer.learnig_rate', '1'],
     "--config.optimizer.learnig_rate 1: config.optimizer has no field "
     "'learnig_rate'; did you mean --config.optimizer.learning_rate?"),
    (['--config.optimiser.learning_rate=1'],
     "--config.optimiser.learning_rate=1: config has no field 'optimiser'; "
     'did you mean --config.optimizer?'),
    (['--config.learnig_rate=1'],
     "--config.learnig_rate=1: config has no field 'learnig_rate'; did you "
     'mean --config.optimizer.learning_rate?'),
    (['--config.seed.value=1'],
     '--config.seed.value=1: config.seed is a value (int), not a block of '
     'fields'),
])
def test_a_misspelt_override_names_the_flag_as_typed_and_the_field(
    tmp_path, subprocess_env, override, expected):
  result = _run([f'--config={CONFIG}:tiny', f'--workdir={tmp_path}',
                 *override], subprocess_env)
  line = _assert_one_line(result)
  assert line == (f'segjax: error: {expected} (overrides can only set '
                  'existing fields).'), line
  assert '\\' not in line


def test_a_weights_file_of_the_wrong_kind_is_one_line_naming_it(
    tmp_path, subprocess_env):
  path = tmp_path / 'resnet18.safetensors'
  path.write_bytes(pickle.dumps({'conv1.weight': np.zeros(3)}, protocol=2))
  result = _run([f'--config={CONFIG}:tiny', f'--workdir={tmp_path / "run"}',
                 f'--config.model_init.path={path}',
                 '--config.model_init.source=torchvision'], subprocess_env)
  line = _assert_one_line(result)
  assert f"pretrained weights file '{path}' is a Python pickle" in line, line
