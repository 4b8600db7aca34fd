"""Evaluation during and after training: one pass over a split, scored once.

Per batch, the jitted eval step returns the batch's confusion matrix (already
summed over devices and hosts); the host adds them up and scores the sum at
the end, so padding examples and ragged last batches never bias the result.
"""

from absl import logging
import jax
import numpy as np

from segjax import metrics as metrics_lib
from segjax.data import pipeline
from segjax.inference import visualize
from segjax.training import sharding as sharding_lib
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
  """

  def __init__(self, config, model, spec, builder, mesh, variable_shardings,
               record):
    self.config, self.spec, self.builder = config, spec, builder
    self.mesh, self.record = mesh, record
    self.num_classes = spec.num_classes
    self.ignore_index = config.data.get('ignore_index', 255)
    self._step = jax.jit(
        steps_lib.make_eval_step(model, self.num_classes, self.ignore_index),
        in_shardings=(variable_shardings, None),  # Batch: as given.
        # Predictions split by rows only, so each process holds whole maps
        # of its rows (for the image panel).
        out_shardings=(sharding_lib.replicated(mesh),
                       sharding_lib.batch_sharding(mesh, 1)))

  def evaluate(self, variables, step, split, tag=None):
    """One pass over `split`; writes a metrics row and a prediction panel.

    Args:
      variables: {'params', 'batch_stats'} to evaluate.
      step: training step, for the record.
      split: TFDS split name.
      tag: the name the row is recorded under (default: the split), e.g.
        'validation_ema'.

    Returns:
      The scores dict of `segjax.metrics.segmentation_scores`.
    """
    config, tag = self.config, tag or split
    eval_batch = config.get('eval_batch_size') or config.batch_size
    _, ds = pipeline.eval_dataset(
        config.data, split, eval_batch, process_index=jax.process_index(),
        process_count=jax.process_count())
    cm = np.zeros((self.num_classes, self.num_classes), np.int64)
    count = 0
    for i, local in enumerate(pipeline.as_numpy(ds)):
      stats, predictions = self._step(
          variables, sharding_lib.to_global_array(local, self.mesh))
      cm += np.asarray(stats['confusion_matrix'], np.int64)
      count += int(stats['num_examples'])
      if i == 0 and config.get('num_images_to_save', 0):
        n = config.num_images_to_save
        panel = visualize.prediction_panel(
            local['image'][:n], local['labels'][:n],
            local_rows(predictions)[:n], self.ignore_index)
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
    self.record.write_metrics(step, tag, row)
    logging.info('step %d %s: mIoU %.4f, pixel accuracy %.4f (%d images)',
                 step, tag, row['miou'], row['pixel_accuracy'], count)
    return scores
