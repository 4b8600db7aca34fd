"""Starts segjax commands as several local processes of one JAX job, for
tests: each process gets `--xla_force_host_platform_device_count` devices
and the coordinator flags of `segjax.main`."""

import json
import os
import pathlib
import socket
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
_STARTED = []  # Every process started here, for `stop_leftovers`.


def free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def start(args, env, devices, log=None):
  """One `python -m segjax.main` process with `devices` CPU devices.

  stderr goes to `log` (a path) when given, else to a pipe.
  """
  stderr = open(log, 'w') if log else subprocess.PIPE  # pylint: disable=consider-using-with
  proc = subprocess.Popen(
      [sys.executable, '-m', 'segjax.main', *args], cwd=REPO,
      stdout=subprocess.DEVNULL, stderr=stderr, text=True,
      env=dict(env, XLA_FLAGS=(
          f'--xla_force_host_platform_device_count={devices}')))
  _STARTED.append(proc)
  return proc


def stop_leftovers():
  """Kills what a test started and left running (it failed part-way): a
  leftover job would slow every later test, and its peers' collectives
  time out under that load."""
  while _STARTED:
    proc = _STARTED.pop()
    if proc.poll() is None:
      proc.kill()
      proc.wait()


def start_job(args, env, num_processes, devices, logs=None):
  """`num_processes` processes of one job, coordinated on a free port."""
  port = free_port()
  return [start([*args, f'--coordinator_address=localhost:{port}',
                 f'--num_processes={num_processes}', f'--process_id={i}'],
                env, devices, logs[i] if logs else None)
          for i in range(num_processes)]


def wait_all(procs, timeout=300):
  """Waits for every process; fails with the stderr of the first that did
  not exit 0."""
  for proc in procs:
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, (err or '')[-3000:]


def metrics_rows(workdir, split=None):
  rows = [json.loads(line) for line in
          (pathlib.Path(workdir) / 'metrics.jsonl').read_text().splitlines()]
  return [r for r in rows if split is None or r['split'] == split]


def env_for(tfds_dir):
  return dict(os.environ, TFDS_DATA_DIR=tfds_dir,
              JAX_COMPILATION_CACHE_DIR=str(REPO / '.cache' /
                                            'jax_compilation'))
