"""Parameter counts and forward FLOPs of the model zoo (XLA cost analysis).

`python -m segjax.bench models [--size 512]` prints one JSON line per model:
parameters, and forward GFLOPs of one [1, size, size, 3] image from XLA's
HLO cost analysis of the lowered (not compiled) forward pass, so it runs in
seconds on any machine. Multiply-adds count as 2 FLOPs.
"""

import argparse
import json

import jax
import jax.numpy as jnp

from segjax import models

# (name, build kwargs) of the table in docs/models.md.
ZOO = (
    ('unet', {'features': (64, 128, 256, 512, 1024)}),
    ('resnet_unet', {'backbone': 'resnet34'}),
    ('fcn32s', {'backbone': 'resnet50'}),
    ('fcn8s', {'backbone': 'resnet50'}),
    ('fcn', {'backbone': 'resnet50', 'output_stride': 8}),
    ('deeplabv3', {'backbone': 'resnet50', 'output_stride': 16}),
    ('deeplabv3', {'backbone': 'resnet50', 'output_stride': 8}),
    ('deeplabv3', {'backbone': 'resnet101', 'output_stride': 16}),
    ('deeplabv3', {'backbone': 'resnet101', 'output_stride': 8}),
    ('deeplabv3plus', {'backbone': 'resnet50', 'output_stride': 16}),
    ('deeplabv3plus', {'backbone': 'resnet50', 'output_stride': 8}),
    ('deeplabv3plus', {'backbone': 'resnet50', 'output_stride': 16,
                       'separable': True}),
    ('deeplabv3plus', {'backbone': 'resnet101', 'output_stride': 16}),
    ('deeplabv3plus', {'backbone': 'resnet101', 'output_stride': 8}),
    ('deeplabv3plus', {'backbone': 'mobilenet_v2', 'output_stride': 16}),
    ('deeplabv3plus', {'backbone': 'mobilenet_v2', 'output_stride': 8}),
    ('resnet_unet', {'backbone': 'mobilenet_v2'}),
    ('panoptic_deeplab', {'backbone': 'resnet50', 'output_stride': 32,
                          'rates': (3, 6, 9)}),
    ('panoptic_deeplab', {'backbone': 'resnet50', 'output_stride': 16}),
    # The CPU size of experiments/shapes_panoptic.py and the local recipes.
    ('panoptic_deeplab', {'backbone': 'resnet18', 'width': 32,
                          'semantic_features': 64,
                          'semantic_low_level': (32, 16),
                          'semantic_head_features': 64,
                          'instance_features': 32,
                          'instance_low_level': (16, 8),
                          'separable': False}),
)


def forward_flops(model, variables, height, width):
  """XLA's FLOP count of the eval forward pass of one [1, H, W, 3] image;
  variables may be abstract (jax.eval_shape).

  Counted by XLA:CPU wherever a CPU backend is present. XLA:GPU compiles
  convolutions to cuDNN custom calls, which its cost analysis counts as 0
  FLOPs: on an H100 (JAX 0.11.2) the ResNet-34 U-Net's forward came out at
  0.2 GFLOP per 352x480 image instead of ~41.
  """
  image = jax.ShapeDtypeStruct((1, height, width, 3), jnp.float32)
  try:
    device = jax.devices('cpu')[0]
  except RuntimeError:  # JAX_PLATFORMS left out the CPU.
    device = jax.devices()[0]
  with jax.default_device(device):
    lowered = jax.jit(lambda v, x: model.apply(v, x)).lower(variables, image)
    # GPU backends (JAX 0.11) give no cost analysis before compilation.
    cost = lowered.cost_analysis() or lowered.compile().cost_analysis()
  return float((cost[0] if isinstance(cost, (list, tuple)) else cost)['flops'])


def measure(name, kwargs, num_classes, size):
  model = models.build(name, num_classes=num_classes, **kwargs)
  image = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  variables = jax.eval_shape(
      lambda x: model.init(jax.random.PRNGKey(0), x), image)
  params = sum(int(x.size) for x in jax.tree.leaves(variables['params']))
  return {'model': name, **{k: list(v) if isinstance(v, tuple) else v
                            for k, v in kwargs.items()},
          'num_classes': num_classes, 'size': size, 'params': params,
          'forward_gflops': forward_flops(model, variables, size, size) / 1e9}


def main(argv):
  parser = argparse.ArgumentParser(prog='python -m segjax.bench models')
  parser.add_argument('--size', type=int, default=512)
  parser.add_argument('--num-classes', type=int, default=19)
  args = parser.parse_args(argv)
  for name, kwargs in ZOO:
    print(json.dumps(measure(name, kwargs, args.num_classes, args.size)),
          flush=True)
  return 0
