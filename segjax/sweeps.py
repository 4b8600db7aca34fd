r"""Sweeps: many runs of one experiment, declared next to its `get_config`.

An experiment file declares its sweep as a list of points, each a dict of
dotted config fields to values:

    from segjax import sweeps

    def get_sweep(arg=None):
      return sweeps.product(sweeps.axis('model.output_stride', [8, 16]),
                            sweeps.axis('seed', [0, 1, 2]))

and runs it, point after point, each in `<root>/<point name>`, with
`python -m segjax.sweep` (segjax/sweep.py) or `sweeps.run('experiments/x.py:
arg', root)`. A point whose workdir holds `sweep_done.json` for the same
config is skipped; any other goes to `train_and_evaluate`, which resumes
from its latest checkpoint, so re-running an interrupted sweep finishes it.
`dry_run=True` gives one `python -m segjax.main` command per point instead,
for a cluster scheduler (those runs write no sweep_done.json: a later
`sweeps.run` re-evaluates and marks them). TensorFlow loads only to train.
"""

import collections
import copy
import hashlib
import importlib.util
import itertools
import json
import math
import re
import shlex
import time

from absl import logging
from etils import epath
import numpy as np

from segjax.errors import ConfigError

DONE_FILE = 'sweep_done.json'
SWEEP_FILE = 'sweep.json'
# ',' and '=' separate a name's fields; inside a field or value they are
# replaced too, like anything else a shell or file system might mind.
_UNSAFE = re.compile(r'[^A-Za-z0-9._-]+')
_MAX_NAME = 200  # File names stop at 255 bytes on most file systems.

PlannedPoint = collections.namedtuple('PlannedPoint',
                                      'name point workdir config')


def axis(field, values):
  """[{field: v} for v in values]: one field over a list of values."""
  # A string of values would silently sweep over its characters.
  if (not isinstance(field, str) or not field or not values or
      isinstance(values, (str, bytes, dict))):
    raise ValueError(f'axis({field!r}, {values!r}): expected a dotted config '
                     'path and a non-empty list of values.')
  return [{field: v} for v in values]


def _merge(parts):
  merged = {k: v for part in parts for k, v in part.items()}
  if len(merged) < sum(len(part) for part in parts):
    raise ValueError(f'{parts}: a field is set by more than one axis.')
  return merged


def product(*axes):
  """The cartesian product of axes, row-major (the last axis varies fastest)."""
  return [_merge(parts) for parts in itertools.product(*axes)]


def zip_(*axes):
  """Points merged elementwise; the axes must have the same length."""
  lengths = [len(a) for a in axes]
  if len(set(lengths)) > 1:
    raise ValueError(f'zip_: the axes have different lengths {lengths}.')
  return [_merge(parts) for parts in zip(*axes)]


zipped = zip_


def seeds(points, values, field='seed', data_seed=True):
  """Every point once per seed in `values` (seeds vary fastest); with
  `data_seed=True` also the data order and augmentation (config.data_seed),
  with False only the initialisation."""
  axis(field, values)  # The same checks as any axis.
  seed_axis = [{field: v, **({'data_seed': v} if data_seed else {})}
               for v in values]
  return product(points, seed_axis)


def _text(value):
  return '-'.join(map(str, value)) if isinstance(value, (tuple, list)) else (
      str(value))


def point_name(point):
  """A readable, filesystem-safe folder name: `model.features=8-16,seed=0`.

  Fields in the point's order; tuples join with '-'; in fields and values,
  runs of characters outside [A-Za-z0-9._-] become '_', so distinct points
  can share a name ('a/b', 'a b'): `plan` checks for that.
  """
  if not point:
    return 'base'
  name = ','.join(f'{_UNSAFE.sub("_", k)}={_UNSAFE.sub("_", _text(v))}'
                  for k, v in point.items())
  if len(name) > _MAX_NAME:  # Still unique: the hash covers the whole name.
    digest = hashlib.sha256(name.encode()).hexdigest()[:12]
    name = f'{name[:_MAX_NAME - 13]}_{digest}'
  return name


def apply_point(config, point):
  """A copy of `config` with the point's dotted fields set (lists become
  tuples for tuple fields); a missing field or a wrong type is a ConfigError
  naming the field and the point."""
  config = copy.deepcopy(config)
  for field, value in point.items():
    *parents, leaf = field.split('.')
    parent = target = config
    for part in parents + [leaf]:
      if not hasattr(target, 'keys') or part not in target:
        raise ConfigError(f'sweep point {point_name(point)}: the config has '
                          f'no field {field!r} (a point can only set '
                          'existing fields).')
      parent, target = target, target[part]
    if isinstance(target, tuple) and isinstance(value, list):
      value = tuple(value)
    try:
      parent[leaf] = value
    except TypeError as e:
      raise ConfigError(f'sweep point {point_name(point)}: config.{field}: '
                        f'{e}') from e
  return config


def fingerprint(config):
  """A short hash of the config: what `sweep_done.json` was computed for."""
  text = config.to_json_best_effort(sort_keys=True)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def _jsonable(value):
  """Scores as plain JSON: arrays to lists, NaN / inf to null (JSON has no
  NaN; a class absent from a split scores NaN)."""
  if isinstance(value, dict):
    return {str(k): _jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  if hasattr(value, '__array__'):  # NumPy and JAX arrays and scalars.
    return _jsonable(np.asarray(value).tolist())
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value if isinstance(value, (type(None), bool, int, float, str)) else (
      str(value))


def _checkpoint_steps(workdir):
  folder = epath.Path(workdir) / 'checkpoints'
  return sorted(int(p.name) for p in folder.iterdir()
                if p.name.isdigit()) if folder.is_dir() else []


def status(workdir, config):
  """'done': `sweep_done.json` has this config's fingerprint; 'partial':
  checkpoints or metrics (also of a run done with another config, which
  training resumes, as segjax.main would); else 'new'."""
  workdir = epath.Path(workdir)
  try:
    if json.loads((workdir / DONE_FILE).read_text()).get(
        'fingerprint') == fingerprint(config):
      return 'done'
  except (OSError, ValueError):  # None yet, or truncated: not known done.
    pass
  started = _checkpoint_steps(workdir) or (workdir / 'metrics.jsonl').exists()
  return 'partial' if started else 'new'


def experiment_module(config_path):
  """(module, [arg]) of an experiment 'file.py[:arg]', as ml_collections'
  config flag reads it; a missing file is a ConfigError naming it."""
  path, *arg = config_path.split(':', 1)
  if not epath.Path(path).is_file():
    raise ConfigError(f'{path}: no such experiment file.')
  spec = importlib.util.spec_from_file_location(
      f'segjax_experiment_{hashlib.sha1(path.encode()).hexdigest()[:8]}',
      path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module, arg


def experiment_config(config_path):
  """get_config(arg) of 'file.py[:arg]'; an unknown variant (the
  experiment's ValueError) is a ConfigError."""
  module, arg = experiment_module(config_path)
  try:
    return module.get_config(*arg)
  except ValueError as e:
    raise ConfigError(f'{config_path}: {e}') from e


def _load_experiment(config_path):
  """(get_config(arg), get_sweep(arg)) of 'file.py[:arg]'."""
  module, arg = experiment_module(config_path)
  path = config_path.split(':', 1)[0]
  if not hasattr(module, 'get_sweep'):
    raise ConfigError(f'{path} declares no sweep: add get_sweep(arg=None), '
                      'returning a list of points (see segjax.sweeps).')
  try:
    config, points = module.get_config(*arg), module.get_sweep(*arg)
  except ValueError as e:  # An unknown variant, axes that do not fit.
    raise ConfigError(f'{config_path}: {e}') from e
  if not points or not all(isinstance(p, dict) for p in points):
    raise ConfigError(f'{config_path}: get_sweep must return a non-empty '
                      f'list of dicts, got {points!r}.')
  return config, points


def plan(config_path, root, overrides=()):
  """[PlannedPoint(name, point, workdir, config)] of the sweep, in order.

  `config_path` is 'file.py[:arg]' (get_config(arg), get_sweep(arg)); point
  `name` runs in `<root>/<name>`; `overrides` ('--config.a.b=value', values
  Python literals else strings) apply to every point, before its fields.
  """
  from segjax.inference import run as run_lib  # pylint: disable=g-import-not-at-top
  base, points = _load_experiment(config_path)
  base = run_lib.apply_overrides(base, overrides)
  seen = {}
  for point in points:
    name = point_name(point)
    if name in seen:
      raise ConfigError(f'sweep points {seen[name]!r} and {point!r} share '
                        f'the folder name {name!r}; make them distinct.')
    seen[name] = point
  return [PlannedPoint(name, point, str(epath.Path(root) / name),
                       apply_point(base, point))
          for name, point in seen.items()]


def _flag_value(value):
  """A value as ml_collections' flag parsers of segjax.main read it."""
  if isinstance(value, str):
    return value  # String fields take the text as it is.
  if isinstance(value, (tuple, list)):  # The tuple parser's literal.
    return f"({','.join(map(repr, value))}{',' * (len(value) == 1)})"
  return repr(value)


def commands(config_path, root, overrides=(), rows=None):
  """One `python -m segjax.main` shell command per point of the sweep."""
  rows = plan(config_path, root, overrides) if rows is None else rows
  lines = []
  for row in rows:
    # A tuple field given twice would be a MultiFlag: the point's value
    # replaces the common override instead.
    common = [o for o in overrides
              if o[len('--config.'):].partition('=')[0] not in row.point]
    flags = [f'--config.{k}={_flag_value(v)}' for k, v in row.point.items()]
    lines.append(shlex.join(['python', '-m', 'segjax.main', '--config',
                             config_path, '--workdir', row.workdir, *common,
                             *flags]))
  return lines


def run_point(workdir, config, point=None):
  """Trains one point unless done; returns (status_before, status_after)."""
  import jax  # pylint: disable=g-import-not-at-top
  from segjax.training import train  # pylint: disable=g-import-not-at-top
  before = status(workdir, config)
  if before == 'done':
    return before, 'done'
  if (epath.Path(workdir) / DONE_FILE).exists():  # Surprising: say so.
    logging.warning('%s finished with a different config; resuming it with '
                    'this one (its config.json keeps the old one).', workdir)
  start = time.time()
  scores = train.train_and_evaluate(config, workdir)
  if not scores and (_checkpoint_steps(workdir) or [0])[-1] < (
      config.num_train_steps):
    return before, 'partial'  # Stopped by SIGTERM / preemption.
  if jax.process_index() == 0:
    record = {'fingerprint': fingerprint(config), 'point': point,
              'scores': scores, 'wall_seconds': time.time() - start}
    (epath.Path(workdir) / DONE_FILE).write_text(json.dumps(
        _jsonable(record), indent=2, allow_nan=False) + '\n')
  return before, 'done'


def run(config_path, root, overrides=(), dry_run=False):
  """Runs the sweep's points in order: [(name, status_before, status_after)].

  With `dry_run=True`: the list of `commands` instead; nothing is written.
  """
  import jax  # pylint: disable=g-import-not-at-top
  overrides = list(overrides)
  rows = plan(config_path, root, overrides)
  if dry_run:
    return commands(config_path, root, overrides, rows)
  if jax.process_index() == 0:
    epath.Path(root).mkdir(parents=True, exist_ok=True)
    command = shlex.join(['python', '-m', 'segjax.sweep', '--config',
                          config_path, '--workdir', str(root), *overrides])
    (epath.Path(root) / SWEEP_FILE).write_text(json.dumps({
        'config': config_path, 'overrides': overrides, 'command': command,
        'points': [{'name': r.name, 'point': _jsonable(r.point),
                    'workdir': r.workdir} for r in rows]}, indent=2) + '\n')
  summary = []
  for i, row in enumerate(rows):
    logging.info('Sweep point %d/%d: %s', i + 1, len(rows), row.name)
    before, after = run_point(row.workdir, row.config, row.point)
    summary.append((row.name, before, after))
    if after != 'done':  # Preempted: the rest waits for the re-run.
      summary += [(r.name,) + (status(r.workdir, r.config),) * 2
                  for r in rows[i + 1:]]
      break
  return summary
