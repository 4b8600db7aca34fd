"""`Conv`: flax's nn.Conv, with segjax's formulations where they are faster.

Every segjax model builds its convolutions with `Conv(..., kernels=...)`:
an `nn.Conv` (same parameters, same names, same checkpoints) whose
`conv_general_dilated` hook is `conv_general_dilated` below. That function
computes two kinds of convolution by other formulations of the same
function, and hands everything else to `lax.conv_general_dilated`:

- 1x1 kernels: a strided slice and a `dot_general` over the channels.
  XLA:CPU runs a 1x1 convolution's weight gradient as a convolution whose
  window is the whole feature map; as a matrix product the forward +
  backward of ResNet-50's 1x1 convs ran 1.4-3.4x faster
  (docs/performance.md). ResNet bottlenecks are two-thirds 1x1 convs.
- depthwise kernels (`feature_group_count` = channels): the shifted
  multiply-adds of `segjax.models.depthwise` (XLA:CPU lowers their weight
  gradient as a dense channels x channels convolution).

`kernels` (segjax.kernels) picks the formulation: 'xla' never takes these,
'segjax' always does, and 'auto' decides per platform when the program is
lowered: 1x1 convs as dots on CPUs only, depthwise convs shifted on CPUs
and GPUs, TPUs keep XLA's convolutions (unmeasured there). On an H200 the
shifted depthwise convs made DeepLabV3+ R-50's bfloat16 step 33.6 ms
against 43.6 ms with cuDNN's grouped convs; on an H100 XLA crashed
compiling the ResNet-34 U-Net's step with its 1x1 convs as dots, and
cuDNN's 1x1 convs ran as fast as the dots (docs/performance.md, "Kernel
formulations").
"""

import functools

import flax.linen as nn
from jax import lax

from segjax import kernels as kernels_lib
from segjax.models import depthwise


def _is_nhwc(lhs, rhs, dimension_numbers):
  if lhs.ndim != 4 or rhs.ndim != 4:
    return False
  return lax.conv_dimension_numbers(
      lhs.shape, rhs.shape, dimension_numbers) == lax.conv_dimension_numbers(
          lhs.shape, rhs.shape, ('NHWC', 'HWIO', 'NHWC'))


def _segjax_form(lhs, rhs, window_strides, padding, lhs_dilation,
                 rhs_dilation, dimension_numbers, feature_group_count,
                 batch_group_count, precision, preferred_element_type):
  """(op, function of (lhs, rhs)) for a conv segjax formulates, else None.

  op is the key of `segjax.kernels.AUTO_PLATFORMS` for that formulation.
  """
  if not (_is_nhwc(lhs, rhs, dimension_numbers) and
          batch_group_count == 1 and
          tuple(lhs_dilation or (1, 1)) == (1, 1)):
    return None
  kh, kw, in_per_group, out = rhs.shape
  rate = tuple(rhs_dilation or (1, 1))
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(
        lhs.shape[1:3], ((kh - 1) * rate[0] + 1, (kw - 1) * rate[1] + 1),
        window_strides, padding)
  padding = tuple(tuple(p) for p in padding)
  sh, sw = window_strides
  if (kh, kw) == (1, 1) and feature_group_count == 1 and padding == (
      (0, 0), (0, 0)):
    def one_by_one(lhs, rhs):
      x = lhs[:, ::sh, ::sw, :] if (sh, sw) != (1, 1) else lhs
      return lax.dot_general(x, rhs[0, 0], (((3,), (0,)), ((), ())),
                             precision=precision,
                             preferred_element_type=preferred_element_type)
    return '1x1_conv', one_by_one
  (top, bottom), (left, right) = padding
  if (feature_group_count == lhs.shape[-1] == out and in_per_group == 1 and
      kh == kw and sh == sw and rate[0] == rate[1] and
      top == bottom == left == right and preferred_element_type is None):
    def shifted(lhs, rhs):
      return depthwise.depthwise_conv(lhs, rhs, stride=sh, dilation=rate[0],
                                      padding=top, method='shifted')
    return 'depthwise_conv', shifted
  return None


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None,
                         feature_group_count=1, batch_group_count=1,
                         precision=None, preferred_element_type=None, *,
                         kernels='auto'):
  """`lax.conv_general_dilated`, or segjax's form of it as `kernels` picks.

  Args:
    lhs ... preferred_element_type: as `lax.conv_general_dilated`'s.
    kernels: one of `segjax.kernels.KERNELS` (module docstring).
  """
  kernels_lib.check(kernels)

  def xla_form(lhs, rhs):
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count,
        batch_group_count=batch_group_count, precision=precision,
        preferred_element_type=preferred_element_type)

  form = None if kernels == 'xla' else _segjax_form(
      lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
      dimension_numbers, feature_group_count, batch_group_count, precision,
      preferred_element_type)
  if form is None:
    return xla_form(lhs, rhs)
  op, segjax_form = form
  return kernels_lib.choose(kernels, op, segjax_form, xla_form, lhs, rhs)


# One hook per choice, so that modules built alike compare equal.
_HOOKS = {k: functools.partial(conv_general_dilated, kernels=k)
          for k in kernels_lib.KERNELS}


def Conv(*args, kernels='auto', **kwargs):  # pylint: disable=invalid-name
  """An `nn.Conv` whose convolutions follow `kernels` (module docstring).

  Args:
    *args, **kwargs: nn.Conv's attributes (features, kernel_size, ...).
    kernels: one of `segjax.kernels.KERNELS`.

  Returns:
    The nn.Conv module: same class, parameters and automatic names.
  """
  return nn.Conv(*args, conv_general_dilated=_HOOKS[kernels_lib.check(
      kernels)], **kwargs)
