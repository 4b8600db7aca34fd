"""Segmentation losses: jittable, `ignore_index` honoured in every term.

Every multiclass loss takes `logits: [..., H, W, C]` and integer
`labels: [..., H, W]`; the binary ones take `logits: [..., H, W]` (or
`[..., H, W, 1]`). Each returns a float32 scalar. Pixels whose label equals
`ignore_index` (default 255) contribute nothing to any numerator or
denominator, and a batch with no valid pixel has loss 0 with zero gradient.
`build_loss` sums weighted losses by name, from `config.loss`.
Panoptic-DeepLab's loss (semantic + center + offset terms on a dict of
outputs) is `panoptic_deeplab_loss` / `build_panoptic_loss`.
"""

from segjax.losses.binary import binary_dice_loss
from segjax.losses.binary import sigmoid_binary_cross_entropy
from segjax.losses.combined import BINARY_LOSSES
from segjax.losses.combined import build_loss
from segjax.losses.cross_entropy import pixel_cross_entropy
from segjax.losses.cross_entropy import softmax_cross_entropy
from segjax.losses.dice import dice_loss
from segjax.losses.focal import softmax_focal_loss
from segjax.losses.focal import tversky_loss
from segjax.losses.lovasz import lovasz_softmax_loss
from segjax.losses.panoptic import build_panoptic_loss
from segjax.losses.panoptic import panoptic_deeplab_loss

__all__ = [
    'BINARY_LOSSES',
    'binary_dice_loss',
    'build_loss',
    'build_panoptic_loss',
    'dice_loss',
    'lovasz_softmax_loss',
    'panoptic_deeplab_loss',
    'pixel_cross_entropy',
    'sigmoid_binary_cross_entropy',
    'softmax_cross_entropy',
    'softmax_focal_loss',
    'tversky_loss',
]
