"""Soft multiclass Dice loss with ignore pixels."""

import jax
import jax.numpy as jnp


def dice_loss(logits, labels, *, ignore_index=255, smooth=1.0):
  """Soft Dice loss, 1 - mean Dice over the classes present.

  Per class c, with p = softmax(logits) and y = one-hot(labels), summed over
  every valid pixel of the whole batch (not per image):
    dice_c = (2 * sum(p_c * y_c) + smooth) / (sum(p_c) + sum(y_c) + smooth).
  The loss is the mean of (1 - dice_c) over the classes present in the labels
  or in the argmax predictions of the valid pixels; a class absent from both
  is left out (it would otherwise score a free 1 or a meaningless 0). Ignored
  pixels are left out of every sum, numerators and denominators alike. With
  no valid pixel the loss is 0, with zero gradient.

  Args:
    logits: [..., H, W, C] float.
    labels: [..., H, W] integer class ids in [0, C) or `ignore_index`.
    ignore_index: label value of pixels that carry no loss.
    smooth: additive smoothing in numerator and denominator.

  Returns:
    float32 scalar.
  """
  num_classes = logits.shape[-1]
  labels = labels.astype(jnp.int32)
  valid = (labels != ignore_index) & (labels >= 0) & (labels < num_classes)
  v = valid[..., None].astype(jnp.float32)
  probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1) * v
  onehot = jax.nn.one_hot(jnp.where(valid, labels, 0), num_classes) * v
  axes = tuple(range(logits.ndim - 1))
  intersection = (probs * onehot).sum(axes)
  prob_sum = probs.sum(axes)
  label_sum = onehot.sum(axes)
  dice = (2 * intersection + smooth) / (prob_sum + label_sum + smooth)

  predicted = jax.nn.one_hot(jnp.argmax(logits, -1), num_classes) * v
  present = (label_sum > 0) | (predicted.sum(axes) > 0)
  present = jax.lax.stop_gradient(present.astype(jnp.float32))
  return ((1 - dice) * present).sum() / jnp.maximum(present.sum(), 1.0)
