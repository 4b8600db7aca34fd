"""`config.model_init`: start a run from pretrained weights.

Resume order (as big_vision's): the workdir's own latest checkpoint, else
`config.model_init`, else a fresh initialisation. `model_init` holds

  path:    a PyTorch backbone file (.safetensors, .npz, or torch.save's .pth
           zip archive, read without running pickle code; see
           `segjax/models/pretrained.py`), or a segjax workdir, its
           `checkpoints/` folder or one `checkpoints/<step>/`.
  source:  'torchvision' | 'timm' (backbone files, through
           `segjax.models.load_pretrained`) or 'segjax' (another run).
  step:    for 'segjax': which checkpoint (default: the latest).
  exclude: for 'segjax': regexes of variable paths to leave as initialised,
           e.g. ('classifier/.*',) when the classes differ.
  allow_missing: regexes of required arrays that the file may lack (or
           hold in another shape); they keep their initialisation.

Patterns are matched (`re.fullmatch`) against paths without their
collection ('backbone/layer1_0/conv1/kernel', as in
`config.optimizer.freeze`), so one pattern covers params and batch
statistics alike.

Which arrays are required:

  'segjax'               every array of the model (params and batch
                         statistics) but those `exclude` names; a run of
                         another architecture or class count therefore
                         fails unless `exclude` / `allow_missing` say
                         which arrays to leave.
  'torchvision', 'timm'  every array of the ResNet backbone (the module
                         holding 'layer1_0'); the rest of the model
                         (decoder, heads) is new by design and keeps its
                         initialisation.

A required array that is missing from the file or has another shape there
is a `ConfigError` naming the first of them and the counts, unless
`allow_missing` matches it; a file that loads nothing is one whatever
`allow_missing` says. From another run every matching variable is
copied (params and batch statistics; never optimizer state, step or EMA);
from a backbone file every mapped tensor. The report `load` returns (and
`describe` turns into a log line) lists what was loaded, missing (and
allowed to be), unexpected (in the file, not in the model) and mismatched;
it is plain JSON for the run's records.
"""

import re

from etils import epath
import flax
import jax
import numpy as np
import orbax.checkpoint as ocp

from segjax.errors import ConfigError
from segjax.models import pretrained


def _checkpoint_dir(path, step):
  """The folder of one checkpoint step under a workdir / checkpoints dir."""
  path = epath.Path(path)
  if (path / 'checkpoints').is_dir():
    path = path / 'checkpoints'
  if (path / 'state').is_dir():  # Already one step's folder.
    return path
  steps = sorted(int(p.name) for p in path.iterdir() if p.name.isdigit()) if (
      path.is_dir()) else []
  if not steps:
    raise ConfigError(f'config.model_init.path={str(path)!r} holds no segjax '
                      'checkpoint.')
  if step is None:
    step = steps[-1]
  if step not in steps:
    raise ConfigError(f'config.model_init.step={step}: not in {steps}.')
  return path / str(step)


def _from_checkpoint(variables, path, step, exclude):
  folder = _checkpoint_dir(path, step)
  checkpointer = ocp.PyTreeCheckpointer()
  item = str(folder / 'state')
  # As host NumPy arrays: the saving run's device layout does not matter.
  tree = checkpointer.metadata(item).item_metadata.tree
  saved = checkpointer.restore(item, restore_args=jax.tree.map(
      lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree))
  source = flax.traverse_util.flatten_dict(
      {k: saved.get(k, {}) for k in ('params', 'batch_stats')}, sep='/')
  target = flax.traverse_util.flatten_dict(variables, sep='/')
  patterns = [re.compile(p) for p in exclude]
  report = {'loaded': 0, 'missing': [], 'unexpected': [],
            'shape_mismatch': [], 'excluded': []}
  out = {}
  for key, value in target.items():
    # Patterns see the path without its collection ('classifier/kernel'),
    # as in config.optimizer.freeze, so one pattern covers params and
    # batch statistics alike.
    if any(p.fullmatch(key.split('/', 1)[1]) for p in patterns):
      report['excluded'].append(key)
      out[key] = value
    elif key not in source:
      report['missing'].append(key)
      out[key] = value
    elif tuple(source[key].shape) != tuple(value.shape):
      report['shape_mismatch'].append(
          (key, tuple(source[key].shape), tuple(value.shape)))
      out[key] = value
    else:
      out[key] = np.asarray(source[key], dtype=value.dtype)
      report['loaded'] += 1
  report['unexpected'] = sorted(set(source) - set(target))
  report['checkpoint'] = str(folder)
  return flax.traverse_util.unflatten_dict(out, sep='/'), report


def load(init_config, variables):
  """Returns (variables, report) with the arrays `init_config` points at.

  Args:
    init_config: `config.model_init` (path, source, step, exclude,
      allow_missing).
    variables: {'params', 'batch_stats'} host (NumPy) arrays of the model.

  Returns:
    (variables, report): the new {'params', 'batch_stats'} and a JSON-able
    dict: 'path', 'source', 'loaded' (count), 'required' (count),
    'initialised' (model arrays not loaded, count), 'missing' (required
    paths not loaded, allowed ones included), 'allowed_missing' (those of
    them `allow_missing` matched), 'unexpected' (file entries the model
    has no place for), 'shape_mismatch' ([file key, file shape, model
    shape]) and, for 'segjax', 'excluded' and 'checkpoint'.

  Raises:
    ConfigError: unknown source, nothing usable at `path`, nothing loaded,
      or a required array missing or of another shape.
  """
  source = init_config.source
  path = init_config.path
  if not path:
    raise ConfigError('config.model_init.path is not set.')
  try:
    allow = [re.compile(p) for p in init_config.get('allow_missing', ())]
  except (re.error, TypeError) as e:
    raise ConfigError(f'config.model_init.allow_missing='
                      f'{init_config.allow_missing!r}: {e}.') from e
  if source == 'segjax':
    new, report = _from_checkpoint(
        flax.core.unfreeze(variables), path, init_config.step,
        tuple(init_config.exclude))
    # A mismatched array keeps its initialisation: as missing as an absent
    # one.
    not_loaded = report['missing'] + [k for k, *_ in report['shape_mismatch']]
    required = _count(variables) - len(report['excluded'])
  elif source in pretrained.SOURCES:
    if not epath.Path(path).exists():
      raise ConfigError(f'config.model_init.path={path!r} does not exist.')
    try:
      new, report = pretrained.load_pretrained(variables, path, source)
    except ValueError as e:
      raise ConfigError(f'config.model_init: {e}') from e
    # load_pretrained's 'missing' holds every backbone array it did not set
    # (mismatched ones included): exactly the required ones not loaded.
    not_loaded = list(report['missing'])
    required = report['loaded'] + len(not_loaded)
  else:
    raise ConfigError(f'config.model_init.source={source!r}: choose '
                      f"'segjax' or one of {pretrained.SOURCES}.")
  allowed = [k for k in not_loaded
             if any(p.fullmatch(k.split('/', 1)[1]) for p in allow)]
  report = {
      'path': str(path), 'source': source, 'loaded': report['loaded'],
      'required': required,
      'initialised': _count(variables) - report['loaded'],
      'missing': sorted(not_loaded), 'allowed_missing': sorted(allowed),
      'unexpected': list(report['unexpected']),
      'shape_mismatch': [[k, list(a), list(b)]
                         for k, a, b in report['shape_mismatch']],
      **{k: report[k] for k in ('excluded', 'checkpoint') if k in report}}
  if not report['loaded']:
    raise ConfigError(
        f'config.model_init: nothing in {path!r} matches the model '
        f'({len(report["missing"])} arrays missing or of another shape, '
        f'first: {report["missing"][:5]}).')
  absent = sorted(set(report['missing']) - set(allowed))
  if absent:
    mismatched = report['shape_mismatch']
    raise ConfigError(
        f'config.model_init: {len(absent)} of the {required} required '
        f'arrays are missing from {str(path)!r} or have another shape '
        f'there (loaded {report["loaded"]}), first: {absent[:5]}'
        + (f'; shape mismatches (key, file, model): {mismatched[:3]}'
           if mismatched else '') +
        '. If the model is meant to start without them, name them in '
        'config.model_init.allow_missing (regexes of paths without their '
        'collection, e.g. "head/.*").')
  return {'params': new['params'], 'batch_stats': new.get('batch_stats', {})
          }, report


def _count(variables):
  """Number of arrays in {'params', 'batch_stats'}."""
  return sum(len(flax.traverse_util.flatten_dict(variables.get(c, {})))
             for c in ('params', 'batch_stats'))


def describe(report):
  """One log line of a `load` report."""
  def first(items, n=8):
    return f'{len(items)}' + (f' {items[:n]}' if items else '')

  return (f'model_init: loaded {report["loaded"]} of the {report["required"]}'
          f' required arrays from {report["path"]} ({report["source"]}); '
          f'{report["initialised"]} arrays keep their initialisation; '
          f'missing {first(report["missing"])} (allowed '
          f'{len(report["allowed_missing"])}); unexpected '
          f'{first(report["unexpected"])}; shape mismatches '
          f'{first(report["shape_mismatch"], 4)}'
          + (f'; excluded {len(report["excluded"])}'
             if 'excluded' in report else '') + '.')
