"""The `:tpu` recipe variants build their sharded train step on the 8 fake
CPU devices, with the variant's model, bfloat16 compute, per-chip batch,
optimizer and mesh, at a reduced image size (the real sizes are for TPU
memory). One variant of each model family (DeepLabV3+, Panoptic-DeepLab)
compiles and trains two steps; the others are lowered (traced and
partitioned over the mesh, not compiled: XLA:CPU takes over two minutes to
compile each of these models). The data pipeline is left out: batches are
synthetic, with the task's training targets made by `segjax.data.targets`
as the pipeline does.
"""

import importlib

import jax
import numpy as np
import pytest

from segjax import models
from segjax import tasks
from segjax.configs import tpu
from segjax.data import datasets
from segjax.parallel import sharding
from segjax.training import optimizer as optimizer_lib
from segjax.training import state as state_lib
from segjax.training import steps as steps_lib

_VARIANTS = {  # recipe: (reduced H, W, per-chip batch, chips, trains)
    'cityscapes_deeplabv3plus': (32, 64, 2, 8, True),
    'cityscapes_panoptic_deeplab': (32, 64, 2, 16, True),
    'coco_panoptic_deeplab': (32, 32, 2, 32, False),
    'ade20k_deeplabv3plus': (32, 32, 2, 8, False),
}


def _batch(task, batch_size, height, width, num_classes):
  """Random images and label / instance maps, plus the task's targets."""
  from segjax.data import targets  # pylint: disable=g-import-not-at-top
  from segjax.data.tf_host import tf  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  labels = rng.integers(0, num_classes, (batch_size, height, width))
  instances = rng.integers(0, 4, (batch_size, height, width))
  batch = {'image': rng.integers(0, 256, (batch_size, height, width, 3),
                                 dtype=np.uint8),
           'labels': labels.astype(np.int32)}
  wanted = task.train_targets()
  if wanted:
    made = [targets.make(wanted, tf.constant(l, tf.int32),
                         tf.constant(i, tf.int32))
            for l, i in zip(labels, instances)]
    for key in made[0]:
      batch[key] = np.stack([np.asarray(m[key]) for m in made])
  return batch


@pytest.mark.parametrize('recipe', sorted(_VARIANTS))
def test_tpu_variant_builds_its_step_on_its_mesh(recipe):
  height, width, per_chip, chips, trains = _VARIANTS[recipe]
  config = importlib.import_module(f'experiments.{recipe}').get_config('tpu')
  assert config.model.dtype == 'bfloat16'
  assert config.batch_size == per_chip * chips  # Sized for the slice.
  spec = datasets.get_spec(config.data.name)
  task = tasks.get_task(config, spec)
  model = models.build_model(config.model, task.num_outputs())
  mesh = sharding.mesh_from_config(config.mesh, dcn_axes=config.mesh_dcn)
  assert mesh.axis_names == tuple(name for name, _ in config.mesh)
  batch_size = per_chip * mesh.devices.size  # Per-chip batch kept.
  image_shape = (height, width, 3)
  abstract_vars = jax.eval_shape(lambda: state_lib.init_variables(
      model, image_shape, jax.random.PRNGKey(0)))
  tx, schedule = optimizer_lib.build_optimizer(
      config, config.num_train_steps, abstract_vars['params'])
  if trains:
    state, shardings = state_lib.create_train_state(
        model, tx, image_shape, jax.random.PRNGKey(0), mesh,
        ema=bool(config.ema_decay), fsdp_min_size=config.fsdp_min_size)
  else:  # Shapes and shardings only: nothing runs.
    state = state_lib.abstract_state(
        model, tx, image_shape, mesh, ema=bool(config.ema_decay),
        fsdp_min_size=config.fsdp_min_size)
    shardings = jax.tree.map(lambda x: x.sharding, state)
  step = jax.jit(
      steps_lib.make_train_step(
          model, tx, task.loss_fn(), schedule,
          metrics_fn=task.train_metrics,
          aux_loss_weight=config.aux_loss_weight,
          ema_decay=float(config.ema_decay)),
      in_shardings=(shardings, None), donate_argnums=0)
  batch = sharding.to_global_array(
      _batch(task, batch_size, height, width, spec.num_classes), mesh)
  lowered = step.lower(state, batch)
  assert 'bf16' in lowered.as_text()  # The convolutions compute in bfloat16.
  if not trains:
    return
  before = jax.device_get(state.params)
  for _ in range(2):
    state, metrics = step(state, batch)
  assert np.isfinite(float(metrics['loss']))
  after = jax.device_get(state.params)
  assert all(x.dtype == np.float32 for x in jax.tree.leaves(after))
  assert any(not np.array_equal(a, b) for a, b in zip(
      jax.tree.leaves(after), jax.tree.leaves(before)))


def test_step_time_estimate_is_flops_over_peak():
  # 3 x forward FLOPs x batch over chips x peak: 1e12 x 3 x 8 / (8 x 275e12).
  assert tpu.step_seconds(1e12, 8, 8) == pytest.approx(3 / 275)
  assert tpu.step_seconds(1e12, 8, 8, utilisation=0.5) == pytest.approx(
      6 / 275)
  with pytest.raises(ValueError, match='batch'):
    tpu.apply(importlib.import_module(
        'experiments.cityscapes_deeplabv3plus').get_config(), chips=8,
              per_chip_batch=3)
