"""Pinned results: the parameters and scores of three short runs, bit for bit.

Each case trains 50 steps of a real recipe (the default `shapes` U-Net, the
tiny `shapes` Panoptic-DeepLab and the tiny DSB2018 boundary U-Net on the
synthetic copy) and compares a SHA-256 of every parameter's bytes and every
evaluation score with `reference/pinned_results.json`. A refactoring of the
trainer, the tasks or the evaluation must leave them unchanged; a change
that is meant to change results re-pins them:

  SEGJAX_WRITE_PINS=1 python -m pytest tests/test_pinned_results.py

Floating-point results depend on the machine (instruction set, XLA
version), so the pins are kept per machine fingerprint and a machine
without pins skips with that reason.
"""

import hashlib
import json
import os
import pathlib
import platform

import jax
import numpy as np
import pytest

import synthetic_dsb
from experiments import dsb2018_unet
from experiments import shapes_panoptic
from experiments import shapes_unet
from segjax.training import train

PINS = pathlib.Path(__file__).parent / 'reference' / 'pinned_results.json'
WRITE = os.environ.get('SEGJAX_WRITE_PINS') == '1'


def _fingerprint():
  cpu = platform.processor() or ''
  try:
    for line in pathlib.Path('/proc/cpuinfo').read_text().splitlines():
      if line.startswith('model name'):
        cpu = line.split(':', 1)[1].strip()
        break
  except OSError:
    pass
  return (f'jax {jax.__version__} / {jax.default_backend()} x '
          f'{jax.device_count()} / {platform.machine()} / {cpu}')


def _params_hash(workdir):
  """SHA-256 over the latest checkpoint's parameters (path, dtype, bytes)."""
  from segjax.inference import run as run_lib  # pylint: disable=g-import-not-at-top
  step = run_lib.saved_steps(workdir)[-1]
  params = run_lib.load_variables(workdir, step)['params']
  digest = hashlib.sha256()
  for path, leaf in sorted(
      jax.tree_util.tree_flatten_with_path(params)[0],
      key=lambda kv: jax.tree_util.keystr(kv[0])):
    leaf = np.asarray(leaf)
    digest.update(jax.tree_util.keystr(path).encode())
    digest.update(str(leaf.dtype).encode())
    digest.update(np.ascontiguousarray(leaf).tobytes())
  return step, digest.hexdigest()


def _scores(results):
  """{split: {metric: float}} of train_and_evaluate's scalar scores."""
  out = {}
  for split, scores in results.items():
    out[split] = {k: float(v) for k, v in sorted(scores.items())
                  if np.ndim(v) == 0 and not isinstance(v, str)}
  return out


def _shapes_default(tmp_path):
  del tmp_path
  config = shapes_unet.get_config()
  config.num_train_steps = 50
  config.eval_every_steps = 50
  config.checkpoint_every_steps = 50
  config.log_every_steps = 25
  config.schedule.warmup_steps = 5
  return config


def _shapes_panoptic(tmp_path):
  del tmp_path
  config = shapes_panoptic.get_config('tiny')
  config.num_train_steps = 50
  config.eval_every_steps = 50
  config.checkpoint_every_steps = 50
  return config


def _dsb_boundary(tmp_path):
  root = tmp_path / 'dsb_manual'
  synthetic_dsb.write_copy(root)
  config = dsb2018_unet.get_config('boundary_tiny')
  config.data.manual_dir = str(root)
  config.data.data_dir = str(tmp_path / 'dsb_tfds')
  config.num_train_steps = 50
  config.eval_every_steps = 50
  config.checkpoint_every_steps = 50
  return config


CASES = {'shapes_unet_default': _shapes_default,
         'shapes_panoptic_tiny': _shapes_panoptic,
         'dsb2018_boundary_tiny': _dsb_boundary}


@pytest.mark.parametrize('name', sorted(CASES))
def test_fifty_steps_reproduce_the_pinned_parameters_and_scores(
    name, tmp_path, tfds_dir, monkeypatch):
  pins = json.loads(PINS.read_text()) if PINS.exists() else {}
  fingerprint = _fingerprint()
  if not WRITE and name not in pins.get(fingerprint, {}):
    pytest.skip(f'no pinned results for this machine ({fingerprint}); pin '
                'them with SEGJAX_WRITE_PINS=1')
  monkeypatch.setenv('TFDS_DATA_DIR', tfds_dir)
  config = CASES[name](tmp_path)
  workdir = tmp_path / 'run'
  results = train.train_and_evaluate(config, workdir)
  step, digest = _params_hash(workdir)
  got = {'step': step, 'params_sha256': digest, 'scores': _scores(results)}
  if WRITE:
    pins.setdefault(fingerprint, {})[name] = got
    PINS.write_text(json.dumps(pins, indent=1, sort_keys=True) + '\n')
    return
  want = pins[fingerprint][name]
  assert got['step'] == want['step']
  # Every pinned score, to the bit (scores added later may join them).
  # json.dumps, since json.loads gives new NaN objects, which == rejects.
  kept = {split: {k: got['scores'].get(split, {}).get(k, 'missing')
                  for k in scores}
          for split, scores in want['scores'].items()}
  assert json.dumps(kept, sort_keys=True) == json.dumps(
      want['scores'], sort_keys=True)
  assert got['params_sha256'] == want['params_sha256']
