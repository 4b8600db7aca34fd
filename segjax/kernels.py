"""Kernel formulations: XLA's own ops or segjax's, chosen per platform.

Some ops have two formulations of the same function: XLA's own op (a
convolution, a `reduce_window` max-pool, ...) and a segjax rewrite that
was measured faster on some platforms (docs/performance.md, "Kernel
formulations"). A model's `kernels` attribute picks between them:

  'auto'    segjax's formulation on the platforms of `AUTO_PLATFORMS`,
            XLA's everywhere else (TPUs: XLA's everywhere).
  'segjax'  segjax's formulations on every platform.
  'xla'     XLA's own ops on every platform.

'auto' does not ask which machine traces the function: `choose` stages
both formulations with `jax.lax.platform_dependent`, and the platform is
decided when the program is lowered. A `jax.export` made on a CPU with
`platforms=('tpu',)` holds the TPU's formulation only; a lowering for
several platforms holds each one's, behind a conditional on the platform
that XLA resolves before compiling.

The metrics' 'auto' methods choose between their two formulations through
`choose` too ('confusion_matrix', 'panoptic_images' below).
"""

import jax

KERNELS = ('auto', 'segjax', 'xla')

# Where 'auto' takes segjax's formulation of each op; XLA's (the other
# one, for the metrics) elsewhere. GPUs are 'cuda' and 'rocm'.
AUTO_PLATFORMS = {
    # models/conv.py: a 1x1 conv as a strided slice and a dot_general.
    # XLA:CPU ran the weight gradient as a whole-map convolution; on GPUs
    # XLA's Triton GEMM fusion crashed compiling the dots.
    '1x1_conv': ('cpu',),
    # models/depthwise.py: shifted multiply-adds with a custom VJP. Faster
    # on CPUs (dense C x C weight gradients) and on an H200 (cuDNN's grouped
    # conv).
    'depthwise_conv': ('cpu', 'cuda', 'rocm'),
    # models/pooling.py: max-pool with an elementwise gradient instead of
    # select-and-scatter. Timed on CPUs only.
    'max_pool': ('cpu',),
    # models/upconv.py: upsample + 3x3 conv as four 2x2 sub-pixel convs.
    # Timed on CPUs only.
    'upconv': ('cpu',),
    # metrics/confusion.py: bincounts ('pairs' / 'scatter'); the other
    # formulation is a one-hot matrix product (TPUs' MXU, scatter-adds
    # slow there).
    'confusion_matrix': ('cpu', 'cuda', 'rocm'),
    # metrics/panoptic.py: images one after another (`lax.map`); the
    # other formulation vmaps them.
    'panoptic_images': ('cpu',),
}

_GPU_AND_CPU = ('cpu', 'cuda', 'rocm')


def check(kernels):
  """Returns `kernels` if it is one of KERNELS; else raises ValueError."""
  if kernels not in KERNELS:
    raise ValueError(f'kernels={kernels!r}: one of {KERNELS}.')
  return kernels


def choose(kernels, op, segjax_form, xla_form, *args):
  """`segjax_form(*args)` or `xla_form(*args)`, as `kernels` picks.

  Args:
    kernels: one of KERNELS (module docstring).
    op: a key of AUTO_PLATFORMS: where 'auto' takes `segjax_form`.
    segjax_form, xla_form: functions of `args` computing the same value
      (same output structure, shapes and dtypes).
    *args: arrays, or pytrees of arrays, passed to the chosen function.

  Returns:
    The chosen function's value. For 'auto' both functions are traced and
    `jax.lax.platform_dependent` keeps one per platform at lowering.

  Raises:
    ValueError naming a bad `kernels`; KeyError for an unknown `op`.
  """
  check(kernels)
  platforms = AUTO_PLATFORMS[op]
  if kernels == 'segjax':
    return segjax_form(*args)
  if kernels == 'xla':
    return xla_form(*args)
  assert set(platforms) <= set(_GPU_AND_CPU), platforms
  return jax.lax.platform_dependent(
      *args, default=xla_form, **{p: segjax_form for p in platforms})
