"""Train-step speed on synthetic arrays, beside its PyTorch peer.

`python -m segjax.bench train_step [--model deeplabv3plus --backbone resnet50
--output-stride 16 --batch 8 --size 256 --classes 11 --dtype float32
--steps 3] [--peer]` builds the model, SGD with momentum 0.9 (the peer
script's optimizer) and softmax cross-entropy, compiles the sharded train
step ahead of time and times `--steps` steps after a warm-up, on random
images and labels: no TensorFlow, no data set, so it runs wherever JAX
does. One JSON line: `s_per_step`, `img_per_s`, `flops_per_step` (XLA's
cost analysis of the compiled step; on GPUs it leaves out cuDNN's
convolutions, see `monitoring.flops_of`), `achieved_flops_per_s`,
`fwd_flops_per_image` (counted by XLA:CPU on every backend), `mfu` (3 x
forward FLOPs per step over the peak: the peer's convention),
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
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from segjax import losses
from segjax import models
from segjax.bench import models as bench_models
from segjax import kernels as kernels_lib
from segjax.bench import peer
from segjax.configs import base
from segjax.training import cpu_devices
from segjax.training import monitoring
from segjax.parallel import sharding
from segjax.training import state as state_lib
from segjax.training import steps as steps_lib

_PEER_SCRIPT = os.path.join(os.path.dirname(__file__), '..', '..', '..',
                            'shared', 'bench', 'peer_train_step.py')
_PEER_MODELS = {('deeplabv3plus', 'resnet50'): 'deeplabv3plus_r50',
                ('deeplabv3plus', 'resnet101'): 'deeplabv3plus_r101',
                ('deeplabv3', 'resnet50'): 'deeplabv3_r50'}


def peak_flops_per_s(dtype, n=None, repeats=5):
  """FLOP/s of an n x n x n matrix product in `dtype`, this process.

  n defaults to 8192 on accelerators (2048 fills a GPU for microseconds
  only) and 2048 on CPUs. Random operands: zeros run faster on some GPUs.
  """
  if n is None:
    n = 2048 if jax.default_backend() == 'cpu' else 8192
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), dtype)
  matmul = jax.jit(lambda x, y: x @ y)
  seconds = peer.median_time(lambda: matmul(a, a).block_until_ready(),
                             repeats)
  return 2.0 * n ** 3 / seconds


class Workload:
  """The compiled train step of one benchmark workload and its inputs."""

  def __init__(self, model_name, backbone, output_stride, batch, height,
               width, classes, dtype, kernels='auto'):
    kwargs = {'backbone': backbone, 'output_stride': output_stride,
              'dtype': jnp.dtype(dtype), 'kernels': kernels}
    if model_name == 'deeplabv3plus':
      kwargs['separable'] = True  # SMP's DeepLabV3Plus layout.
    if model_name not in models.MODELS:
      raise SystemExit(
          f'--model {model_name!r}: one of {sorted(models.MODELS)}')
    accepted = models.backbones.fields(models.MODELS[model_name][0])
    self.model = models.build(
        model_name, classes,
        **{k: v for k, v in kwargs.items() if k in accepted})
    tx = optax.sgd(0.01, momentum=0.9)
    # As the trainer: state replicated, batch split over a 'data' mesh of
    # the devices (on CPUs one per core: training/cpu_devices.py), as many
    # as divide the batch.
    devices = jax.devices()
    mesh = sharding.make_mesh(
        devices[:cpu_devices.auto_count([batch], len(devices))])
    self.devices = mesh.size
    self.variables = jax.jit(
        lambda: state_lib.init_variables(
            self.model, (height, width, 3), jax.random.PRNGKey(0)),
        out_shardings=sharding.replicated(mesh))()
    self.state = jax.device_put(
        state_lib.from_variables(self.variables, tx, jax.random.PRNGKey(0),
                                 False), sharding.replicated(mesh))
    rng = np.random.default_rng(0)
    self.batch = {
        'image': jax.device_put(
            rng.integers(0, 256, (batch, height, width, 3)).astype(np.uint8),
            sharding.batch_sharding(mesh, 4)),
        'labels': jax.device_put(
            rng.integers(0, classes, (batch, height, width)).astype(np.int32),
            sharding.batch_sharding(mesh, 3))}
    step = jax.jit(steps_lib.make_train_step(
        self.model, tx, losses.build_loss({'cross_entropy': 1.0}),
        lambda s: 0.0), donate_argnums=0)
    start = time.perf_counter()
    self.compiled = step.lower(self.state, self.batch).compile()
    self.compile_s = time.perf_counter() - start

  def run(self):
    """One step (the state is donated and replaced); blocks until done."""
    self.state, metrics = self.compiled(self.state, self.batch)
    jax.block_until_ready(metrics)


def measure(model_name, backbone, output_stride, batch, height, width,
            classes, dtype, kernels, steps):
  """The JSON fields above for one workload."""
  work = Workload(model_name, backbone, output_stride, batch, height, width,
                  classes, dtype, kernels)
  seconds = peer.median_time(work.run, steps)
  flops = monitoring.flops_of(work.compiled, work.devices)
  return {
      'model': model_name, 'backbone': backbone,
      'output_stride': output_stride, 'batch': batch, 'height': height,
      'width': width,
      'classes': classes, 'dtype': dtype, 'conv': kernels,
      'device': jax.devices()[0].device_kind, 'jax': jax.__version__,
      'compile_s': work.compile_s, 'devices': work.devices,
      'params': state_lib.count_params(work.state.params),
      's_per_step': seconds, 'img_per_s': batch / seconds,
      'flops_per_step': flops, 'achieved_flops_per_s': flops / seconds,
      # The peer's convention (backward = 2 x forward), to compare with it.
      'fwd_flops_per_image': bench_models.forward_flops(
          work.model, work.variables, height, width),
      'peak_flops_per_s': peak_flops_per_s(jnp.dtype(dtype)),
      'peak_memory_bytes': monitoring.memory_bytes_of(work.compiled),
  }


def add_workload_args(parser):
  """The workload flags, shared with `python -m segjax.bench profile`."""
  parser.add_argument('--model', default='deeplabv3plus')
  parser.add_argument('--backbone', default='resnet50')
  parser.add_argument('--output-stride', type=int, default=16)
  parser.add_argument('--batch', type=int, default=8)
  parser.add_argument('--size', type=int, default=256,
                      help='Square crops; --height / --width override.')
  parser.add_argument('--height', type=int, default=None)
  parser.add_argument('--width', type=int, default=None)
  parser.add_argument('--classes', type=int, default=11)
  parser.add_argument('--dtype', default='float32')
  parser.add_argument('--conv', default='auto', choices=kernels_lib.KERNELS,
                      help='The model\'s `kernels` (segjax.kernels): where '
                      'convs and pools use segjax\'s formulations (auto: '
                      'per platform, e.g. depthwise convs on GPUs).')
  parser.add_argument('--cpu-devices', type=int, default=-1,
                      help='XLA:CPU devices, as config.cpu_devices: -1 = '
                      'one per core dividing the batch.')


def workload_args(args):
  """(model, backbone, output_stride, batch, height, width, classes, dtype,
  kernels) from the parsed flags (kernels: --conv, the model's `kernels`);
  sets the CPU device count from --cpu-devices (before JAX starts its
  backends)."""
  config = base.get_config()
  config.batch_size, config.cpu_devices = args.batch, args.cpu_devices
  cpu_devices.configure(config)
  return (args.model, args.backbone, args.output_stride, args.batch,
          args.height or args.size, args.width or args.size, args.classes,
          args.dtype, args.conv)


def main(argv):
  parser = argparse.ArgumentParser(prog='python -m segjax.bench train_step')
  add_workload_args(parser)
  parser.add_argument('--steps', type=int, default=3)
  parser.add_argument('--peer', action='store_true',
                      help='Also run the PyTorch peer (its venv) after.')
  parser.add_argument('--peer-python', default=None)
  args = parser.parse_args(argv)
  workload = workload_args(args)
  height, width = workload[4:6]
  out = measure(*workload, args.steps)
  out['achieved_fraction_of_peak'] = (out['achieved_flops_per_s'] /
                                      out['peak_flops_per_s'])
  out['mfu'] = (3 * out['fwd_flops_per_image'] * out['batch'] /
                out['s_per_step'] / out['peak_flops_per_s'])
  if args.peer:
    if height != width:
      raise SystemExit('--peer: the shared peer script takes square crops; '
                       'use experiments/peers/smp_train_step.py')
    name = _PEER_MODELS.get((args.model, args.backbone))
    result = name and peer.run_peer(args.peer_python, _PEER_SCRIPT, [
        '--model', name, '--batch', str(args.batch), '--size', str(height),
        '--classes', str(args.classes), '--steps', str(args.steps)])
    out['peer'] = result
    if result:
      out['img_per_s_vs_peer'] = out['img_per_s'] / result['img_per_s']
  print(json.dumps(out), flush=True)
  return 0
