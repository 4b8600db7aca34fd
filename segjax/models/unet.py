"""U-Net (Ronneberger et al. 2015) as a pure Flax Linen module.

Differences from the paper, all standard in modern re-implementations:
'same' padding by default (output size = input size, no cropping of skips;
`padding='valid'` gives the paper's unpadded convs and centre crop), batch norm
after every convolution, and bilinear upsampling followed by a 3x3 conv in
place of the 2x2 up-convolution when `upsample='bilinear'` (fewer
checkerboard artefacts); `upsample='transpose'` keeps the paper's choice.

`stem_stride=2` runs the whole U-Net body at half resolution behind a
strided 3x3 conv and upsamples the logits bilinearly to the input size: the
U-Net's analogue of DeepLab's output stride, about 1.8x faster on a CPU at a
small cost in boundary detail.

Batch statistics live in the `batch_stats` collection: call
`model.apply({'params': p, 'batch_stats': s}, x, train=True,
mutable=['batch_stats'])` in training and `train=False` in evaluation.
"""

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from segjax.models.conv import Conv
from segjax.models.pooling import max_pool


class ConvBlock(nn.Module):
  """Two (3x3 conv -> batch norm -> ReLU) layers."""
  features: int
  padding: str = 'SAME'
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  kernels: str = 'auto'

  @nn.compact
  def __call__(self, x, train):
    for _ in range(2):
      x = Conv(self.features, (3, 3), padding=self.padding, use_bias=False,
               dtype=self.dtype, param_dtype=self.param_dtype,
               kernels=self.kernels)(x)
      x = nn.BatchNorm(use_running_average=not train,
                       momentum=self.bn_momentum, epsilon=self.bn_epsilon,
                       dtype=self.dtype, param_dtype=self.param_dtype)(x)
      x = nn.relu(x)
    return x


class UNet(nn.Module):
  """U-Net for semantic segmentation.

  Attributes:
    num_classes: number of output channels (logits).
    features: channel widths of the encoder levels, shallow to deep; the last
      entry is the bottleneck (the paper: (64, 128, 256, 512, 1024)). Any
      input size works with 'same' padding: sizes that are not multiples of
      2 ** (len(features) - 1) * stem_stride are zero-padded at the bottom
      and right, and the logits cropped back.
    upsample: 'bilinear' (resize + 3x3 conv) or 'transpose' (2x2 transposed
      convolution, stride 2, as in the paper).
    stem_stride: 1 (the paper) or 2: the body runs at 1/stem_stride of the
      input resolution (see the module docstring).
    padding: 'same' (output size = input size) or 'valid' (the paper:
      unpadded convs, skips centre-cropped; the logits cover the centre crop
      of size `output_size(input_size)`, e.g. 388 for 572 with 5 levels).
    dtype: computation dtype (e.g. jnp.bfloat16 for mixed precision); logits
      are returned in float32 whatever it is.
    param_dtype: parameter dtype.
    kernels: 'auto', 'segjax' or 'xla': XLA's ops or segjax's formulations
      of the convs and max-pools (segjax.kernels).
  """
  num_classes: int
  features: Sequence[int] = (32, 64, 128, 256, 512)
  upsample: str = 'bilinear'
  stem_stride: int = 1
  padding: str = 'same'
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  kernels: str = 'auto'

  def output_size(self, input_size):
    """Side of the logits for an input side (== input_size with 'same').

    Raises:
      ValueError if a 'valid' U-Net cannot take this size (a level whose
      size is odd before pooling, or nothing left).
    """
    if self.padding == 'same':
      return input_size
    size = input_size
    for level in range(len(self.features) - 1):
      size -= 4  # Two unpadded 3x3 convs.
      if size <= 0 or size % 2:
        raise ValueError(
            f'valid U-Net: input size {input_size} gives an odd or empty map '
            f'({size}) before pooling at level {level + 1}; pick a size that '
            'stays even down the encoder, e.g. the paper\'s 572.')
      size //= 2
    size -= 4
    for _ in range(len(self.features) - 1):
      size = 2 * size - 4
    if size <= 0:
      raise ValueError(f'valid U-Net: input size {input_size} is too small.')
    return size

  @nn.compact
  def __call__(self, images, train=False):
    """Maps images to per-pixel class logits.

    Args:
      images: [B, H, W, 3] float, normalised.
      train: batch norm uses batch statistics (and updates `batch_stats`).

    Returns:
      [B, H, W, num_classes] float32 logits.
    """
    if self.stem_stride not in (1, 2):
      raise ValueError(f'stem_stride must be 1 or 2, got {self.stem_stride}.')
    if self.padding not in ('same', 'valid'):
      raise ValueError(f"padding must be 'same' or 'valid', got "
                       f'{self.padding!r}.')
    valid = self.padding == 'valid'
    if valid and self.stem_stride != 1:
      raise ValueError("padding='valid' is the paper's U-Net: use "
                       'stem_stride=1.')
    multiple = 2**(len(self.features) - 1) * self.stem_stride
    b, h, w, _ = images.shape
    if valid:
      self.output_size(h), self.output_size(w)  # pylint: disable=expression-not-assigned
    # 'same': a size the pooling cannot halve is zero-padded at the bottom
    # and right up to the next multiple; the logits are cropped back.
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    if not valid and (pad_h or pad_w):
      images = jnp.pad(images, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
    block = functools.partial(ConvBlock, padding='VALID' if valid else 'SAME',
                              dtype=self.dtype, param_dtype=self.param_dtype,
                              bn_momentum=self.bn_momentum,
                              bn_epsilon=self.bn_epsilon,
                              kernels=self.kernels)
    conv = functools.partial(Conv, dtype=self.dtype,
                             param_dtype=self.param_dtype,
                             kernels=self.kernels)

    x = images.astype(self.dtype)
    if self.stem_stride > 1:
      x = conv(self.features[0], (3, 3), strides=self.stem_stride,
               use_bias=False)(x)
      x = nn.BatchNorm(use_running_average=not train,
                       momentum=self.bn_momentum, epsilon=self.bn_epsilon,
                       dtype=self.dtype, param_dtype=self.param_dtype)(x)
      x = nn.relu(x)
    skips = []
    for width in self.features[:-1]:
      x = block(width)(x, train)
      skips.append(x)
      x = max_pool(x, (2, 2), (2, 2), ((0, 0), (0, 0)), self.kernels)
    x = block(self.features[-1])(x, train)

    for width, skip in zip(reversed(self.features[:-1]), reversed(skips)):
      if self.upsample == 'transpose':
        x = nn.ConvTranspose(width, (2, 2), strides=(2, 2), dtype=self.dtype,
                             param_dtype=self.param_dtype)(x)
      elif self.upsample == 'bilinear':
        b, hh, ww, c = x.shape
        x = jax.image.resize(x, (b, 2 * hh, 2 * ww, c), 'bilinear')
        x = conv(width, (3, 3))(x)
      else:
        raise ValueError(f"upsample must be 'bilinear' or 'transpose', "
                         f'got {self.upsample!r}.')
      if valid:  # Centre-crop the skip to the decoder's (smaller) map.
        dy = (skip.shape[1] - x.shape[1]) // 2
        dx = (skip.shape[2] - x.shape[2]) // 2
        skip = skip[:, dy:dy + x.shape[1], dx:dx + x.shape[2]]
      x = jnp.concatenate([skip, x.astype(skip.dtype)], axis=-1)
      x = block(width)(x, train)

    logits = conv(self.num_classes, (1, 1))(x).astype(jnp.float32)
    if self.stem_stride > 1:
      logits = jax.image.resize(
          logits, (b, h + pad_h, w + pad_w, self.num_classes), 'bilinear')
    if not valid:
      logits = logits[:, :h, :w]
    return logits
