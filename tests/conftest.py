"""Test set-up: 8 fake CPU devices, a persistent compile cache, tiny data,
and the number of pytest-xdist workers.

XLA_FLAGS must be set before JAX initialises its backend, hence at import
time of this file (pytest imports it before any test module).
"""

import os
import pathlib

_flags = os.environ.get('XLA_FLAGS', '')
if '--xla_force_host_platform_device_count' not in _flags:
  os.environ['XLA_FLAGS'] = (
      _flags + ' --xla_force_host_platform_device_count=8').strip()
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')

import jax  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top

REPO = pathlib.Path(__file__).resolve().parents[1]
CACHE = REPO / '.cache' / 'jax_compilation'
jax.config.update('jax_compilation_cache_dir', str(CACHE))
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)


def pytest_xdist_auto_num_workers(config):
  """`-n auto` (pyproject's addopts): one worker per core, at most four.

  Each worker holds 8 fake devices and several tests start JAX child
  processes of their own, so more workers buy little and cost memory.
  """
  del config
  cores = (len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity')
           else os.cpu_count() or 1)
  return max(1, min(cores, 4))


@pytest.fixture(autouse=True)
def _no_leftover_processes():
  """After each test, kills the JAX jobs it started through
  tests/multiprocess.py and left running."""
  yield
  import sys  # pylint: disable=g-import-not-at-top
  helper = sys.modules.get('multiprocess')
  if hasattr(helper, 'stop_leftovers'):
    helper.stop_leftovers()


@pytest.fixture(scope='session')
def tfds_dir(tmp_path_factory):
  """A TFDS data_dir with `shapes/tiny` built in it, shared by the session.

  Tests never read or write ~/tensorflow_datasets: a copy left there by an
  earlier run would hide a missing build step.
  """
  from segjax.data import datasets  # pylint: disable=g-import-not-at-top
  data_dir = tmp_path_factory.mktemp('tfds')
  datasets.get_builder('shapes/tiny', str(data_dir))
  return str(data_dir)


@pytest.fixture
def subprocess_env(tfds_dir):
  """Environment for running segjax commands in a child process."""
  env = dict(os.environ)
  env['TFDS_DATA_DIR'] = tfds_dir
  env['JAX_COMPILATION_CACHE_DIR'] = str(CACHE)
  return env
