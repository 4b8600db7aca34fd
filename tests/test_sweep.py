"""Sweeps: declaring points, naming them, planning, running, resuming, and
the `python -m segjax.sweep` command line."""

import json
import pathlib
import shlex
import subprocess
import sys

from absl import flags as absl_flags
from ml_collections import config_flags
import pytest

from experiments import shapes_unet
from segjax import sweeps
from segjax.errors import ConfigError

REPO = pathlib.Path(__file__).resolve().parents[1]

# A 2 x 2 sweep of 2-step runs on shapes/tiny.
EXPERIMENT = '''
from experiments import shapes_unet
from segjax import sweeps

def get_config(arg=None):
  config = shapes_unet.get_config('tiny')
  config.num_train_steps = 2
  config.eval_every_steps = config.log_every_steps = 2
  config.checkpoint_every_steps = 2
  config.num_images_to_save = 0
  config.data.final_eval_splits = ()
  return config

def get_sweep(arg=None):
  field = arg or 'model.features'
  return sweeps.product(sweeps.axis(field, [(8, 16), (4, 8)]),
                        sweeps.axis('seed', [0, 1]))
'''

NAMES = ['model.features=8-16,seed=0', 'model.features=8-16,seed=1',
         'model.features=4-8,seed=0', 'model.features=4-8,seed=1']


@pytest.fixture
def experiment(tmp_path):
  path = tmp_path / 'sweep_exp.py'
  path.write_text(EXPERIMENT)
  return str(path)


def test_product_is_row_major_and_merges():
  points = sweeps.product(sweeps.axis('a', [1, 2]),
                          sweeps.axis('b', ['x', 'y']))
  assert points == [{'a': 1, 'b': 'x'}, {'a': 1, 'b': 'y'},
                    {'a': 2, 'b': 'x'}, {'a': 2, 'b': 'y'}]
  with pytest.raises(ValueError, match='more than one axis'):
    sweeps.product(sweeps.axis('a', [1]), sweeps.axis('a', [2]))
  with pytest.raises(ValueError, match='non-empty list'):
    sweeps.axis('a', 'abc')


def test_zip_and_seeds():
  lr_wd = sweeps.zip_(sweeps.axis('lr', [0.1, 0.01]),
                      sweeps.axis('wd', [1e-4, 0.0]))
  assert lr_wd == [{'lr': 0.1, 'wd': 1e-4}, {'lr': 0.01, 'wd': 0.0}]
  assert sweeps.zipped is sweeps.zip_
  with pytest.raises(ValueError, match=r'\[2, 3\]'):
    sweeps.zip_(sweeps.axis('a', [1, 2]), sweeps.axis('b', [1, 2, 3]))
  points = sweeps.seeds(sweeps.axis('a', [1, 2]), [0, 1])
  assert points[:2] == [{'a': 1, 'seed': 0, 'data_seed': 0},
                        {'a': 1, 'seed': 1, 'data_seed': 1}]
  assert len(points) == 4
  assert sweeps.seeds([{}], [3], data_seed=False) == [{'seed': 3}]


def test_point_name_is_readable_and_safe():
  assert sweeps.point_name({'model.output_stride': 8, 'seed': 0}) == (
      'model.output_stride=8,seed=0')
  assert sweeps.point_name({'model.features': (8, 16)}) == (
      'model.features=8-16')
  name = sweeps.point_name({'data.augment': 'scale(0.5, 2.0)|crop(8, 8)',
                            'optimizer.learning_rate': 1e-3})
  assert name == ('data.augment=scale_0.5_2.0_crop_8_8_,'
                  'optimizer.learning_rate=0.001')
  assert sweeps.point_name({}) == 'base'
  long = sweeps.point_name({'a': 'x' * 500})
  assert len(long) <= 200 and long != sweeps.point_name({'a': 'x' * 501})


def test_name_collisions_are_an_error(tmp_path):
  path = tmp_path / 'collide.py'
  path.write_text(EXPERIMENT.replace(
      "sweeps.axis(field, [(8, 16), (4, 8)])",
      "sweeps.axis('data.augment', ['flip_lr|x', 'flip_lr x'])"))
  with pytest.raises(ValueError, match='share the folder name'):
    sweeps.plan(str(path), tmp_path / 'root')


def test_apply_point_keeps_types_and_names_unknown_fields():
  config = shapes_unet.get_config('tiny')
  new = sweeps.apply_point(config, {'model.features': [4, 8], 'seed': 3,
                                    'optimizer.learning_rate': 1})
  assert new.model.features == (4, 8) and config.model.features == (8, 16)
  assert new.seed == 3 and isinstance(new.optimizer.learning_rate, float)
  for field in ('model.nosuch', 'nosuch.x', 'seed.x'):
    with pytest.raises(ConfigError, match=rf"'{field}'.*") as e:
      sweeps.apply_point(config, {'seed': 1, field: 2})
    assert 'seed=1' in str(e.value)


def test_plan_needs_get_sweep(tmp_path):
  path = tmp_path / 'plain.py'
  path.write_text('def get_config(arg=None):\n  return None\n')
  with pytest.raises(ConfigError, match='declares no sweep'):
    sweeps.plan(str(path), tmp_path)
  with pytest.raises(ConfigError, match='no such experiment file'):
    sweeps.plan(str(tmp_path / 'nosuch.py'), tmp_path)


def test_dry_run_prints_commands_that_parse_back(experiment, tmp_path):
  root = tmp_path / 'root'
  lines = sweeps.run(experiment, root, ['--config.data.data_dir=/d x',
                                        '--config.seed=7'], dry_run=True)
  assert len(lines) == 4 and not root.exists()
  for line, name in zip(lines, NAMES):
    argv = shlex.split(line)
    assert argv[:3] == ['python', '-m', 'segjax.main']
    assert argv[argv.index('--config') + 1] == experiment
    assert argv[argv.index('--workdir') + 1] == str(root / name)
    flags = [a for a in argv if a.startswith('--config.')]
    features = '(8,16)' if '8-16' in name else '(4,8)'
    # The point's seed replaces the common one (a flag given once).
    assert flags == ['--config.data.data_dir=/d x',
                     f'--config.model.features={features}',
                     f'--config.seed={name[-1]}']
    # segjax.main's flag parser (ml_collections) reads them back.
    values = absl_flags.FlagValues()
    # It defines the override flags it finds in sys_argv (sys.argv).
    config_flags.DEFINE_config_file('config', flag_values=values,
                                    sys_argv=argv[2:])
    absl_flags.DEFINE_string('workdir', None, '', flag_values=values)
    values(argv[2:])
    assert values.config.model.features == (
        (8, 16) if '8-16' in name else (4, 8))
    assert values.config.seed == int(name[-1])
    assert values.config.data.data_dir == '/d x'
    assert values.workdir == str(root / name)


def test_sweep_runs_skips_and_resumes(experiment, tmp_path, tfds_dir,
                                      monkeypatch):
  from segjax.training import train  # pylint: disable=g-import-not-at-top
  root = tmp_path / 'root'
  overrides = [f'--config.data.data_dir={tfds_dir}']
  summary = sweeps.run(experiment, root, overrides)
  assert summary == [(n, 'new', 'done') for n in NAMES]
  listed = json.loads((root / 'sweep.json').read_text())
  assert [p['name'] for p in listed['points']] == NAMES
  assert listed['points'][2]['point'] == {'model.features': [4, 8],
                                          'seed': 0}
  assert listed['points'][0]['workdir'] == str(root / NAMES[0])
  assert 'segjax.sweep' in listed['command']
  for name in NAMES:
    assert (root / name / 'metrics.jsonl').exists()
    done = json.loads((root / name / 'sweep_done.json').read_text())
    assert 0 <= done['scores']['validation']['miou'] <= 1
    assert done['wall_seconds'] > 0
  config = json.loads((root / NAMES[2] / 'config.json').read_text())
  assert config['model']['features'] == [4, 8] and config['seed'] == 0

  calls = []
  real = train.train_and_evaluate
  def counting(config, workdir):
    calls.append(pathlib.Path(workdir).name)
    return real(config, workdir)
  monkeypatch.setattr(train, 'train_and_evaluate', counting)
  assert sweeps.run(experiment, root, overrides) == [
      (n, 'done', 'done') for n in NAMES]
  assert not calls

  (root / NAMES[1] / 'sweep_done.json').unlink()
  summary = sweeps.run(experiment, root, overrides)
  assert calls == [NAMES[1]]
  assert summary[1] == (NAMES[1], 'partial', 'done')
  assert {s[1] for s in summary[:1] + summary[2:]} == {'done'}
  # A changed config is not done any more (its checkpoint resumes).
  rows = sweeps.plan(experiment, root,
                     overrides + ['--config.optimizer.learning_rate=0.001'])
  assert sweeps.status(rows[0].workdir, rows[0].config) == 'partial'
  assert sweeps.status(tmp_path / 'nothing', rows[0].config) == 'new'


def _cli(*args, env):
  return subprocess.run([sys.executable, '-m', 'segjax.sweep', *args],
                        env=env, cwd=REPO, capture_output=True, text=True,
                        timeout=300, check=False)


def test_cli_unknown_field_is_one_line(experiment, tmp_path, subprocess_env):
  result = _cli(f'--config={experiment}:model.nosuch',
                f'--workdir={tmp_path / "root"}', env=subprocess_env)
  assert result.returncode == 2, result.stderr[-2000:]
  assert 'Traceback' not in result.stderr
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith('segjax.sweep: error: ') and "'model.nosuch'" in last
  assert not (tmp_path / 'root').exists()

  result = _cli(f'--config={experiment}', f'--workdir={tmp_path / "root"}',
                '--print', '--config.num_train_stepz=3', env=subprocess_env)
  assert result.returncode == 2 and 'num_train_stepz' in result.stderr
  assert 'Traceback' not in result.stderr

  result = _cli(f'--config={experiment}', f'--workdir={tmp_path / "root"}',
                '--print', '--config.num_train_steps=3', env=subprocess_env)
  assert result.returncode == 0, result.stderr[-2000:]
  lines = result.stdout.strip().splitlines()
  assert len(lines) == 4 and all('--config.num_train_steps=3' in l
                                 for l in lines)


def test_a_stopped_point_ends_the_sweep(experiment, tmp_path, monkeypatch):
  from segjax.training import train  # pylint: disable=g-import-not-at-top
  calls = []
  def stopped(config, workdir):  # What SIGTERM before the end returns.
    calls.append(pathlib.Path(workdir).name)
    return {}
  monkeypatch.setattr(train, 'train_and_evaluate', stopped)
  summary = sweeps.run(experiment, tmp_path / 'root')
  assert calls == NAMES[:1]
  assert summary == [(NAMES[0], 'new', 'partial')] + [
      (n, 'new', 'new') for n in NAMES[1:]]
  assert not (tmp_path / 'root' / NAMES[0] / 'sweep_done.json').exists()
