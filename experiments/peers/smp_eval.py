"""The PyTorch peer of `python -m segjax.bench eval`: sliding-window + flip
inference of a segmentation_models_pytorch model at full resolution.

Runs only where PyTorch and segmentation_models_pytorch are installed (not
segjax dependencies). The inference loop is the one mmsegmentation's
`slide_inference` runs (windows of `--window` every `--stride`, the last
window flush with the bottom / right edge, softmax probabilities summed and
divided by the per-pixel window count), each window batch through the model
in one call, and with `--flip` the same on the horizontally flipped image,
flipped back and averaged:

  python experiments/peers/smp_eval.py --height 1024 --width 2048 \
      --window 512 1024 --stride 341 683 --flip

Prints one JSON line: seconds per image (median of --repeats after one
warm-up), windows per pass, threads / device.
"""

import argparse
import json
import statistics
import time

import segmentation_models_pytorch as smp
import torch

MODELS = {
    'deeplabv3plus_r50': lambda c: smp.DeepLabV3Plus(
        'resnet50', encoder_weights=None, classes=c),
    'deeplabv3plus_r101': lambda c: smp.DeepLabV3Plus(
        'resnet101', encoder_weights=None, classes=c),
    'unet_r18': lambda c: smp.Unet('resnet18', encoder_weights=None,
                                   classes=c),
}


def starts(size, window, stride):
  last = max(size - window, 0)
  out = list(range(0, last, stride)) + [last]
  return sorted(set(out))


def slide(model, image, classes, window, stride):
  """image [1, 3, H, W] -> probabilities [1, classes, H, W]."""
  _, _, h, w = image.shape
  boxes = [(y, x) for y in starts(h, window[0], stride[0])
           for x in starts(w, window[1], stride[1])]
  crops = torch.cat([image[:, :, y:y + window[0], x:x + window[1]]
                     for y, x in boxes])
  probs = torch.softmax(model(crops), dim=1)
  total = torch.zeros(1, classes, h, w, device=image.device)
  count = torch.zeros(1, 1, h, w, device=image.device)
  for p, (y, x) in zip(probs, boxes):
    total[0, :, y:y + window[0], x:x + window[1]] += p
    count[0, :, y:y + window[0], x:x + window[1]] += 1
  return total / count, len(boxes)


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument('--model', default='deeplabv3plus_r50',
                  choices=sorted(MODELS))
  ap.add_argument('--classes', type=int, default=19)
  ap.add_argument('--height', type=int, default=1024)
  ap.add_argument('--width', type=int, default=2048)
  ap.add_argument('--window', type=int, nargs=2, default=(512, 1024))
  ap.add_argument('--stride', type=int, nargs=2, default=(341, 683))
  ap.add_argument('--flip', action='store_true')
  ap.add_argument('--repeats', type=int, default=2)
  ap.add_argument('--device', default='cpu')
  a = ap.parse_args()
  device = torch.device(a.device)
  torch.manual_seed(0)
  model = MODELS[a.model](a.classes).to(device).eval()
  image = torch.randn(1, 3, a.height, a.width, device=device)

  def run():
    with torch.no_grad():
      probs, n = slide(model, image, a.classes, a.window, a.stride)
      if a.flip:
        flipped, _ = slide(model, torch.flip(image, dims=[3]), a.classes,
                           a.window, a.stride)
        probs = (probs + torch.flip(flipped, dims=[3])) / 2
      probs.argmax(1).cpu()
    return n

  windows = run()
  times = []
  for _ in range(a.repeats):
    start = time.perf_counter()
    run()
    times.append(time.perf_counter() - start)
  s = statistics.median(times)
  print(json.dumps({
      'peer': 'segmentation_models_pytorch ' + smp.__version__,
      'torch': torch.__version__, 'device': a.device,
      'threads': torch.get_num_threads(), 'model': a.model,
      'height': a.height, 'width': a.width, 'window': list(a.window),
      'stride': list(a.stride), 'flip': a.flip, 'windows_per_pass': windows,
      's_per_image': s}), flush=True)


if __name__ == '__main__':
  main()
