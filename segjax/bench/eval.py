"""Full-resolution evaluation speed: sliding window + flip, beside PyTorch.

`python -m segjax.bench eval [--config experiments/cityscapes_deeplabv3plus.py]
[--backbone resnet50 --output-stride 16] [--height 1024 --width 2048]
[--window 512 1024] [--stride 512 1024] [--no-flip] [--repeats 2] [--peer]`
builds the experiment's model with random weights (speed does not depend on
them) and the serving function of `segjax.bench latency` in 'slide' mode
with horizontal flip: one [1, H, W, 3] image, all windows of a pass in one
batch, probabilities averaged, argmax. The default is Cityscapes' full
1024 x 2048 with DeepLabV3+ ResNet-50 OS16 (separable, SMP's layout) so
that `--peer` can run `experiments/peers/smp_eval.py` (the same loop as
mmsegmentation's slide inference, in PyTorch) on the same workload right
after, in the peer venv. No TensorFlow, no data set. One JSON line:
`s_per_image`, compile seconds, windows per pass and, with `--peer`, the
peer's `s_per_image` and the ratio.
"""

import argparse
import json
import os

from segjax import sweeps
from segjax.bench import latency
from segjax.bench import peer
from segjax.evaluation import modes
from segjax.inference import run as run_lib

_PEER_SCRIPT = os.path.join(os.path.dirname(__file__), '..', '..',
                            'experiments', 'peers', 'smp_eval.py')
_PEER_MODELS = {'resnet50': 'deeplabv3plus_r50',
                'resnet101': 'deeplabv3plus_r101'}


def main(argv):
  parser = argparse.ArgumentParser(prog='python -m segjax.bench eval')
  parser.add_argument('--config',
                      default='experiments/cityscapes_deeplabv3plus.py')
  parser.add_argument('--backbone', default='resnet50')
  parser.add_argument('--output-stride', type=int, default=16)
  parser.add_argument('--classes', type=int, default=19)
  parser.add_argument('--height', type=int, default=1024)
  parser.add_argument('--width', type=int, default=2048)
  parser.add_argument('--window', type=int, nargs=2, default=(512, 1024))
  parser.add_argument('--stride', type=int, nargs=2, default=(512, 1024))
  parser.add_argument('--no-flip', dest='flip', action='store_false')
  parser.add_argument('--repeats', type=int, default=2)
  parser.add_argument('--peer', action='store_true')
  parser.add_argument('--peer-python', default=None)
  args = parser.parse_args(argv)
  config = sweeps.experiment_config(args.config)
  config.model.backbone = args.backbone
  config.model.output_stride = args.output_stride
  config.model.separable = True
  config.data.eval_preprocess = ''
  config.inference = dict(mode='slide', window=tuple(args.window),
                          stride=tuple(args.stride), flip=args.flip)
  spec = run_lib.RunSpec(tuple(f'class_{i}' for i in range(args.classes)),
                         ())
  out = latency.measure(config, args.height, args.width, args.repeats,
                        spec=spec, exported=False)
  out = {'config': args.config, 'backbone': args.backbone,
         'output_stride': args.output_stride,
         'windows_per_pass': modes.num_windows(
             (args.height, args.width), tuple(args.window),
             tuple(args.stride)),
         's_per_image': out['latency_ms'] / 1e3, **out}
  if args.peer:
    if args.backbone not in _PEER_MODELS:
      raise SystemExit(f'--peer: no SMP peer for --backbone '
                       f'{args.backbone!r}; one of {sorted(_PEER_MODELS)}')
    result = peer.run_peer(args.peer_python, _PEER_SCRIPT, [
        '--model', _PEER_MODELS[args.backbone],
        '--classes', str(args.classes), '--height', str(args.height),
        '--width', str(args.width), '--window', *map(str, args.window),
        '--stride', *map(str, args.stride), '--repeats', str(args.repeats),
        *(['--flip'] if args.flip else [])])
    out['peer'] = result
    if result:
      out['speedup_vs_peer'] = result['s_per_image'] / out['s_per_image']
  print(json.dumps(out), flush=True)
  return 0
