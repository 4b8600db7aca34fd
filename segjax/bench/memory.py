"""Per-device memory of a train step under different meshes (no running).

`python -m segjax.bench memory [--model deeplabv3plus --backbone resnet101
--output-stride 8 --batch 8 --size 1024 2048 --mesh data=8 ...]` compiles
the train step ahead of time for each `--mesh` on the local devices (fake
CPU devices work: run with
XLA_FLAGS=--xla_force_host_platform_device_count=8) and prints one JSON line
per mesh with XLA's `memory_analysis()` per device: arguments (state and
batch), outputs, temporaries (activations), and their sum less the donated
buffers. Nothing is executed, so it measures a Cityscapes-sized step on a
laptop. Imports no TensorFlow.
"""

import argparse
import json

import jax
import ml_collections
import numpy as np

from segjax import losses
from segjax import models
from segjax.training import optimizer
from segjax.training import monitoring
from segjax.parallel import sharding
from segjax.training import state as state_lib
from segjax.training import steps


def _mesh_axes(text):
  """'data=4,spatial=2' -> (('data', 4), ('spatial', 2))."""
  return tuple((name, int(size)) for name, size in
               (part.split('=') for part in text.split(',')))


def measure(args, mesh_text):
  mesh = sharding.mesh_from_config(_mesh_axes(mesh_text))
  model = models.build(args.model, args.num_classes, backbone=args.backbone,
                       output_stride=args.output_stride)
  config = ml_collections.ConfigDict({
      'optimizer': {'name': 'sgd', 'learning_rate': 0.01, 'momentum': 0.9},
      'schedule': {'name': 'poly'}})
  tx, schedule = optimizer.build_optimizer(config, 1000)
  image_shape = tuple(args.size) + (3,)
  abstract = state_lib.abstract_state(model, tx, image_shape, mesh)
  shardings = jax.tree.map(lambda x: x.sharding, abstract)
  step = jax.jit(steps.make_train_step(
      model, tx, losses.build_loss({'cross_entropy': 1.0}), schedule),
                 in_shardings=(shardings, None), donate_argnums=0)
  per_process = args.batch // jax.process_count()
  batch = sharding.abstract_batch({
      'image': ((per_process,) + image_shape, np.uint8),
      'labels': ((per_process,) + tuple(args.size), np.int32)}, mesh)
  compiled = step.lower(abstract, batch).compile()
  analysis = compiled.memory_analysis()
  gib = 2.0 ** 30
  need = monitoring.memory_bytes_of(compiled)
  return {
      'benchmark': 'memory', 'mesh': mesh_text, 'model': args.model,
      'backbone': args.backbone, 'output_stride': args.output_stride,
      'batch': args.batch, 'size': list(args.size),
      'devices': jax.device_count(),
      'params': state_lib.count_params(abstract.params),
      'arguments_gib': analysis.argument_size_in_bytes / gib,
      'temporaries_gib': analysis.temp_size_in_bytes / gib,
      'outputs_gib': analysis.output_size_in_bytes / gib,
      'per_device_gib': need / gib,
  }


def main(argv):
  parser = argparse.ArgumentParser(prog='python -m segjax.bench memory')
  parser.add_argument('--model', default='deeplabv3plus')
  parser.add_argument('--backbone', default='resnet101')
  parser.add_argument('--output-stride', type=int, default=8)
  parser.add_argument('--num-classes', type=int, default=19)
  parser.add_argument('--batch', type=int, default=8)
  parser.add_argument('--size', type=int, nargs=2, default=(1024, 2048))
  parser.add_argument('--mesh', action='append',
                      help="e.g. 'data=8' (repeat for several); default: "
                      'data, data+fsdp and data+spatial over all devices')
  args = parser.parse_args(argv)
  n = jax.device_count()
  meshes = args.mesh or [f'data={n}', f'data={n // 2},fsdp=2',
                         f'data={n // 2},spatial=2']
  for mesh_text in meshes:
    print(json.dumps(measure(args, mesh_text)), flush=True)
  return 0
