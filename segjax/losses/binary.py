"""Losses for one sigmoid output per pixel (binary masks)."""

import jax
import jax.numpy as jnp


def _binary_inputs(logits, labels, ignore_index):
  if logits.ndim == labels.ndim + 1 and logits.shape[-1] == 1:
    logits = logits[..., 0]
  if logits.shape != labels.shape:
    raise ValueError(f'binary losses take logits [..., H, W] (or [..., H, W, '
                     f'1]) and labels [..., H, W]; got {logits.shape} and '
                     f'{labels.shape}.')
  labels = labels.astype(jnp.int32)
  valid = labels != ignore_index
  target = ((labels != 0) & valid).astype(jnp.float32)
  return logits.astype(jnp.float32), target, valid.astype(jnp.float32)


def sigmoid_binary_cross_entropy(logits, labels, *, ignore_index=255,
                                 pos_weight=1.0):
  """Mean binary cross-entropy with logits over the valid pixels.

  loss_i = -(pos_weight * y_i * log(sigmoid(x_i)) + (1 - y_i) *
  log(1 - sigmoid(x_i))), PyTorch's `BCEWithLogitsLoss(pos_weight=...)`,
  computed with softplus so it never overflows; averaged over pixels whose
  label is not `ignore_index` (0 when there are none).

  Args:
    logits: [..., H, W] or [..., H, W, 1] float.
    labels: [..., H, W] integer: 0 background, `ignore_index` ignored, any
      other value foreground.
    ignore_index: label of pixels that carry no loss.
    pos_weight: weight of the foreground term (e.g. #neg / #pos).

  Returns:
    float32 scalar.
  """
  x, y, valid = _binary_inputs(logits, labels, ignore_index)
  losses = pos_weight * y * jax.nn.softplus(-x) + (1 - y) * jax.nn.softplus(x)
  return (losses * valid).sum() / jnp.maximum(valid.sum(), 1.0)


def binary_dice_loss(logits, labels, *, ignore_index=255, smooth=1.0):
  """Soft Dice loss of the foreground of a sigmoid output.

  With p = sigmoid(logits), summed over the valid pixels of the whole batch:
  1 - (2 * sum(p * y) + smooth) / (sum(p) + sum(y) + smooth). With no valid
  pixel the loss is 0, with zero gradient.

  Args: as `sigmoid_binary_cross_entropy`; `smooth` is the additive term.

  Returns:
    float32 scalar.
  """
  x, y, valid = _binary_inputs(logits, labels, ignore_index)
  p = jax.nn.sigmoid(x) * valid
  dice = (2 * (p * y).sum() + smooth) / (p.sum() + y.sum() + smooth)
  return jnp.where(valid.sum() > 0, 1 - dice, 0.0)
