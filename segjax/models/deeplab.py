"""DeepLabV3 (Chen et al. 2017) and DeepLabV3+ (Chen et al. 2018).

Both sit on a dilated backbone (a ResNet, `resnet.py`, or MobileNetV2,
`mobilenet.py`) and differ only in the head:
  DeepLabV3:  ASPP on stage4 -> 3x3 conv -> 1x1 classifier -> bilinear
              upsampling to the input size.
  DeepLabV3+: ASPP on stage4 (then a 3x3 conv) -> upsampled to stage1's size
              and concatenated with a 1x1 projection of stage1 (48 channels)
              -> 3x3 conv -> classifier -> upsampling to the input size.
ASPP: a 1x1 branch, three 3x3 atrous branches and image pooling, concatenated
and projected by a 1x1 conv, then dropout. `separable=True` makes the atrous
and decoder 3x3 convs depthwise-separable, as segmentation_models_pytorch
does; with a ResNet-50 at output stride 16 and 11 classes the parameter count
is then exactly SMP's DeepLabV3Plus("resnet50", classes=11): 26,680,155.

Atrous rates default to (6, 12, 18) at output stride 16 and are doubled at 8,
as in the DeepLabV3 paper. Any input size works: the decoder resizes to the
exact shapes of the features it fuses, and logits come back at [B, H, W, C].
Batch norm is synchronised across devices by construction under `jax.jit` on
a global batch (see resnet.py).
"""

import functools
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from segjax.models import backbones
from segjax.models import resnet
from segjax.models.conv import Conv
from segjax.models.layers import batch_norm
from segjax.models.layers import ConvBNReLU


def default_rates(output_stride):
  return {16: (6, 12, 18), 8: (12, 24, 36)}.get(output_stride, (6, 12, 18))


class ASPP(nn.Module):
  """Atrous spatial pyramid pooling on [B, h, w, C] features."""
  features: int = 256
  rates: Sequence[int] = (6, 12, 18)
  separable: bool = False
  dropout: float = 0.5
  norm: Any = None
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  kernels: str = 'auto'

  @nn.compact
  def __call__(self, x, train):
    block = functools.partial(ConvBNReLU, features=self.features,
                              norm=self.norm, dtype=self.dtype,
                              param_dtype=self.param_dtype,
                              kernels=self.kernels)
    b, h, w, _ = x.shape
    branches = [block(kernel=1, name='branch0')(x)]
    for i, rate in enumerate(self.rates):
      branches.append(block(kernel=3, dilation=rate, separable=self.separable,
                            name=f'branch{i + 1}')(x))
    pooled = jnp.mean(x, axis=(1, 2), keepdims=True)
    pooled = block(kernel=1, name='pooling')(pooled)
    branches.append(jnp.broadcast_to(pooled, (b, h, w, self.features)))
    y = block(kernel=1, name='project')(jnp.concatenate(branches, axis=-1))
    return nn.Dropout(self.dropout, deterministic=not train)(y)


class DeepLab(nn.Module):
  """DeepLabV3 (`plus=False`) or DeepLabV3+ (`plus=True`).

  Attributes:
    num_classes: output channels (1 gives a single sigmoid logit).
    plus: add the V3+ decoder fusing `low_level_stage` features.
    backbone: 'resnet18'..'resnet152' or 'mobilenet_v2' (`backbones.py`).
    output_stride, deep_stem, avg_down, multi_grid: the backbone's (the
      ResNet-only ones are ignored for MobileNetV2).
    aspp_features: channels of ASPP and decoder (256).
    rates: ASPP atrous rates; None picks `default_rates(output_stride)`.
    separable: depthwise-separable 3x3 convs in ASPP and decoder.
    low_level_stage: backbone stage fused by the V3+ decoder ('stage1').
    low_level_features: its 1x1 projection width (48).
    dropout: ASPP dropout rate (needs an rng 'dropout' when training).
    bn_momentum, bn_epsilon, dtype, param_dtype, kernels: as the ResNet's.
  """
  num_classes: int
  plus: bool = True
  backbone: str = 'resnet50'
  output_stride: int = 16
  deep_stem: bool = False
  avg_down: bool = False
  multi_grid: Optional[Sequence[int]] = None
  aspp_features: int = 256
  rates: Optional[Sequence[int]] = None
  separable: bool = False
  low_level_stage: str = 'stage1'
  low_level_features: int = 48
  dropout: float = 0.5
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  kernels: str = 'auto'

  @nn.compact
  def __call__(self, images, train=False):
    """[B, H, W, 3] float images -> [B, H, W, num_classes] float32 logits."""
    if self.plus and self.low_level_stage not in resnet.STAGES[:-1]:
      raise ValueError(
          f'low_level_stage={self.low_level_stage!r}: the backbone has '
          f'stages {resnet.STAGES[:-1]} below stage4.')
    b, h, w, _ = images.shape
    features = backbones.backbone_of(self)(images, train)
    norm = batch_norm(self, train)
    block = functools.partial(ConvBNReLU, norm=norm, dtype=self.dtype,
                              param_dtype=self.param_dtype,
                              kernels=self.kernels)
    rates = self.rates or default_rates(self.output_stride)
    x = ASPP(self.aspp_features, tuple(rates), self.separable, self.dropout,
             norm, self.dtype, self.param_dtype, kernels=self.kernels,
             name='aspp')(
                 features['stage4'], train)
    x = block(self.aspp_features, 3, separable=self.separable,
              name='aspp_conv')(x)
    if self.plus:
      low = features[self.low_level_stage]
      low = block(self.low_level_features, 1, name='low_level_proj')(low)
      x = jax.image.resize(x, x.shape[:1] + low.shape[1:3] + x.shape[3:],
                           'bilinear')
      x = jnp.concatenate([x, low.astype(x.dtype)], axis=-1)
      x = block(self.aspp_features, 3, separable=self.separable,
                name='decoder_conv')(x)
    logits = Conv(self.num_classes, (1, 1), dtype=self.dtype,
                  param_dtype=self.param_dtype, kernels=self.kernels,
                  name='classifier')(x)
    logits = logits.astype(jnp.float32)
    return jax.image.resize(logits, (b, h, w, self.num_classes), 'bilinear')
