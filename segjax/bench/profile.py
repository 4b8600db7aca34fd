"""Per-op profile of the train step: where its time goes, by kind of op.

`python -m segjax.bench profile [train_step's workload flags] [--top 20]`
compiles the same step as `segjax.bench train_step`, runs it once under
`jax.profiler.trace` (a Perfetto trace) and sums the time of each compiled
op (on the CPU one thunk per fused HLO instruction; on GPUs one event per
kernel). Each op is put in a category read from the compiled HLO:

  conv weight-grad   a convolution whose window is larger than 7x7: XLA
                     writes the weight gradient of a k x k conv as a conv
                     over the whole feature map
  conv               any other convolution (forward, input gradient)
  matmul             a dot (segjax's 1x1 convs, models.conv)
  transpose/copy     layout changes XLA inserted around the above
  reduction          reductions (batch-norm statistics, the loss, the
                     depthwise weight gradient of models.depthwise)
  elementwise/other  the rest (batch norm, ReLU, the optimizer, ...)

One JSON line: `s_per_step` (the profiled step, wall), `op_seconds` (the
ops' summed time: several ops run at once on several threads, so it can
exceed the wall time), `categories` {name: {seconds, share, ops}} and the
`top` ops with their category, output shape and the model layer that
produced them (HLO metadata). On GPUs the device's kernels are summed
instead of the host's thunks.
"""

import argparse
import collections
import glob
import gzip
import json
import os
import re
import tempfile
import time

import jax

from segjax.bench import train_step


def _computations(hlo):
  """{computation name: body text} and {instruction name: its line}."""
  bodies = {m.group(1): m.group(2) for m in re.finditer(
      r'^(?:ENTRY )?%([\w.\-]+) .*?\{\n(.*?)\n\}\n', hlo, re.M | re.S)}
  lines = {}
  for m in re.finditer(r'^\s*(?:ROOT )?%([\w.\-]+) = (.*)$', hlo, re.M):
    lines.setdefault(m.group(1), m.group(2))
  return bodies, lines


def categorize(name, bodies, lines):
  """The category of the module docstring for one compiled op name, with
  its output shape and layer (op_name metadata); None if not an HLO op."""
  line = lines.get(name)
  if line is None:
    return None
  called = re.search(r'calls=%([\w.\-]+)', line)
  body = bodies.get(called.group(1), '') if called else line
  shape = re.match(r'(\(?[a-z0-9]+\[[\d,]*\][^ ]*)', line)
  layer = re.search(r'op_name="([^"]+)"', body) or re.search(
      r'op_name="([^"]+)"', line)
  info = {'shape': shape.group(1) if shape else '',
          'layer': layer.group(1) if layer else ''}
  if 'convolution(' in body:
    window = re.search(r'window=\{size=(\d+)x(\d+)', body)
    big = window and max(int(window.group(1)), int(window.group(2))) > 7
    return ('conv weight-grad' if big else 'conv'), info
  if ' dot(' in body or '= dot(' in line or 'custom-call' in body and (
      'matmul' in body or 'gemm' in body):
    return 'matmul', info
  if name.startswith(('transpose', 'copy', 'bitcast_copy')):
    return 'transpose/copy', info
  if 'reduce(' in body or 'reduce-window(' in body:
    return 'reduction', info
  return 'elementwise/other', info


def op_times(trace_dir):
  """{event name: summed microseconds} of the trace's complete events, the
  GPU's kernels where there are any, else the host's."""
  path = sorted(glob.glob(os.path.join(trace_dir, '**', '*.trace.json.gz'),
                          recursive=True))[-1]
  with gzip.open(path) as f:
    data = json.load(f)
  events = data['traceEvents'] if isinstance(data, dict) else data
  names = {e['pid']: e.get('args', {}).get('name', '') for e in events
           if e.get('ph') == 'M' and e.get('name') == 'process_name'}
  device = {pid for pid, n in names.items() if '/device:' in n}
  totals = collections.Counter()
  for e in events:
    if e.get('ph') != 'X':
      continue
    if device and e['pid'] not in device:
      continue
    totals[e['name']] += e.get('dur', 0)
  return totals


def profile(work, top):
  """The JSON fields of the module docstring for a train_step.Workload."""
  work.run()  # Warm: allocations and thread pools.
  bodies, lines = _computations(work.compiled.as_text())
  with tempfile.TemporaryDirectory() as trace_dir:
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
      start = time.perf_counter()
      work.run()
      seconds = time.perf_counter() - start
    totals = op_times(trace_dir)
  categories = collections.defaultdict(lambda: {'seconds': 0.0, 'ops': 0})
  rows = []
  for name, micros in totals.items():
    found = categorize(name, bodies, lines)
    if found is None:
      continue  # Runtime events (executor waits, Python frames).
    category, info = found
    categories[category]['seconds'] += micros / 1e6
    categories[category]['ops'] += 1
    rows.append({'op': name, 'category': category, 'seconds': micros / 1e6,
                 **info})
  op_seconds = sum(c['seconds'] for c in categories.values())
  for c in categories.values():
    c['share'] = c['seconds'] / op_seconds if op_seconds else 0.0
  rows.sort(key=lambda r: -r['seconds'])
  return {'s_per_step': seconds, 'op_seconds': op_seconds,
          'categories': dict(sorted(categories.items(),
                                    key=lambda kv: -kv[1]['seconds'])),
          'top': rows[:top]}


def main(argv):
  parser = argparse.ArgumentParser(prog='python -m segjax.bench profile')
  train_step.add_workload_args(parser)
  parser.add_argument('--top', type=int, default=20)
  args = parser.parse_args(argv)
  workload = train_step.workload_args(args)
  work = train_step.Workload(*workload)
  out = {'model': args.model, 'backbone': args.backbone,
         'batch': args.batch, 'height': workload[4], 'width': workload[5],
         'dtype': args.dtype, 'conv': args.conv,
         'device': jax.devices()[0].device_kind,
         **profile(work, args.top)}
  print(json.dumps(out), flush=True)
  return 0
