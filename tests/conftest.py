"""Test set-up: 8 fake CPU devices, a persistent compile cache, tiny data.

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
