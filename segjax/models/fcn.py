"""Fully convolutional networks (Long, Shelhamer and Darrell 2015).

Two families:
  skips='32s' | '16s' | '8s': the paper's skip fusion. A 1x1 classifier on
    stage4 (stride 32); '16s' adds a 1x1 classifier of stage3 after
    upsampling the coarser scores to its size, '8s' also stage2. The skips
    need the strides 32/16/8 of a plain backbone: output_stride must be 32.
  skips=None: mmsegmentation's dilated "FCN head" (FCN-D8 with output stride
    8): `num_convs` 3x3 conv-BN-ReLU layers on stage4, the input concatenated
    back and fused by another 3x3 conv, dropout, a 1x1 classifier.
`aux_head=True` adds an auxiliary FCN head on stage3 for deep supervision;
its logits (at input size) are sown into the 'intermediates' collection as
'aux_logits' (read them with `mutable=['intermediates']`).
Logits come back at the input size for any input size.
"""

import functools
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from segjax.models import backbones
from segjax.models.conv import Conv
from segjax.models.layers import batch_norm
from segjax.models.layers import ConvBNReLU


def _resize(x, like_hw):
  return jax.image.resize(x, x.shape[:1] + tuple(like_hw) + x.shape[-1:],
                          'bilinear')


class FCNHead(nn.Module):
  """num_convs x (3x3 conv, BN, ReLU) [+ concat input, 3x3 conv] -> classes."""
  num_classes: int
  channels: int = 512
  num_convs: int = 2
  concat_input: bool = True
  dropout: float = 0.1
  norm: Any = None
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  kernels: str = 'auto'

  @nn.compact
  def __call__(self, x, train):
    block = functools.partial(ConvBNReLU, self.channels, 3, norm=self.norm,
                              dtype=self.dtype, param_dtype=self.param_dtype,
                              kernels=self.kernels)
    y = x
    for i in range(self.num_convs):
      y = block(name=f'conv{i}')(y)
    if self.concat_input:
      y = block(name='conv_cat')(
          jnp.concatenate([x.astype(y.dtype), y], axis=-1))
    y = nn.Dropout(self.dropout, deterministic=not train)(y)
    return Conv(self.num_classes, (1, 1), dtype=self.dtype,
                param_dtype=self.param_dtype, kernels=self.kernels,
                name='classifier')(y)


class FCN(nn.Module):
  """FCN-32s/16s/8s (`skips`) or a dilated FCN head (`skips=None`).

  Attributes:
    num_classes: output channels.
    skips: '32s', '16s', '8s' or None (see the module docstring).
    backbone: 'resnet18'..'resnet152' or 'mobilenet_v2' (`backbones.py`).
    output_stride, deep_stem, avg_down: the backbone's (output_stride
      defaults to 32 for skips; use 8 for the dilated head).
    head_channels, num_convs, dropout: the FCN head's (skips=None).
    aux_head: an auxiliary head on stage3 (256 channels, one conv).
    bn_momentum, bn_epsilon, dtype, param_dtype, kernels: as the ResNet's.
  """
  num_classes: int
  skips: Optional[str] = '8s'
  backbone: str = 'resnet50'
  output_stride: int = 32
  deep_stem: bool = False
  avg_down: bool = False
  head_channels: int = 512
  num_convs: int = 2
  dropout: float = 0.1
  aux_head: bool = False
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  kernels: str = 'auto'

  @nn.compact
  def __call__(self, images, train=False):
    """[B, H, W, 3] float images -> [B, H, W, num_classes] float32 logits."""
    if self.skips not in ('32s', '16s', '8s', None):
      raise ValueError(f"skips must be '32s', '16s', '8s' or None, got "
                       f'{self.skips!r}.')
    if self.skips and self.output_stride != 32:
      raise ValueError(
          f'FCN-{self.skips} fuses features at strides 32/16/8 and needs '
          f'output_stride=32, got {self.output_stride}; use skips=None (the '
          'dilated FCN head) for output stride 8 or 16.')
    b, h, w, _ = images.shape
    features = backbones.backbone_of(self)(images, train)
    norm = batch_norm(self, train)
    score = functools.partial(Conv, features=self.num_classes,
                              kernel_size=(1, 1), dtype=self.dtype,
                              param_dtype=self.param_dtype,
                              kernels=self.kernels)
    if self.skips:
      logits = score(name='score_stage4')(features['stage4'])
      fused = {'32s': (), '16s': ('stage3',), '8s': ('stage3', 'stage2')}
      for stage in fused[self.skips]:
        skip = score(name=f'score_{stage}')(features[stage])
        logits = _resize(logits, skip.shape[1:3]) + skip
    else:
      logits = FCNHead(self.num_classes, self.head_channels, self.num_convs,
                       True, self.dropout, norm, self.dtype, self.param_dtype,
                       kernels=self.kernels, name='head')(
                           features['stage4'], train)
    if self.aux_head:
      aux = FCNHead(self.num_classes, 256, 1, False, self.dropout, norm,
                    self.dtype, self.param_dtype, kernels=self.kernels,
                    name='aux_head')(
                        features['stage3'], train)
      self.sow('intermediates', 'aux_logits',
               _resize(aux.astype(jnp.float32), (h, w)))
    return _resize(logits.astype(jnp.float32), (h, w))
