"""The PyTorch peer of `python -m segjax.bench train_step`, on CPU or GPU.

Runs only where PyTorch and segmentation_models_pytorch are installed (they
are not segjax dependencies). It extends ../shared/bench/peer_train_step.py
(CPU, float32, square crops) to what a GPU user would run: non-square crops,
bfloat16 autocast, channels-last memory format and `torch.compile`:

  python experiments/peers/smp_train_step.py --device cuda --dtype bfloat16 \
      --height 512 --width 1024 --batch 8 [--compile]

Same workload as segjax's bench: SGD with momentum 0.9, softmax
cross-entropy over `--classes` classes, random images and labels, the
median of `--steps` timed steps after warm-up steps (the first compiles
under --compile). Prints one JSON line: s_per_step, img_per_s,
fwd_flops_per_image (PyTorch's FlopCounterMode), flops_per_step (3 x the
forward: the usual backward-is-twice-forward count), achieved_flops_per_s,
peak_flops_per_s (an 8192^3 matrix product in --dtype on --device; 2048^3 on
CPU), peak_memory_bytes (CUDA's max allocated), params.
"""

import argparse
import json
import statistics
import time

import segmentation_models_pytorch as smp
import torch
from torch.utils.flop_counter import FlopCounterMode

MODELS = {
    'deeplabv3plus_r18': lambda c: smp.DeepLabV3Plus(
        'resnet18', encoder_weights=None, classes=c),
    'deeplabv3plus_r50': lambda c: smp.DeepLabV3Plus(
        'resnet50', encoder_weights=None, classes=c),
    'deeplabv3plus_r101': lambda c: smp.DeepLabV3Plus(
        'resnet101', encoder_weights=None, classes=c),
    'deeplabv3_r50': lambda c: smp.DeepLabV3(
        'resnet50', encoder_weights=None, classes=c),
    'unet_r18': lambda c: smp.Unet('resnet18', encoder_weights=None,
                                   classes=c),
    'unet_r34': lambda c: smp.Unet('resnet34', encoder_weights=None,
                                   classes=c),
}


def _sync(device):
  if device.type == 'cuda':
    torch.cuda.synchronize(device)


def median_seconds(fn, device, warmup, repeats):
  for _ in range(warmup):
    fn()
  _sync(device)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    _sync(device)
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def peak_flops_per_s(device, dtype):
  n = 8192 if device.type == 'cuda' else 2048
  a = torch.randn(n, n, device=device, dtype=dtype)
  b = torch.randn(n, n, device=device, dtype=dtype)
  seconds = median_seconds(lambda: a @ b, device, 3, 10)
  return 2.0 * n ** 3 / seconds


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument('--model', default='deeplabv3plus_r50',
                  choices=sorted(MODELS))
  ap.add_argument('--batch', type=int, default=8)
  ap.add_argument('--height', type=int, default=256)
  ap.add_argument('--width', type=int, default=256)
  ap.add_argument('--classes', type=int, default=11)
  ap.add_argument('--steps', type=int, default=10)
  ap.add_argument('--warmup', type=int, default=3)
  ap.add_argument('--device', default='cuda' if torch.cuda.is_available()
                  else 'cpu')
  ap.add_argument('--dtype', default='float32',
                  choices=['float32', 'bfloat16'])
  ap.add_argument('--compile', action='store_true')
  ap.add_argument('--channels-last', type=int, default=1,
                  help='1: NHWC memory format (faster for convs on GPUs).')
  a = ap.parse_args()
  device = torch.device(a.device)
  dtype = getattr(torch, a.dtype)
  torch.manual_seed(0)
  if device.type == 'cuda':
    torch.backends.cudnn.benchmark = True
  model = MODELS[a.model](a.classes).to(device)
  fmt = torch.channels_last if a.channels_last else torch.contiguous_format
  model = model.to(memory_format=fmt)
  params = sum(p.numel() for p in model.parameters())
  model.eval()
  with torch.no_grad(), FlopCounterMode(display=False) as counter:
    model(torch.randn(1, 3, a.height, a.width, device=device))
  fwd_flops = counter.get_total_flops()
  model.train()
  opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
  x = torch.randn(a.batch, 3, a.height, a.width, device=device).to(
      memory_format=fmt)
  y = torch.randint(0, a.classes, (a.batch, a.height, a.width),
                    device=device)

  def loss_fn(images, labels):
    with torch.autocast(device.type, dtype=dtype,
                        enabled=dtype != torch.float32):
      logits = model(images)
    return torch.nn.functional.cross_entropy(logits.float(), labels)

  forward_backward = torch.compile(loss_fn) if a.compile else loss_fn

  def step():
    opt.zero_grad(set_to_none=True)
    forward_backward(x, y).backward()
    opt.step()

  if device.type == 'cuda':
    torch.cuda.reset_peak_memory_stats(device)
  start = time.perf_counter()
  step()
  _sync(device)
  first_step_s = time.perf_counter() - start
  seconds = median_seconds(step, device, a.warmup, a.steps)
  flops = 3.0 * fwd_flops * a.batch
  print(json.dumps({
      'peer': 'segmentation_models_pytorch ' + smp.__version__,
      'torch': torch.__version__, 'device': (
          torch.cuda.get_device_name(device) if device.type == 'cuda'
          else f'cpu, {torch.get_num_threads()} threads'),
      'model': a.model, 'batch': a.batch, 'height': a.height,
      'width': a.width, 'dtype': a.dtype, 'compile': a.compile,
      'channels_last': bool(a.channels_last), 'params': params,
      'first_step_s': first_step_s, 's_per_step': seconds,
      'img_per_s': a.batch / seconds,
      'fwd_flops_per_image': fwd_flops, 'flops_per_step': flops,
      'achieved_flops_per_s': flops / seconds,
      'peak_flops_per_s': peak_flops_per_s(device, dtype),
      'peak_memory_bytes': (torch.cuda.max_memory_allocated(device)
                            if device.type == 'cuda' else None),
  }), flush=True)


if __name__ == '__main__':
  main()
