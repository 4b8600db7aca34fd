"""`Conv`: flax's nn.Conv with convolutions XLA:CPU runs fast.

Every segjax model builds its convolutions with `Conv`, which is `nn.Conv`
(same parameters, same names, same checkpoints) with its
`conv_general_dilated` hook set to `conv_general_dilated` below. That
function routes two kinds of convolution to other formulations of the same
function, and hands everything else to `lax.conv_general_dilated`:

- 1x1 kernels: a strided slice and a `dot_general` over the channels. XLA:CPU
  runs a 1x1 convolution's weight gradient as a convolution whose window is
  the whole feature map, behind transposes of both operands; as a matrix
  product the forward + backward of ResNet-50's 1x1 convs ran 1.4-3.4x
  faster (docs/performance.md). ResNet bottlenecks are two-thirds 1x1 convs.
- depthwise kernels (`feature_group_count` = channels): the shifted
  multiply-adds of `segjax.models.depthwise` (XLA:CPU lowers their weight
  gradient as a dense channels x channels convolution).

`IMPL` picks where the routing applies: 'auto' (the default), 'segjax'
(both kinds on every backend) or 'xla' (never). 'auto' routes depthwise
convs on CPUs and GPUs and 1x1 convs on CPUs only; TPUs keep XLA's
convolutions (unmeasured there). On an H200 (bfloat16, DeepLabV3+ R-50,
batch 8 at 512x1024) the routed step ran in 33.6 ms against 43.6 ms with
cuDNN's convolutions, whose grouped depthwise kernel alone took 8.9 ms of
the 37.7 ms of kernels (docs/performance.md; 1x1 convs were routed too
then). 1x1 convs stay convolutions on GPUs: on an H100 (JAX 0.11.2) XLA
crashed compiling the ResNet-34 U-Net's step with its 1x1 convs (the
strided shortcuts) as dots ("Check failed: subdim_size_accumulator ==
dim_size" in its Triton GEMM fusion), and with cuDNN's 1x1 convs that step
ran as fast as the dots did with Triton GEMMs switched off (18.0 vs
17.8 ms, bfloat16, batch 16 at 352x480). `IMPL` is read when a function is
traced; `python -m segjax.bench train_step --conv ...` sets it, to measure
one against the other.
"""

import functools

import flax.linen as nn
import jax
from jax import lax

from segjax.models import depthwise

IMPLS = ('auto', 'segjax', 'xla')
IMPL = 'auto'


def set_impl(impl):
  """Sets `IMPL` (see the module docstring); returns the previous value."""
  global IMPL
  if impl not in IMPLS:
    raise ValueError(f'conv impl {impl!r}: one of {IMPLS}')
  previous, IMPL = IMPL, impl
  return previous


# The backends where 'auto' routes each kind (module docstring: why 1x1
# convs are not routed on GPUs).
_AUTO_BACKENDS = {'1x1': ('cpu',),
                  'depthwise': ('cpu', 'gpu', 'cuda', 'rocm')}


def _routing_on(kind):
  if IMPL == 'auto':
    return jax.default_backend() in _AUTO_BACKENDS[kind]
  return IMPL == 'segjax'


def _is_nhwc(lhs, rhs, dimension_numbers):
  if lhs.ndim != 4 or rhs.ndim != 4:
    return False
  return lax.conv_dimension_numbers(
      lhs.shape, rhs.shape, dimension_numbers) == lax.conv_dimension_numbers(
          lhs.shape, rhs.shape, ('NHWC', 'HWIO', 'NHWC'))


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None,
                         feature_group_count=1, batch_group_count=1,
                         precision=None, preferred_element_type=None):
  """`lax.conv_general_dilated`, with the routing of the module docstring."""
  plain = functools.partial(
      lax.conv_general_dilated, lhs, rhs, window_strides, padding,
      lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
      dimension_numbers=dimension_numbers,
      feature_group_count=feature_group_count,
      batch_group_count=batch_group_count, precision=precision,
      preferred_element_type=preferred_element_type)
  if not ((_routing_on('1x1') or _routing_on('depthwise')) and
          _is_nhwc(lhs, rhs, dimension_numbers) and
          batch_group_count == 1 and
          tuple(lhs_dilation or (1, 1)) == (1, 1)):
    return plain()
  kh, kw, in_per_group, out = rhs.shape
  rate = tuple(rhs_dilation or (1, 1))
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(
        lhs.shape[1:3], ((kh - 1) * rate[0] + 1, (kw - 1) * rate[1] + 1),
        window_strides, padding)
  padding = tuple(tuple(p) for p in padding)
  sh, sw = window_strides
  if (kh, kw) == (1, 1) and feature_group_count == 1 and padding == (
      (0, 0), (0, 0)) and _routing_on('1x1'):
    x = lhs[:, ::sh, ::sw, :] if (sh, sw) != (1, 1) else lhs
    return lax.dot_general(x, rhs[0, 0], (((3,), (0,)), ((), ())),
                           precision=precision,
                           preferred_element_type=preferred_element_type)
  (top, bottom), (left, right) = padding
  if (_routing_on('depthwise') and
      feature_group_count == lhs.shape[-1] == out and in_per_group == 1 and
      kh == kw and sh == sw and rate[0] == rate[1] and
      top == bottom == left == right and preferred_element_type is None):
    return depthwise.depthwise_conv(lhs, rhs, stride=sh, dilation=rate[0],
                                    padding=top, method='shifted')
  return plain()


Conv = functools.partial(nn.Conv, conv_general_dilated=conv_general_dilated)
