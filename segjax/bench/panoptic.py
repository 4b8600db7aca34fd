"""Benchmark of panoptic quality against NumPy and torchmetrics.

Workload (issue 10): B synthetic [H, W] int32 panoptic maps (`category *
label_divisor + instance`), about --segments segments each: a Voronoi
partition of stuff categories (instance 0) under thing rectangles
(instances 1..K), about 5% void; predictions are the ground truth with
moved, dropped, added and relabelled segments. Reported, in one run:
  segjax_s_per_image  segjax.metrics.panoptic_stats (jitted, one call on
                      the whole batch, device arrays), per image
  numpy_s_per_image   panopticapi's per-image algorithm in NumPy (np.unique
                      of gt * offset + pred, dicts of segments), per image;
                      its TP/FP/FN must equal segjax's
  peer_s_per_image    torchmetrics PanopticQuality on its own random maps of
                      the same size and segment count, when a peer Python is
                      given or ~/.venvs/peer exists
                      (../shared/bench/peer_metrics.py --what pq)
and the ratios. Times are medians of --repeats calls.
"""

import argparse
import json
import pathlib

import jax
import numpy as np

from segjax import metrics
from segjax.bench import peer as peer_lib
from segjax.metrics import panoptic as panoptic_lib

VOID = 255


def synthetic_pair(rng, height, width, segments, num_categories, num_things,
                   label_divisor):
  """One (pred, gt) pair of [H, W] int32 panoptic maps (see module doc)."""
  num_stuff = max(2, segments // 5)
  ys, xs = np.mgrid[:height, :width]
  seeds = rng.integers(0, [height, width], (num_stuff, 2))
  nearest = np.argmin((ys[..., None] - seeds[:, 0]) ** 2
                      + (xs[..., None] - seeds[:, 1]) ** 2, axis=-1)
  stuff = rng.integers(num_things, num_categories, num_stuff)
  gt = stuff[nearest] * label_divisor
  pred = gt.copy()
  low, high = max(2, height // 32), max(3, height // 4)
  for i in range(1, segments - num_stuff + 1):
    h, w = rng.integers(low, high, 2)
    y, x = rng.integers(0, height - h), rng.integers(0, width - w)
    thing = rng.integers(0, num_things) * label_divisor + i
    gt[y:y + h, x:x + w] = thing
    roll = rng.random()
    if roll < 0.1:  # Missed.
      continue
    dy = rng.integers(-h // 3, h // 3 + 1)
    dx = rng.integers(-w // 3, w // 3 + 1)
    y, x = max(0, y + dy), max(0, x + dx)
    if roll < 0.2:  # Wrong category.
      thing = rng.integers(0, num_things) * label_divisor + i
    pred[y:y + h, x:x + w] = thing
  for _ in range(segments // 10):  # Hallucinated things.
    y, x = rng.integers(0, height - low), rng.integers(0, width - low)
    pred[y:y + 2 * low, x:x + 2 * low] = (
        rng.integers(0, num_things) * label_divisor + rng.integers(100, 200))
  gt[: height // 20] = VOID * label_divisor  # A void band ...
  pred[rng.random(pred.shape) < 0.02] = VOID * label_divisor  # ... and holes.
  return pred.astype(np.int32), gt.astype(np.int32)


def numpy_stats(pred, gt, num_categories, label_divisor):
  """TP, FP, FN [C] int64 and IoU sums [C] float64, image by image."""
  out = {k: np.zeros(num_categories, np.int64) for k in ('tp', 'fp', 'fn')}
  out['iou_sum'] = np.zeros(num_categories)
  offset = int(max(gt.max(), pred.max())) + 1
  for p, g in zip(pred.reshape(len(pred), -1).astype(np.int64),
                  gt.reshape(len(gt), -1).astype(np.int64)):
    keys, counts = np.unique(g * offset + p, return_counts=True)
    pair = dict(zip(zip((keys // offset).tolist(), (keys % offset).tolist()),
                    counts.tolist()))
    gt_area, pred_area, on_void = {}, {}, {}
    for (a, b), n in pair.items():
      if a // label_divisor != VOID:
        gt_area[a] = gt_area.get(a, 0) + n
      if b // label_divisor != VOID:
        pred_area[b] = pred_area.get(b, 0) + n
        if a // label_divisor == VOID:
          on_void[b] = on_void.get(b, 0) + n
    matched = set()
    for (a, b), n in pair.items():
      if a in gt_area and b in pred_area and (
          a // label_divisor == b // label_divisor):
        iou = n / (gt_area[a] + pred_area[b] - n - on_void.get(b, 0))
        if iou > 0.5:
          out['tp'][a // label_divisor] += 1
          out['iou_sum'][a // label_divisor] += iou
          matched.update([('g', a), ('p', b)])
    for a in gt_area:
      out['fn'][a // label_divisor] += ('g', a) not in matched
    for b, area in pred_area.items():
      out['fp'][b // label_divisor] += (('p', b) not in matched
                                        and on_void.get(b, 0) / area <= 0.5)
  return out


def _peer(args):
  return peer_lib.run_peer(
      args.peer_python, args.peer_script,
      ['--what', 'pq', '--batch', str(args.batch),
       '--height', str(args.height), '--width', str(args.width),
       '--segments', str(args.segments),
       '--repeats', str(args.peer_repeats)],
      timeout=3600)


def main(argv):
  parser = argparse.ArgumentParser(prog='python -m segjax.bench pq')
  parser.add_argument('--batch', type=int, default=8)
  parser.add_argument('--height', type=int, default=512)
  parser.add_argument('--width', type=int, default=1024)
  parser.add_argument('--segments', type=int, default=30)
  parser.add_argument('--categories', type=int, default=19)
  parser.add_argument('--things', type=int, default=8)
  parser.add_argument('--label-divisor', type=int, default=1000)
  parser.add_argument('--max-instances', type=int, default=256)
  parser.add_argument('--repeats', type=int, default=10)
  parser.add_argument('--peer-repeats', type=int, default=3,
                      help='torchmetrics takes ~1 s per image: fewer repeats')
  parser.add_argument('--peer-python', default=None,
                      help='Python of the peer venv (default ~/.venvs/peer).')
  parser.add_argument(
      '--peer-script',
      default=str(pathlib.Path(__file__).resolve().parents[3] / 'shared' /
                  'bench' / 'peer_metrics.py'))
  parser.add_argument('--no-peer', action='store_true')
  parser.add_argument(
      '--batching', default='auto', choices=('auto', 'loop', 'vmap'),
      help="images one after another in the jitted call, or vmapped "
      "(default: the backend's choice)")
  args = parser.parse_args(argv)

  rng = np.random.default_rng(0)
  pairs = [synthetic_pair(rng, args.height, args.width, args.segments,
                          args.categories, args.things, args.label_divisor)
           for _ in range(args.batch)]
  pred = np.stack([p for p, _ in pairs])
  gt = np.stack([g for _, g in pairs])
  kwargs = dict(num_categories=args.categories,
                label_divisor=args.label_divisor,
                max_instances=args.max_instances)
  dev_pred, dev_gt = jax.device_put(pred), jax.device_put(gt)

  def segjax_stats():
    if args.batching == 'auto':
      stats = metrics.panoptic_stats(dev_pred, dev_gt, **kwargs)
    else:  # The jitted core, with the batching forced.
      stats = panoptic_lib._panoptic_stats(  # pylint: disable=protected-access
          dev_pred, dev_gt, ignore_index=VOID, loop=args.batching == 'loop',
          **kwargs)
    return jax.block_until_ready(stats)

  segjax_s = peer_lib.median_time(segjax_stats, args.repeats) / args.batch
  numpy_s = peer_lib.median_time(
      lambda: numpy_stats(pred, gt, args.categories, args.label_divisor),
      max(1, args.repeats // 5)) / args.batch
  stats = segjax_stats()
  want = numpy_stats(pred, gt, args.categories, args.label_divisor)
  for key in ('tp', 'fp', 'fn'):
    np.testing.assert_array_equal(stats[key], want[key], err_msg=key)
  np.testing.assert_allclose(stats['iou_sum'], want['iou_sum'], rtol=1e-5)
  scores = metrics.panoptic_scores(jax.tree.map(np.asarray, stats),
                                   range(args.things))
  gt_segments = sum(len(np.unique(g[g // args.label_divisor != VOID]))
                    for g in gt) / args.batch

  result = {
      'benchmark': 'metrics/panoptic_quality',
      'shape': list(gt.shape), 'categories': args.categories,
      'gt_segments_per_image': gt_segments,
      'max_instances': args.max_instances, 'batching': args.batching,
      'backend': jax.default_backend(),
      'device': jax.devices()[0].device_kind,
      'segjax_s_per_image': segjax_s, 'numpy_s_per_image': numpy_s,
      'numpy_over_segjax': numpy_s / segjax_s,
      'pq': float(scores['pq']), 'peer': None,
  }
  peer = None if args.no_peer else _peer(args)
  if peer is not None:
    result['peer'] = peer['peer']
    result['peer_s_per_image'] = peer['s_per_image']
    result['peer_over_segjax'] = peer['s_per_image'] / segjax_s
  print(json.dumps(result))
  return 0
