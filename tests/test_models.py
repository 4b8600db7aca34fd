"""Model construction and shapes (eval_shape: no compilation)."""

import jax
import jax.numpy as jnp
import pytest

from segjax import models


@pytest.mark.parametrize('upsample', ['bilinear', 'transpose'])
def test_unet_maps_images_to_logits_of_the_same_size(upsample):
  model = models.build_model(
      {'name': 'unet', 'features': [4, 8, 16], 'upsample': upsample}, 5)
  images = jax.ShapeDtypeStruct((2, 32, 48, 3), jnp.float32)
  variables = jax.eval_shape(
      lambda x: model.init(jax.random.PRNGKey(0), x), images)
  assert set(variables) == {'params', 'batch_stats'}
  logits = jax.eval_shape(
      lambda v, x: model.apply(v, x, train=False), variables, images)
  assert logits.shape == (2, 32, 48, 5) and logits.dtype == jnp.float32


def test_unet_bf16_computes_in_bf16_and_returns_float32_logits():
  model = models.build_model({'name': 'unet', 'features': [4, 8]}, 3,
                             dtype=jnp.bfloat16)
  images = jax.ShapeDtypeStruct((1, 16, 16, 3), jnp.float32)
  variables = jax.eval_shape(
      lambda x: model.init(jax.random.PRNGKey(0), x), images)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables))
  logits = jax.eval_shape(
      lambda v, x: model.apply(v, x, train=False), variables, images)
  assert logits.dtype == jnp.float32


@pytest.mark.parametrize('stem_stride', [1, 2])
def test_unet_takes_sizes_its_pooling_cannot_halve(stem_stride):
  model = models.build('unet', num_classes=2, features=[4, 8, 16],
                       stem_stride=stem_stride)
  image = jax.ShapeDtypeStruct((1, 30, 37, 3), jnp.float32)
  variables = jax.eval_shape(
      lambda x: model.init(jax.random.PRNGKey(0), x), image)
  logits = jax.eval_shape(lambda v, x: model.apply(v, x), variables, image)
  assert logits.shape == (1, 30, 37, 2)


def test_build_model_names_unknown_models_and_fields():
  with pytest.raises(ValueError, match="'resnet' is not a known model"):
    models.build_model({'name': 'resnet'}, 2)
  with pytest.raises(ValueError, match=r"field\(s\) \['widths'\]"):
    models.build_model({'name': 'unet', 'widths': (1, 2)}, 2)


def test_every_experiment_config_resolves():
  import importlib.util  # pylint: disable=g-import-not-at-top
  import pathlib  # pylint: disable=g-import-not-at-top
  from segjax.data import datasets  # pylint: disable=g-import-not-at-top
  from segjax.tasks import panoptic  # pylint: disable=g-import-not-at-top
  folder = pathlib.Path(__file__).parents[1] / 'experiments'
  paths = [p for p in sorted(folder.glob('*.py'))
           if not p.name.startswith('_')]
  assert paths
  for path in paths:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if path.stem in ('tpu_launch',):  # Scripts, not configs.
      continue
    for arg in (None, 'tiny'):
      config = module.get_config(arg)
      if config.data.name == 'folder':  # The user names folders, classes.
        config.data.images_dir, config.data.masks_dir = 'images', 'masks'
        config.data.class_names = config.data.class_names or ('a', 'b')
      spec = datasets.spec_for(config.data)
      models.build_model(config.model, spec.num_classes)
      if models.outputs_of(config.model.name) == 'panoptic_heads':
        panoptic.options(config, spec)  # Raises on inconsistent fields.


def test_every_ablation_sweep_resolves_to_buildable_configs():
  import importlib.util  # pylint: disable=g-import-not-at-top
  import pathlib  # pylint: disable=g-import-not-at-top
  from segjax import sweeps  # pylint: disable=g-import-not-at-top
  from segjax.data import datasets  # pylint: disable=g-import-not-at-top
  folder = pathlib.Path(__file__).parents[1] / 'experiments' / 'ablations'
  paths = sorted(folder.glob('*.py'))
  assert len(paths) >= 3
  for path in paths:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for arg in (None, 'tiny'):
      config = module.get_config(arg)
      points = module.get_sweep(arg)
      assert len(points) >= 4, path  # Two settings x at least two seeds.
      for point in points:
        point_config = sweeps.apply_point(config, point)
        spec = datasets.get_spec(point_config.data.name)
        models.build_model(point_config.model, spec.num_classes)


def test_valid_unet_of_the_paper_maps_572_to_388():
  model = models.build('unet', num_classes=2,
                       features=(64, 128, 256, 512, 1024), padding='valid',
                       upsample='transpose')
  assert model.output_size(572) == 388
  image = jax.ShapeDtypeStruct((1, 572, 572, 1), jnp.float32)
  variables = jax.eval_shape(
      lambda x: model.init(jax.random.PRNGKey(0), x), image)
  logits = jax.eval_shape(
      lambda v, x: model.apply(v, x), variables, image)
  assert logits.shape == (1, 388, 388, 2)
  with pytest.raises(ValueError, match='odd or empty map'):
    model.output_size(570)
