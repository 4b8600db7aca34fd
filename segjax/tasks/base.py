"""The task interface: what differs between kinds of segmentation.

A task (scenic's "model = network + loss + metrics", kauldron's evaluators)
says everything the trainer, the evaluation loop and inference need to know
about a kind of segmentation, so that none of them asks which kind it runs:

  data        `train_targets()`: what the input pipeline adds to each
              training example (target makers of `segjax.data.targets`);
              `eval_fields`: the extra fields evaluation reads
  model       `num_outputs()`, `model_outputs` (checked against the model)
  training    `loss_fn()`, `train_metrics()`
  evaluation  `predict()` (jitted post-processing), `eval_stats()` (sums
              over batches, devices and processes), `image_results()`
              (per-image results made on the host, gathered before
              scoring), `score()` (the final row), `best_metric`
  inference   `activation` (how test-time augmentation averages),
              `resize_outputs()`, `host_predictions()` (post-processing
              on the host), `user_result()`, `write_outputs()`, `panel()`,
              `export_outputs()`

Shapes: images [B, H, W, 3] uint8; labels [B, H, W] int32 (the spec's
ignore value on void and padding); outputs are the model's float32 outputs
(logits [B, H, W, K], or a dict of heads); 'mask' [B] bool marks the real
examples of a padded evaluation batch.

Statistics are pytrees of arrays that add up (`jax.tree.map(np.add, ...)`),
so they sum across batches, devices and processes, and a leading replica
axis (several seeds as one program) is one more `vmap` over them. Per-image
results are plain picklable Python / NumPy values, so they can be gathered
across processes before `score` runs once.

A task is found by `segjax.tasks.get_task(config, spec)` from `config.task`:
a registered name or an import path ('package.module:ClassName').
"""

import abc
from typing import Any, ClassVar, Optional

import jax
import jax.numpy as jnp
import numpy as np

from segjax import metrics
from segjax.imaging import image_io
from segjax.imaging import visualize

# Per-class and summary scores of a confusion matrix, as recorded in rows.
SEMANTIC_KEYS = ('miou', 'mean_dice', 'pixel_accuracy', 'mean_accuracy',
                 'fw_iou')


class Task(abc.ABC):
  """One kind of segmentation (see the module docstring).

  Args:
    config: the experiment's ConfigDict (a task reads its own block, e.g.
      `config.binary`, and `config.loss`).
    spec: what the data set's labels mean: `class_names`,
      `thing_classes`, `num_classes`, `ignore_index`.

  Raises:
    ConfigError naming a bad field, in the constructor, before any work.
  """

  # The name `config.task` uses for it.
  name: ClassVar[str] = ''
  # 'logits' ([B, H, W, K] array) or 'panoptic_heads' (Panoptic-DeepLab's
  # dict): which models the task can train (`segjax.models.outputs_of`).
  model_outputs: ClassVar[str] = 'logits'
  # How test-time augmentation averages outputs: 'softmax', 'sigmoid', or
  # None (no averaging: one whole-image pass only).
  activation: ClassVar[Optional[str]] = None
  # Extra per-example fields evaluation reads besides image and labels.
  eval_fields: tuple = ()
  # The metric that ranks best checkpoints by default.
  best_metric: ClassVar[str] = 'miou'
  # Whether `image_results` gives anything (else the loop skips fetching
  # predictions to the host).
  has_image_results: bool = False

  def __init__(self, config, spec):
    self.config, self.spec = config, spec
    self.ignore_index = int(spec.ignore_index)
    self.num_classes = int(spec.num_classes)

  # --- Data and model.
  def train_targets(self):
    """{target name: kwargs} of `segjax.data.targets` makers that the
    training pipeline applies to each augmented example."""
    return {}

  @abc.abstractmethod
  def num_outputs(self):
    """Output channels the model must produce (int)."""

  # --- Training.
  @abc.abstractmethod
  def loss_fn(self):
    """`loss(outputs, batch) -> (total [], {term name: []})`, float32."""

  def train_metrics(self, outputs, batch):
    """{name: (numerator [], denominator [])} logged per train step as
    numerator / denominator (summed over micro-batches first)."""
    del outputs, batch
    return {}

  # --- Evaluation.
  @abc.abstractmethod
  def predict(self, outputs, activated):
    """Jittable post-processing of outputs [B, H, W, ...] into a dict of
    predictions with at least 'labels' [B, H, W] int32. `activated` says
    whether outputs are already averaged activations (test-time
    augmentation) rather than raw model outputs."""

  def eval_stats(self, predictions, batch):
    """Jittable sums of one padded batch (rows with mask False count
    nowhere): {'confusion_matrix': [C, C] int32, 'num_examples': int32}
    plus the task's own."""
    labels = self.masked_labels(batch)
    return {
        'confusion_matrix': metrics.confusion_matrix(
            labels, predictions['labels'], self.num_classes,
            ignore_index=self.ignore_index),
        'num_examples': batch['mask'].sum().astype(jnp.int32),
    }

  def image_results(self, predictions, batch):
    """Host results of a local batch's real rows (NumPy inputs): a list of
    picklable per-image values for `score`, or [] when the task has none."""
    del predictions, batch
    return []

  def score(self, sums, image_results):
    """The metrics row (flat {name: float}) of a split's summed `sums` and
    every image's `image_results`."""
    del image_results
    cm = np.asarray(sums['confusion_matrix'], np.int64)
    scores = metrics.segmentation_scores(cm)
    row = {k: float(scores[k]) for k in SEMANTIC_KEYS}
    row.update({f'iou/{name}': float(scores['iou'][c])
                for c, name in enumerate(self.spec.class_names)})
    row['num_examples'] = int(sums['num_examples'])
    return row

  def summary(self, row):
    """One log line's worth of a row."""
    return (f'mIoU {row["miou"]:.4f}, pixel accuracy '
            f'{row["pixel_accuracy"]:.4f}')

  # --- Inference and outputs.
  def resize_outputs(self, outputs, size):
    """Outputs [B, h, w, ...] resized (bilinear) to `size` = (H, W)."""
    return resize(outputs, size)

  def host_predictions(self, prediction):
    """One image's predictions (NumPy dict of [H, W] maps) after any host
    post-processing; default: as they are."""
    return prediction

  def user_result(self, prediction):
    """What `load_run`'s predict function returns for one image: the
    predictions dict, or the label map alone where that is all there is."""
    return prediction

  def write_outputs(self, folder, stem, image, prediction):
    """Writes one image's prediction files (see `segjax.predict`)."""
    image_io.write_semantic(folder, stem, image, prediction['labels'],
                            class_names=self.spec.class_names,
                            ignore_index=self.ignore_index)

  def panel(self, batch, predictions, n):
    """image | truth | prediction rows of the first `n` local examples
    (NumPy batch and predictions): [rows, W', 3] uint8."""
    return visualize.prediction_panel(
        batch['image'][:n], batch['labels'][:n], predictions['labels'][:n],
        self.ignore_index)

  def export_outputs(self, predictions):
    """What an exported serving function returns: labels [B, H, W] int32,
    or a dict of arrays."""
    return predictions['labels']

  # --- Helpers for implementations.
  def masked_labels(self, batch):
    """Labels [B, H, W] int32 with padding rows set to the ignore value."""
    mask = batch['mask'][:, None, None]
    return jnp.where(mask, batch['labels'], self.ignore_index)


def resize(x, size):
  """Bilinear resize of [B, h, w, ...] maps to [B, *size, ...]."""
  return jax.image.resize(x, x.shape[:1] + tuple(size) + x.shape[3:],
                          'bilinear')


def add_trees(a: Any, b: Any):
  """Elementwise sum of two statistics pytrees (None is the empty sum)."""
  if a is None:
    return b
  return jax.tree.map(np.add, a, b)
