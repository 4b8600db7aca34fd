r"""Command-line entry point: trains and evaluates one experiment.

  python -m segjax.main --config experiments/shapes_unet.py[:arg] \
      --workdir DIR [--config.field=value ...]

All logic lives in `segjax.training.train.train_and_evaluate(config, workdir)`,
which notebooks call directly. Re-running the same command on the same workdir
resumes from its latest checkpoint.
"""

import logging as py_logging
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Experiment config file, experiments/<name>.py[:arg].',
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Folder for checkpoints, metrics and logs (local or '
    'gs://); an existing one is resumed.')
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', None, 'host:port of process 0 of a multi-process '
    'run (not needed on Cloud TPU VMs and SLURM, which provide it).')
_NUM_PROCESSES = flags.DEFINE_integer(
    'num_processes', None, 'Processes of a multi-process run.')
_PROCESS_ID = flags.DEFINE_integer(
    'process_id', None, 'This process\'s rank in a multi-process run.')
flags.mark_flags_as_required(['config', 'workdir'])


class _LibraryInfoFilter(py_logging.Filter):
  """Drops the INFO chatter of Orbax and TFDS; keeps their warnings."""

  _QUIET = ('/orbax/', '/tensorflow_datasets/')

  def filter(self, record):
    return (record.levelno >= py_logging.WARNING
            or not any(q in record.pathname for q in self._QUIET))


def _fail(message):
  print(f'segjax: error: {message}', file=sys.stderr)
  sys.exit(2)


def _parse_flags(argv):
  """absl's flag parsing, with a bad config override reported in one line."""
  try:
    return flags.FLAGS(argv)
  except (AttributeError, KeyError) as e:
    # ml_collections raises these for `--config.<path>` naming no field.
    field = str(e).strip('"\'')
    culprit = [a for a in argv if a.startswith('--config.')
               and field in a.split('=')[0].split('.')]
    _fail(f'{culprit[0] if culprit else "a --config override"}: the config '
          f'has no field {field!r} (overrides can only set existing fields).')
  except flags.Error as e:
    _fail(f'{e}\nPass --helpshort to see the flags.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.get_absl_handler().addFilter(_LibraryInfoFilter())
  config = _CONFIG.value
  try:
    config.keys()
  except OSError as e:
    # ml_collections defers a failed config file load to the first access.
    _fail(str(e))
  # Imported here so that `--help` and flag errors come back fast.
  from segjax.errors import ConfigError  # pylint: disable=g-import-not-at-top
  from segjax.training import distributed  # pylint: disable=g-import-not-at-top
  from segjax.training import train  # pylint: disable=g-import-not-at-top
  from segjax.training import cpu_devices  # pylint: disable=g-import-not-at-top
  try:
    if not distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value,
                                  _PROCESS_ID.value):
      cpu_devices.configure(config)  # Before anything starts JAX.
  except (ValueError, ConfigError) as e:
    _fail(str(e))
  logging.info('Config:\n%s', config)
  try:
    train.train_and_evaluate(config, _WORKDIR.value)
  except ConfigError as e:
    _fail(str(e))


if __name__ == '__main__':
  app.run(main, flags_parser=_parse_flags)
