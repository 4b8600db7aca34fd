"""Scaling out: FSDP and spatial partitioning give the plain data-parallel
step's results; 2 processes x 2 devices train as 1 process x 4."""

import json
import pathlib
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest

import multiprocess
from saved_checkpoints import read_state
from segjax import losses
from segjax import models
from segjax.training import optimizer
from segjax.parallel import sharding
from segjax.training import state as state_lib
from segjax.training import steps

REPO = pathlib.Path(__file__).resolve().parents[1]


def _run_steps(mesh_axes, num_steps=2):
  """Losses and final params of a tiny U-Net trained on `mesh_axes`."""
  mesh = sharding.mesh_from_config(mesh_axes)
  model = models.build('unet', 3, features=(8, 16))
  config = ml_collections.ConfigDict({
      'optimizer': {'name': 'adamw', 'learning_rate': 1e-2},
      'schedule': {'name': 'constant'}})
  tx, schedule = optimizer.build_optimizer(config, 10)
  # fsdp_min_size=0: shard every leaf 'fsdp' divides, even in a tiny model.
  state, shardings = state_lib.create_train_state(
      model, tx, (32, 32, 3), jax.random.PRNGKey(0), mesh, fsdp_min_size=0)
  step = jax.jit(steps.make_train_step(
      model, tx, losses.build_loss({'cross_entropy': 1.0}), schedule),
                 in_shardings=(shardings, None), donate_argnums=0)
  rng = np.random.default_rng(0)
  history = []
  for _ in range(num_steps):
    batch = {'image': rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8),
             'labels': rng.integers(0, 3, (8, 32, 32)).astype(np.int32)}
    state, metrics = step(state, sharding.to_global_array(batch, mesh))
    history.append(float(metrics['loss']))
  return history, jax.device_get(state.params), shardings


def test_fsdp_matches_data_parallel_and_shards_the_parameters():
  plain_losses, plain_params, _ = _run_steps((('data', 8),))
  losses_, params, shardings = _run_steps((('data', 2), ('fsdp', 4)))
  specs = [s.spec for s in jax.tree.leaves(shardings.params)]
  assert any('fsdp' in spec for spec in specs)
  np.testing.assert_allclose(losses_, plain_losses, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4,
                                                       atol=1e-6),
               params, plain_params)


def _relative_difference(a, b):
  """||a - b|| / ||b|| of one parameter array (float64)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12)


def test_spatial_partitioning_matches_data_parallel():
  plain_losses, plain_params, _ = _run_steps((('data', 8),))
  losses_, params, _ = _run_steps((('data', 2), ('spatial', 4)))
  np.testing.assert_allclose(losses_, plain_losses, rtol=1e-5)
  # Spatial halves sum convolutions in another order; Adam turns those
  # last-bit differences into ~1e-5 absolute ones in elements whose
  # gradients are near zero, so each array is compared as a whole.
  diffs = jax.tree.leaves(jax.tree.map(_relative_difference, params,
                                       plain_params))
  assert max(diffs) < 1e-2, max(diffs)


def test_spatially_sharded_batches_split_image_rows():
  mesh = sharding.mesh_from_config((('data', -1), ('spatial', 2)))
  batch = sharding.to_global_array(
      {'image': np.zeros((4, 32, 16, 3), np.uint8),
       'mask': np.ones((4,), bool)}, mesh)
  rows = {s.data.shape for s in batch['image'].addressable_shards}
  assert rows == {(1, 16, 16, 3)}
  assert {s.data.shape for s in batch['mask'].addressable_shards} == {(1,)}


@pytest.mark.parametrize('axes,message', [
    ((('model', 8),), 'axes must be distinct'),
    ((('data', 3),), 'does not fit the 8 devices'),
    ((('data', -1), ('fsdp', -1)), 'does not fit'),
])
def test_bad_mesh_is_a_clear_error(axes, message):
  with pytest.raises(ValueError, match=message):
    sharding.mesh_from_config(axes)


class _FakeDevice:
  """A device of a multi-slice job, as `mesh_utils` sees it."""
  platform = device_kind = 'cpu'

  def __init__(self, i, slice_index):
    self.id, self.slice_index, self.process_index = i, slice_index, i // 4


def test_hybrid_mesh_gives_each_slice_one_block_of_the_dcn_axis():
  devices = [_FakeDevice(i, i // 8) for i in range(16)]
  devices = devices[5:] + devices[:5]  # Any order in, slices out.
  names, grid = sharding.device_grid([('data', -1), ('fsdp', 4)], devices,
                                     dcn_axes=(('data', 2),))
  assert names == ['data', 'fsdp'] and grid.shape == (4, 4)
  slices = np.vectorize(lambda d: d.slice_index)(grid)
  # 'data' spans the two slices: rows 0-1 in one, rows 2-3 in the other;
  # 'fsdp' (ICI) never leaves a slice.
  assert (slices[:2] == slices[0, 0]).all()
  assert (slices[2:] == slices[2, 0]).all() and slices[0, 0] != slices[2, 0]
  assert sorted(d.id for d in grid.flat) == list(range(16))


def test_mesh_has_automatic_axis_types():
  mesh = sharding.mesh_from_config((('data', -1), ('fsdp', 2)))
  assert mesh.shape == {'data': 4, 'fsdp': 2}
  assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)
  assert mesh.axis_types == sharding.make_mesh().axis_types * 2


@pytest.mark.parametrize('dcn,message', [
    ((('fsdp', 2),), 'names axes that'),
    ((('data', 3),), 'does not divide'),
])
def test_bad_dcn_mesh_is_a_clear_error(dcn, message):
  with pytest.raises(ValueError, match=message):
    sharding.mesh_from_config((('data', -1),), dcn_axes=dcn)


@pytest.mark.xdist_group('multiprocess')
def test_two_processes_of_two_devices_train_as_one_process_of_four(
    tfds_dir, tmp_path):
  flags = ['--config=' + str(REPO / 'experiments' / 'shapes_unet.py') +
           ':tiny', '--config.num_train_steps=6',
           '--config.log_every_steps=1', '--config.eval_every_steps=6',
           '--config.checkpoint_every_steps=6', '--config.num_images_to_save=0']
  env = multiprocess.env_for(tfds_dir)
  # One job after the other: two at once can starve a process past the
  # collectives' 30 s start-up on a small machine.
  multiprocess.wait_all([multiprocess.start(
      [f'--workdir={tmp_path / "single"}', *flags], env, 4)])
  multiprocess.wait_all(multiprocess.start_job(
      [f'--workdir={tmp_path / "multi"}', *flags], env, 2, 2))

  def train_losses(workdir):
    rows = [json.loads(line) for line in
            (workdir / 'metrics.jsonl').read_text().splitlines()]
    return [r['loss'] for r in rows if r['split'] == 'train']

  info = json.loads((tmp_path / 'multi' / 'run_info.json').read_text())
  assert info['devices']['process_count'] == 2
  np.testing.assert_allclose(train_losses(tmp_path / 'multi'),
                             train_losses(tmp_path / 'single'), rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4,
                                                       atol=1e-6),
               read_state(tmp_path / 'multi', 6)['params'],
               read_state(tmp_path / 'single', 6)['params'])


def test_tpu_launch_dry_run_prints_every_gcloud_step():
  result = subprocess.run(
      [sys.executable, str(REPO / 'experiments' / 'tpu_launch.py'),
       '--name=seg-tpu', '--zone=us-central2-b', '--accelerator=v4-32',
       '--spot', '--dry-run', '--', '--config',
       'experiments/cityscapes_deeplabv3plus.py', '--workdir',
       'gs://bucket/run'], capture_output=True, text=True, check=True,
      cwd=REPO)
  lines = result.stdout.splitlines()
  assert lines[0].startswith('bash -c ') and 'git ls-files' in lines[0]
  assert lines[1].startswith('gcloud compute tpus tpu-vm create seg-tpu')
  assert '--accelerator-type=v4-32' in lines[1] and '--spot' in lines[1]
  assert 'scp' in lines[2] and '--worker=all' in lines[2]
  assert 'pip install' in lines[3] and '.[data,tpu]' in lines[3]
  assert ('python3 -m segjax.main --config '
          'experiments/cityscapes_deeplabv3plus.py --workdir gs://bucket/run'
          in lines[4]) and '--worker=all' in lines[4]


def test_accelerator_extras_bring_jax_within_the_core_pin():
  import tomllib  # pylint: disable=g-import-not-at-top
  project = tomllib.loads((REPO / 'pyproject.toml').read_text())['project']
  [core] = [r for r in project['dependencies'] if r.startswith('jax>')]
  pin = core[len('jax'):]
  extras = project['optional-dependencies']
  assert extras['tpu'] == [f'jax[tpu]{pin}']
  assert extras['cuda'] == [f'jax[cuda12]{pin}']


def test_tpu_launch_needs_the_segjax_flags():
  result = subprocess.run(
      [sys.executable, str(REPO / 'experiments' / 'tpu_launch.py'),
       '--name=x', '--zone=z', '--dry-run'], capture_output=True, text=True,
      check=False, cwd=REPO)
  assert result.returncode == 2 and 'after --' in result.stderr
