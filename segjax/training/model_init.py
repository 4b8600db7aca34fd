"""`config.model_init`: start a run from pretrained weights.

Resume order (as big_vision's): the workdir's own latest checkpoint, else
`config.model_init`, else a fresh initialisation. `model_init` holds

  path:    a PyTorch backbone file (.safetensors / .npz), or a segjax
           workdir, its `checkpoints/` folder or one `checkpoints/<step>/`.
  source:  'torchvision' | 'timm' (backbone files, through
           `segjax.models.load_pretrained`) or 'segjax' (another run).
  step:    for 'segjax': which checkpoint (default: the latest).
  exclude: for 'segjax': regexes of variable paths to leave as initialised,
           e.g. ('classifier/.*',) when the classes differ (paths as in
           `optimizer.param_paths`; batch statistics alike).

From another run, every variable whose path and shape match is copied
(params and batch statistics; never optimizer state, step or EMA); the
report lists what was not. A file that loads nothing is an error.
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
    init_config: `config.model_init` (path, source, step, exclude).
    variables: {'params', 'batch_stats'} host (NumPy) arrays of the model.

  Raises:
    ConfigError: unknown source, nothing usable at `path`, or nothing
      loaded.
  """
  source = init_config.source
  path = init_config.path
  if not path:
    raise ConfigError('config.model_init.path is not set.')
  if source == 'segjax':
    new, report = _from_checkpoint(
        flax.core.unfreeze(variables), path, init_config.step,
        tuple(init_config.exclude))
  elif source in pretrained.SOURCES:
    if not epath.Path(path).exists():
      raise ConfigError(f'config.model_init.path={path!r} does not exist.')
    try:
      new, report = pretrained.load_pretrained(variables, path, source)
    except ValueError as e:
      raise ConfigError(f'config.model_init: {e}') from e
  else:
    raise ConfigError(f'config.model_init.source={source!r}: choose '
                      f"'segjax' or one of {pretrained.SOURCES}.")
  if not report['loaded']:
    raise ConfigError(f'config.model_init: nothing in {path!r} matches the '
                      f'model (missing: {report["missing"][:5]}...).')
  return {'params': new['params'], 'batch_stats': new.get('batch_stats', {})
          }, report
