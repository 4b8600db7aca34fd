"""The binary task in the trainer: sigmoid outputs, their loss and scores.

An experiment with a `config.binary` block (`config_fields.
add_binary_options`) trains a logits model (e.g. a U-Net) with one sigmoid
logit per pixel: channel 0 is the foreground (label != 0; the data set must
have two classes, background 0 and one foreground class), and with
`boundary=True` channel 1 predicts instance boundaries, whose labels the
input pipeline makes from the augmented instance map
(`segjax.data.boundary_targets`).

Loss: `config.loss` names binary losses only ('binary_cross_entropy',
'binary_dice', with weights as usual); they apply to the foreground
channel, and, times `boundary_weight`, to the boundary channel (terms
logged as 'loss_<name>' and 'loss_boundary_<name>').

Scores, from one pass over a split: the thresholded foreground's pixel
counts (`binary_stats`: 'iou', 'dice', 'precision', 'recall' of the
foreground) and its 2x2 confusion matrix (mIoU, per-class IoU, as the
semantic task); with `instances=True` also instances from the sigmoid
probabilities (`segjax.postprocess.instances`, on the host), scored by PQ
(the same ground truth and `panoptic_stats` as the panoptic task, so the
numbers compare with Panoptic-DeepLab's) and COCO mask AP.

`config.binary` fields: see `config_fields.BINARY_DEFAULTS`.
"""

import numbers

import jax
import jax.numpy as jnp
import numpy as np

from segjax import losses
from segjax import metrics
from segjax import models
from segjax.errors import ConfigError
from segjax.postprocess import instances as instances_lib
from segjax.metrics.mask_ap import MaskAP
from segjax.models.inputs import model_inputs
from segjax.training import panoptic as panoptic_lib
from segjax.training.config_fields import BINARY_DEFAULTS

# Metrics-row names of binary_scores_from_stats' scores.
BINARY_KEYS = ('iou', 'dice', 'precision', 'recall')


def task(config):
  """The trainer's task of `config` (`segjax.models.task_of`)."""
  try:
    return models.task_of(config.model.get('name'),
                          binary=config.get('binary') is not None)
  except ValueError as e:
    raise ConfigError(str(e)) from e


def num_outputs(config, num_classes):
  """Output channels of the model: 1 (+1 with a boundary) for a binary
  task, else the data set's `num_classes`."""
  if config.get('binary') is None:
    return num_classes
  return 1 + bool(config.binary.get('boundary', False))


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
  given = dict(config.binary)
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
    base = losses.build_loss(loss_config, ignore_index=ignore_index)
  except ValueError as e:
    raise ConfigError(str(e)) from e

  def loss_fn(logits, batch):
    total, terms = base(logits[..., 0], batch['labels'])
    if opts['boundary']:
      edge_total, edge_terms = base(logits[..., 1], batch['boundaries'])
      total = total + opts['boundary_weight'] * edge_total
      terms.update({f'boundary_{k}': v for k, v in edge_terms.items()})
    return total, terms

  return loss_fn


def make_eval_step(model, opts, num_classes, ignore_index):
  """Builds `eval_step(variables, batch) -> (stats, probabilities)`.

  The batch holds 'image' [B, H, W, 3], 'labels' [B, H, W] int32 and
  'mask' [B] bool (False on padding examples, which count nowhere).

  Returns:
    stats: {'confusion_matrix': [C, C] int32 of the thresholded foreground,
      'binary': `binary_stats` sums, 'num_examples': int32}, global sums.
    probabilities: [B, H, W, K] float32 sigmoids (foreground, boundary),
      for the instance post-processing and the image panel.
  """
  threshold = opts['threshold']

  def eval_step(variables, batch):
    logits = model.apply(variables, model_inputs(batch['image']),
                         train=False)
    probs = jax.nn.sigmoid(logits.astype(jnp.float32))
    mask = batch['mask'][:, None, None]
    labels = jnp.where(mask, batch['labels'], ignore_index)
    foreground = probs[..., 0]
    stats = {
        'confusion_matrix': metrics.confusion_matrix(
            labels, (foreground >= threshold).astype(jnp.int32), num_classes,
            ignore_index=ignore_index),
        'binary': metrics.binary_stats(labels, foreground, threshold,
                                       ignore_index=ignore_index),
        'num_examples': batch['mask'].sum().astype(jnp.int32),
    }
    return stats, probs

  return eval_step


def instances_of(probabilities, opts):
  """(ids [H, W] int32, scores [N] float32) of one image's [H, W, K]
  probabilities (`segjax.postprocess.instances.binary_instances`)."""
  probabilities = np.asarray(probabilities)
  boundary = probabilities[..., 1] if opts['boundary'] else None
  return instances_lib.binary_instances(
      probabilities[..., 0], boundary, threshold=opts['threshold'],
      min_area=opts['min_area'], max_instances=opts['max_instances'] - 1)


class InstanceScores:
  """PQ and COCO mask AP of binary instances, added image by image (host).

  Args:
    opts: `options(...)`.
    spec: the data set's spec (two classes, thing class 1).
    ignore_index: the void label.
  """

  def __init__(self, opts, spec, ignore_index):
    self.opts, self.spec, self.ignore_index = opts, spec, ignore_index
    self.pq_stats = None
    self.mask_ap = None
    if opts['mask_ap']:
      self.mask_ap = MaskAP(tuple(spec.thing_classes),
                            class_names=spec.class_names,
                            max_dets=opts['max_dets'],
                            ignore_index=ignore_index)

  def panoptic(self, ids):
    """[H, W] instance ids -> panoptic ids (nucleus thing on background)."""
    return instances_lib.instance_panoptic(
        ids, thing_class=self.spec.thing_classes[0],
        label_divisor=self.opts['label_divisor'])

  def ground_truth(self, labels, instances):
    """[H, W] (or [B, H, W]) label and instance maps -> panoptic ids."""
    return np.asarray(panoptic_lib.ground_truth_panoptic(
        jnp.asarray(labels, jnp.int32), jnp.asarray(instances, jnp.int32),
        thing_classes=tuple(self.spec.thing_classes),
        label_divisor=self.opts['label_divisor'],
        ignore_index=self.ignore_index))

  def add(self, labels, instances, ids, scores):
    """Adds one image: labels, instances, ids [H, W] int; scores [N]."""
    labels, instances = np.asarray(labels), np.asarray(instances)
    stats = jax.device_get(metrics.panoptic_stats(
        self.panoptic(ids)[None], self.ground_truth(labels, instances)[None],
        num_categories=self.spec.num_classes,
        label_divisor=self.opts['label_divisor'],
        ignore_index=self.ignore_index,
        max_instances=self.opts['max_instances']))
    self.pq_stats = stats if self.pq_stats is None else jax.tree.map(
        np.add, self.pq_stats, stats)
    if self.mask_ap is not None:
      k = len(scores)
      self.mask_ap.add(labels, instances, ids, scores,
                       np.full([k], self.spec.thing_classes[0]),
                       np.ones([k], bool))

  def result(self):
    """{'pq', 'sq', 'rq', ..., 'pq/<class>', 'mask_ap', ...} floats."""
    return panoptic_lib.instance_scores_row(self.pq_stats, self.mask_ap,
                                            self.spec)
