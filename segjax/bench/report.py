"""Regenerates the summary table of docs/performance.md in one command.

`python -m segjax.bench report [--out docs/performance.md]
[--gpu docs/bench_results/<run>/summary.json] [--only NAME ...]` runs each
benchmark below in a child process, one after the other, each with its
PyTorch peer where it has one (the peers run right after segjax's
measurement, in their venv: ../shared/bench/README.md), and writes the
table between the `<!-- bench-report:start -->` and `<!-- bench-report:end
-->` markers of `--out`: workload, segjax, peer, ratio, command. The
machine (CPU model, cores, JAX version, date) heads the table. `--gpu`
adds the rows of `experiments/gpu_benchmark.sh`'s summary (a GPU run
cannot happen here; its figures are quoted with the GPU's name). All JSON
lines are also written to `--json` (default: docs/bench_results/cpu.jsonl)
so every figure can be traced to its raw output. About 15 minutes on the
2-core CPU.
"""

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys

import jax

# (name, argv after `python -m segjax.bench`)
BENCHES = (
    ('train_step', ['train_step', '--peer']),
    ('eval', ['eval', '--peer']),
    ('metrics', ['metrics']),
    ('pq', ['pq']),
    ('latency', ['latency', '--config',
                 'experiments/camvid_deeplabv3plus.py:local', '--height',
                 '360', '--width', '480']),
    ('input', ['input', '--seconds', '5', '--steps', '0']),
)
START = '<!-- bench-report:start -->'
END = '<!-- bench-report:end -->'


def run(argv):
  out = subprocess.run([sys.executable, '-m', 'segjax.bench', *argv],
                       capture_output=True, text=True, check=False)
  lines = [l for l in out.stdout.splitlines() if l.startswith('{')]
  if out.returncode or not lines:
    tail = (out.stderr.strip().splitlines() or ['?'])[-1]
    return {'error': f'exit {out.returncode}: {tail[:300]}'}
  return json.loads(lines[-1])


def _cpu_name():
  try:
    with open('/proc/cpuinfo') as f:
      match = re.search(r'model name\s*:\s*(.*)', f.read())
    return match.group(1).strip() if match else platform.processor()
  except OSError:
    return platform.processor()


def _fmt_s(seconds):
  if seconds is None:
    return 'n/a'
  return f'{seconds * 1e3:.1f} ms' if seconds < 1 else f'{seconds:.2f} s'


def rows(name, r):
  """Markdown rows (workload, segjax, peer, ratio) for one benchmark."""
  if 'error' in r:
    return [(name, 'failed: ' + r['error'], '', '')]
  if name == 'train_step':
    p = r.get('peer') or {}
    return [(f"train step, DeepLabV3+ {r['backbone']} OS{r['output_stride']}"
             f" (separable), batch {r['batch']}, {r['height']}x{r['width']},"
             f" {r['dtype']}, SGD",
             f"{_fmt_s(r['s_per_step'])}/step, {r['img_per_s']:.2f} img/s; "
             f"{r['achieved_flops_per_s'] / 1e9:.0f} GFLOP/s = "
             f"{r['achieved_fraction_of_peak']:.0%} of a "
             f"{r['peak_flops_per_s'] / 1e9:.0f} GFLOP/s matmul",
             f"SMP: {_fmt_s(p.get('s_per_step'))}/step, "
             f"{p.get('img_per_s', 0):.2f} img/s" if p else 'no peer venv',
             f"{r['img_per_s_vs_peer']:.2f}x img/s" if p else '')]
  if name == 'eval':
    p = r.get('peer') or {}
    return [(f"evaluation, DeepLabV3+ {r['backbone']}, {r['height']}x"
             f"{r['width']}, slide {r['windows_per_pass']} windows + flip",
             f"{_fmt_s(r['s_per_image'])}/image",
             f"SMP + mmseg-style loop: {_fmt_s(p.get('s_per_image'))}/image"
             if p else 'no peer venv',
             f"{r['speedup_vs_peer']:.2f}x" if p else '')]
  if name == 'metrics':
    return [(f"confusion matrix, {'x'.join(map(str, r['shape']))}, "
             f"{r['classes']} classes",
             f"{_fmt_s(r['segjax_s'])} (NumPy {_fmt_s(r['numpy_s'])})",
             f"torchmetrics: {_fmt_s(r.get('peer_s'))}",
             f"{r['peer_over_segjax']:.0f}x" if r.get('peer_s') else '')]
  if name == 'pq':
    return [(f"panoptic quality, {'x'.join(map(str, r['shape']))}, "
             f"{r['gt_segments_per_image']:.0f} segments/image",
             f"{_fmt_s(r['segjax_s_per_image'])}/image",
             f"torchmetrics: {_fmt_s(r.get('peer_s_per_image'))}/image",
             f"{r['peer_over_segjax']:.0f}x" if r.get('peer') else '')]
  if name == 'latency':
    return [(f"batch-1 latency, {r['model']}, {r['height']}x{r['width']}",
             f"{r['latency_ms']:.1f} ms (exported: "
             f"{r['exported_latency_ms']:.1f} ms)", 'no peer', '')]
  if name == 'input':
    return [(f"input pipeline, augmented {r['crop'][0]}x{r['crop'][1]} "
             "crops", f"{r['augment_img_per_s_1_thread']:.1f}/s on 1 thread,"
             f" {r['augment_img_per_s']:.1f}/s on {r['threads']}",
             'no peer', '')]
  return [(name, json.dumps(r)[:200], '', '')]


def gpu_rows(summary):
  s, e, c = summary['segjax'], summary['torch_eager'], summary['torch_compile']
  mfu = lambda r: 3 * r['fwd_flops_per_image'] * r['batch'] / r[
      's_per_step'] / r['peak_flops_per_s']
  return [(f"GPU train step ({summary['gpu'].split(',')[0]}), DeepLabV3+ "
           f"R50 OS16, batch {s['batch']}, {s['height']}x{s['width']}, "
           "bfloat16",
           f"{s['s_per_step'] * 1e3:.1f} ms/step, {s['img_per_s']:.0f} img/s"
           f", MFU {mfu(s):.1%}",
           f"eager {e['img_per_s']:.0f} img/s, torch.compile "
           f"{c['img_per_s']:.0f} img/s (MFU {mfu(c):.1%})",
           f"{summary['segjax_vs_best_torch']:.2f}x the better")]


def table(results, gpu_summary, commands):
  lines = [START, '',
           f"Machine: {_cpu_name()}, {os.cpu_count()} cores; JAX "
           f"{jax.__version__} ({jax.default_backend()}); "
           f"{datetime.date.today().isoformat()}. Regenerated by "
           "`python -m segjax.bench report`; raw JSON in "
           "docs/bench_results/.", '',
           '| workload | segjax | peer | segjax vs peer | command |',
           '|---|---|---|---|---|']
  for name, r in results:
    for workload, ours, theirs, ratio in rows(name, r):
      lines.append(f'| {workload} | {ours} | {theirs} | {ratio} | '
                   f'`python -m segjax.bench {" ".join(commands[name])}` |')
  if gpu_summary:
    for workload, ours, theirs, ratio in gpu_rows(gpu_summary):
      lines.append(f'| {workload} | {ours} | {theirs} | {ratio} | '
                   '`bash experiments/gpu_benchmark.sh` |')
  lines += ['', END]
  return '\n'.join(lines)


def write(path, text):
  with open(path) as f:
    doc = f.read()
  if START in doc and END in doc:
    doc = doc[:doc.index(START)] + text + doc[doc.index(END) + len(END):]
  else:
    doc = doc.rstrip('\n') + '\n\n## Summary\n\n' + text + '\n'
  with open(path, 'w') as f:
    f.write(doc)


def main(argv):
  parser = argparse.ArgumentParser(prog='python -m segjax.bench report')
  parser.add_argument('--out', default='docs/performance.md')
  parser.add_argument('--json', default='docs/bench_results/cpu.jsonl')
  parser.add_argument('--gpu', default=None,
                      help="experiments/gpu_benchmark.sh's summary.json")
  parser.add_argument('--only', nargs='*', default=None)
  args = parser.parse_args(argv)
  known = [b[0] for b in BENCHES]
  for name in args.only or []:
    if name not in known:
      raise SystemExit(f'--only {name!r}: one of {known}')
  gpu_summary = None
  if args.gpu:
    with open(args.gpu) as f:
      gpu_summary = json.load(f)
  results = []
  for name, bench_argv in BENCHES:
    if args.only and name not in args.only:
      continue
    result = run(bench_argv)
    print(json.dumps({'bench': name, **result}), flush=True)
    results.append((name, result))
  os.makedirs(os.path.dirname(args.json) or '.', exist_ok=True)
  with open(args.json, 'w') as f:
    for name, result in results:
      f.write(json.dumps({'bench': name, **result}) + '\n')
  write(args.out, table(results, gpu_summary, dict(BENCHES)))
  return 0
