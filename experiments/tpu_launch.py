r"""Runs a segjax experiment on a Cloud TPU VM (single- or multi-host).

  python experiments/tpu_launch.py --name my-tpu --zone us-central2-b \
      --accelerator v4-32 -- --config experiments/cityscapes_deeplabv3plus.py \
      --workdir gs://my-bucket/runs/cs_dl --config.data.data_dir=gs://my-bucket/tfds

What it does, with `gcloud` (installed and authenticated where it runs):
  1. reuses the TPU VM `--name` if it exists, else creates it
     (`--accelerator`, `--version`, `--spot` for preemptible capacity);
  2. copies this checkout (`git ls-files`, as a tarball) to every worker;
  3. installs it with the TPU build of JAX on every worker;
  4. starts the same `python -m segjax.main ...` (everything after `--`) on
     every worker at once. `jax.distributed.initialize()` finds the other
     hosts by itself on TPU VMs (segjax/training/distributed.py); each host
     feeds its rows of every global batch; process 0 writes the logs.
Use a gs:// workdir and data_dir: every worker must see the same files.
Re-running the same command resumes from the workdir's latest checkpoint
(e.g. after a Spot VM was preempted: segjax saves on SIGTERM).

`--dry-run` prints the gcloud commands instead of running them.
"""

import argparse
import shlex
import subprocess
import sys

_REPO_TARBALL = '/tmp/segjax_src.tar.gz'


def commands(args, exists):
  """The gcloud commands to run, in order, as argument lists."""
  tpu = ['gcloud', 'compute', 'tpus', 'tpu-vm']
  where = [f'--zone={args.zone}'] + (
      [f'--project={args.project}'] if args.project else [])
  out = []
  if not exists:
    out.append(tpu + ['create', args.name, *where,
                      f'--accelerator-type={args.accelerator}',
                      f'--version={args.version}'] +
               (['--spot'] if args.spot else []))
  out.append(tpu + ['scp', _REPO_TARBALL, f'{args.name}:~/', *where,
                    '--worker=all'])
  setup = ('mkdir -p ~/segjax && tar -xzf ~/segjax_src.tar.gz -C ~/segjax && '
           'cd ~/segjax && python3 -m pip install -q -e ".[data,tpu]"')
  out.append(tpu + ['ssh', args.name, *where, '--worker=all',
                    f'--command={setup}'])
  run = ('cd ~/segjax && python3 -m segjax.main ' +
         ' '.join(shlex.quote(a) for a in args.segjax_args))
  out.append(tpu + ['ssh', args.name, *where, '--worker=all',
                    f'--command={run}'])
  return out


def _exists(args):
  describe = ['gcloud', 'compute', 'tpus', 'tpu-vm', 'describe', args.name,
              f'--zone={args.zone}'] + (
                  [f'--project={args.project}'] if args.project else [])
  return subprocess.run(describe, capture_output=True,
                        check=False).returncode == 0


def main(argv):
  parser = argparse.ArgumentParser(
      description=__doc__.split('\n\n')[0],
      usage='%(prog)s [options] -- <segjax.main flags>')
  parser.add_argument('--name', required=True, help='TPU VM name')
  parser.add_argument('--zone', required=True)
  parser.add_argument('--project', default=None)
  parser.add_argument('--accelerator', default='v4-8',
                      help='accelerator type, e.g. v4-8, v5litepod-16')
  parser.add_argument('--version', default='tpu-ubuntu2204-base',
                      help='TPU VM software version (runtime image)')
  parser.add_argument('--spot', action='store_true',
                      help='create a Spot (preemptible) VM')
  parser.add_argument('--dry-run', action='store_true',
                      help='print the gcloud commands, run nothing')
  split = argv.index('--') if '--' in argv else len(argv)
  own, rest = argv[:split], argv[split + 1:]
  args = parser.parse_args(own)
  args.segjax_args = rest
  if not any(a.startswith('--config') for a in rest) or not any(
      a.startswith('--workdir') for a in rest):
    parser.error('give the segjax.main flags after --: at least --config '
                 'and --workdir.')
  exists = False if args.dry_run else _exists(args)
  pack = ['bash', '-c', 'git ls-files -z | xargs -0 tar -czf '
          f'{_REPO_TARBALL}']
  for cmd in [pack] + commands(args, exists):
    print(shlex.join(cmd), flush=True)
    if not args.dry_run:
      subprocess.run(cmd, check=True)
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
