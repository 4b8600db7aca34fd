"""PyTorch reference: segmentation_models_pytorch trained on CamVid.

Runs only where PyTorch and segmentation_models_pytorch are installed (not
segjax dependencies; ../shared/bench/README.md sets up such a venv). It
trains the model a researcher would pick instead of segjax on the same
CamVid folder (the SegNet layout: train/, trainannot/, val/, valannot/;
class 11 ignored), with the recipe of segjax's CamVid CPU budget:

  ~/.venvs/peer/bin/python experiments/peers/smp_camvid_train.py \
      --camvid ../shared/data/camvid --model unet_r18 --minutes 60 \
      --out runs/smp_camvid_unet_r18

Data: images and labels resized to half resolution (180 x 240, bilinear /
nearest) once; per step random scale 0.75-1.5, a 176 x 240 crop (label
padding 255) and a horizontal flip. AdamW (lr 1e-3, weight decay 1e-4),
linear warmup then poly (power 0.9) to the end, batch 8, from scratch.
Stops at `--minutes` of training wall time (evaluation excluded) or
`--epochs`, whichever comes first. The poly schedule decays over
`--steps_for_schedule` steps; a time budget cannot know that count in
advance, so by default (0) the script measures its own steps 5-20 (the
warmup) and decays over the steps it can run in `--minutes` at that rate
(past the end the learning rate stays at its floor). Memory format: PyTorch's
default (NCHW), as SMP's examples; `--channels_last` is faster on CPUs. Evaluates validation mIoU
(11 classes, ignore 11 -> 255, confusion matrix over all pixels at 180 x
240) every `--eval_every_minutes` and at the end; writes one JSON line per
evaluation to OUT/metrics.jsonl: minutes, steps, epochs, miou, per-class
IoU.
"""

import argparse
import json
import os
import time

import numpy as np
from PIL import Image
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F

CLASSES = ('sky', 'building', 'pole', 'road', 'pavement', 'tree',
           'sign_symbol', 'fence', 'car', 'pedestrian', 'bicyclist')
MODELS = {
    'unet_r18': lambda: smp.Unet('resnet18', encoder_weights=None,
                                 classes=len(CLASSES)),
    'deeplabv3plus_r18': lambda: smp.DeepLabV3Plus(
        'resnet18', encoder_weights=None, classes=len(CLASSES)),
}
MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
STD = np.array([0.229, 0.224, 0.225], np.float32) * 255


def load_split(root, split, size=(180, 240)):
  """Images [N, H, W, 3] uint8 and labels [N, H, W] uint8 (255 ignored)."""
  names = sorted(os.listdir(os.path.join(root, split)))
  if not names:
    raise SystemExit(f'{os.path.join(root, split)}: no images')
  h, w = size
  images = np.stack([np.asarray(Image.open(os.path.join(root, split, n))
                                .convert('RGB').resize((w, h),
                                                       Image.BILINEAR))
                     for n in names])
  labels = np.stack([np.asarray(Image.open(
      os.path.join(root, split + 'annot', n)).resize((w, h), Image.NEAREST))
                     for n in names])
  labels = np.where(labels >= len(CLASSES), 255, labels).astype(np.uint8)
  return images, labels


def augment(image, label, rng, crop=(176, 240)):
  """Random scale 0.75-1.5, crop (label padding 255), horizontal flip."""
  s = rng.uniform(0.75, 1.5)
  h, w = label.shape
  nh, nw = int(round(h * s)), int(round(w * s))
  image = np.asarray(Image.fromarray(image).resize((nw, nh), Image.BILINEAR))
  label = np.asarray(Image.fromarray(label).resize((nw, nh), Image.NEAREST))
  ch, cw = crop
  ph, pw = max(ch - nh, 0), max(cw - nw, 0)
  if ph or pw:
    image = np.pad(image, ((0, ph), (0, pw), (0, 0)))
    label = np.pad(label, ((0, ph), (0, pw)), constant_values=255)
  y = rng.integers(0, image.shape[0] - ch + 1)
  x = rng.integers(0, image.shape[1] - cw + 1)
  image, label = image[y:y + ch, x:x + cw], label[y:y + ch, x:x + cw]
  if rng.random() < 0.5:
    image, label = image[:, ::-1], label[:, ::-1]
  return image, label


def to_tensor(images):
  x = (np.asarray(images, np.float32) - MEAN) / STD
  return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def evaluate(model, images, labels, batch=8):
  model.eval()
  c = len(CLASSES)
  cm = np.zeros((c, c), np.int64)
  with torch.no_grad():
    for i in range(0, len(images), batch):
      x = to_tensor(images[i:i + batch])
      # The model needs sides divisible by 32: pad, predict, crop.
      h, w = x.shape[2:]
      ph, pw = -h % 32, -w % 32
      logits = model(F.pad(x, (0, pw, 0, ph)))[:, :, :h, :w]
      pred = logits.argmax(1).numpy()
      y = labels[i:i + batch]
      keep = y != 255
      cm += np.bincount(y[keep].astype(np.int64) * c + pred[keep],
                        minlength=c * c).reshape(c, c)
  model.train()
  inter = np.diag(cm)
  union = cm.sum(0) + cm.sum(1) - inter
  iou = np.where(union > 0, inter / np.maximum(union, 1), np.nan)
  return float(np.nanmean(iou)), {n: float(v) for n, v in zip(CLASSES, iou)}


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument('--camvid', required=True)
  ap.add_argument('--model', default='unet_r18', choices=sorted(MODELS))
  ap.add_argument('--minutes', type=float, default=60.0)
  ap.add_argument('--epochs', type=float, default=None)
  ap.add_argument('--steps_for_schedule', type=int, default=0,
                  help='0: measured from the warmup steps and --minutes.')
  ap.add_argument('--channels_last', action='store_true')
  ap.add_argument('--warmup_steps', type=int, default=20,
                  help='>= 6 when the schedule is measured.')
  ap.add_argument('--batch', type=int, default=8)
  ap.add_argument('--lr', type=float, default=1e-3)
  ap.add_argument('--eval_every_minutes', type=float, default=15.0)
  ap.add_argument('--seed', type=int, default=0)
  ap.add_argument('--out', required=True)
  a = ap.parse_args()
  if not a.steps_for_schedule and a.warmup_steps < 6:
    ap.error('a measured schedule (--steps_for_schedule 0) times warmup '
             f'steps 6-{a.warmup_steps}: pass --warmup_steps >= 6.')
  os.makedirs(a.out, exist_ok=True)
  torch.manual_seed(a.seed)
  rng = np.random.default_rng(a.seed)
  train_x, train_y = load_split(a.camvid, 'train')
  val_x, val_y = load_split(a.camvid, 'val')
  model = MODELS[a.model]()
  fmt = torch.channels_last if a.channels_last else torch.contiguous_format
  model = model.to(memory_format=fmt)
  opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=1e-4)

  schedule_steps = a.steps_for_schedule

  def lr_at(step):
    if step < a.warmup_steps:
      return a.lr * (step + 1) / a.warmup_steps
    frac = min(step, schedule_steps) / schedule_steps
    return a.lr * (1 - frac) ** 0.9 + 1e-6

  log = open(os.path.join(a.out, 'metrics.jsonl'), 'a')
  steps_per_epoch = len(train_x) / a.batch
  step, trained_s, next_eval = 0, 0.0, a.eval_every_minutes * 60
  order = rng.permutation(len(train_x))
  pos = 0
  while True:
    start = time.perf_counter()
    idx = []
    for _ in range(a.batch):
      if pos == len(order):
        order, pos = rng.permutation(len(train_x)), 0
      idx.append(order[pos])
      pos += 1
    pairs = [augment(train_x[i], train_y[i], rng) for i in idx]
    x = to_tensor(np.stack([p[0] for p in pairs])).to(memory_format=fmt)
    y = torch.from_numpy(np.stack([p[1] for p in pairs]).astype(np.int64))
    for group in opt.param_groups:
      group['lr'] = lr_at(step)
    loss = F.cross_entropy(model(x), y, ignore_index=255)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    step += 1
    trained_s += time.perf_counter() - start
    if step == 5:
      calib_s = trained_s
    if step == a.warmup_steps and not schedule_steps:
      # Steps 1-5 include PyTorch's warm-up; the rate of 6-20 is the budget's.
      rate = (trained_s - calib_s) / (step - 5)
      budget = a.minutes * 60
      if a.epochs:
        budget = min(budget, a.epochs * steps_per_epoch * rate)
      schedule_steps = max(int(budget / rate), step + 1)
      print(json.dumps({'s_per_step': rate,
                        'steps_for_schedule': schedule_steps}), flush=True)
    epochs = step / steps_per_epoch
    done = trained_s >= a.minutes * 60 or (a.epochs and epochs >= a.epochs)
    if trained_s >= next_eval or done:
      miou, per_class = evaluate(model, val_x, val_y)
      row = {'minutes': trained_s / 60, 'steps': step, 'epochs': epochs,
             'loss': loss.item(), 'val_miou': miou, 'iou': per_class,
             'model': a.model, 'torch': torch.__version__,
             'steps_for_schedule': schedule_steps,
             'channels_last': a.channels_last,
             'threads': torch.get_num_threads()}
      print(json.dumps(row), flush=True)
      log.write(json.dumps(row) + '\n')
      log.flush()
      next_eval += a.eval_every_minutes * 60
    if done:
      break


if __name__ == '__main__':
  main()
