"""Focal loss (Lin et al. 2017) and Tversky loss (Salehi et al. 2017)."""

import jax
import jax.numpy as jnp


def _valid_one_hot(logits, labels, ignore_index):
  num_classes = logits.shape[-1]
  labels = labels.astype(jnp.int32)
  valid = (labels != ignore_index) & (labels >= 0) & (labels < num_classes)
  onehot = jax.nn.one_hot(jnp.where(valid, labels, 0), num_classes)
  return onehot * valid[..., None], valid


def softmax_focal_loss(logits, labels, *, ignore_index=255, gamma=2.0,
                       alpha=None):
  """Multiclass focal loss, mean over valid pixels.

  loss_i = -alpha[y_i] * (1 - p_i) ** gamma * log(p_i), with p_i the softmax
  probability of pixel i's true class; gamma = 0 and no alpha give
  cross-entropy. The mean is over pixels whose label is not `ignore_index`
  (0 when there are none).

  Args:
    logits: [..., H, W, C] float.
    labels: [..., H, W] integer class ids or `ignore_index`.
    ignore_index: label value of pixels that carry no loss.
    gamma: focusing exponent.
    alpha: optional [C] per-class weights.

  Returns:
    float32 scalar.
  """
  onehot, valid = _valid_one_hot(logits, labels, ignore_index)
  log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  log_pt = (log_p * onehot).sum(-1)
  pt = jnp.exp(log_pt)
  losses = -((1 - pt) ** gamma) * log_pt
  if alpha is not None:
    losses = losses * (onehot * jnp.asarray(alpha, jnp.float32)).sum(-1)
  valid = valid.astype(jnp.float32)
  return (losses * valid).sum() / jnp.maximum(valid.sum(), 1.0)


def tversky_loss(logits, labels, *, ignore_index=255, alpha=0.5, beta=0.5,
                 smooth=1.0):
  """Soft Tversky loss: 1 - mean over present classes of the Tversky index.

  Per class c, summed over the valid pixels of the batch, with p the softmax:
    T_c = (TP + smooth) / (TP + alpha * FP + beta * FN + smooth),
    TP = sum(p_c y_c), FP = sum(p_c (1 - y_c)), FN = sum((1 - p_c) y_c).
  alpha = beta = 0.5 is the Dice loss; beta > alpha penalises misses more.
  Classes present in neither labels nor argmax predictions are left out, as
  in `dice_loss`; with no valid pixel the loss is 0 with zero gradient.

  Args:
    logits: [..., H, W, C] float.
    labels: [..., H, W] integer class ids or `ignore_index`.
    ignore_index, alpha, beta, smooth: as above.

  Returns:
    float32 scalar.
  """
  onehot, valid = _valid_one_hot(logits, labels, ignore_index)
  v = valid[..., None].astype(jnp.float32)
  probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1) * v
  axes = tuple(range(logits.ndim - 1))
  tp = (probs * onehot).sum(axes)
  fp = (probs * (1 - onehot)).sum(axes)
  fn = ((1 - probs) * onehot).sum(axes)
  index = (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)
  predicted = jax.nn.one_hot(jnp.argmax(logits, -1), logits.shape[-1]) * v
  present = (onehot.sum(axes) > 0) | (predicted.sum(axes) > 0)
  present = jax.lax.stop_gradient(present.astype(jnp.float32))
  return ((1 - index) * present).sum() / jnp.maximum(present.sum(), 1.0)
