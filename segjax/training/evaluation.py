"""Evaluation during and after training: one pass over a split, scored once.

Per batch, the jitted eval step returns the batch's confusion matrix (and,
for a panoptic model, its panoptic-quality counts), already summed over
devices and hosts; the host adds them up and scores the sums at the end, so
padding examples and ragged last batches never bias the result. COCO mask
AP, which needs every image's instances, runs on the host from the jitted
post-processing's outputs (single-process runs). A binary (sigmoid) model's
step returns its foreground counts and probabilities; its instances, when
asked for, are made and scored (PQ, mask AP) on the host, image by image
(`segjax.training.binary`; single-process runs).
"""

from absl import logging
import jax
import numpy as np

from segjax import metrics as metrics_lib
from segjax.data import pipeline
from segjax.imaging import visualize
from segjax.metrics.mask_ap import MaskAP
from segjax.training import binary as binary_lib
from segjax.training import panoptic as panoptic_lib
from segjax.parallel import sharding as sharding_lib
from segjax.training import steps as steps_lib


def local_rows(x):
  """This process's rows of a batch-sharded global array, as NumPy."""
  shards = sorted(x.addressable_shards, key=lambda s: s.index[0].start or 0)
  seen, rows = set(), []
  for s in shards:
    start = s.index[0].start or 0
    if start not in seen:  # Replicas of one shard hold the same rows.
      seen.add(start)
      rows.append(np.asarray(s.data))
  return np.concatenate(rows)


class Evaluator:
  """Scores model variables on data splits and records the results.

  Args:
    config: the experiment config (data, eval_batch_size,
      num_images_to_save).
    model: the Flax module.
    spec: the data set's `DatasetSpec` (class names).
    builder: its TFDS builder (split sizes, to check the count).
    mesh: the device mesh.
    variable_shardings: shardings of {'params', 'batch_stats'}.
    record: the run's `RunRecord`.
    panoptic: None for a semantic model, else `panoptic.options(...)` (the
      checked `config.panoptic`).
    binary: None, or for a binary (sigmoid) model `binary.options(...)`.
  """

  def __init__(self, config, model, spec, builder, mesh, variable_shardings,
               record, panoptic=None, binary=None):
    self.config, self.spec, self.builder = config, spec, builder
    self.mesh, self.record = mesh, record
    self.num_classes = spec.num_classes
    self.ignore_index = config.data.get('ignore_index', 255)
    self.panoptic, self.binary = panoptic, binary
    if panoptic is not None:
      step = panoptic_lib.make_eval_step(
          model, self.num_classes, self.ignore_index, spec.thing_classes,
          panoptic)
    elif binary is not None:
      step = binary_lib.make_eval_step(model, binary, self.num_classes,
                                       self.ignore_index)
    else:
      step = steps_lib.make_eval_step(model, self.num_classes,
                                      self.ignore_index)
    self._step = jax.jit(
        step,
        in_shardings=(variable_shardings, None),  # Batch: as given.
        # Predictions split by rows only, so each process holds whole maps
        # of its rows (for the image panel and mask AP).
        out_shardings=(sharding_lib.replicated(mesh),
                       sharding_lib.batch_sharding(mesh, 1)))

  def _instances(self):
    """Host scorer of a binary model's instances, or None."""
    if self.binary is None or not self.binary['instances']:
      return None
    if jax.process_count() > 1:
      # Each process holds its own images; summing PQ counts and gathering
      # mask RLEs across hosts is not implemented.
      logging.warning('Binary instances are scored in single-process runs '
                      'only; skipped.')
      return None
    return binary_lib.InstanceScores(self.binary, self.spec,
                                     self.ignore_index)

  def _mask_ap(self):
    """A `MaskAP` accumulator, or None where it does not run."""
    if self.panoptic is None or not self.panoptic.get('mask_ap', True):
      return None
    if jax.process_count() > 1:
      # COCOeval needs every image's RLEs in one process; gathering them
      # across hosts is not implemented.
      logging.warning('Mask AP is computed in single-process runs only; '
                      'skipped.')
      return None
    return MaskAP(
        tuple(self.spec.thing_classes), class_names=self.spec.class_names,
        max_dets=self.panoptic.get('max_dets', 100),
        ignore_index=self.ignore_index)

  def _panel(self, local, predictions, n, instance_ids=None, scorer=None):
    """image | truth | prediction rows for the first `n` local examples.

    A binary model's prediction is its thresholded foreground, or its
    instances (`instance_ids` [b, H, W], coloured as panoptic maps by the
    `InstanceScores` `scorer`) when it makes them.
    """
    if self.panoptic is None and instance_ids is None:
      pred = local_rows(predictions)[:n]
      if self.binary is not None:
        pred = (pred[..., 0] >= self.binary['threshold']).astype(np.int32)
      return visualize.prediction_panel(
          local['image'][:n], local['labels'][:n], pred, self.ignore_index)
    if self.panoptic is not None:
      divisor = self.panoptic['label_divisor']
      gt = np.asarray(panoptic_lib.ground_truth_panoptic(
          local['labels'][:n], local['instances'][:n],
          thing_classes=tuple(self.spec.thing_classes),
          label_divisor=divisor, ignore_index=self.ignore_index))
      pred = local_rows(predictions['panoptic'])[:n]
    else:
      divisor = self.binary['label_divisor']
      gt = scorer.ground_truth(local['labels'][:n], local['instances'][:n])
      pred = np.stack([scorer.panoptic(ids) for ids in instance_ids[:n]])
    colour = lambda maps: np.stack([visualize.colorize_panoptic(
        m, divisor, self.ignore_index) for m in maps])
    return visualize.prediction_panel(local['image'][:n], colour(gt),
                                      colour(pred))

  def evaluate(self, variables, step, split, tag=None):
    """One pass over `split`; writes a metrics row and a prediction panel.

    Args:
      variables: {'params', 'batch_stats'} to evaluate.
      step: training step, for the record.
      split: TFDS split name.
      tag: the name the row is recorded under (default: the split), e.g.
        'validation_ema'.

    Returns:
      The scores dict of `segjax.metrics.segmentation_scores`, with the
      row's PQ / mask AP scores, and a binary model's foreground scores
      ('iou', 'dice', 'precision', 'recall': floats).
    """
    config, tag = self.config, tag or split
    eval_batch = config.get('eval_batch_size') or config.batch_size
    instance_scores = self._instances()
    _, ds = pipeline.eval_dataset(
        config.data, split, eval_batch, process_index=jax.process_index(),
        process_count=jax.process_count(),
        with_instances=(self.panoptic is not None or
                        instance_scores is not None))
    cm = np.zeros((self.num_classes, self.num_classes), np.int64)
    pq_stats, binary_stats = None, None
    mask_ap = self._mask_ap()
    count = 0
    for i, local in enumerate(pipeline.as_numpy(ds)):
      stats, predictions = self._step(
          variables, sharding_lib.to_global_array(local, self.mesh))
      cm += np.asarray(stats['confusion_matrix'], np.int64)
      count += int(stats['num_examples'])
      if self.panoptic is not None:
        batch_pq = jax.device_get(stats['panoptic'])
        pq_stats = batch_pq if pq_stats is None else jax.tree.map(
            np.add, pq_stats, batch_pq)
      if self.binary is not None:
        batch_binary = jax.device_get(stats['binary'])
        binary_stats = batch_binary if binary_stats is None else (
            jax.tree.map(np.add, binary_stats, batch_binary))
      if mask_ap is not None:
        mask_ap.add(local['labels'], local['instances'],
                    *(local_rows(predictions[k]) for k in (
                        'instance_ids', 'instance_scores',
                        'instance_classes', 'instance_valid')),
                    mask=local['mask'])
      instance_ids = None
      if instance_scores is not None:
        probs = local_rows(predictions)
        instance_ids = np.zeros(probs.shape[:3], np.int32)
        for j in np.flatnonzero(local['mask']):
          instance_ids[j], scores = binary_lib.instances_of(probs[j],
                                                            self.binary)
          instance_scores.add(local['labels'][j], local['instances'][j],
                              instance_ids[j], scores)
      if i == 0 and config.get('num_images_to_save', 0):
        panel = self._panel(local, predictions, config.num_images_to_save,
                            instance_ids, instance_scores)
        self.record.write_image(f'step_{step:07d}_{tag}', panel)
    expected = self.builder.info.splits[split].num_examples
    if count != expected:  # The padding logic is broken if this fires.
      raise RuntimeError(f'Evaluated {count} examples of {split!r}, expected '
                         f'{expected}.')
    scores = metrics_lib.segmentation_scores(cm)
    row = {k: scores[k] for k in ('miou', 'mean_dice', 'pixel_accuracy',
                                  'mean_accuracy', 'fw_iou')}
    row.update({f'iou/{name}': scores['iou'][c]
                for c, name in enumerate(self.spec.class_names)})
    row['num_examples'] = count
    extra = panoptic_lib.instance_scores_row(pq_stats, mask_ap, self.spec)
    if instance_scores is not None:
      extra.update(instance_scores.result())
    if binary_stats is not None:
      # The foreground's scores; in `scores`, 'iou' (a best-checkpoint
      # metric) replaces the per-class array, which the row has as
      # 'iou/<class>'.
      binary = metrics_lib.binary_scores_from_stats(binary_stats)
      extra.update({k: float(binary[k]) for k in binary_lib.BINARY_KEYS})
    row.update(extra)
    scores.update(extra)
    self.record.write_metrics(step, tag, row)
    if 'pq' in row:
      logging.info('step %d %s: PQ %.4f (things %.4f, stuff %.4f), mask AP '
                   '%.4f, AP50 %.4f, mIoU %.4f (%d images)', step, tag,
                   row['pq'], row['pq_things'], row['pq_stuff'],
                   row.get('mask_ap', float('nan')),
                   row.get('mask_ap50', float('nan')), row['miou'], count)
    elif 'iou' in row:
      logging.info('step %d %s: foreground IoU %.4f, Dice %.4f, mIoU %.4f '
                   '(%d images)', step, tag, row['iou'], row['dice'],
                   row['miou'], count)
    else:
      logging.info('step %d %s: mIoU %.4f, pixel accuracy %.4f (%d images)',
                   step, tag, row['miou'], row['pixel_accuracy'], count)
    return scores
