"""ResNet backbones in torchvision's layout, with dilation for segmentation.

Layout and numerics follow torchvision's `resnet{18,34,50,101,152}` so its
weights load unchanged (`segjax.models.pretrained`): the stride of a
bottleneck sits on its 3x3 conv ("ResNet v1.5"); convolutions and pooling pad
explicitly and symmetrically as PyTorch does (Flax's 'SAME' would pad a
stride-2 3x3 conv by (0, 1) instead of (1, 1) and shift every feature).

Options, independent of each other:
  deep_stem: three 3x3 convs (32, 32, 64 channels) instead of the 7x7 conv,
    the "V1c" stem of mmsegmentation's R-50-D8.
  avg_down: shortcuts downsample by 2x2 average pooling then a stride-1 1x1
    conv (the "ResNet-D" shortcut of timm's resnet50d) instead of a stride-2
    1x1 conv.
  output_stride: 32 (plain), 16 (stage4 dilated by 2) or 8 (stage3 by 2,
    stage4 by 4), as torchvision's `replace_stride_with_dilation`: the first
    block of a dilated stage keeps the previous dilation.
  multi_grid: DeepLab's unit rates for stage4's blocks, multiplied by the
    stage's dilation (DeepLabV3 uses (1, 2, 4)); None keeps one rate.

Initialisation (`init_scheme`): 'flax' (the default) draws kernels from Flax's
LeCun normal and starts the last batch norm of each residual branch at zero
scale (Goyal et al. 2017), so every block starts as the identity.
'torchvision' is torchvision's `ResNet.__init__`: He (Kaiming) normal
kernels over fan-out (std sqrt(2 / (k*k*out))), every batch-norm scale 1
(`zero_init_residual=False`), what PyTorch references trained from scratch
(e.g. segmentation_models_pytorch's encoders) start from. Pretrained weights
replace either.

Batch norm: under `jax.jit` on a global batch sharded over devices, the mean
and variance are reduced over the whole global batch (XLA inserts the
cross-device reductions), so batch statistics are synchronised across devices
by construction, with no `axis_name` plumbing.
"""

import functools
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from segjax.models.conv import Conv
from segjax.models.layers import batch_norm
from segjax.models.pooling import max_pool

# depth -> (block type, blocks per stage)
DEPTHS = {
    18: ('basic', (2, 2, 2, 2)),
    34: ('basic', (3, 4, 6, 3)),
    50: ('bottleneck', (3, 4, 6, 3)),
    101: ('bottleneck', (3, 4, 23, 3)),
    152: ('bottleneck', (3, 8, 36, 3)),
}
STAGES = ('stem', 'stage1', 'stage2', 'stage3', 'stage4')


def stage_dilations(output_stride):
  """(stride, dilation) of stage1..stage4 for an output stride."""
  if output_stride == 32:
    return ((1, 1), (2, 1), (2, 1), (2, 1))
  if output_stride == 16:
    return ((1, 1), (2, 1), (2, 1), (1, 2))
  if output_stride == 8:
    return ((1, 1), (2, 1), (1, 2), (1, 4))
  raise ValueError(f'output_stride must be 8, 16 or 32, got {output_stride}.')


def stage_strides(output_stride, deep_stem=False):
  """Total stride of each stage's output, keyed by stage name."""
  del deep_stem  # Both stems: a stride-2 conv, then stage1's max-pool.
  strides = {'stem': 2}
  total = 4
  for name, (stride, _) in zip(STAGES[1:], stage_dilations(output_stride)):
    total *= stride
    strides[name] = total
  return strides


INITS = ('flax', 'torchvision')


def kernel_init_kwargs(init, mode):
  """{'kernel_init': ...} for a conv under `init` ({} = Flax's default).

  Args:
    init: one of `INITS`.
    mode: 'fan_out' (torchvision's ResNet) or 'fan_in' (its decoders, e.g.
      segmentation_models_pytorch's `initialize_decoder`, which draws
      uniformly): He initialisation, variance 2 / fan.

  Raises:
    ValueError naming an unknown `init`.
  """
  if init not in INITS:
    raise ValueError(f'init_scheme must be one of {INITS}, got {init!r}.')
  if init == 'flax':
    return {}
  distribution = 'normal' if mode == 'fan_out' else 'uniform'
  return {'kernel_init': nn.initializers.variance_scaling(
      2.0, mode, distribution)}


def _conv(features, kernel, stride=1, dilation=1, **kw):
  pad = dilation * (kernel - 1) // 2
  return Conv(features, (kernel, kernel), strides=stride,
              kernel_dilation=dilation, padding=((pad, pad), (pad, pad)),
              use_bias=False, **kw)


class _Block(nn.Module):
  """A basic (two 3x3) or bottleneck (1x1, 3x3, 1x1) residual block."""
  kind: str
  planes: int
  stride: int
  dilation: int
  first_dilation: int
  downsample: bool
  avg_down: bool
  norm: Any
  conv: Any
  zero_init_last: bool = True

  @nn.compact
  def __call__(self, x):
    expansion = 4 if self.kind == 'bottleneck' else 1
    shortcut = x
    if self.kind == 'bottleneck':
      y = nn.relu(self.norm(name='bn1')(
          self.conv(self.planes, 1, name='conv1')(x)))
      y = nn.relu(self.norm(name='bn2')(self.conv(
          self.planes, 3, self.stride, self.first_dilation, name='conv2')(y)))
      # The last norm of each residual branch may start at zero scale (see
      # the module docstring); pretrained weights overwrite it.
      y = self.norm(name='bn3', scale_init=self._last_scale_init())(
          self.conv(self.planes * 4, 1, name='conv3')(y))
    else:
      y = nn.relu(self.norm(name='bn1')(self.conv(
          self.planes, 3, self.stride, self.first_dilation, name='conv1')(x)))
      y = self.norm(name='bn2', scale_init=self._last_scale_init())(
          self.conv(self.planes, 3, 1, self.dilation, name='conv2')(y))
    if self.downsample:
      if self.avg_down and self.stride > 1:
        # timm's AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False).
        h, w = shortcut.shape[1:3]
        shortcut = nn.avg_pool(shortcut, (2, 2), strides=(2, 2),
                               padding=((0, h % 2), (0, w % 2)),
                               count_include_pad=False)
        shortcut = self.conv(self.planes * expansion, 1,
                             name='downsample_conv')(shortcut)
      else:
        shortcut = self.conv(self.planes * expansion, 1, self.stride,
                             name='downsample_conv')(shortcut)
      shortcut = self.norm(name='downsample_bn')(shortcut)
    return nn.relu(y + shortcut)

  def _last_scale_init(self):
    return (nn.initializers.zeros if self.zero_init_last
            else nn.initializers.ones)


class ResNet(nn.Module):
  """ResNet backbone returning a dict of feature maps.

  Attributes:
    depth: 18, 34, 50, 101 or 152.
    output_stride: 8, 16 or 32 (see the module docstring).
    deep_stem, avg_down, multi_grid: see the module docstring.
    bn_momentum: Flax convention (running = m * running + (1 - m) * batch);
      PyTorch's momentum 0.1 is 0.9 here.
    bn_epsilon: batch-norm epsilon (torchvision: 1e-5).
    init_scheme: 'flax' or 'torchvision' (see the module docstring).
    dtype, param_dtype: computation and parameter dtypes.
    width: channels of the stem and of stage1's blocks (64, torchvision's);
      stage k has width * 2**(k-1) planes. Narrower nets (e.g. 32, a quarter
      of the FLOPs) are for small data and CPUs; pretrained weights need 64.
    kernels: 'auto', 'segjax' or 'xla': XLA's ops or segjax's formulations
      of the convs and the max-pool (segjax.kernels).
  """
  depth: int = 50
  output_stride: int = 32
  deep_stem: bool = False
  avg_down: bool = False
  multi_grid: Optional[Sequence[int]] = None
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  init_scheme: str = 'flax'
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  width: int = 64
  kernels: str = 'auto'

  @property
  def strides(self):
    """Total stride of each stage's output (two stages may share one)."""
    return stage_strides(self.output_stride, self.deep_stem)

  @property
  def channels(self):
    expansion = 4 if DEPTHS[self.depth][0] == 'bottleneck' else 1
    w = self.width
    return {'stem': w, 'stage1': w * expansion, 'stage2': 2 * w * expansion,
            'stage3': 4 * w * expansion, 'stage4': 8 * w * expansion}

  @nn.compact
  def __call__(self, images, train=False):
    """Maps [B, H, W, 3] images to {'stem', 'stage1'..'stage4'} features.

    Feature k has shape [B, ceil(H / s_k), ceil(W / s_k), channels[k]] with
    s_k = strides[k]: 'stem' is the stride-2 output of the stem convs (before
    the max-pool that opens stage1).
    """
    if self.depth not in DEPTHS:
      raise ValueError(f'ResNet depth must be one of {sorted(DEPTHS)}, got '
                       f'{self.depth}.')
    dilations = stage_dilations(self.output_stride)
    kind, blocks = DEPTHS[self.depth]
    norm = batch_norm(self, train)
    conv = functools.partial(_conv, dtype=self.dtype,
                             param_dtype=self.param_dtype,
                             kernels=self.kernels,
                             **kernel_init_kwargs(self.init_scheme, 'fan_out'))

    x = images.astype(self.dtype)
    if self.deep_stem:
      w = self.width
      for i, (features, stride) in enumerate(
          ((w // 2, 2), (w // 2, 1), (w, 1))):
        x = conv(features, 3, stride, name=f'stem_conv{i + 1}')(x)
        x = nn.relu(norm(name=f'stem_bn{i + 1}')(x))
    else:
      x = conv(self.width, 7, 2, name='conv1')(x)
      x = nn.relu(norm(name='bn1')(x))
    features = {'stem': x}  # Stride 2, before the max-pool (for U-Nets).
    x = max_pool(x, (3, 3), (2, 2), ((1, 1), (1, 1)), self.kernels)

    expansion = 4 if kind == 'bottleneck' else 1
    in_channels = self.width
    previous_dilation = 1
    for s, ((stride, dilation), num_blocks) in enumerate(
        zip(dilations, blocks)):
      planes = self.width * 2**s
      rates = [dilation] * num_blocks
      if s == 3 and self.multi_grid:
        rates = [dilation * self.multi_grid[i % len(self.multi_grid)]
                 for i in range(num_blocks)]
      for b in range(num_blocks):
        first = b == 0
        x = _Block(
            kind=kind, planes=planes, stride=stride if first else 1,
            dilation=rates[b],
            # torchvision: the first block of a dilated stage keeps the
            # previous stage's dilation (unless multi-grid sets the rate).
            first_dilation=(previous_dilation if first and not (
                s == 3 and self.multi_grid) else rates[b]),
            downsample=first and (stride != 1 or
                                  in_channels != planes * expansion),
            avg_down=self.avg_down, norm=norm, conv=conv,
            zero_init_last=self.init_scheme == 'flax',
            name=f'layer{s + 1}_{b}')(x)
        in_channels = planes * expansion
      previous_dilation = dilation
      features[STAGES[s + 1]] = x
    return features

