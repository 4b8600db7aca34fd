r"""Runs the sweep an experiment file declares (`get_sweep`), point by point.

  python -m segjax.sweep --config experiments/x.py[:arg] --workdir ROOT \
      [--print] [--config.a.b=value ...]

The experiment file declares the points next to `get_config(arg)`:

  def get_sweep(arg=None):
    return sweeps.product(sweeps.axis('model.output_stride', [8, 16]),
                          sweeps.axis('seed', [0, 1, 2]))

Each point trains in `ROOT/<point name>`, e.g. `ROOT/model.output_stride=8,
seed=0`, through `segjax.training.train.train_and_evaluate`; `ROOT/sweep.json`
lists the points. Re-running the same command skips the finished points and
resumes the others from their latest checkpoints. `--config.*` overrides
apply to every point, before the point's own fields. At the end it prints
one line per point: its status (done, or partial when a stop signal ended
the sweep) and its name.

`--print` trains nothing: it prints one `python -m segjax.main` command per
point, for a cluster or TPU VM scheduler (one job per line):

  python -m segjax.sweep --config experiments/x.py --workdir gs://b/x \
      --print > jobs.txt

All logic is in `segjax.sweeps`; a `ConfigError` (a field the config lacks,
no `get_sweep`, two points with one folder name) is one line, exit status 2.
"""

import sys

from absl import app
from absl import flags
from absl import logging

_CONFIG = flags.DEFINE_string(
    'config', None, 'Experiment file with get_config and get_sweep, '
    'experiments/<name>.py[:arg].')
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'The sweep\'s folder: one sub-folder per point.')
_PRINT = flags.DEFINE_bool(
    'print', False, 'Print one segjax.main command per point; train nothing.')
flags.mark_flags_as_required(['config', 'workdir'])


def _parse_flags(argv):
  """absl parses its flags; --config.* overrides pass through to main.

  (As segjax.evaluate does; its helper is not imported so that --help and
  flag errors come back before JAX loads.)
  """
  overrides = [a for a in argv[1:] if a.startswith('--config.')]
  others = [argv[0]] + [a for a in argv[1:] if not a.startswith('--config.')]
  try:
    rest = flags.FLAGS(others)
  except flags.Error as e:
    print(f'segjax.sweep: error: {e}', file=sys.stderr)
    sys.exit(2)
  return [argv[0]] + overrides + rest[1:]


def main(argv):
  overrides = [a for a in argv[1:] if a.startswith('--config.')]
  rest = [a for a in argv[1:] if not a.startswith('--config.')]
  if rest:
    raise app.UsageError(f'Unexpected arguments: {rest}')
  # Imported here so that --help and flag errors come back fast.
  from segjax import sweeps  # pylint: disable=g-import-not-at-top
  from segjax.errors import ConfigError  # pylint: disable=g-import-not-at-top
  try:
    if _PRINT.value:
      for line in sweeps.run(_CONFIG.value, _WORKDIR.value, overrides,
                             dry_run=True):
        print(line)
      return 0
    # On multi-host TPU VMs and SLURM every host runs this same command.
    from segjax.training import cpu_devices  # pylint: disable=g-import-not-at-top
    from segjax.training import distributed  # pylint: disable=g-import-not-at-top
    if not distributed.initialize():
      # As segjax.main: a device count that divides every point's batch.
      cpu_devices.configure(*[row.config for row in sweeps.plan(
          _CONFIG.value, _WORKDIR.value, overrides)])
    summary = sweeps.run(_CONFIG.value, _WORKDIR.value, overrides)
  except ConfigError as e:
    print(f'segjax.sweep: error: {" ".join(str(e).split())}', file=sys.stderr)
    return 2
  for name, before, after in summary:
    logging.info('Sweep point %s: %s -> %s', name, before, after)
  print('\n'.join(f'{after}\t{name}' for name, _, after in summary))
  # Non-zero when a stop signal left points unfinished, so that a job
  # scheduler knows to run the command again.
  return 0 if all(after == 'done' for _, _, after in summary) else 1


if __name__ == '__main__':
  app.run(main, flags_parser=_parse_flags)
