"""Tasks: what differs between semantic, binary and panoptic segmentation.

`get_task(config, spec)` returns the task `config.task` names: one of
`TASKS` or an import path 'package.module:ClassName' of a `Task` subclass
(a project's own task, registered by nothing but its path). A run's
`config.json` holds the name, so any process (an evaluation in a fresh
process, a second host) finds the same task. See `base.py` for the
interface; adding a task is one module plus its line in `TASKS`. Task
modules import no TensorFlow.

  base.py      the `Task` interface and its semantic defaults
  semantic.py  softmax classes                    'semantic'
  binary.py    sigmoid foreground (+ boundary)    'binary'
  panoptic.py  Panoptic-DeepLab heads             'panoptic'
"""

import importlib

from segjax import models
from segjax.errors import ConfigError
from segjax.tasks.base import Task

# Registered name -> import path.
TASKS = {
    'semantic': 'segjax.tasks.semantic:SemanticTask',
    'binary': 'segjax.tasks.binary:BinaryTask',
    'panoptic': 'segjax.tasks.panoptic:PanopticTask',
}


def task_name(config):
  """`config.task`; a config written before it existed names its task by
  its blocks (`config.binary`, a panoptic model)."""
  name = config.get('task')
  if name:
    return name
  if config.get('binary') is not None:
    return 'binary'
  if models.outputs_of(config.model.get('name')) == 'panoptic_heads':
    return 'panoptic'
  return 'semantic'


def task_class(name):
  """The `Task` subclass of a registered name or 'module:Class' path."""
  path = TASKS.get(name, name)
  module_name, sep, attr = path.partition(':')
  if not sep:
    module_name, _, attr = path.rpartition('.')
  if not module_name or not attr:
    raise ConfigError(f'config.task={name!r} is neither a task name '
                      f'({sorted(TASKS)}) nor an import path '
                      "'package.module:ClassName'.")
  try:
    cls = getattr(importlib.import_module(module_name), attr)
  except (ImportError, AttributeError) as e:
    raise ConfigError(f'config.task={name!r}: cannot import it ({e}).') from e
  if not (isinstance(cls, type) and issubclass(cls, Task)):
    raise ConfigError(f'config.task={name!r} is not a segjax.tasks.Task '
                      'subclass.')
  return cls


def get_task(config, spec):
  """The task of `config` for a data set `spec`, checked against the model.

  Raises:
    ConfigError naming an unknown task, a bad task field, or a model whose
    outputs the task cannot use.
  """
  task = task_class(task_name(config))(config, spec)
  model = config.model.get('name')
  got = models.outputs_of(model)
  if got != task.model_outputs:
    raise ConfigError(
        f'config.model.name={model!r} returns {got}; the '
        f'{task_name(config)!r} task needs a model returning '
        f'{task.model_outputs}.')
  return task


__all__ = ['TASKS', 'Task', 'get_task', 'task_class', 'task_name']
