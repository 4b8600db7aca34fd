"""The train step under each CPU option tried in issue 14, one after another.

`python -m segjax.bench options [train_step's workload flags] [--steps 4]
[--repeat R] [--only NAME ...]` runs `python -m segjax.bench train_step` in a child
process per variant below (XLA flags must be set before JAX starts, hence
one process each) and prints one JSON line per variant: its name, what it
sets, s_per_step (the median over --repeat runs, interleaved with the other
variants' so that a shared machine's drift hits all; each run's figure is
the median of --steps steps after a warm-up one), every run's figure, and
the ratio to the default's, measured in this one command. The variants:

  default            segjax as shipped (kernels='auto': segjax.kernels,
                     one XLA:CPU device per core: training/cpu_devices.py)
  one_device         --cpu-devices 1: the whole batch on one CPU device
  lax_convs          --conv xla: XLA's own ops (convs, max-pool, decoder)
  lax_convs_1_device both of the above: segjax before issue 14
  onednn             XLA_FLAGS=--xla_cpu_use_onednn=true
  onednn_custom_call XLA_FLAGS=--xla_cpu_experimental_onednn_custom_call=true
  no_xnnpack         XLA_FLAGS=--xla_cpu_use_xnnpack=false
  fast_math          XLA_FLAGS=--xla_cpu_enable_fast_math=true
  concurrency_sched  XLA_FLAGS=--xla_cpu_enable_concurrency_optimized_scheduler=true
  no_fusion_emitters XLA_FLAGS=--xla_cpu_use_fusion_emitters=false

A variant whose child fails (an XLA flag this jaxlib does not know) is
reported with its error and the others still run.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys


VARIANTS = (
    ('default', {}, []),
    ('one_device', {}, ['--cpu-devices', '1']),
    ('lax_convs', {}, ['--conv', 'xla']),
    ('lax_convs_1_device', {}, ['--conv', 'xla', '--cpu-devices', '1']),
    ('onednn', {'XLA_FLAGS': '--xla_cpu_use_onednn=true'}, []),
    ('onednn_custom_call',
     {'XLA_FLAGS': '--xla_cpu_experimental_onednn_custom_call=true'}, []),
    ('no_xnnpack', {'XLA_FLAGS': '--xla_cpu_use_xnnpack=false'}, []),
    ('fast_math', {'XLA_FLAGS': '--xla_cpu_enable_fast_math=true'}, []),
    ('concurrency_sched', {
        'XLA_FLAGS': '--xla_cpu_enable_concurrency_optimized_scheduler=true'},
     []),
    ('no_fusion_emitters',
     {'XLA_FLAGS': '--xla_cpu_use_fusion_emitters=false'}, []),
)


def run_variant(env_extra, args_extra, workload_argv, steps):
  """train_step's JSON for one variant, or {'error': ...}."""
  env = dict(os.environ)
  for key, value in env_extra.items():
    env[key] = (env.get(key, '') + ' ' + value).strip()
  cmd = [sys.executable, '-m', 'segjax.bench', 'train_step',
         *workload_argv, *args_extra, '--steps', str(steps)]
  out = subprocess.run(cmd, capture_output=True, text=True, env=env,
                       check=False)
  lines = [l for l in out.stdout.splitlines() if l.startswith('{')]
  if out.returncode or not lines:
    return {'error': (out.stderr.strip().splitlines() or ['?'])[-1][:300]}
  return json.loads(lines[-1])


def main(argv):
  parser = argparse.ArgumentParser(
      prog='python -m segjax.bench options',
      epilog='Other flags are train_step\'s workload flags (--model, '
      '--batch, ...), passed to every variant.')
  parser.add_argument('--steps', type=int, default=4)
  parser.add_argument('--repeat', type=int, default=1,
                      help='Runs per variant, interleaved; the median is '
                      'reported with every run.')
  parser.add_argument('--only', nargs='*', default=None,
                      help='Variant names (default: all).')
  args, workload_argv = parser.parse_known_args(argv)
  names = [v[0] for v in VARIANTS]
  for name in args.only or []:
    if name not in names:
      raise SystemExit(f'--only {name!r}: one of {names}')
  chosen = [v for v in VARIANTS
            if not args.only or v[0] in args.only or v[0] == 'default']
  runs = {name: [] for name, _, _ in chosen}
  # Interleaved repeats: slow drift of a shared machine hits every variant.
  for _ in range(args.repeat):
    for name, env_extra, args_extra in chosen:
      runs[name].append(run_variant(env_extra, args_extra, workload_argv,
                                    args.steps))
  base = None
  for name, env_extra, args_extra in chosen:
    row = {'variant': name, 'sets': {**env_extra, 'args': args_extra}}
    ok = [r for r in runs[name] if 'error' not in r]
    if not ok:
      row['error'] = runs[name][0]['error']
    else:
      seconds = [r['s_per_step'] for r in ok]
      row.update(s_per_step=statistics.median(seconds),
                 s_per_step_runs=seconds,
                 img_per_s=ok[0]['batch'] / statistics.median(seconds),
                 peak_flops_per_s=ok[0]['peak_flops_per_s'])
      if base is None:
        base = row['s_per_step']
      row['speedup_vs_default'] = base / row['s_per_step']
    print(json.dumps(row), flush=True)
  return 0
