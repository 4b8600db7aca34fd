"""Max pooling whose gradient is elementwise (no select-and-scatter).

`max_pool` equals `flax.linen.max_pool` (same values; same gradient,
ties included: the first maximum of each window in row-major order takes
it, as XLA's select-and-scatter and PyTorch's `max_pool2d` do). Why it
exists: XLA:CPU runs the gradient of `lax.reduce_window` as a
`select_and_scatter` (and its index bookkeeping) that does not fuse or
thread well. Here the forward is the elementwise maximum of the k*k
strided slices of the padded input, and the backward walks the same taps:
tap t takes the output gradient where it holds the window's maximum and
no earlier tap did, and strided interior padding (`lax.pad`) puts that
gradient back on the input grid: elementwise ops that XLA fuses.
On the ResNet-18 U-Net's train step (batch 8, 176x240, 2 CPU cores) the
stem's max-pool and its gradient were 6.6% of op time
(`python -m segjax.bench profile --model resnet_unet --backbone resnet18
--height 176 --width 240 --classes 11`); docs/performance.md has the
step before and after.

`max_pool(..., kernels=...)` (segjax.kernels) picks it ('segjax') or XLA's
`reduce_window`, whose gradient is a select-and-scatter ('xla'); 'auto'
takes this form on CPUs only, where it was timed, and XLA's elsewhere.
"""

import functools
from typing import Sequence, Tuple

import jax
import jax.numpy as jnp
from jax import lax

from segjax import kernels as kernels_lib


def _taps(x, window, strides, padding):
  """Padded x and its k*k strided slices [B, oh, ow, C], row-major."""
  (kh, kw), (sh, sw) = window, strides
  neg = jnp.array(-jnp.inf, x.dtype)
  xp = lax.pad(x, neg, ((0, 0, 0), (*padding[0], 0), (*padding[1], 0),
                        (0, 0, 0)))
  oh = (xp.shape[1] - kh) // sh + 1
  ow = (xp.shape[2] - kw) // sw + 1
  taps = []
  for i in range(kh):
    for j in range(kw):
      taps.append(lax.slice(
          xp, (0, i, j, 0),
          (xp.shape[0], i + sh * (oh - 1) + 1, j + sw * (ow - 1) + 1,
           xp.shape[3]), (1, sh, sw, 1)))
  return xp, taps


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _max_pool(x, window, strides, padding):
  _, taps = _taps(x, window, strides, padding)
  return functools.reduce(jnp.maximum, taps)


def _max_pool_fwd(x, window, strides, padding):
  out = _max_pool(x, window, strides, padding)
  return out, (x, out)


def _max_pool_bwd(window, strides, padding, residuals, g):
  x, out = residuals
  (kh, kw), (sh, sw) = window, strides
  xp, taps = _taps(x, window, strides, padding)
  oh, ow = out.shape[1:3]
  zero = jnp.zeros((), g.dtype)
  taken = jnp.zeros(out.shape, bool)
  grad = jnp.zeros(xp.shape, g.dtype)
  for t, tap in enumerate(taps):
    i, j = divmod(t, kw)
    first = (tap == out) & ~taken
    taken = taken | first
    # Output (a, b) of tap (i, j) read padded input (i + sh*a, j + sw*b).
    grad = grad + lax.pad(
        jnp.where(first, g, zero), zero,
        ((0, 0, 0), (i, xp.shape[1] - i - sh * (oh - 1) - 1, sh - 1),
         (j, xp.shape[2] - j - sw * (ow - 1) - 1, sw - 1), (0, 0, 0)))
  (top, _), (left, _) = padding
  return (grad[:, top:top + x.shape[1], left:left + x.shape[2]],)


_max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


def _reduce_window(x, window, strides, padding):
  """XLA's max-pool (flax.linen.max_pool's): gradient select-and-scatter."""
  return lax.reduce_window(
      x, -jnp.inf, lax.max, (1, *window, 1),
      (1, *strides, 1), ((0, 0), *padding, (0, 0)))


def max_pool(x: jax.Array, window: Tuple[int, int],
             strides: Tuple[int, int],
             padding: Sequence[Tuple[int, int]],
             kernels: str = 'auto') -> jax.Array:
  """Max pooling of [B, H, W, C] (float) with -inf padding.

  Args:
    x: [B, H, W, C] floating-point features.
    window: (kh, kw) window.
    strides: (sh, sw).
    padding: ((top, bottom), (left, right)), non-negative.
    kernels: one of `segjax.kernels.KERNELS`: this module's form
      ('segjax'), XLA's `reduce_window` ('xla') or per platform ('auto').

  Returns:
    [B, (H + top + bottom - kh) // sh + 1, (W + ...) // sw + 1, C], x.dtype.
    Differentiable in reverse mode (grad / vjp) only, unless
    kernels='xla': this module's form is a `jax.custom_vjp`.
  """
  if x.ndim != 4 or not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f'max_pool takes [B, H, W, C] floats, got {x.dtype}'
                     f'{list(x.shape)}.')
  padding = tuple(tuple(int(p) for p in pair) for pair in padding)
  if any(p < 0 for pair in padding for p in pair):
    raise ValueError(f'max_pool padding must be >= 0, got {padding}.')
  for size, (lo, hi), k in zip(x.shape[1:3], padding, window):
    if size + lo + hi < k:
      raise ValueError(f'max_pool: {list(x.shape)} padded by {padding} is '
                       f'smaller than the {tuple(window)} window.')
  window, strides = tuple(window), tuple(strides)
  return kernels_lib.choose(
      kernels, 'max_pool', lambda x: _max_pool(x, window, strides, padding),
      lambda x: _reduce_window(x, window, strides, padding), x)
