"""Binary segmentation: one sigmoid logit per pixel, optionally a boundary.

`config.binary` (`segjax.configs.options.add_binary_options`; fields and
defaults in `BINARY_DEFAULTS`) sets the task up. Channel 0 is the
foreground (label != 0; the data set has two classes, background 0 and one
foreground class);
with `boundary=True` channel 1 predicts instance boundaries, whose labels
the input pipeline makes from the augmented instance map
(`segjax.data.boundary_targets`).

Loss: `config.loss` names binary losses only ('binary_cross_entropy',
'binary_dice'); they apply to the foreground channel and, times
`boundary_weight`, to the boundary channel ('loss_<name>',
'loss_boundary_<name>').

Scores of one pass over a split: the thresholded foreground's 2x2
confusion matrix (mIoU, per-class IoU) and its pixel counts ('iou', 'dice',
'precision', 'recall' of the foreground); with `instances=True` also
instances made from the probabilities on the host
(`segjax.postprocess.instances`), scored by PQ (the ground truth of the
panoptic task, so the numbers compare with Panoptic-DeepLab's) and COCO
mask AP.
"""

import numbers

import jax
import jax.numpy as jnp
import numpy as np

from segjax import losses
from segjax import metrics
from segjax.configs import options as config_options
from segjax.errors import ConfigError
from segjax.imaging import visualize
from segjax.postprocess import instances as instances_lib
from segjax.tasks import base
from segjax.tasks import panoptic as panoptic_lib
from segjax.tasks import semantic

BINARY_DEFAULTS = config_options.BINARY_DEFAULTS
# Row names of the foreground's scores.
BINARY_KEYS = ('iou', 'dice', 'precision', 'recall')


def _is_int(x):
  return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _is_real(x):
  return isinstance(x, numbers.Real) and not isinstance(x, bool)


# Field -> (check, what it must be).
_CHECKS = {
    'threshold': (lambda x: _is_real(x) and 0 < x < 1, 'a number in (0, 1)'),
    'boundary': (lambda x: isinstance(x, bool), 'True or False'),
    'boundary_width': (lambda x: _is_int(x) and x >= 1, 'an int >= 1'),
    'boundary_weight': (lambda x: _is_real(x) and x >= 0, 'a number >= 0'),
    'instances': (lambda x: isinstance(x, bool), 'True or False'),
    'min_area': (lambda x: _is_int(x) and x >= 1, 'an int >= 1'),
    'label_divisor': (lambda x: _is_int(x) and x >= 2, 'an int >= 2'),
    'max_instances': (lambda x: _is_int(x) and x >= 2, 'an int >= 2'),
    'mask_ap': (lambda x: isinstance(x, bool), 'True or False'),
    'max_dets': (lambda x: _is_int(x) and x >= 1, 'an int >= 1'),
}


def options(config, spec):
  """`config.binary` as a checked dict (clear errors before any work).

  Raises:
    ConfigError naming an unknown field, a bad value, or a data set the
    task cannot use.
  """
  given = dict(config.get('binary') or {})
  unknown = sorted(set(given) - set(BINARY_DEFAULTS))
  if unknown:
    raise ConfigError(f'config.binary has unknown field(s) {unknown}; known: '
                      f'{sorted(BINARY_DEFAULTS)}.')
  opts = {**BINARY_DEFAULTS, **given}
  for field, (ok, want) in _CHECKS.items():
    if not ok(opts[field]):
      raise ConfigError(f'config.binary.{field}={opts[field]!r}: must be '
                        f'{want}.')
  if opts['max_instances'] > opts['label_divisor']:
    raise ConfigError(
        f'config.binary.max_instances={opts["max_instances"]} must not exceed '
        f'label_divisor={opts["label_divisor"]}: instance ids must fit.')
  name = config.data.name
  if spec.num_classes != 2:
    raise ConfigError(
        f'config.binary: the binary task needs a data set of two classes '
        f'(background 0 and one foreground); {name!r} has '
        f'{spec.num_classes}.')
  if (opts['boundary'] or opts['instances']) and tuple(
      spec.thing_classes) != (1,):
    raise ConfigError(
        f'config.binary: boundary={opts["boundary"]} / instances='
        f'{opts["instances"]} need instance maps of the foreground class; '
        f'{name!r} has thing classes {tuple(spec.thing_classes)}.')
  return opts


def build_loss(loss_config, opts, ignore_index):
  """`loss_fn(logits [B, H, W, K], batch) -> (total, {name: term})`.

  The batch holds 'labels' [B, H, W] int32 and, with a boundary channel,
  'boundaries' [B, H, W] int32 (1 / 0 / ignore_index).
  """
  wrong = sorted(set(dict(loss_config)) - losses.BINARY_LOSSES)
  if wrong:
    raise ConfigError(f'config.loss: {wrong} are not losses of a sigmoid '
                      f'output; a binary task (config.binary) takes '
                      f'{sorted(losses.BINARY_LOSSES)}.')
  try:
    base_loss = losses.build_loss(loss_config, ignore_index=ignore_index)
  except ValueError as e:
    raise ConfigError(str(e)) from e

  def loss_fn(logits, batch):
    total, terms = base_loss(logits[..., 0], batch['labels'])
    if opts['boundary']:
      edge_total, edge_terms = base_loss(logits[..., 1], batch['boundaries'])
      total = total + opts['boundary_weight'] * edge_total
      terms.update({f'boundary_{k}': v for k, v in edge_terms.items()})
    return total, terms

  return loss_fn


class BinaryTask(base.Task):
  """Foreground / background (and boundaries) from sigmoid logits."""

  name = 'binary'
  activation = 'sigmoid'
  best_metric = 'iou'

  def __init__(self, config, spec):
    super().__init__(config, spec)
    self.opts = options(config, spec)
    self.eval_fields = ('instances',) if self.opts['instances'] else ()
    self.has_image_results = self.opts['instances']

  def train_targets(self):
    if not self.opts['boundary']:
      return {}
    return {'boundaries': {'width': self.opts['boundary_width'],
                           'ignore_index': self.ignore_index}}

  def num_outputs(self):
    return 1 + bool(self.opts['boundary'])

  def loss_fn(self):
    return build_loss(self.config.loss, self.opts, self.ignore_index)

  def train_metrics(self, outputs, batch):
    t = self.opts['threshold']
    cut = np.log(t) - np.log1p(-t)  # sigmoid(x) >= t, as a logit cut.
    predictions = (outputs[..., 0] >= cut).astype(jnp.int32)
    return {'pixel_accuracy': semantic.pixel_accuracy_counts(
        predictions, batch['labels'], 2)}

  def predict(self, outputs, activated):
    probs = outputs if activated else jax.nn.sigmoid(
        outputs.astype(jnp.float32))
    labels = (probs[..., 0] >= self.opts['threshold']).astype(jnp.int32)
    return {'labels': labels, 'probabilities': probs.astype(jnp.float32)}

  def eval_stats(self, predictions, batch):
    stats = super().eval_stats(predictions, batch)
    stats['binary'] = metrics.binary_stats(
        self.masked_labels(batch), predictions['probabilities'][..., 0],
        self.opts['threshold'], ignore_index=self.ignore_index)
    return stats

  # --- Instances (host).
  def instances_of(self, probabilities):
    """(ids [H, W] int32, scores [N] float32) of one image's [H, W, K]
    probabilities (`segjax.postprocess.instances.binary_instances`)."""
    probabilities = np.asarray(probabilities)
    boundary = probabilities[..., 1] if self.opts['boundary'] else None
    return instances_lib.binary_instances(
        probabilities[..., 0], boundary, threshold=self.opts['threshold'],
        min_area=self.opts['min_area'],
        max_instances=self.opts['max_instances'] - 1)

  def _panoptic(self, ids):
    return instances_lib.instance_panoptic(
        ids, thing_class=self.spec.thing_classes[0],
        label_divisor=self.opts['label_divisor'])

  def _ground_truth(self, labels, instances):
    return np.asarray(panoptic_lib.ground_truth_panoptic(
        jnp.asarray(labels, jnp.int32), jnp.asarray(instances, jnp.int32),
        thing_classes=tuple(self.spec.thing_classes),
        label_divisor=self.opts['label_divisor'],
        ignore_index=self.ignore_index))

  def _mask_ap(self):
    return metrics.MaskAP(tuple(self.spec.thing_classes),
                          class_names=self.spec.class_names,
                          max_dets=self.opts['max_dets'],
                          ignore_index=self.ignore_index)

  def image_results(self, predictions, batch):
    if not self.opts['instances']:
      return []
    encoder = self._mask_ap() if self.opts['mask_ap'] else None
    results = []
    for j in np.flatnonzero(batch['mask']):
      labels, instances = batch['labels'][j], batch['instances'][j]
      ids, scores = self.instances_of(predictions['probabilities'][j])
      pq = jax.device_get(metrics.panoptic_stats(
          self._panoptic(ids)[None],
          self._ground_truth(labels, instances)[None],
          num_categories=self.num_classes,
          label_divisor=self.opts['label_divisor'],
          ignore_index=self.ignore_index,
          max_instances=self.opts['max_instances']))
      k = len(scores)
      rles = None if encoder is None else encoder.encode(
          labels, instances, ids, scores,
          np.full([k], self.spec.thing_classes[0]), np.ones([k], bool))
      results.append({'pq': pq, 'mask_ap': rles})
    return results

  def score(self, sums, image_results):
    row = super().score(sums, image_results)
    fg = metrics.binary_scores_from_stats(sums['binary'])
    row.update({k: float(fg[k]) for k in BINARY_KEYS})
    if self.opts['instances']:
      pq_sums, mask_ap = None, None
      if self.opts['mask_ap']:
        mask_ap = self._mask_ap()
      for result in image_results:
        pq_sums = base.add_trees(pq_sums, result['pq'])
        if mask_ap is not None:
          mask_ap.add_encoded(result['mask_ap'])
      row.update(panoptic_lib.instance_scores_row(pq_sums, mask_ap,
                                                  self.spec))
    return row

  def summary(self, row):
    return (f'foreground IoU {row["iou"]:.4f}, Dice {row["dice"]:.4f}, '
            f'mIoU {row["miou"]:.4f}')

  def host_predictions(self, prediction):
    if not self.opts['instances']:
      return prediction
    ids, scores = self.instances_of(prediction['probabilities'])
    thing = self.spec.thing_classes[0]
    return {**prediction, 'instance_ids': ids, 'scores': scores,
            'classes': np.full(scores.shape, thing, np.int32),
            'valid': np.ones(scores.shape, bool),
            'panoptic': self._panoptic(ids)}

  def write_outputs(self, folder, stem, image, prediction):
    super().write_outputs(folder, stem, image, prediction)
    if 'panoptic' in prediction:
      panoptic_lib.write_panoptic_outputs(
          folder, stem, prediction, self.opts['label_divisor'], self.spec,
          self.ignore_index)

  def panel(self, batch, predictions, n):
    if not self.opts['instances']:
      return super().panel(batch, predictions, n)
    gt = self._ground_truth(batch['labels'][:n], batch['instances'][:n])
    pred = np.stack([self._panoptic(self.instances_of(p)[0])
                     for p in predictions['probabilities'][:n]])
    colour = lambda maps: np.stack([visualize.colorize_panoptic(
        m, self.opts['label_divisor'], self.ignore_index) for m in maps])
    return visualize.prediction_panel(batch['image'][:n], colour(gt),
                                      colour(pred))
