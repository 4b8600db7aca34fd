"""A U-Net decoder's first conv: 3x3 over [upsampled x, skip], sub-pixel.

`UpConcatConvBNReLU` computes

  relu(bn(conv3x3(concat([upsample_nearest(x, size), skip]))))

with the parameters of `layers.ConvBNReLU` (a 'conv' with one
[3, 3, C_x + C_skip, features] 'kernel', a 'bn'), so checkpoints and
pretrained-weight loaders see no difference. Where `size` is exactly twice
x's size, the conv is split along its input channels: the skip's part stays
a 3x3 conv at full resolution, and the upsampled part runs at x's
resolution as four 2x2 convs, one per output phase ("sub-pixel"). Along
one axis, with taps w0, w1, w2 and y[i] = x[i // 2]:

  out[2a]     = w0 x[a - 1] + (w1 + w2) x[a]
  out[2a + 1] = (w0 + w1) x[a] + w2 x[a + 1]

(zero padding on both sides), so each phase is a 2x2 conv of x with summed
taps: 16 instead of 36 multiply-adds per (input channel, output channel)
for every 2x2 block of outputs, with no upsampled tensor stored or
concatenated. The result is the same function up to float rounding. Other
sizes (e.g. 6x8 -> 11x15) upsample, concatenate and convolve as written.

Why: on the ResNet-18 U-Net's CPU step (batch 8, 176x240) the decoder's
first convs, their input gradients and weight gradients over the
concatenated maps were the largest ops of the profile (decoder3's weight
gradient, 128 -> 32 channels at 88x120, the largest of all); see
docs/performance.md for the step before and after.

`kernels` (segjax.kernels) picks the sub-pixel form ('segjax') or the conv
as written ('xla'); 'auto' takes the sub-pixel form on CPUs only, where it
was timed, and the conv as written elsewhere.
"""

from typing import Any, Optional, Tuple

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from jax import lax

from segjax import kernels as kernels_lib
from segjax.models.layers import upsample_nearest

_DIMENSIONS = ('NHWC', 'HWIO', 'NHWC')
# Rows of these map a 3-tap kernel onto the 2 taps of the even / odd
# output phase; PADDING is that phase's (before, after) padding of x.
_PHASE_TAPS = (np.array([[1, 0, 0], [0, 1, 1]], np.float32),
               np.array([[1, 1, 0], [0, 0, 1]], np.float32))
_PHASE_PADDING = ((1, 0), (0, 1))


def _conv(x, kernel, padding):
  return lax.conv_general_dilated(x, kernel, (1, 1), padding,
                                  dimension_numbers=_DIMENSIONS)


def _as_written(x, skip, kernel, size):
  """Upsample, concatenate, one 3x3 conv."""
  up = upsample_nearest(x, size)
  if skip is not None:
    up = jnp.concatenate([up, skip], axis=-1)
  return _conv(up, kernel, ((1, 1), (1, 1)))


def _sub_pixel(x, skip, kernel):
  """The same at size = 2x x's: four 2x2 convs of x (module docstring)."""
  b, h, w, cx = x.shape
  rows = []
  for pr in range(2):
    cols = []
    for pc in range(2):
      taps = jnp.einsum('ar,bc,rcio->abio', _PHASE_TAPS[pr], _PHASE_TAPS[pc],
                        kernel[:, :, :cx]).astype(kernel.dtype)
      cols.append(_conv(x, taps, (_PHASE_PADDING[pr], _PHASE_PADDING[pc])))
    rows.append(jnp.stack(cols, axis=3))  # [B, h, w, 2 (column phase), F]
  # [B, h, 2 (row phase), w, 2, F] -> output row 2a + pr, column 2c + pc.
  out = jnp.stack(rows, axis=2).reshape(b, 2 * h, 2 * w, kernel.shape[-1])
  if skip is not None:
    out = out + _conv(skip, kernel[:, :, cx:], ((1, 1), (1, 1)))
  return out


def upsample_concat_conv(x: jnp.ndarray, skip: Optional[jnp.ndarray],
                         kernel: jnp.ndarray, size: Tuple[int, int],
                         kernels: str = 'auto') -> jnp.ndarray:
  """3x3 'same' conv of [upsample_nearest(x, size), skip], no bias.

  Args:
    x: [B, h, w, Cx] features to upsample.
    skip: [B, H, W, Cs] with (H, W) = size, or None.
    kernel: [3, 3, Cx + Cs, F], x's input channels first; x.dtype.
    size: (H, W), each >= x's.
    kernels: one of `segjax.kernels.KERNELS`: the sub-pixel form at
      exactly 2x ('segjax'), the conv as written ('xla'), or per platform
      ('auto'). Other sizes always take the conv as written.

  Returns:
    [B, H, W, F], x.dtype.
  """
  kernels_lib.check(kernels)
  size = tuple(size)
  if size != (2 * x.shape[1], 2 * x.shape[2]):
    return _as_written(x, skip, kernel, size)
  return kernels_lib.choose(
      kernels, 'upconv', _sub_pixel,
      lambda x, skip, kernel: _as_written(x, skip, kernel, size),
      x, skip, kernel)


class _UpConcatConv(nn.Module):
  """The 'conv' of `UpConcatConvBNReLU`: nn.Conv's kernel, no bias."""
  features: int
  kernel_init: Any = nn.initializers.lecun_normal()  # nn.Conv's default.
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  kernels: str = 'auto'

  @nn.compact
  def __call__(self, x, skip, size):
    channels = x.shape[-1] + (0 if skip is None else skip.shape[-1])
    kernel = self.param('kernel', self.kernel_init,
                        (3, 3, channels, self.features), self.param_dtype)
    x = jnp.asarray(x, self.dtype)
    skip = None if skip is None else jnp.asarray(skip, self.dtype)
    return upsample_concat_conv(x, skip, jnp.asarray(kernel, self.dtype),
                                size, self.kernels)


class UpConcatConvBNReLU(nn.Module):
  """conv3x3-BN-ReLU of [upsample_nearest(x, size), skip]: module docstring.

  Attributes as `layers.ConvBNReLU`'s (3x3, not separable): `features`,
  `norm` (a BatchNorm partial), `kernel_init` (None: Flax's LeCun normal),
  `dtype`, `param_dtype`, `kernels` (segjax.kernels). Call with x
  [B, h, w, Cx], skip [B, H, W, Cs] or None, and size (H, W); returns
  [B, H, W, features].
  """
  features: int
  norm: Any = None
  kernel_init: Any = None
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  kernels: str = 'auto'

  @nn.compact
  def __call__(self, x, skip, size):
    init = {} if self.kernel_init is None else {
        'kernel_init': self.kernel_init}
    x = _UpConcatConv(self.features, dtype=self.dtype,
                      param_dtype=self.param_dtype, kernels=self.kernels,
                      name='conv', **init)(x, skip, size)
    return nn.relu(self.norm(name='bn')(x))
