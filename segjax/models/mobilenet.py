"""MobileNetV2 (Sandler et al. 2018): the light backbone for fast runs.

torchvision's layout (inverted residual blocks with ReLU6; expansion t,
channels c, repeats n, stride s per group), without the final 1x1 conv to
1280 channels and the classifier, which segmentation heads do not use.
Feature dict and strides as the ResNet's (`resnet.py`):

  stem   stride 2   16 channels (first conv + first block)
  stage1 stride 4   24
  stage2 stride 8   32
  stage3 stride 16  96   (the 64- and 96-channel groups)
  stage4 stride 32  320  (the 160- and 320-channel groups)

`output_stride` 16 or 8 replaces the last strides by dilation of the
depthwise convs (the first block of a dilated group keeps the previous rate,
as torchvision does for ResNets). Padding is explicit and symmetric, as
PyTorch's.
"""

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from segjax.models.conv import Conv
from segjax.models.layers import batch_norm

# (expansion t, channels c, repeats n, stride s, stage it closes or None)
_GROUPS = (
    (1, 16, 1, 1, 'stem'),
    (6, 24, 2, 2, 'stage1'),
    (6, 32, 3, 2, 'stage2'),
    (6, 64, 4, 2, None),
    (6, 96, 3, 1, 'stage3'),
    (6, 160, 3, 2, None),
    (6, 320, 1, 1, 'stage4'),
)


def _make_divisible(value, divisor=8):
  """torchvision's channel rounding for width multipliers."""
  new = max(divisor, int(value + divisor / 2) // divisor * divisor)
  return new + divisor if new < 0.9 * value else new


class _InvertedResidual(nn.Module):
  features: int
  expansion: int
  stride: int
  dilation: int
  norm: Any
  conv: Any

  @nn.compact
  def __call__(self, x):
    in_features = x.shape[-1]
    y = x
    if self.expansion != 1:
      y = nn.relu6(self.norm(name='expand_bn')(
          self.conv(in_features * self.expansion, (1, 1), name='expand')(y)))
    d = self.dilation
    y = self.conv(y.shape[-1], (3, 3), strides=self.stride,
                  kernel_dilation=d, padding=((d, d), (d, d)),
                  feature_group_count=y.shape[-1], name='depthwise')(y)
    y = nn.relu6(self.norm(name='depthwise_bn')(y))
    y = self.norm(name='project_bn')(
        self.conv(self.features, (1, 1), name='project')(y))
    if self.stride == 1 and in_features == self.features:
      y = y + x
    return y


class MobileNetV2(nn.Module):
  """MobileNetV2 backbone returning {'stem', 'stage1'..'stage4'} features.

  Attributes:
    width_multiplier: scales every width (torchvision's width_mult).
    output_stride: 8, 16 or 32.
    bn_momentum, bn_epsilon, dtype, param_dtype, kernels: as the ResNet's.
  """
  width_multiplier: float = 1.0
  output_stride: int = 32
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  kernels: str = 'auto'

  @property
  def strides(self):
    strides, total = {}, 2
    for _, _, _, s, stage in _GROUPS:
      total = min(total * s, self.output_stride)
      if stage:
        strides[stage] = total
    return strides

  @property
  def channels(self):
    return {stage: _make_divisible(c * self.width_multiplier)
            for _, c, _, _, stage in _GROUPS if stage}

  @nn.compact
  def __call__(self, images, train=False):
    """[B, H, W, 3] -> dict of [B, ceil(H / s), ceil(W / s), C] features."""
    if self.output_stride not in (8, 16, 32):
      raise ValueError(f'output_stride must be 8, 16 or 32, got '
                       f'{self.output_stride}.')
    norm = batch_norm(self, train)
    conv = functools.partial(Conv, use_bias=False, dtype=self.dtype,
                             param_dtype=self.param_dtype,
                             kernels=self.kernels)
    x = conv(_make_divisible(32 * self.width_multiplier), (3, 3), strides=2,
             padding=((1, 1), (1, 1)), name='stem_conv')(
                 images.astype(self.dtype))
    x = nn.relu6(norm(name='stem_bn')(x))
    features = {}
    total, dilation = 2, 1
    for g, (t, c, n, s, stage) in enumerate(_GROUPS):
      previous_dilation = dilation
      if total * s > self.output_stride:  # Dilate instead of striding.
        dilation *= s
        s = 1
      total *= s
      for i in range(n):
        x = _InvertedResidual(
            _make_divisible(c * self.width_multiplier), t,
            s if i == 0 else 1,
            previous_dilation if i == 0 else dilation, norm, conv,
            name=f'block{g}_{i}')(x)
      if stage:
        features[stage] = x
    return features
