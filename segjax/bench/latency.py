"""Batch-1 inference latency: the "real-time" case.

`python -m segjax.bench latency [--config experiments/X.py[:arg]]
[--height H --width W] [--repeats N]` builds the experiment's model (random
weights: latency does not depend on their values), the same serving function
`python -m segjax.export` writes (normalisation, the run's evaluation resize,
the inference mode of `config.inference`, argmax or panoptic
post-processing), and prints one JSON line: compile seconds, the median
latency of a [1, H, W, 3] uint8 image over `repeats` calls, and the same for
that function exported with `jax.export` and reloaded (they should agree:
the export is the same program). `--config.inference.*` overrides select
test-time augmentation, e.g. `--config.inference.flip=True`.
"""

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from segjax import sweeps
from segjax.bench import peer
from segjax import tasks
from segjax.inference.export import serving_fn
from segjax.inference import run as run_lib
from segjax.training import state as state_lib


def measure(config, height, width, repeats, spec=None, exported=True):
  """{'compile_s', 'latency_ms', 'exported_latency_ms', ...} of one config.

  spec: the RunSpec (classes); None reads the data set's (imports
  TensorFlow). exported: also time the jax.export round trip.
  """
  if spec is None:
    from segjax.data import datasets  # pylint: disable=g-import-not-at-top
    spec = datasets.spec_for(config.data)
    spec = run_lib.RunSpec(tuple(spec.class_names),
                           tuple(spec.thing_classes), spec.ignore_index)
  task = tasks.get_task(config, spec)
  model = run_lib.build(config, task)
  size = run_lib.eval_size(config) or (height, width)
  variables = jax.jit(lambda: state_lib.init_variables(
      model, size + (3,), jax.random.PRNGKey(0)))()
  serve = jax.jit(serving_fn(config, model, variables, task, height, width))
  image = jnp.asarray(np.random.default_rng(0).integers(
      0, 256, (1, height, width, 3), np.uint8))
  start = time.perf_counter()
  jax.block_until_ready(serve(image))
  compile_s = time.perf_counter() - start
  latency = peer.median_time(lambda: jax.block_until_ready(serve(image)),
                             repeats)
  exported_latency = None
  if exported:
    reloaded = jax.export.deserialize(jax.export.export(serve)(
        jax.ShapeDtypeStruct(image.shape, image.dtype)).serialize())
    exported_latency = peer.median_time(
        lambda: jax.block_until_ready(reloaded.call(image)), repeats)
  return {'model': config.model.name, 'height': height, 'width': width,
          'model_input': list(size),
          'inference': {k: list(v) if isinstance(v, tuple) else v for k, v in
                        run_lib.inference_options(config).items()},
          'device': jax.devices()[0].device_kind,
          'compile_s': compile_s, 'latency_ms': latency * 1e3,
          'exported_latency_ms': (None if exported_latency is None
                                  else exported_latency * 1e3),
          'images_per_s': 1.0 / latency}


def main(argv):
  overrides = [a for a in argv if a.startswith('--config.')]
  parser = argparse.ArgumentParser(prog='python -m segjax.bench latency')
  parser.add_argument('--config', default='experiments/shapes_unet.py')
  parser.add_argument('--height', type=int, default=None)
  parser.add_argument('--width', type=int, default=None)
  parser.add_argument('--repeats', type=int, default=20)
  args = parser.parse_args([a for a in argv if not a.startswith('--config.')])
  config = run_lib.apply_overrides(
      sweeps.experiment_config(args.config), overrides)
  height = args.height or 512
  width = args.width or height
  print(json.dumps({'config': args.config, **measure(
      config, height, width, args.repeats)}), flush=True)
  return 0
