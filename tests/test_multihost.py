"""Multi-host runs: per-host input, start-up in each cluster environment,
stopping all processes together, and every score on several processes.

The process tests run two local processes of one JAX job (the coordinator
flags of `segjax.main`), as one host each of a slice would.
"""

import json
import signal
import time

import jax
import numpy as np
import pytest

import multiprocess
import synthetic_dsb
from saved_checkpoints import read_state
from segjax.training import distributed

REPO = multiprocess.REPO


# --- Per-host input -------------------------------------------------------


def test_each_process_decodes_about_half_and_the_stream_is_unchanged(
    tfds_dir):
  from experiments import shapes_unet  # pylint: disable=g-import-not-at-top
  from segjax.data import pipeline  # pylint: disable=g-import-not-at-top
  from segjax.data.tf_host import tf  # pylint: disable=g-import-not-at-top
  data = shapes_unet.get_config('tiny').data
  data.data_dir = tfds_dir
  n = pipeline.num_train_examples(data)
  batch, epochs = 8, 12
  steps = epochs * n // batch

  def stream(process_index, process_count, cache):
    data.cache = cache
    counter = tf.Variable(0, dtype=tf.int64)
    ds = pipeline.train_dataset(data, batch, seed=5, start_step=3,
                                process_index=process_index,
                                process_count=process_count,
                                decode_counter=counter)
    batches = [b for _, b in zip(range(steps), pipeline.as_numpy(ds))]
    return batches, int(counter.numpy())

  for cache in (False, True):
    alone, _ = stream(0, 1, cache)
    first, decoded0 = stream(0, 2, cache)
    second, decoded1 = stream(1, 2, cache)
    for step in range(steps):
      for key, value in alone[step].items():
        np.testing.assert_array_equal(
            np.concatenate([first[step][key], second[step][key]]), value)
    # Per epoch, at most 0.55 of the split (prefetching reads a little
    # ahead of the last batch taken).
    for decoded in (decoded0, decoded1):
      assert decoded <= 0.55 * n * epochs, (cache, decoded, n)


# --- Start-up -------------------------------------------------------------


@pytest.fixture
def no_cluster(monkeypatch):
  """A clean environment: no cluster variables; records what reaches
  `jax.distributed.initialize` and what JAX resolves from it."""
  from jax._src import clusters  # pylint: disable=g-import-not-at-top
  from jax._src.clusters import cloud_tpu_cluster  # pylint: disable=g-import-not-at-top
  for name in ('SLURM_JOB_ID', 'SLURM_STEP_NODELIST', 'SLURM_NTASKS',
               'SLURM_PROCID', 'SLURM_LOCALID', 'OMPI_MCA_orte_hnp_uri',
               'TPU_WORKER_HOSTNAMES', 'TPU_PROCESS_ADDRESSES',
               'TPU_SKIP_MDS_QUERY', 'MEGASCALE_COORDINATOR_ADDRESS',
               'MEGASCALE_NUM_SLICES', 'MEGASCALE_SLICE_ID',
               'KUBERNETES_SERVICE_HOST', 'JAX_COORDINATOR_PORT'):
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setattr(cloud_tpu_cluster, 'running_in_cloud_tpu_vm', False)
  calls = []

  def initialize(*args):
    resolved = clusters.ClusterEnv.auto_detect_unset_distributed_params(
        *(args or (None, None, None)), None, None, 10)
    calls.append({'args': args, 'resolved': resolved[:3]})

  monkeypatch.setattr(jax.distributed, 'initialize', initialize)
  monkeypatch.setattr(jax.config, 'update', lambda *a: None)
  return calls


def test_no_cluster_is_a_single_process(no_cluster):
  assert not distributed.initialize()
  assert not no_cluster


def test_flags_reach_initialize_as_given(no_cluster):
  assert distributed.initialize('host0:1234', '4', '3')
  assert no_cluster == [{'args': ('host0:1234', 4, 3),
                         'resolved': ('host0:1234', 4, 3)}]
  with pytest.raises(ValueError, match='needs --num_processes'):
    distributed.initialize('host0:1234')


def test_slurm_job_of_two_tasks_initializes_from_its_variables(
    no_cluster, monkeypatch):
  for name, value in {'SLURM_JOB_ID': '4095', 'SLURM_NTASKS': '2',
                      'SLURM_STEP_NODELIST': 'node[007-008]',
                      'SLURM_PROCID': '1', 'SLURM_LOCALID': '0'}.items():
    monkeypatch.setenv(name, value)
  assert distributed.initialize()
  # SLURM's rule in JAX: the first node, port 61440 + job id % 4096.
  assert no_cluster == [{'args': (), 'resolved': ('node007:65535', 2, 1)}]


def test_single_task_slurm_job_stays_single(no_cluster, monkeypatch):
  for name, value in {'SLURM_JOB_ID': '1', 'SLURM_NTASKS': '1',
                      'SLURM_STEP_NODELIST': 'node1', 'SLURM_PROCID': '0',
                      'SLURM_LOCALID': '0'}.items():
    monkeypatch.setenv(name, value)
  assert not distributed.initialize()
  assert not no_cluster


def test_open_mpi_job_initializes(no_cluster, monkeypatch):
  monkeypatch.setenv('OMPI_MCA_orte_hnp_uri',
                     '1531576320.0;tcp://10.96.0.1,10.148.0.1:34911')
  monkeypatch.setenv('OMPI_COMM_WORLD_SIZE', '4')
  monkeypatch.setenv('OMPI_COMM_WORLD_RANK', '2')
  monkeypatch.setenv('OMPI_COMM_WORLD_LOCAL_RANK', '0')
  assert distributed.initialize()
  address, count, rank = no_cluster[0]['resolved']
  assert address.startswith('10.96.0.1:') and (count, rank) == (4, 2)


def _tpu_vm(monkeypatch, metadata):
  """A Cloud TPU VM whose metadata server answers `metadata` (a dict, or
  an exception to raise)."""
  from jax._src.clusters import cloud_tpu_cluster  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(cloud_tpu_cluster, 'running_in_cloud_tpu_vm', True)

  def get_metadata(key):
    if isinstance(metadata, Exception):
      raise metadata
    return (metadata[key], 200) if key in metadata else ('', 404)

  monkeypatch.setattr(cloud_tpu_cluster, 'get_metadata', get_metadata)


def test_tpu_vm_slice_initializes_from_the_metadata_server(
    no_cluster, monkeypatch):
  _tpu_vm(monkeypatch, {
      'agent-worker-number': '1', 'tpu-env': "ACCELERATOR_TYPE: 'v4-16'",
      'worker-network-endpoints': 'w:0:10.130.0.5,w:1:10.130.0.6'})
  assert distributed.initialize()
  assert no_cluster == [{'args': (),
                         'resolved': ('10.130.0.5:8482', 2, 1)}]


def test_single_host_tpu_vm_stays_single(no_cluster, monkeypatch):
  _tpu_vm(monkeypatch, {'agent-worker-number': '0', 'tpu-env': '',
                        'worker-network-endpoints': 'w:0:10.130.0.5'})
  assert not distributed.initialize()
  assert not no_cluster


def test_unreachable_metadata_server_is_a_single_process(
    no_cluster, monkeypatch):
  _tpu_vm(monkeypatch, ConnectionError('metadata.google.internal'))
  assert not distributed.initialize()
  assert not no_cluster


def test_gke_tpu_pod_initializes_from_its_variables(no_cluster, monkeypatch):
  _tpu_vm(monkeypatch, {'tpu-env': ''})
  monkeypatch.setenv('TPU_WORKER_HOSTNAMES', 'pod-0.svc,pod-1.svc')
  monkeypatch.setenv('TPU_WORKER_ID', '0')
  monkeypatch.setattr('socket.gethostbyname', lambda host: '10.0.0.1')
  assert distributed.initialize()
  assert no_cluster == [{'args': (), 'resolved': ('pod-0.svc:8482', 2, 0)}]


def test_with_the_preemption_service_no_python_handler_is_installed():
  from segjax.training import monitoring  # pylint: disable=g-import-not-at-top
  before = signal.getsignal(signal.SIGTERM)
  with monitoring.StopSignal(install=False) as stop:
    assert signal.getsignal(signal.SIGTERM) is before
  assert stop.received is None
  with monitoring.StopSignal() as stop:  # A single process: its own.
    assert signal.getsignal(signal.SIGTERM) is not before
  assert signal.getsignal(signal.SIGTERM) is before
  assert not distributed.preemption_service()  # This test process.


# --- Two processes --------------------------------------------------------


def _flags(config, workdir, **overrides):
  return [f'--config={REPO / "experiments" / config}',
          f'--workdir={workdir}',
          *(f'--config.{k}={v}' for k, v in overrides.items())]


_STEPS = 16  # Of each two-process run.


# Jobs of several processes run one at a time (one xdist worker).
@pytest.mark.xdist_group('multiprocess')
def test_sigterm_to_one_process_stops_both_at_one_step_and_resume_is_exact(
    tfds_dir, tmp_path):
  env = multiprocess.env_for(tfds_dir)
  common = dict(num_train_steps=_STEPS, log_every_steps=1,
                eval_every_steps=1000, checkpoint_every_steps=1000,
                num_images_to_save=0)
  config = 'shapes_unet.py:tiny'
  logs = [tmp_path / f'stopped{i}.log' for i in range(2)]
  stopped = _flags(config, tmp_path / 'stopped', **common)
  job = multiprocess.start_job(stopped, env, 2, 2, logs)
  # Once process 0 has logged its first step, process 1 alone is told to
  # stop.
  metrics = tmp_path / 'stopped' / 'metrics.jsonl'
  deadline = time.time() + 300
  while not (metrics.exists() and metrics.read_text().strip()):
    assert time.time() < deadline and job[0].poll() is None, (
        logs[0].read_text()[-3000:])
    time.sleep(0.05)
  job[1].send_signal(signal.SIGTERM)
  sent = time.time()
  for proc, log in zip(job, logs):
    proc.wait(timeout=300)
    assert proc.returncode == 0, log.read_text()[-3000:]
  assert time.time() - sent < 120
  steps = sorted(int(p.name) for p in
                 (tmp_path / 'stopped' / 'checkpoints').iterdir()
                 if p.name.isdigit())
  assert len(steps) == 1 and steps[0] < _STEPS, steps
  for log in logs:  # Both processes stopped at the same step.
    assert f'saved step {steps[0]} and stopping' in log.read_text()
  # Only process 0 reports progress.
  assert ' | ETA ' in logs[0].read_text()
  assert ' | ETA ' not in logs[1].read_text()
  multiprocess.wait_all(multiprocess.start_job(stopped, env, 2, 2))
  # The uninterrupted run, after the others: two jobs at once on a small
  # machine can starve one process past the collectives' 30 s start-up.
  multiprocess.wait_all(multiprocess.start_job(
      _flags(config, tmp_path / 'whole', **common), env, 2, 2))
  jax.tree.map(np.testing.assert_array_equal,
               read_state(tmp_path / 'stopped', _STEPS),
               read_state(tmp_path / 'whole', _STEPS))
  losses = lambda w: {r['step']: r['loss'] for r in
                      multiprocess.metrics_rows(w, 'train')}
  resumed = {s: v for s, v in losses(tmp_path / 'stopped').items()
             if s > steps[0]}
  assert resumed and resumed.items() <= losses(tmp_path / 'whole').items()


# Jobs of several processes run one at a time (one xdist worker).
@pytest.mark.xdist_group('multiprocess')
def test_two_processes_score_as_one_process(tfds_dir, tmp_path):
  """The trainer's final evaluation on 2 processes x 2 devices equals
  `segjax.evaluate`'s in this one process on the same checkpoint: the
  confusion matrix's scores, the binary task's instances (PQ), mask AP.
  The tiny DSB2018 boundary U-Net on a synthetic copy of mixed sizes."""
  from segjax.inference import report  # pylint: disable=g-import-not-at-top
  synthetic_dsb.write_copy(tmp_path / 'dsb')
  workdir = tmp_path / 'run'
  multiprocess.wait_all(multiprocess.start_job(_flags(
      'dsb2018_unet.py:boundary_tiny', workdir, num_train_steps=_STEPS,
      eval_every_steps=_STEPS, eval_batch_size=4, num_images_to_save=0,
      **{'data.manual_dir': tmp_path / 'dsb',
         'data.data_dir': tmp_path / 'tfds'}),
      multiprocess.env_for(tfds_dir), 2, 2))
  info = json.loads((workdir / 'run_info.json').read_text())
  assert info['devices']['process_count'] == 2
  row = [r for r in multiprocess.metrics_rows(workdir)
         if r['split'] == 'validation' and r['step'] == _STEPS][-1]
  alone = report.evaluate(workdir, checkpoint=str(_STEPS), tag='alone')
  compared = [k for k in row if k in alone and k != 'split']
  assert {'miou', 'pq', 'mask_ap', 'dice'} <= set(compared), compared
  # metrics.jsonl writes NaN (e.g. mask AP of an absent size) as null.
  nan = lambda v: float('nan') if v is None else v
  assert json.dumps({k: nan(row[k]) for k in compared}, sort_keys=True) == (
      json.dumps({k: nan(alone[k]) for k in compared}, sort_keys=True))
