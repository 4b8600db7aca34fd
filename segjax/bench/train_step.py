"""Train-step speed on synthetic arrays, beside its PyTorch peer.

`python -m segjax.bench train_step [--model deeplabv3plus --backbone resnet50
--output-stride 16 --batch 8 --size 256 --classes 11 --dtype float32
--steps 3] [--peer]` builds the model, SGD with momentum 0.9 (the peer
script's optimizer) and softmax cross-entropy, compiles the sharded train
step ahead of time and times `--steps` steps after a warm-up, on random
images and labels: no TensorFlow, no data set, so it runs wherever JAX
does. One JSON line: `s_per_step`, `img_per_s`, `flops_per_step` (XLA's
cost analysis of the compiled step), `achieved_flops_per_s`,
`peak_flops_per_s` (a large matrix product timed in the same process, in
the step's compute dtype: the machine's own limit), `params`,
`peak_memory_bytes` (the compiled step's memory analysis: arguments +
outputs + temporaries - donated) and, with `--peer`, the same workload of
`../shared/bench/peer_train_step.py` (segmentation_models_pytorch) run in
its venv right after, with the ratio of images/s.

Model names map to the peer's: deeplabv3plus + resnet50 ->
`deeplabv3plus_r50` (segjax built with `separable=True`, SMP's layout).
"""

import argparse
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

from segjax import losses
from segjax import models
from segjax.bench import peer
from segjax.training import state as state_lib
from segjax.training import steps as steps_lib

_PEER_SCRIPT = os.path.join(os.path.dirname(__file__), '..', '..', '..',
                            'shared', 'bench', 'peer_train_step.py')
_PEER_MODELS = {('deeplabv3plus', 'resnet50'): 'deeplabv3plus_r50',
                ('deeplabv3plus', 'resnet101'): 'deeplabv3plus_r101',
                ('deeplabv3', 'resnet50'): 'deeplabv3_r50'}


def peak_flops_per_s(dtype, n=2048, repeats=5):
  """FLOP/s of an n x n x n matrix product in `dtype`, this process."""
  a = jnp.ones((n, n), dtype)
  matmul = jax.jit(lambda x, y: x @ y)
  seconds = peer.median_time(lambda: matmul(a, a).block_until_ready(),
                             repeats)
  return 2.0 * n ** 3 / seconds


def measure(model_name, backbone, output_stride, batch, size, classes,
            dtype, steps):
  """The JSON fields above for one workload."""
  kwargs = {'backbone': backbone, 'output_stride': output_stride,
            'dtype': jnp.dtype(dtype)}
  if model_name == 'deeplabv3plus':
    kwargs['separable'] = True  # SMP's DeepLabV3Plus layout.
  if model_name not in models.MODELS:
    raise SystemExit(f'--model {model_name!r}: one of {sorted(models.MODELS)}')
  accepted = models.backbones.fields(models.MODELS[model_name][0])
  model = models.build(model_name, classes,
                       **{k: v for k, v in kwargs.items() if k in accepted})
  tx = optax.sgd(0.01, momentum=0.9)
  variables = jax.jit(lambda: state_lib.init_variables(
      model, (size, size, 3), jax.random.PRNGKey(0)))()
  state = state_lib.from_variables(variables, tx, jax.random.PRNGKey(0),
                                   False)
  rng = np.random.default_rng(0)
  batch_arrays = {
      'image': jnp.asarray(rng.integers(0, 256, (batch, size, size, 3)),
                           jnp.uint8),
      'labels': jnp.asarray(rng.integers(0, classes, (batch, size, size)),
                            jnp.int32)}
  step = jax.jit(steps_lib.make_train_step(
      model, tx, losses.build_loss({'cross_entropy': 1.0}), lambda s: 0.0),
                 donate_argnums=0)
  compiled = step.lower(state, batch_arrays).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  memory = compiled.memory_analysis()
  holder = {'state': state}

  def one():
    holder['state'], metrics = compiled(holder['state'], batch_arrays)
    jax.block_until_ready(metrics)

  seconds = peer.median_time(one, steps)
  flops = float(cost['flops'])
  return {
      'model': model_name, 'backbone': backbone,
      'output_stride': output_stride, 'batch': batch, 'size': size,
      'classes': classes, 'dtype': dtype, 'device': jax.devices()[0].device_kind,
      'params': state_lib.count_params(state.params),
      's_per_step': seconds, 'img_per_s': batch / seconds,
      'flops_per_step': flops, 'achieved_flops_per_s': flops / seconds,
      'peak_flops_per_s': peak_flops_per_s(jnp.dtype(dtype)),
      'peak_memory_bytes': None if memory is None else int(
          memory.argument_size_in_bytes + memory.output_size_in_bytes +
          memory.temp_size_in_bytes - memory.alias_size_in_bytes),
  }


def main(argv):
  parser = argparse.ArgumentParser(prog='python -m segjax.bench train_step')
  parser.add_argument('--model', default='deeplabv3plus')
  parser.add_argument('--backbone', default='resnet50')
  parser.add_argument('--output-stride', type=int, default=16)
  parser.add_argument('--batch', type=int, default=8)
  parser.add_argument('--size', type=int, default=256)
  parser.add_argument('--classes', type=int, default=11)
  parser.add_argument('--dtype', default='float32')
  parser.add_argument('--steps', type=int, default=3)
  parser.add_argument('--peer', action='store_true',
                      help='Also run the PyTorch peer (its venv) after.')
  parser.add_argument('--peer-python', default=None)
  args = parser.parse_args(argv)
  out = measure(args.model, args.backbone, args.output_stride, args.batch,
                args.size, args.classes, args.dtype, args.steps)
  out['achieved_fraction_of_peak'] = (out['achieved_flops_per_s'] /
                                      out['peak_flops_per_s'])
  if args.peer:
    name = _PEER_MODELS.get((args.model, args.backbone))
    result = name and peer.run_peer(args.peer_python, _PEER_SCRIPT, [
        '--model', name, '--batch', str(args.batch), '--size', str(args.size),
        '--classes', str(args.classes), '--steps', str(args.steps)])
    out['peer'] = result
    if result:
      out['img_per_s_vs_peer'] = out['img_per_s'] / result['img_per_s']
  print(json.dumps(out), flush=True)
  return 0
