"""Semantic segmentation: softmax logits, one channel per class.

Loss: `config.loss` ({name: weight}, `segjax.losses.build_loss`); train
metric: pixel accuracy of the argmax over non-ignored pixels; evaluation:
the confusion matrix of the argmax (mIoU, per-class IoU, Dice, accuracy).
"""

import jax.numpy as jnp

from segjax import losses
from segjax.errors import ConfigError
from segjax.tasks import base


class SemanticTask(base.Task):
  """Per-pixel classification into the data set's classes."""

  name = 'semantic'
  activation = 'softmax'

  def num_outputs(self):
    return self.num_classes

  def loss_fn(self):
    try:
      return losses.build_loss(self.config.loss,
                               ignore_index=self.ignore_index)
    except ValueError as e:
      raise ConfigError(str(e)) from e

  def train_metrics(self, outputs, batch):
    return {'pixel_accuracy': pixel_accuracy_counts(
        jnp.argmax(outputs, -1), batch['labels'], outputs.shape[-1])}

  def predict(self, outputs, activated):
    # argmax of logits or of averaged probabilities: both are the class.
    del activated
    return {'labels': jnp.argmax(outputs, axis=-1).astype(jnp.int32)}

  def user_result(self, prediction):
    return prediction['labels']


def pixel_accuracy_counts(predictions, labels, num_classes):
  """(correct, valid) pixel counts of [B, H, W] int predictions; pixels
  whose label is not in [0, num_classes) count nowhere."""
  valid = (labels >= 0) & (labels < num_classes)
  correct = ((predictions == labels) & valid).sum()
  return correct, valid.sum()
