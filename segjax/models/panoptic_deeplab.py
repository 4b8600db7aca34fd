"""Panoptic-DeepLab (Cheng et al., CVPR 2020): one bottom-up panoptic model.

A dilated backbone feeds two decoders of the same shape, one for semantics
and one for instances, so the two tasks share features but not decoders:

  backbone --stage4--> ASPP -> fuse stage2 -> fuse stage1 -> heads
  fuse(x, low) = 5x5 conv(concat(upsample(x), 1x1 proj(low)))

The semantic decoder (ASPP and fusion width 256, projections 64 at stride 8
and 32 at stride 4) ends in the semantic head (5x5 conv, 256, then a 1x1
classifier); the instance decoder (fusion width 128, projections 32 and 16)
ends in two heads (5x5 conv, 32, then 1x1): the class-agnostic center
heatmap (1 channel) and the offset from each pixel to its instance's center
(2 channels, (dy, dx)). The widths are the paper's (Section 3.1) and the
fusion convs are depthwise-separable as there; `separable=False` makes them
plain. Heads run at stride 4 and are resized bilinearly to the input size;
offsets are predicted in input pixels, so resizing keeps their units.

The outputs are what `segjax.postprocess.panoptic.panoptic_postprocess` and
`segjax.losses.panoptic` take. Training targets come from instance maps in
the input pipeline (`segjax.data.panoptic_targets`).
"""

import functools
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from segjax.models import backbones
from segjax.models.conv import Conv
from segjax.models.deeplab import ASPP
from segjax.models.deeplab import default_rates
from segjax.models.layers import batch_norm
from segjax.models.layers import ConvBNReLU


def _resize_to(x, shape):
  """Bilinear resize of [B, h, w, C] to [B, H, W, C] (shape = (H, W))."""
  return jax.image.resize(x, x.shape[:1] + tuple(shape) + x.shape[3:],
                          'bilinear')


class PanopticDecoder(nn.Module):
  """ASPP on the deepest features, then fusion with shallower ones.

  Attributes:
    aspp_features: ASPP output width.
    low_level: ((stage name, projection width), ...) from deep to shallow,
      e.g. (('stage2', 64), ('stage1', 32)).
    features: width of each fusion conv.
    rates, separable, dropout, norm, dtype, param_dtype, kernels: as
      DeepLab's.
  """
  aspp_features: int
  low_level: Sequence[Any]
  features: int
  rates: Sequence[int]
  separable: bool = True
  dropout: float = 0.1
  norm: Any = None
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  kernels: str = 'auto'

  @nn.compact
  def __call__(self, feats, train):
    """{stage: [B, h_s, w_s, C_s]} -> [B, h_low, w_low, features]."""
    block = functools.partial(ConvBNReLU, norm=self.norm, dtype=self.dtype,
                              param_dtype=self.param_dtype,
                              kernels=self.kernels)
    x = ASPP(self.aspp_features, tuple(self.rates), self.separable,
             self.dropout, self.norm, self.dtype, self.param_dtype,
             kernels=self.kernels, name='aspp')(feats['stage4'], train)
    for i, (stage, width) in enumerate(self.low_level):
      low = block(width, 1, name=f'project{i}')(feats[stage])
      x = _resize_to(x, low.shape[1:3])
      x = jnp.concatenate([x, low.astype(x.dtype)], axis=-1)
      x = block(self.features, 5, separable=self.separable,
                name=f'fuse{i}')(x)
    return x


class PredictionHead(nn.Module):
  """5x5 conv + BN + ReLU, then a 1x1 conv with bias to `outputs` channels."""
  features: int
  outputs: int
  separable: bool = True
  norm: Any = None
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  kernels: str = 'auto'

  @nn.compact
  def __call__(self, x):
    x = ConvBNReLU(self.features, 5, separable=self.separable,
                   norm=self.norm, dtype=self.dtype,
                   param_dtype=self.param_dtype, kernels=self.kernels,
                   name='conv')(x)
    x = Conv(self.outputs, (1, 1), dtype=self.dtype,
             param_dtype=self.param_dtype, kernels=self.kernels,
             name='predict')(x)
    return x.astype(jnp.float32)


class PanopticDeepLab(nn.Module):
  """Panoptic-DeepLab: semantic logits, center heatmap and center offsets.

  Attributes:
    num_classes: semantic classes (things and stuff).
    backbone: 'resnet18'..'resnet152' or 'mobilenet_v2'.
    output_stride, deep_stem, avg_down, multi_grid, width: the backbone's
      (width: a ResNet's base width, 64 = torchvision's).
    rates: ASPP atrous rates; None picks `default_rates(output_stride)`.
    semantic_features: ASPP and fusion width of the semantic decoder (256).
    semantic_low_level: projection widths at stride 8 and 4 ((64, 32)).
    semantic_head_features: semantic head width (256).
    instance_features: fusion width of the instance decoder (128); its ASPP
      keeps `semantic_features` channels, as in the paper.
    instance_low_level: its projection widths ((32, 16)).
    instance_head_features: center and offset head width (32).
    separable: depthwise-separable 5x5 (and ASPP 3x3) convs.
    dropout: ASPP dropout (needs an rng 'dropout' when training).
    bn_momentum, bn_epsilon, dtype, param_dtype, kernels: as the ResNet's.
  """
  num_classes: int
  backbone: str = 'resnet50'
  output_stride: int = 16
  deep_stem: bool = False
  avg_down: bool = False
  multi_grid: Optional[Sequence[int]] = None
  width: int = 64
  rates: Optional[Sequence[int]] = None
  semantic_features: int = 256
  semantic_low_level: Sequence[int] = (64, 32)
  semantic_head_features: int = 256
  instance_features: int = 128
  instance_low_level: Sequence[int] = (32, 16)
  instance_head_features: int = 32
  separable: bool = True
  dropout: float = 0.1
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  kernels: str = 'auto'

  @nn.compact
  def __call__(self, images, train=False):
    """[B, H, W, 3] float images -> dict of float32 maps at [B, H, W]:

      'semantic'        [B, H, W, num_classes] logits,
      'center_heatmap'  [B, H, W] center heatmap (regressed, ~[0, 1]),
      'center_offsets'  [B, H, W, 2] (dy, dx) from a pixel to its center.
    """
    for name, widths in (('semantic_low_level', self.semantic_low_level),
                         ('instance_low_level', self.instance_low_level)):
      if len(widths) != 2:
        raise ValueError(f'{name}={tuple(widths)}: needs two widths, for '
                         'the stride-8 and stride-4 features.')
    size = images.shape[1:3]
    feats = backbones.backbone_of(self)(images, train)
    norm = batch_norm(self, train)
    common = dict(rates=tuple(self.rates or
                              default_rates(self.output_stride)),
                  separable=self.separable, dropout=self.dropout, norm=norm,
                  dtype=self.dtype, param_dtype=self.param_dtype,
                  kernels=self.kernels)
    stages = ('stage2', 'stage1')  # Strides 8 and 4.
    semantic = PanopticDecoder(
        self.semantic_features, tuple(zip(stages, self.semantic_low_level)),
        self.semantic_features, name='semantic_decoder', **common)(
            feats, train)
    instance = PanopticDecoder(
        self.semantic_features, tuple(zip(stages, self.instance_low_level)),
        self.instance_features, name='instance_decoder', **common)(
            feats, train)
    head = functools.partial(PredictionHead, separable=self.separable,
                             norm=norm, dtype=self.dtype,
                             param_dtype=self.param_dtype,
                             kernels=self.kernels)
    logits = head(self.semantic_head_features, self.num_classes,
                  name='semantic_head')(semantic)
    center = head(self.instance_head_features, 1, name='center_head')(
        instance)
    offsets = head(self.instance_head_features, 2, name='offset_head')(
        instance)
    return {
        'semantic': _resize_to(logits, size),
        'center_heatmap': _resize_to(center, size)[..., 0],
        'center_offsets': _resize_to(offsets, size),
    }
