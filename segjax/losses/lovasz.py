"""Lovász-softmax loss (Berman, Rannen Triki and Blaschko, CVPR 2018).

A convex surrogate of the Jaccard (IoU) loss: for each class c, the pixel
errors e_i = |y_i(c) - p_i(c)| are sorted in decreasing order and dotted with
the gradient of the Lovász extension of the Jaccard loss at that order:
  g_1 = J_1, g_j = J_j - J_{j-1},  J_j = 1 - (G - F_j) / (G + j - F_j),
where G is the number of ground-truth pixels of c and F_j the number of them
among the j largest errors. The loss averages this over the classes present
in the labels (the reference's `classes='present'`).

Ignored pixels are given error -1 so that they sort after every valid pixel,
and their contribution is masked to 0: the sums over the valid prefix are
exactly those of the reference, which drops them, while the shapes stay
static for `jit`.
"""

import jax
import jax.numpy as jnp


def _lovasz_flat(probs, labels, valid):
  """Loss of one flattened set of pixels: probs [N, C], labels [N], valid [N]."""
  num_classes = probs.shape[-1]

  def per_class(c):
    fg = ((labels == c) & valid).astype(jnp.float32)
    errors = jnp.where(valid, jnp.abs(fg - probs[:, c]), -1.0)
    order = jnp.argsort(-errors)
    errors_sorted = jnp.maximum(errors[order], 0.0)
    fg_sorted = fg[order]
    # The Jaccard weights depend only on the order, not on the values.
    fg_sorted = jax.lax.stop_gradient(fg_sorted)
    gts = fg_sorted.sum()
    intersection = gts - jnp.cumsum(fg_sorted)
    union = gts + jnp.cumsum(1.0 - fg_sorted)
    jaccard = 1.0 - intersection / union
    grad = jnp.concatenate([jaccard[:1], jaccard[1:] - jaccard[:-1]])
    return jnp.dot(errors_sorted, grad), gts > 0

  losses, present = jax.lax.map(per_class, jnp.arange(num_classes))
  present = present.astype(jnp.float32)
  return (losses * present).sum() / jnp.maximum(present.sum(), 1.0), \
      present.sum() > 0


def lovasz_softmax_loss(logits, labels, *, ignore_index=255, per_image=False):
  """Lovász-softmax loss, averaged over the classes present in the labels.

  Args:
    logits: [B, H, W, C] float.
    labels: [B, H, W] integer class ids or `ignore_index`.
    ignore_index: label value of pixels that carry no loss.
    per_image: compute the loss of each image on its own and average over
      all B images, an image with no class present counting as 0 (exactly
      the reference's `per_image=True`); otherwise the whole batch is one
      set of pixels.

  Returns:
    float32 scalar; 0 (with zero gradient) when no class is present.
  """
  num_classes = logits.shape[-1]
  probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
  labels = labels.astype(jnp.int32)
  valid = (labels != ignore_index) & (labels >= 0) & (labels < num_classes)
  if not per_image:
    loss, _ = _lovasz_flat(probs.reshape(-1, num_classes), labels.reshape(-1),
                           valid.reshape(-1))
    return loss
  b = logits.shape[0]
  losses, _ = jax.vmap(_lovasz_flat)(
      probs.reshape(b, -1, num_classes), labels.reshape(b, -1),
      valid.reshape(b, -1))
  return losses.mean()
