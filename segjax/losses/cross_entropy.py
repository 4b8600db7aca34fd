"""Softmax cross-entropy over pixels, with ignore pixels and class weights."""

import jax
import jax.numpy as jnp
import optax


def pixel_cross_entropy(logits, labels, *, ignore_index=255,
                        class_weights=None, label_smoothing=0.0,
                        pixel_weights=None):
  """Per-pixel cross-entropy and the weight each pixel carries.

  Args:
    logits: [..., H, W, C] float.
    labels: [..., H, W] integer class ids in [0, C) or `ignore_index`.
    ignore_index: label value of pixels that carry no loss.
    class_weights: optional [C] float; a pixel of class c is weighted by
      class_weights[c].
    label_smoothing: epsilon of label smoothing; the target puts 1 - eps on
      the true class and eps / C on every class.
    pixel_weights: optional [..., H, W] float multiplying each pixel's
      weight (e.g. Panoptic-DeepLab's up-weighting of small instances).

  Returns:
    (losses, weights): both [..., H, W] float32; both are 0 on ignored pixels.
    Labels outside [0, C) other than `ignore_index` are treated as ignored.
  """
  num_classes = logits.shape[-1]
  labels = labels.astype(jnp.int32)
  valid = (labels != ignore_index) & (labels >= 0) & (labels < num_classes)
  safe_labels = jnp.where(valid, labels, 0)
  logits = logits.astype(jnp.float32)
  if label_smoothing:
    targets = optax.smooth_labels(
        jnp.eye(num_classes, dtype=jnp.float32)[safe_labels], label_smoothing)
    losses = optax.softmax_cross_entropy(logits, targets)
  else:
    losses = optax.softmax_cross_entropy_with_integer_labels(
        logits, safe_labels)
  weights = valid.astype(jnp.float32)
  if class_weights is not None:
    weights = weights * jnp.asarray(class_weights, jnp.float32)[safe_labels]
  if pixel_weights is not None:
    weights = weights * pixel_weights.astype(jnp.float32)
  return losses * weights, weights


def softmax_cross_entropy(logits, labels, *, ignore_index=255,
                          class_weights=None, label_smoothing=0.0,
                          top_k_percent_pixels=1.0, pixel_weights=None):
  """Mean softmax cross-entropy over the valid pixels of a batch.

  The mean is sum(w_i * loss_i) / sum(w_i) over valid pixels i, where w_i is
  the class weight of pixel i (1 without class weights): PyTorch's
  `CrossEntropyLoss(weight=..., ignore_index=...)` convention. With no valid
  pixel the loss is 0 (and so is its gradient), not NaN.

  Hard-pixel bootstrapping (DeepLab's `top_k_percent_pixels`): with a value
  below 1, only the k = floor(top_k_percent_pixels * N) largest weighted
  pixel losses of the batch count, N being the number of pixels in the batch
  (ignored ones included, as in DeepLab, so k is static); the loss is their
  sum divided by how many of them are valid pixels.

  Args: as `pixel_cross_entropy`, plus
    top_k_percent_pixels: fraction in (0, 1] of the hardest pixels to keep.

  Returns:
    float32 scalar.
  """
  if not 0.0 < top_k_percent_pixels <= 1.0:
    raise ValueError('top_k_percent_pixels must be in (0, 1], got '
                     f'{top_k_percent_pixels}.')
  losses, weights = pixel_cross_entropy(
      logits, labels, ignore_index=ignore_index, class_weights=class_weights,
      label_smoothing=label_smoothing, pixel_weights=pixel_weights)
  if top_k_percent_pixels == 1.0:
    return losses.sum() / jnp.maximum(weights.sum(), 1e-12)
  flat_losses = losses.reshape(-1)
  k = max(1, int(top_k_percent_pixels * flat_losses.size))
  top, index = jax.lax.top_k(flat_losses, k)
  count = (weights.reshape(-1)[index] > 0).sum()
  return top.sum() / jnp.maximum(count, 1)
