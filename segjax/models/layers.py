"""Small building blocks shared by the segmentation heads."""

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from segjax.models.conv import Conv


def batch_norm(module, train):
  """nn.BatchNorm with `module`'s momentum, epsilon and dtypes."""
  return functools.partial(
      nn.BatchNorm, use_running_average=not train, momentum=module.bn_momentum,
      epsilon=module.bn_epsilon, dtype=module.dtype,
      param_dtype=module.param_dtype)


class ConvBNReLU(nn.Module):
  """k x k conv (optionally depthwise-separable and dilated), BN, ReLU."""
  features: int
  kernel: int = 1
  dilation: int = 1
  separable: bool = False
  norm: Any = None
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    def conv(*args, **kwargs):
      return Conv(*args, use_bias=False, dtype=self.dtype,
                     param_dtype=self.param_dtype, **kwargs)
    pad = self.dilation * (self.kernel - 1) // 2
    padding = ((pad, pad), (pad, pad))
    if self.separable and self.kernel > 1:
      x = conv(x.shape[-1], (self.kernel, self.kernel), padding=padding,
               kernel_dilation=self.dilation,
               feature_group_count=x.shape[-1], name='depthwise')(x)
      x = conv(self.features, (1, 1), name='pointwise')(x)
    else:
      x = conv(self.features, (self.kernel, self.kernel), padding=padding,
               kernel_dilation=self.dilation, name='conv')(x)
    return nn.relu(self.norm(name='bn')(x))
