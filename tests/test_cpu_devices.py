"""segjax.training.cpu_devices: one XLA:CPU device per core."""

import os
import subprocess
import sys

import pytest

from segjax.configs import base
from segjax.errors import ConfigError
from segjax.training import cpu_devices



def _config(**fields):
  return base.merge(base.get_config(), fields)

def test_auto_count_is_the_largest_divisor_of_every_batch_up_to_the_cores():
  assert cpu_devices.auto_count([8], cores=2) == 2
  assert cpu_devices.auto_count([8, 6], cores=8) == 2
  assert cpu_devices.auto_count([12, 12, 6], cores=4) == 3
  assert cpu_devices.auto_count([7], cores=2) == 1
  config = _config(batch_size=16, eval_batch_size=12, grad_accum_steps=4)
  assert cpu_devices.batch_sizes(config) == [16, 12, 4]


def test_bad_value_is_a_config_error_and_forced_counts_are_left_alone():
  with pytest.raises(ConfigError, match='cpu_devices=0'):
    cpu_devices.configure(_config(batch_size=8, cpu_devices=0))
  # The tests force 8 devices through XLA_FLAGS: configure keeps them.
  assert '--xla_force_host_platform_device_count' in os.environ['XLA_FLAGS']
  assert cpu_devices.configure(_config(batch_size=8, cpu_devices=-1)) is None


def test_a_fresh_process_gets_one_device_per_core_dividing_the_batch():
  # A process boundary is the point: JAX reads the count once, at start.
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  code = ('import jax\n'
          'from segjax.configs import base\n'
          'from segjax.training import cpu_devices\n'
          'n = cpu_devices.configure(base.merge(base.get_config(), '
          '{"batch_size": 6}))\n'
          'print(n, jax.device_count())\n')
  out = subprocess.run([sys.executable, '-c', code], env=env, check=True,
                       capture_output=True, text=True).stdout.split()
  want = cpu_devices.auto_count([6])
  assert out == [str(want), str(want)]


def test_a_sweep_counts_devices_for_every_point():
  point = lambda batch: _config(batch_size=batch)
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  code = ('import jax\n'
          'from segjax.configs import base\n'
          'from segjax.training import cpu_devices\n'
          'c = lambda b: base.merge(base.get_config(), {"batch_size": b})\n'
          'print(cpu_devices.configure(c(8), c(6), c(3)))\n')
  out = subprocess.run([sys.executable, '-c', code], env=env, check=True,
                       capture_output=True, text=True).stdout.split()
  assert out == [str(cpu_devices.auto_count([8, 6, 3]))] == ['1']
  assert cpu_devices.batch_sizes(point(4)) == [4, 4, 4]
