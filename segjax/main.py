r"""Command-line entry point: trains and evaluates one experiment.

  python -m segjax.main --config experiments/shapes_unet.py[:arg] \
      --workdir DIR [--config.field=value ...]

All logic lives in `segjax.training.train.train_and_evaluate(config, workdir)`,
which notebooks call directly. Re-running the same command on the same workdir
resumes from its latest checkpoint.

Known errors are one line on stderr, `segjax: error: ...`, with exit status
2: a config file whose get_config() raises a ValueError or TypeError (e.g.
an unknown variant after the colon), an override naming no field (the flag
as typed, with a did-you-mean), and a `ConfigError` of the run (config,
workdir, data, model_init files). A run whose training values turn NaN /
infinite stops with one line naming the step, status 1, its earlier
checkpoints kept. `--verbosity=1` adds the traceback of each; any other
exception shows its traceback as usual.
"""

import difflib
import logging as py_logging
import re
import sys
import traceback

from absl import app
from absl import flags
from absl import logging
import ml_collections
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


def _fail(message, status=2):
  """Prints `message` as one line and exits; the traceback of the error
  being handled goes to the log at DEBUG (shown with --verbosity=1)."""
  if sys.exc_info()[0] is not None and flags.FLAGS.is_parsed():
    logging.debug('The error below in full:', exc_info=True)
  print(f'segjax: error: {message}', file=sys.stderr)
  sys.exit(status)


def _verbosity(argv):
  """absl's --verbosity / -v as given in `argv` (flags are not parsed yet
  when parsing them failed), else 0."""
  for i, arg in enumerate(argv):
    name, sep, value = arg.partition('=')
    if name in ('--verbosity', '-v', '--v'):
      if not sep:
        value = argv[i + 1] if i + 1 < len(argv) else ''
      try:
        return int(value)
      except ValueError:
        return 0
  return 0


# A --config override as ml_collections' config_flags accepts it.
_OVERRIDE = re.compile(r'-{1,2}(?:no)?config\.([^=]+)')


def _config_arg(argv):
  """(the --config flag as typed, its value) from `argv`, else None."""
  for i, arg in enumerate(argv):
    name, sep, value = arg.partition('=')
    if name in ('--config', '-config'):
      if sep:
        return arg, value
      if i + 1 < len(argv):
        return f'{arg} {argv[i + 1]}', argv[i + 1]
  return None


def _unknown_field(argv):
  """(override as typed, what is wrong) for the first `--config.<path>` of
  `argv` that names no field of the config, else None."""
  found = _config_arg(argv)
  if found is None:
    return None
  try:
    config = flags.FLAGS[_CONFIG.name].parser.parse(found[1])
  except (AttributeError, KeyError):  # The config file's own error.
    return None
  for i, arg in enumerate(argv):
    match = _OVERRIDE.fullmatch(arg.split('=', 1)[0])
    if not match:
      continue
    if '=' not in arg and i + 1 < len(argv) and not argv[i + 1].startswith(
        '-'):
      arg = f'{arg} {argv[i + 1]}'  # As typed: `--config.a.b value`.
    node, where = config, 'config'
    for name in match.group(1).split('.'):
      if not isinstance(node, (dict, ml_collections.ConfigDict)):
        return arg, (f'{where} is a value ({type(node).__name__}), not a '
                     'block of fields')
      if name not in node:
        return arg, (f'{where} has no field {name!r}'
                     f'{_hint(name, node, where)}')
      node, where = node[name], f'{where}.{name}'
  return None


def _hint(name, node, where):
  """'; did you mean --<where>.<field>?' for a misspelt field `name` of
  `node` (the config block at `where`): a close field of `node`, else a
  close one anywhere below it (--config.learnig_rate ->
  --config.optimizer.learning_rate), else ''."""
  close = difflib.get_close_matches(name, [str(k) for k in node], 1, 0.6)
  if close:
    return f'; did you mean --{where}.{close[0]}?'
  paths = {}

  def walk(tree, prefix):
    for key, value in tree.items():
      paths.setdefault(str(key), f'{prefix}{key}')
      if isinstance(value, (dict, ml_collections.ConfigDict)):
        walk(value, f'{prefix}{key}.')

  walk(node, '')
  close = difflib.get_close_matches(name, list(paths), 1, 0.6)
  return f'; did you mean --{where}.{paths[close[0]]}?' if close else ''


def _config_file_error(message):
  """What a config file's get_config() raised, from the traceback that
  ml_collections puts into the flag error's message; else None."""
  if 'Error whilst parsing config file' not in message:
    return None
  # The exception line is the traceback's last unindented `Type: message`.
  lines = [line for line in message.splitlines()
           if re.match(r'[A-Za-z_][\w.]*: ', line)]
  if not lines:
    return None
  kind, _, text = lines[-1].partition(': ')
  return text if kind == 'ValueError' else f'{kind}: {text}'


def _parse_flags(argv):
  """absl's flag parsing, with a bad --config or override in one line
  (and the traceback too with --verbosity=1)."""
  try:
    return flags.FLAGS(argv)
  except (AttributeError, KeyError):
    # ml_collections raises these for `--config.<path>` naming no field.
    found = _unknown_field(argv)
    if found is None:
      raise  # Not a misspelt override: an error of its own, in full.
    if _verbosity(argv) >= 1:
      traceback.print_exc()
    arg, problem = found
    _fail(f'{arg}: {problem} (overrides can only set existing fields).')
  except flags.Error as e:
    if _verbosity(argv) >= 1:
      traceback.print_exc()
    reason = _config_file_error(str(e))
    config_arg = _config_arg(argv)
    if reason is not None and config_arg is not None:
      _fail(f'{config_arg[0]}: {reason}')
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
  from segjax.training import monitoring  # pylint: disable=g-import-not-at-top
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
  except monitoring.NonFiniteError as e:
    # The message names the step and the values; the checkpoints before it
    # are kept. Status 1: the setup was valid, the run failed.
    _fail(str(e), status=1)


if __name__ == '__main__':
  app.run(main, flags_parser=_parse_flags)
