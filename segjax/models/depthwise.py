"""Depthwise convolution written as shifted multiply-adds.

A depthwise conv (`feature_group_count == channels`) is k*k multiply-adds
per output element, a memory-bound job. XLA:CPU (JAX 0.10, XNNPACK/YNNPACK
fusions) runs it as a dense conv instead: the weight gradient of ASPP's
3x3 depthwise conv over 2048 channels came out as an f32[2048, 3, 3, 2048]
convolution whose diagonal is the answer — 2048x the work. Profiled on the
DeepLabV3+ ResNet-50 train step (batch 8, 256x256, 2-core CPU), three such
ops took 18 of its 19 seconds (docs/performance.md).

`depthwise_conv(..., method='shifted')` computes the same function from k*k
strided slices of the padded input, with a `jax.custom_vjp`:
- forward: sum_t slice_t(x_pad) * w_t, accumulated in float32;
- input gradient (stride 1, 'same' padding): the same shifted sum over the
  output gradient with the kernel flipped; otherwise the autodiff of the
  forward (pads of the products);
- weight gradient, in float32: below 1024 channels all k*k taps in one
  variadic `lax.reduce` over the width, so the output gradient is read
  once per row instead of k*k times (2-5x faster on XLA:CPU than k*k
  separate sums), then the sum over batch and rows; from 1024 channels
  one sum per tap, which was faster there.
Taps whose window lies wholly in the zero padding are skipped (exact): at
ASPP's rate 18 on a 16x16 map only the centre tap reads data.
`method='auto'` decides when the program is lowered (segjax.kernels): the
shifted form on CPUs and GPUs (on an H200 it beat cuDNN's grouped-conv
kernel: models/conv.py), the convolution on TPUs (unmeasured). Tested
against a float64 NumPy loop (tests/test_conv.py).
"""

import functools

import jax
import jax.numpy as jnp

from segjax import kernels as kernels_lib

METHODS = ('auto', 'shifted', 'xla')
# Each method as a `segjax.kernels` choice.
_KERNELS = {'auto': 'auto', 'shifted': 'segjax', 'xla': 'xla'}
# The weight gradient's one variadic reduce over the width beats one sum
# per tap below this many channels and loses above (2-core CPU, batch 8:
# 28 vs 121 ms at 64x64x304, 84 vs 194 at 64x128x256; 90 vs 67 ms at
# 16x16x2048, 326 vs 207 at 32x32x2048).
_VARIADIC_MAX_CHANNELS = 1024


def _out_size(size, k, stride, dilation, pad):
  return (size + 2 * pad - dilation * (k - 1) - 1) // stride + 1


def _live(offset, out_size, stride, pad, size):
  """Whether a tap's window (rows offset .. offset + (out-1)*stride of the
  padded input) touches the data rows pad .. pad + size - 1."""
  return offset + (out_size - 1) * stride >= pad and offset < pad + size


def _taps(x_pad, k, stride, dilation, pad, out_h, out_w):
  """Yields (t, window) for the k*k taps t = i*k + j whose strided window
  of x_pad [B, H+2p, W+2p, C] ([B, out_h, out_w, C]) is not all padding:
  at a large dilation (ASPP's 18 on a 16x16 map) most taps read zeros only,
  and skipping them is exact."""
  b, hp, wp, c = x_pad.shape
  for i in range(k):
    for j in range(k):
      if not (_live(i * dilation, out_h, stride, pad, hp - 2 * pad) and
              _live(j * dilation, out_w, stride, pad, wp - 2 * pad)):
        continue
      start = (0, i * dilation, j * dilation, 0)
      limit = (b, i * dilation + (out_h - 1) * stride + 1,
               j * dilation + (out_w - 1) * stride + 1, c)
      yield i * k + j, jax.lax.slice(x_pad, start, limit, (1, stride, stride,
                                                           1))


def _shifted_forward(x, kernel, stride, dilation, pad):
  k = kernel.shape[0]
  out_h = _out_size(x.shape[1], k, stride, dilation, pad)
  out_w = _out_size(x.shape[2], k, stride, dilation, pad)
  x_pad = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  w = kernel.astype(jnp.float32).reshape(k * k, -1)
  out = jnp.zeros((x.shape[0], out_h, out_w, x.shape[-1]), jnp.float32)
  for t, window in _taps(x_pad, k, stride, dilation, pad, out_h, out_w):
    out = out + window.astype(jnp.float32) * w[t]
  return out.astype(x.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _shifted(x, kernel, stride, dilation, pad):
  return _shifted_forward(x, kernel, stride, dilation, pad)


def _shifted_fwd(x, kernel, stride, dilation, pad):
  return _shifted_forward(x, kernel, stride, dilation, pad), (x, kernel)


def _shifted_bwd(stride, dilation, pad, residuals, g):
  x, kernel = residuals
  k = kernel.shape[0]
  if stride == 1 and 2 * pad == dilation * (k - 1):
    # dx[m] = sum_i g[m + p - i*d] w[i] = the forward over g, kernel flipped.
    dx = _shifted_forward(g, kernel[::-1, ::-1], 1, dilation, pad)
  else:
    _, vjp = jax.vjp(
        lambda x_: _shifted_forward(x_, kernel, stride, dilation, pad), x)
    dx, = vjp(g)
  x_pad = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  g32 = g.astype(jnp.float32)
  live = list(_taps(x_pad, k, stride, dilation, pad, g.shape[1], g.shape[2]))
  products = tuple(window.astype(jnp.float32) * g32 for _, window in live)
  if products and x.shape[-1] < _VARIADIC_MAX_CHANNELS:
    # One pass over the width for all taps, then the (short) rest.
    zeros = tuple(jnp.zeros((), jnp.float32) for _ in products)
    row_sums = jax.lax.reduce(
        products, zeros, lambda a, b: tuple(u + v for u, v in zip(a, b)),
        (2,))
    sums = [s.sum((0, 1)) for s in row_sums]
  else:
    sums = [p.sum((0, 1, 2)) for p in products]
  dw = jnp.zeros((k * k, kernel.shape[-1]), jnp.float32)
  if live:  # Taps that read padding only have a zero gradient.
    dw = dw.at[jnp.array([t for t, _ in live])].set(jnp.stack(sums))
  return dx.astype(x.dtype), dw.reshape(kernel.shape).astype(kernel.dtype)


_shifted.defvjp(_shifted_fwd, _shifted_bwd)


def depthwise_conv(x, kernel, *, stride=1, dilation=1, padding=None,
                   method='auto'):
  """Depthwise 2-D convolution, NHWC.

  Args:
    x: [B, H, W, C] float.
    kernel: [k, k, 1, C] float (nn.Conv's layout for feature_group_count=C).
    stride, dilation: ints, the same along both spatial axes.
    padding: int p, zeros on each side of H and W; None: dilation*(k-1)//2
      ('same' for odd k at stride 1).
    method: 'shifted' (k*k slices, module docstring), 'xla'
      (lax.conv_general_dilated with feature_group_count) or 'auto'
      (per platform at lowering: xla on TPUs, shifted elsewhere).

  Returns:
    [B, (H + 2p - dilation*(k-1) - 1) // stride + 1, (same for W), C] in
    x's dtype.
  """
  k = kernel.shape[0]
  if kernel.shape != (k, k, 1, x.shape[-1]):
    raise ValueError(f'depthwise kernel shape {kernel.shape}: expected '
                     f'({k}, {k}, 1, {x.shape[-1]}) for input {x.shape}')
  if method not in METHODS:
    raise ValueError(f'depthwise method {method!r}: one of {METHODS}')
  pad = dilation * (k - 1) // 2 if padding is None else padding

  def xla_form(x, kernel):
    return jax.lax.conv_general_dilated(
        x, kernel, (stride, stride), ((pad, pad), (pad, pad)),
        rhs_dilation=(dilation, dilation),
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
        feature_group_count=x.shape[-1])

  def shifted_form(x, kernel):
    return _shifted(x, kernel, stride, dilation, pad)

  return kernels_lib.choose(_KERNELS[method], 'depthwise_conv', shifted_form,
                            xla_form, x, kernel)
