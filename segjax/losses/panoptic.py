"""Panoptic-DeepLab's training loss (Cheng et al., CVPR 2020, Section 3.2).

  total = w_sem * CE_topk(semantic) + w_ctr * MSE(center) + w_off * L1(offset)

- semantic: softmax cross-entropy weighted per pixel by the targets'
  'semantic_weights' (small instances count 3x), keeping only the hardest
  `top_k_percent_pixels` of the batch's pixels (bootstrapping; 0.2 in the
  paper);
- center: squared error of the heatmap, averaged over pixels with
  'center_weights' (void pixels carry none);
- offset: absolute error of (dy, dx), summed over the two components and
  averaged over thing pixels ('offset_weights').
The paper's weights are 1, 200 and 0.01: the heatmap's squared errors are
tiny (targets in [0, 1], mostly 0) and the offsets are in pixels.

Targets are made from instance maps in the input pipeline
(`segjax.data.panoptic_targets`); predictions come from
`segjax.models.PanopticDeepLab`.
"""

import jax.numpy as jnp

from segjax.losses.cross_entropy import softmax_cross_entropy


def _weighted_mean(values, weights):
  """sum(w * v) / sum(w), 0 (with gradient 0) when no pixel has weight."""
  return (values * weights).sum() / jnp.maximum(weights.sum(), 1e-12)


def panoptic_deeplab_loss(outputs, batch, *, semantic_weight=1.0,
                          center_weight=200.0, offset_weight=0.01,
                          top_k_percent_pixels=0.2, class_weights=None,
                          ignore_index=255):
  """The weighted sum of the three terms, and the terms.

  Args:
    outputs: the model's float32 maps: 'semantic' [B, H, W, C],
      'center_heatmap' [B, H, W], 'center_offsets' [B, H, W, 2].
    batch: 'labels' [B, H, W] int (ignore_index = void) and the targets
      'center_heatmap' [B, H, W], 'center_offsets' [B, H, W, 2],
      'center_weights', 'offset_weights', 'semantic_weights' [B, H, W]
      float32.
    semantic_weight, center_weight, offset_weight: the terms' weights.
    top_k_percent_pixels: fraction of the hardest pixels in the semantic
      term (1.0 = all).
    class_weights: optional [C] semantic class weights.
    ignore_index: void label.

  Returns:
    (total, {'semantic', 'center', 'offset'}) float32 scalars; the terms
    unweighted.
  """
  semantic = softmax_cross_entropy(
      outputs['semantic'], batch['labels'], ignore_index=ignore_index,
      class_weights=class_weights, top_k_percent_pixels=top_k_percent_pixels,
      pixel_weights=batch['semantic_weights'])
  center = _weighted_mean(
      (outputs['center_heatmap'] - batch['center_heatmap']) ** 2,
      batch['center_weights'])
  offset = _weighted_mean(
      jnp.abs(outputs['center_offsets'] - batch['center_offsets']).sum(-1),
      batch['offset_weights'])
  terms = {'semantic': semantic, 'center': center, 'offset': offset}
  total = (semantic_weight * semantic + center_weight * center +
           offset_weight * offset)
  return total, terms


def build_panoptic_loss(loss_config, ignore_index=255):
  """`loss_fn(outputs, batch) -> (total, terms)` from `config.loss`.

  Args:
    loss_config: keyword arguments of `panoptic_deeplab_loss`, e.g.
      {'semantic_weight': 1.0, 'center_weight': 200.0,
       'offset_weight': 0.01, 'top_k_percent_pixels': 0.2}.
    ignore_index: void label (from config.data).

  Raises:
    ValueError naming fields `panoptic_deeplab_loss` does not take.
  """
  kwargs = dict(loss_config or {})
  known = ('semantic_weight', 'center_weight', 'offset_weight',
           'top_k_percent_pixels', 'class_weights')
  unknown = sorted(set(kwargs) - set(known))
  if unknown:
    raise ValueError(f'config.loss has field(s) {unknown} that the '
                     f'Panoptic-DeepLab loss does not take; it takes '
                     f'{list(known)}.')
  top_k = kwargs.get('top_k_percent_pixels', 0.2)
  if not 0.0 < top_k <= 1.0:
    raise ValueError(f'config.loss.top_k_percent_pixels={top_k!r} must be '
                     'in (0, 1].')

  def loss_fn(outputs, batch):
    return panoptic_deeplab_loss(outputs, batch, ignore_index=ignore_index,
                                 **kwargs)

  return loss_fn
