"""segjax.kernels: formulations chosen per platform when a program is lowered.

Lowerings for TPUs and GPUs are made on this CPU machine with `jax.export`:
they must hold XLA's ops (one convolution per conv kernel, XLA's max-pool),
not the CPU formulations (1x1 convs as dots, the max-pool as strided
slices, the sub-pixel decoder convs). The default models only: a model with
depthwise convs (separable=True) keeps segjax's depthwise form on GPUs,
where it was measured faster (tests/test_conv.py checks that routing).
"""

import collections
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from segjax import kernels
from segjax import models


def _ops(text):
  """Counter of the StableHLO ops in a module's text."""
  return collections.Counter(re.findall(r'stablehlo\.(\w+)', text))


def _export(fn, platform, *args):
  return jax.export.export(jax.jit(fn), platforms=(platform,))(*args)


def test_check_names_a_bad_value():
  assert kernels.check('xla') == 'xla'
  with pytest.raises(ValueError, match=r"kernels='fast'.*'auto'"):
    kernels.check('fast')
  model = models.build('unet', num_classes=3, features=(4, 8),
                       kernels='fast')
  with pytest.raises(ValueError, match="kernels='fast'"):
    jax.eval_shape(model.init, jax.random.PRNGKey(0),
                   jnp.zeros((1, 8, 8, 3)))


@pytest.mark.parametrize('op', sorted(kernels.AUTO_PLATFORMS))
@pytest.mark.parametrize('choice', kernels.KERNELS)
def test_choose_keeps_the_lowered_platforms_formulation(op, choice):
  f = lambda x: kernels.choose(choice, op, jnp.sin, jnp.cos, x)
  x = jax.ShapeDtypeStruct((3,), jnp.float32)
  for platform in ('cpu', 'cuda', 'rocm', 'tpu'):
    ops = _ops(_export(f, platform, x).mlir_module())
    segjax_form = {'auto': platform in kernels.AUTO_PLATFORMS[op],
                   'segjax': True, 'xla': False}[choice]
    assert (ops['sine'], ops['cosine']) == (
        (1, 0) if segjax_form else (0, 1)), platform


def test_auto_platforms_table():
  """TPUs get XLA's ops everywhere; GPUs segjax's depthwise convs only."""
  for op, platforms in kernels.AUTO_PLATFORMS.items():
    assert 'tpu' not in platforms and 'cpu' in platforms, op
  gpu = {op for op, platforms in kernels.AUTO_PLATFORMS.items()
         if 'cuda' in platforms}
  assert gpu == {'depthwise_conv', 'confusion_matrix'}


MODELS = [  # Default layouts (no depthwise convs), small input.
    ('resnet_unet', {'backbone': 'resnet18'}),
    ('deeplabv3plus', {'backbone': 'resnet18'}),
]


@pytest.mark.parametrize('name,kwargs', MODELS)
def test_accelerator_exports_hold_xla_ops_and_cpu_export_runs(name,
                                                               kwargs):
  x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 64, 64, 3)),
                  jnp.float32)

  def forward(choice):
    model = models.build(name, num_classes=3, kernels=choice, **kwargs)
    return lambda variables, x: model.apply(variables, x, train=False)

  model = models.build(name, num_classes=3, **kwargs)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
  conv_kernels = sum(
      1 for path, leaf in jax.tree_util.tree_flatten_with_path(
          shapes['params'])[0]
      if path[-1].key == 'kernel' and leaf.ndim == 4)
  # XLA's ops everywhere: the reference for the ops the CPU forms change.
  xla = _ops(_export(forward('xla'), 'tpu', shapes, x).mlir_module())
  assert xla['convolution'] == conv_kernels
  assert xla['reduce_window'] == 1  # The ResNet stem's max-pool.
  changed = ('convolution', 'dot_general', 'reduce_window', 'slice', 'pad')
  for platform in ('tpu', 'cuda'):
    ops = _ops(_export(forward('auto'), platform, shapes, x).mlir_module())
    # One convolution per kernel: no sub-pixel decoder convs, no 1x1 conv
    # as a dot, XLA's max-pool (not the maximum of strided slices).
    assert ops['convolution'] == conv_kernels, platform
    assert {k: ops[k] for k in changed} == {k: xla[k] for k in changed}, (
        platform)
  # The CPU lowering holds the CPU forms (1x1 convs as dots, the max-pool
  # as slices, resnet_unet's sub-pixel convs); run, it gives model.apply's
  # values. Random variables: model.init compiles slowly.
  exported = _export(forward('auto'), 'cpu', shapes, x)
  ops = _ops(exported.mlir_module())
  assert ops['dot_general'] > xla['dot_general']
  assert ops['convolution'] != conv_kernels
  assert ops['reduce_window'] == 0
  rng = np.random.default_rng(1)
  variables = {
      'params': jax.tree.map(lambda s: rng.uniform(
          -0.1, 0.1, s.shape).astype(s.dtype), shapes['params']),
      'batch_stats': jax.tree.map(lambda s: rng.uniform(
          0.5, 1.5, s.shape).astype(s.dtype), shapes['batch_stats'])}
  got = exported.call(variables, x)
  want = jax.jit(forward('auto'))(variables, x)
  assert np.isfinite(want).all() and np.abs(want).max() > 0
  np.testing.assert_array_equal(got, want)


def train_step_memory(choice, name='unet', size=64, **kwargs):
  """(temp, argument, output) bytes of XLA's memory_analysis of a jitted
  value_and_grad of the cross-entropy through a model (batch 2 at
  size x size, 3 classes, float32; default: a small U-Net)."""
  kwargs = kwargs or {'features': (8, 16, 32)}
  model = models.build(name, num_classes=3, kernels=choice, **kwargs)
  x = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
  labels = jax.ShapeDtypeStruct((2, size, size), jnp.int32)
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)

  def loss(params, batch_stats, x, labels):
    logits, updates = model.apply(
        {'params': params, 'batch_stats': batch_stats}, x, train=True,
        mutable=['batch_stats'], rngs={'dropout': jax.random.PRNGKey(0)})
    return optax.softmax_cross_entropy_with_integer_labels(
        logits, labels).mean(), updates

  step = jax.jit(jax.value_and_grad(loss, has_aux=True))
  memory = step.lower(variables['params'], variables['batch_stats'], x,
                      labels).compile().memory_analysis()
  return (memory.temp_size_in_bytes, memory.argument_size_in_bytes,
          memory.output_size_in_bytes)


def test_platform_switch_in_a_train_step_keeps_no_dead_residuals():
  """'auto' (platform_dependent inside grad) compiles on the CPU to the
  memory of 'segjax' (the CPU's branch chosen directly): the other
  branch's residuals are not kept (docs/performance.md, "Kernel
  formulations")."""
  assert train_step_memory('auto') == train_step_memory('segjax')
