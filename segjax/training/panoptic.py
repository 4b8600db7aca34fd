"""The panoptic task in the trainer: options, targets, the jitted eval step.

A model listed in `segjax.models.PANOPTIC_MODELS` (Panoptic-DeepLab) trains
on targets made from instance maps in the input pipeline and is scored on
three things in one pass: semantic mIoU (from its semantic head), panoptic
quality (from the post-processed panoptic map, `segjax.metrics.panoptic_*`)
and, on the host, COCO mask AP of its instances (`segjax.metrics.mask_ap`).

`config.panoptic` (see `config_fields.add_panoptic_options`) holds:
  label_divisor              panoptic id = category * label_divisor + instance
  sigma, small_instance_area, small_instance_weight   the targets
  center_threshold, nms_kernel, top_k, stuff_area     the post-processing
  max_instances              PQ's static bound on instance ids (> top_k and
                             > every ground-truth instance number)
  mask_ap, max_dets          COCO mask AP on/off, its maxDets
"""

import jax.numpy as jnp

from segjax import metrics
from segjax.errors import ConfigError
from segjax.postprocess import panoptic as postprocess_lib
from segjax.models.inputs import model_inputs

TARGET_FIELDS = ('sigma', 'small_instance_area', 'small_instance_weight')
# Metrics-row names of panoptic_scores' and MaskAP.result's scores.
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
                      'it (see config_fields.add_panoptic_options).')
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


def target_kwargs(opts, spec, ignore_index):
  """Keyword arguments of `segjax.data.panoptic_targets.panoptic_targets`."""
  return dict(thing_classes=tuple(spec.thing_classes),
              ignore_index=ignore_index,
              **{k: opts[k] for k in TARGET_FIELDS})


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
  """Metrics-row entries of summed `panoptic_stats` and a `MaskAP`.

  Args:
    pq_stats: the summed stats, or None (no PQ).
    mask_ap: a `segjax.metrics.MaskAP` holding the images, or None.
    spec: the data set's spec (class names, thing classes).

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


def make_eval_step(model, num_classes, ignore_index, thing_classes, opts):
  """Builds `eval_step(variables, batch) -> (stats, predictions)`.

  The batch holds 'image' [B, H, W, 3], 'labels' and 'instances' [B, H, W]
  int32 and 'mask' [B] bool (False on padding examples, which count
  nowhere).

  Returns:
    stats: {'confusion_matrix': [C, C] int32, 'panoptic': the
      `panoptic_stats` sums, 'num_examples': int32}, global sums.
    predictions: the post-processing's dict ('panoptic', 'semantic',
      'instance_ids' [B, H, W]; 'instance_scores', 'instance_classes',
      'instance_valid' [B, top_k]).
  """
  thing_classes = tuple(thing_classes)
  divisor = opts['label_divisor']

  def eval_step(variables, batch):
    outputs = model.apply(variables, model_inputs(batch['image']),
                          train=False)
    result = postprocess_lib.panoptic_postprocess(
        outputs['semantic'], outputs['center_heatmap'],
        outputs['center_offsets'], thing_classes=thing_classes,
        label_divisor=divisor, ignore_index=ignore_index,
        **{k: opts[k] for k in postprocess_lib.OPTIONS})
    mask = batch['mask'][:, None, None]
    labels = jnp.where(mask, batch['labels'], ignore_index)
    gt = ground_truth_panoptic(labels, batch['instances'],
                               thing_classes=thing_classes,
                               label_divisor=divisor,
                               ignore_index=ignore_index)
    pred = jnp.where(mask, result['panoptic'], ignore_index * divisor)
    stats = {
        'confusion_matrix': metrics.confusion_matrix(
            labels, result['semantic'], num_classes,
            ignore_index=ignore_index),
        'panoptic': metrics.panoptic_stats(
            pred, gt, num_categories=num_classes, label_divisor=divisor,
            ignore_index=ignore_index, max_instances=opts['max_instances']),
        'num_examples': batch['mask'].sum().astype(jnp.int32),
    }
    return stats, result

  return eval_step
