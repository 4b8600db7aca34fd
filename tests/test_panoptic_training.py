"""The panoptic task in the trainer: Panoptic-DeepLab's model, loss, targets
in the training stream, ground-truth panoptic maps, colours, a whole run."""

import json

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from experiments import shapes_panoptic
from segjax import losses
from segjax import models
from segjax.data import datasets
from segjax.data import pipeline
from segjax.imaging import visualize
from segjax.tasks import panoptic as panoptic_lib
from segjax.training import train

THINGS = (2, 3, 4)  # shapes: circle, triangle, rectangle.


def test_model_returns_the_three_heads_at_input_size():
  model = models.build('panoptic_deeplab', 5, backbone='resnet18', width=16,
                       semantic_features=16, semantic_head_features=16,
                       instance_features=8, instance_head_features=8)
  images = jax.ShapeDtypeStruct((2, 40, 56, 3), jnp.float32)
  variables = jax.eval_shape(
      lambda x: model.init({'params': jax.random.PRNGKey(0)}, x), images)
  out = jax.eval_shape(lambda v, x: model.apply(v, x), variables, images)
  assert {k: (v.shape, v.dtype) for k, v in out.items()} == {
      'semantic': ((2, 40, 56, 5), jnp.float32),
      'center_heatmap': ((2, 40, 56), jnp.float32),
      'center_offsets': ((2, 40, 56, 2), jnp.float32)}
  # width=16 gives a ResNet-18 of a quarter of torchvision's widths.
  assert variables['params']['backbone']['conv1']['kernel'].shape == (
      7, 7, 3, 16)
  assert variables['params']['backbone']['layer4_0']['conv1'][
      'kernel'].shape[-1] == 128
  assert models.outputs_of('panoptic_deeplab') == 'panoptic_heads'
  assert models.outputs_of('deeplabv3plus') == 'logits'


def _numpy_loss(out, batch, top_k, weights):
  """float64 reference of the three terms by their definitions."""
  logits = np.asarray(out['semantic'], np.float64)
  labels = np.asarray(batch['labels'])
  valid = labels != 255
  logz = np.log(np.exp(logits).sum(-1))
  picked = np.take_along_axis(logits, np.where(valid, labels, 0)[..., None],
                              -1)[..., 0]
  w = valid * np.asarray(batch['semantic_weights'], np.float64)
  pixel = (logz - picked) * w
  k = int(top_k * pixel.size)
  order = np.argsort(-pixel.ravel(), kind='stable')[:k]
  semantic = pixel.ravel()[order].sum() / max((w.ravel()[order] > 0).sum(), 1)
  cw = np.asarray(batch['center_weights'], np.float64)
  center = (cw * (np.asarray(out['center_heatmap'], np.float64) -
                  batch['center_heatmap']) ** 2).sum() / cw.sum()
  ow = np.asarray(batch['offset_weights'], np.float64)
  offset = (ow * np.abs(np.asarray(out['center_offsets'], np.float64) -
                        batch['center_offsets']).sum(-1)).sum() / ow.sum()
  total = weights[0] * semantic + weights[1] * center + weights[2] * offset
  return total, semantic, center, offset


def test_panoptic_loss_matches_a_float64_reference():
  rng = np.random.default_rng(0)
  b, h, w, c = 2, 9, 11, 4
  out = {'semantic': rng.normal(size=(b, h, w, c)).astype(np.float32),
         'center_heatmap': rng.random((b, h, w)).astype(np.float32),
         'center_offsets': rng.normal(0, 5, (b, h, w, 2)).astype(np.float32)}
  labels = rng.integers(0, c, (b, h, w))
  labels[rng.random((b, h, w)) < 0.2] = 255
  batch = {'labels': labels.astype(np.int32),
           'center_heatmap': rng.random((b, h, w)).astype(np.float32),
           'center_offsets': rng.normal(0, 5, (b, h, w, 2)).astype(np.float32),
           'center_weights': (labels != 255).astype(np.float32),
           'offset_weights': (rng.random((b, h, w)) < 0.4).astype(np.float32),
           'semantic_weights': np.where(rng.random((b, h, w)) < 0.3, 3.0,
                                        1.0).astype(np.float32)}
  loss_fn = losses.build_panoptic_loss(
      {'semantic_weight': 1.0, 'center_weight': 200.0,
       'offset_weight': 0.01, 'top_k_percent_pixels': 0.3})
  total, terms = jax.jit(loss_fn)(out, batch)
  want = _numpy_loss(out, batch, 0.3, (1.0, 200.0, 0.01))
  np.testing.assert_allclose(
      [total, terms['semantic'], terms['center'], terms['offset']], want,
      rtol=1e-5)


def test_panoptic_loss_names_unknown_fields():
  with pytest.raises(ValueError, match=r"\['center_wieght'\].*takes"):
    losses.build_panoptic_loss({'center_wieght': 1.0})
  with pytest.raises(ValueError, match='top_k_percent_pixels=0'):
    losses.build_panoptic_loss({'top_k_percent_pixels': 0})


def test_ground_truth_panoptic_map():
  labels = np.array([[0, 2, 2, 255], [3, 3, 1, 2]])
  instances = np.array([[5, 1, 1, 4], [1, 0, 7, 2]])
  got = panoptic_lib.ground_truth_panoptic(
      labels[None], instances[None], thing_classes=THINGS,
      label_divisor=1000, ignore_index=255)[0]
  # Stuff drops its instance number; a thing pixel without one is void.
  want = [[0, 2001, 2001, 255000], [3001, 255000, 1000, 2002]]
  np.testing.assert_array_equal(got, want)


def test_training_stream_carries_consistent_targets(tfds_dir):
  data = shapes_panoptic.get_config('tiny').data
  data.data_dir = tfds_dir
  data.augment = 'flip_lr|crop(24, 28)'
  spec = datasets.get_spec(data.name)
  kwargs = dict(thing_classes=spec.thing_classes, sigma=2.0,
                small_instance_area=20, small_instance_weight=3.0,
                ignore_index=255)
  batch = next(pipeline.as_numpy(pipeline.train_dataset(
      data, 4, seed=0, targets={'panoptic': kwargs})))
  assert batch['center_offsets'].shape == (4, 24, 28, 2)
  labels = batch['labels']
  things = np.isin(labels, spec.thing_classes)
  assert things.any()
  np.testing.assert_array_equal(batch['offset_weights'], things)
  np.testing.assert_array_equal(batch['center_weights'], labels != 255)
  assert set(np.unique(batch['semantic_weights'])) <= {1.0, 3.0}
  # Every thing pixel's offset lands on a peak of the heatmap (value 1 at
  # a center, exp(0)), inside the crop.
  n, y, x = np.nonzero(things)
  cy = y + batch['center_offsets'][n, y, x, 0]
  cx = x + batch['center_offsets'][n, y, x, 1]
  np.testing.assert_array_equal(cy, np.round(cy))
  assert (cy >= 0).all() and (cy < 24).all() and (cx >= 0).all()
  np.testing.assert_allclose(
      batch['center_heatmap'][n, cy.astype(int), cx.astype(int)], 1.0)
  assert batch['center_heatmap'].max() <= 1.0


def test_panoptic_colours_shade_instances_of_a_category():
  pan = np.array([[2001, 2002, 0], [255000, 2001, 1000]])
  colours = visualize.colorize_panoptic(pan, 1000)
  assert (colours[0, 0] != colours[0, 1]).any()  # Two circles differ.
  np.testing.assert_array_equal(colours[0, 0], colours[1, 1])
  np.testing.assert_array_equal(colours[0, 2], visualize.colorize([[0]])[0, 0])
  np.testing.assert_array_equal(colours[1, 0], [255, 255, 255])  # Void.


def test_a_tiny_panoptic_run_scores_pq_mask_ap_and_miou(tfds_dir, tmp_path):
  config = shapes_panoptic.get_config('tiny')
  config.data.data_dir = tfds_dir
  config.num_train_steps = 2
  config.log_every_steps = config.eval_every_steps = 2
  config.checkpoint_every_steps = 2
  config.data.final_eval_splits = ()
  results = train.train_and_evaluate(config, tmp_path)
  rows = [json.loads(r) for r in
          (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  [train_row] = [r for r in rows if r['split'] == 'train']
  assert {'loss_semantic', 'loss_center', 'loss_offset'} <= set(train_row)
  [row] = [r for r in rows if r['split'] == 'validation']
  for key in ('pq', 'sq', 'rq', 'pq_things', 'pq_stuff', 'mask_ap',
              'mask_ap50', 'mask_ap75', 'miou', 'pq/circle'):
    assert key in row, key
  assert 0.0 <= row['pq'] <= 1.0 and row['num_examples'] == 24
  assert results['validation']['pq'] == row['pq']
  [png] = tmp_path.glob('images/*validation*.png')
  assert Image.open(png).size[0] == 3 * 32 + 4  # image | truth | prediction
