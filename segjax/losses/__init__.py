"""Segmentation losses: jittable, `ignore_index` honoured in every term.

Every loss takes `logits: [..., H, W, C]` and integer `labels: [..., H, W]`
and returns a float32 scalar. Pixels whose label equals `ignore_index`
(default 255) contribute nothing to any numerator or denominator.
"""

from segjax.losses.combined import build_loss
from segjax.losses.cross_entropy import pixel_cross_entropy
from segjax.losses.cross_entropy import softmax_cross_entropy
from segjax.losses.dice import dice_loss

__all__ = [
    'build_loss',
    'dice_loss',
    'pixel_cross_entropy',
    'softmax_cross_entropy',
]
