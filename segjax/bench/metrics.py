"""Benchmark of the confusion matrix against NumPy and torchmetrics.

Workload (issue 3): [B, H, W] int32 labels and predictions, C classes, 10% of
the labels set to the ignore value 255. Reported, all in one run:
  segjax_s      segjax.metrics.confusion_matrix (jitted, on device arrays)
  numpy_s       np.bincount of label * C + prediction over valid pixels
  read_s        the time to read both arrays once (a jitted reduction)
  peer_s        torchmetrics MulticlassJaccardIndex, when a peer Python is
                given or ~/.venvs/peer exists (../shared/bench/peer_metrics.py)
and the ratios between them. Times are medians of --repeats calls.
"""

import argparse
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from segjax import metrics
from segjax.bench import peer as peer_lib
from segjax.metrics import confusion as metrics_lib


def _peer(args):
  return peer_lib.run_peer(
      args.peer_python, args.peer_script,
      ['--what', 'miou', '--batch', str(args.batch),
       '--height', str(args.height), '--width', str(args.width),
       '--classes', str(args.classes), '--repeats', str(args.repeats)],
      timeout=1800)


def main(argv):
  parser = argparse.ArgumentParser(prog='python -m segjax.bench metrics')
  parser.add_argument('--batch', type=int, default=8)
  parser.add_argument('--height', type=int, default=512)
  parser.add_argument('--width', type=int, default=1024)
  parser.add_argument('--classes', type=int, default=19)
  parser.add_argument('--repeats', type=int, default=10)
  parser.add_argument('--peer-python', default=None,
                      help='Python of the peer venv (default ~/.venvs/peer).')
  parser.add_argument(
      '--peer-script',
      default=str(pathlib.Path(__file__).resolve().parents[3] / 'shared' /
                  'bench' / 'peer_metrics.py'))
  parser.add_argument('--no-peer', action='store_true')
  parser.add_argument('--method', default='auto', choices=metrics_lib.METHODS,
                      help='confusion-matrix formulation (default: auto)')
  args = parser.parse_args(argv)

  rng = np.random.default_rng(0)
  shape = (args.batch, args.height, args.width)
  labels = rng.integers(0, args.classes, shape).astype(np.int32)
  labels[rng.random(shape) < 0.1] = 255
  predictions = rng.integers(0, args.classes, shape).astype(np.int32)
  c = args.classes

  dev_labels, dev_preds = jax.device_put(labels), jax.device_put(predictions)
  segjax_s = peer_lib.median_time(
      lambda: metrics.confusion_matrix(dev_labels, dev_preds, c,
                                       method=args.method).block_until_ready(),
      args.repeats)
  # The cost of reading both arrays once: the fastest of reductions that
  # touch every element and write almost nothing (NumPy's SIMD max is the
  # fastest on the CPUs measured; XLA's integer reductions are slower).
  readers = [
      lambda: jax.block_until_ready(jnp.max(dev_labels) + jnp.max(dev_preds)),
      lambda: (labels.max(), predictions.max()),
  ]
  read_s = min(peer_lib.median_time(f, args.repeats) for f in readers)

  def numpy_cm():
    valid = labels != 255
    return np.bincount(labels[valid] * c + predictions[valid],
                       minlength=c * c).reshape(c, c)

  numpy_s = peer_lib.median_time(numpy_cm, args.repeats)
  np.testing.assert_array_equal(
      metrics.confusion_matrix(dev_labels, dev_preds, c), numpy_cm())

  result = {
      'benchmark': 'metrics/confusion_matrix',
      'method': args.method,
      'shape': list(shape), 'classes': c, 'ignored_fraction': 0.1,
      'backend': jax.default_backend(),
      'device': jax.devices()[0].device_kind,
      'segjax_s': segjax_s, 'numpy_s': numpy_s, 'read_s': read_s,
      'segjax_over_read': segjax_s / read_s,
      'numpy_over_segjax': numpy_s / segjax_s,
  }
  peer = None if args.no_peer else _peer(args)
  if peer is not None:
    result['peer'] = peer['peer']
    result['peer_s'] = peer['s_per_call']
    result['peer_over_segjax'] = peer['s_per_call'] / segjax_s
  print(json.dumps(result))
  return 0
