"""Panoptic segmentation with Panoptic-DeepLab's heads.

The model returns a dict ('semantic' logits [B, H, W, C], 'center_heatmap'
[B, H, W], 'center_offsets' [B, H, W, 2]) and trains on targets made from
instance maps in the input pipeline (`segjax.data.panoptic_targets`). One
pass over a split scores three things: semantic mIoU (the semantic head),
panoptic quality of the post-processed panoptic map
(`segjax.metrics.panoptic_*`) and COCO mask AP of its instances
(`segjax.metrics.mask_ap`, on the host).

`config.panoptic` (`segjax.configs.options.add_panoptic_options`) holds:
  label_divisor              panoptic id = category * label_divisor + instance
  sigma, small_instance_area, small_instance_weight   the targets
  center_threshold, nms_kernel, top_k, stuff_area     the post-processing
  max_instances              PQ's static bound on instance ids (> top_k and
                             > every ground-truth instance number)
  mask_ap, max_dets          COCO mask AP on/off, its maxDets
"""

import jax.numpy as jnp
import numpy as np

from segjax import losses
from segjax import metrics
from segjax.errors import ConfigError
from segjax.imaging import image_io
from segjax.imaging import visualize
from segjax.postprocess import panoptic as postprocess_lib
from segjax.tasks import base
from segjax.tasks import semantic

TARGET_FIELDS = ('sigma', 'small_instance_area', 'small_instance_weight')
# Row names of panoptic_scores' and MaskAP.result's scores.
PQ_KEYS = ('pq', 'sq', 'rq', 'pq_things', 'sq_things', 'rq_things',
           'pq_stuff', 'sq_stuff', 'rq_stuff')
MASK_AP_KEYS = ('ap', 'ap50', 'ap75', 'ap_small', 'ap_medium', 'ap_large',
                'ar')


def options(config, spec):
  """`config.panoptic` as a checked dict (clear errors before any work)."""
  if not spec.thing_classes:
    raise ConfigError(f'config.data.name={config.data.name!r} has no thing '
                      'classes; a panoptic model needs a data set with '
                      'instances (shapes, dsb2018, cityscapes_panoptic, '
                      'coco/2017_panoptic).')
  if 'panoptic' not in config:
    raise ConfigError('config.panoptic is missing: a panoptic model needs '
                      'it (see segjax.configs.options.add_panoptic_options).')
  opts = dict(config.panoptic)
  top_k, divisor = opts['top_k'], opts['label_divisor']
  if not isinstance(top_k, int) or top_k < 1:
    raise ConfigError(f'config.panoptic.top_k={top_k!r} must be a positive '
                      'int.')
  if divisor <= top_k:
    raise ConfigError(f'config.panoptic.label_divisor={divisor} must exceed '
                      f'top_k={top_k}: instance ids 1..top_k must fit.')
  if opts['max_instances'] <= top_k:
    raise ConfigError(f'config.panoptic.max_instances='
                      f'{opts["max_instances"]} must exceed top_k={top_k}.')
  return opts


def ground_truth_panoptic(labels, instances, *, thing_classes, label_divisor,
                          ignore_index):
  """[B, H, W] class and instance maps -> [B, H, W] int32 panoptic ids.

  Stuff pixels get instance 0; thing pixels without an instance (none left
  after segjax's adapters, which make crowd void) become void, as the
  post-processing treats them.
  """
  labels = labels.astype(jnp.int32)
  is_thing = jnp.isin(labels, jnp.asarray(thing_classes, jnp.int32))
  void = (labels == ignore_index) | (is_thing & (instances <= 0))
  ids = labels * label_divisor + jnp.where(is_thing, instances, 0)
  return jnp.where(void, ignore_index * label_divisor, ids).astype(jnp.int32)


def instance_scores_row(pq_stats, mask_ap, spec):
  """Row entries of summed `panoptic_stats` and a filled `MaskAP`.

  Returns:
    {'pq', 'sq', 'rq', 'pq_things', ..., 'pq/<class>'} (with `pq_stats`)
    and {'mask_ap', 'mask_ap50', ...} (with `mask_ap`), floats.
  """
  row = {}
  if pq_stats is not None:
    pq = metrics.panoptic_scores(pq_stats, tuple(spec.thing_classes))
    row.update({key: float(pq[key]) for key in PQ_KEYS})
    row.update({f'pq/{name}': float(pq['pq_per_category'][c])
                for c, name in enumerate(spec.class_names)})
  if mask_ap is not None:
    ap = mask_ap.result()
    row.update({f'mask_{key}': ap[key] for key in MASK_AP_KEYS})
  return row


def write_panoptic_outputs(folder, stem, prediction, label_divisor, spec,
                           ignore_index):
  """Writes a prediction's panoptic PNG / JSON / colours (`image_io`)."""
  scores = {int(c) * label_divisor + k + 1: float(s) for k, (c, s, v) in
            enumerate(zip(prediction['classes'], prediction['scores'],
                          prediction['valid'])) if v}
  image_io.write_panoptic(
      folder, stem, prediction['panoptic'], label_divisor=label_divisor,
      thing_classes=spec.thing_classes, class_names=spec.class_names,
      ignore_index=ignore_index, scores=scores, image_id=stem)


class PanopticTask(base.Task):
  """Semantic classes plus instances of the thing classes."""

  name = 'panoptic'
  model_outputs = 'panoptic_heads'
  best_metric = 'pq'
  eval_fields = ('instances',)

  def __init__(self, config, spec):
    super().__init__(config, spec)
    self.opts = options(config, spec)
    self.divisor = self.opts['label_divisor']
    self.has_image_results = bool(self.opts.get('mask_ap', True))

  def train_targets(self):
    return {'panoptic': dict(thing_classes=tuple(self.spec.thing_classes),
                             ignore_index=self.ignore_index,
                             **{k: self.opts[k] for k in TARGET_FIELDS})}

  def num_outputs(self):
    return self.num_classes

  def loss_fn(self):
    try:
      return losses.build_panoptic_loss(self.config.loss,
                                        ignore_index=self.ignore_index)
    except ValueError as e:
      raise ConfigError(str(e)) from e

  def train_metrics(self, outputs, batch):
    logits = outputs['semantic']
    return {'pixel_accuracy': semantic.pixel_accuracy_counts(
        jnp.argmax(logits, -1), batch['labels'], logits.shape[-1])}

  def predict(self, outputs, activated):
    if activated:
      raise ValueError('the panoptic task has no test-time augmentation.')
    result = postprocess_lib.panoptic_postprocess(
        outputs['semantic'], outputs['center_heatmap'],
        outputs['center_offsets'],
        thing_classes=tuple(self.spec.thing_classes),
        label_divisor=self.divisor, ignore_index=self.ignore_index,
        **{k: self.opts[k] for k in postprocess_lib.OPTIONS})
    return {'labels': result['semantic'], 'panoptic': result['panoptic'],
            'instance_ids': result['instance_ids'],
            'scores': result['instance_scores'],
            'classes': result['instance_classes'],
            'valid': result['instance_valid']}

  def _ground_truth(self, labels, instances):
    return ground_truth_panoptic(
        labels, instances, thing_classes=tuple(self.spec.thing_classes),
        label_divisor=self.divisor, ignore_index=self.ignore_index)

  def eval_stats(self, predictions, batch):
    stats = super().eval_stats(predictions, batch)
    mask = batch['mask'][:, None, None]
    gt = self._ground_truth(self.masked_labels(batch), batch['instances'])
    pred = jnp.where(mask, predictions['panoptic'],
                     self.ignore_index * self.divisor)
    stats['panoptic'] = metrics.panoptic_stats(
        pred, gt, num_categories=self.num_classes,
        label_divisor=self.divisor, ignore_index=self.ignore_index,
        max_instances=self.opts['max_instances'])
    return stats

  def _mask_ap(self):
    return metrics.MaskAP(
        tuple(self.spec.thing_classes), class_names=self.spec.class_names,
        max_dets=self.opts.get('max_dets', 100),
        ignore_index=self.ignore_index)

  def image_results(self, predictions, batch):
    if not self.opts.get('mask_ap', True):
      return []
    encoder = self._mask_ap()
    return [encoder.encode(batch['labels'][j], batch['instances'][j],
                           *(predictions[k][j] for k in (
                               'instance_ids', 'scores', 'classes', 'valid')))
            for j in np.flatnonzero(batch['mask'])]

  def score(self, sums, image_results):
    row = super().score(sums, image_results)
    mask_ap = None
    if self.opts.get('mask_ap', True):
      mask_ap = self._mask_ap()
      for image in image_results:
        mask_ap.add_encoded(image)
    row.update(instance_scores_row(sums['panoptic'], mask_ap, self.spec))
    return row

  def summary(self, row):
    return (f'PQ {row["pq"]:.4f} (things {row["pq_things"]:.4f}, stuff '
            f'{row["pq_stuff"]:.4f}), mask AP '
            f'{row.get("mask_ap", float("nan")):.4f}, AP50 '
            f'{row.get("mask_ap50", float("nan")):.4f}, mIoU '
            f'{row["miou"]:.4f}')

  def resize_outputs(self, outputs, size):
    # Offsets are in pixels, so they scale with the map.
    h, w = outputs['semantic'].shape[1:3]
    factor = jnp.asarray([size[0] / h, size[1] / w], jnp.float32)
    return {'semantic': base.resize(outputs['semantic'], size),
            'center_heatmap': base.resize(
                outputs['center_heatmap'][..., None], size)[..., 0],
            'center_offsets': base.resize(outputs['center_offsets'],
                                          size) * factor}

  def write_outputs(self, folder, stem, image, prediction):
    super().write_outputs(folder, stem, image, prediction)
    write_panoptic_outputs(folder, stem, prediction, self.divisor, self.spec,
                           self.ignore_index)

  def panel(self, batch, predictions, n):
    gt = np.asarray(self._ground_truth(batch['labels'][:n],
                                       batch['instances'][:n]))
    colour = lambda maps: np.stack([visualize.colorize_panoptic(
        m, self.divisor, self.ignore_index) for m in maps])
    return visualize.prediction_panel(
        batch['image'][:n], colour(gt), colour(predictions['panoptic'][:n]))

  def export_outputs(self, predictions):
    return predictions
