"""A trained run in a notebook: `load_run(workdir, checkpoint='best')`.

    config, model, variables, predict_fn = load_run('runs/camvid')
    labels = predict_fn(images)          # [B, H, W] int32 class ids

Everything comes from the workdir alone: `config.json` (the run's config),
`checkpoints/<step>/` (Orbax; read as host arrays, so any device count
works) and `metrics.jsonl` (which evaluated checkpoint was best). No
TensorFlow is imported.

`predict_fn(images)` takes uint8 RGB images of any size, as one [H, W, 3]
array, a [B, H, W, 3] batch, or a list of arrays of different sizes, and
returns label maps at each image's own size ([H, W] / [B, H, W] / a list).
Inside, each image is
  1. resized to the run's evaluation size when `config.data.eval_preprocess`
     is `resize(h, w)` (the size the model was evaluated at; `pad(h, w)` is
     dropped: buckets pad), and its outputs resized back,
  2. otherwise zero-padded to a size bucket (`segjax.data.buckets`), so
     mixed sizes compile a handful of programs (padding is seen by the
     model, including ASPP's global average, as in the trainer's
     evaluation), and its predictions cropped,
  3. run through `segjax.evaluation.loop.make_forward` with the inference
     mode of `config.inference` (whole image, sliding window, multi-scale
     and flip averaging; see `segjax.evaluation.modes`), the same function
     the trainer and `segjax.evaluate` score,
  4. post-processed by the run's task (`segjax.tasks`): a semantic run
     returns the label map, binary and panoptic runs a dict ('labels' and
     e.g. 'probabilities', 'panoptic', 'instance_ids', per-instance
     'scores' / 'classes' / 'valid').
"""

import ast
import dataclasses
import json
import re

from absl import flags
from etils import epath
import jax
import numpy as np
import orbax.checkpoint as ocp

from segjax import models
from segjax import tasks
from segjax.configs import base as base_config
from segjax.errors import ConfigError
from segjax.evaluation import loop as eval_loop
from segjax.evaluation import modes

INFERENCE_DEFAULTS = eval_loop.INFERENCE_DEFAULTS


def load_config(workdir, overrides=()):
  """The run's config (`<workdir>/config.json`) as a ConfigDict, with
  `--config.a.b=value` `overrides` applied (see `apply_overrides`)."""
  path = epath.Path(workdir) / 'config.json'
  if not path.exists():
    raise ConfigError(f'{workdir}: no config.json; is it a segjax workdir?')
  config = base_config.merge(base_config.get_config(),
                             json.loads(path.read_text()))
  return apply_overrides(config, overrides)


def apply_overrides(config, overrides):
  """Sets `--config.a.b=value` pairs on `config`; unknown fields are errors.

  Values are Python literals where they parse as one ('(0.75, 1.0)',
  'True', '512'), strings otherwise.
  """
  for item in overrides:
    key, sep, text = item[len('--config.'):].partition('=')
    if not sep:
      raise ConfigError(f'{item}: expected --config.<field>=<value>.')
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = text
    *parents, leaf = key.split('.')
    target = config
    for name in parents:
      if name not in target:
        raise ConfigError(f'--config.{key}: the run\'s config has no field '
                          f'{name!r}.')
      target = target[name]
    if leaf not in target:
      raise ConfigError(f'--config.{key}: the run\'s config has no field '
                        f'{leaf!r}; it has {sorted(target)}.')
    target[leaf] = value
  return config


def parse_flags(argv):
  """absl parses its flags; --config.* overrides pass through to main."""
  config = [a for a in argv[1:] if a.startswith('--config.')]
  others = [argv[0]] + [a for a in argv[1:] if not a.startswith('--config.')]
  return [argv[0]] + config + flags.FLAGS(others)[1:]


def _metric_rows(workdir):
  path = epath.Path(workdir) / 'metrics.jsonl'
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line]


def saved_steps(workdir):
  """Steps with a complete checkpoint, ascending."""
  folder = epath.Path(workdir) / 'checkpoints'
  if not folder.is_dir():
    return []
  return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


def resolve_step(workdir, config, checkpoint='best'):
  """The checkpoint step `checkpoint` ('best', 'latest' or a step) names.

  'best' ranks the saved checkpoints by `config.best_checkpoint_metric`
  ('<split>/<metric>') as recorded in metrics.jsonl, in
  `config.best_checkpoint_mode`; without any evaluated checkpoint it falls
  back to the latest.
  """
  steps = saved_steps(workdir)
  if not steps:
    raise ConfigError(f'{workdir}: no checkpoint under checkpoints/.')
  if checkpoint == 'latest':
    return steps[-1]
  if checkpoint != 'best':
    try:
      step = int(checkpoint)
    except (TypeError, ValueError):
      raise ConfigError(f"checkpoint={checkpoint!r}: 'best', 'latest' or a "
                        'step number.') from None
    if step not in steps:
      raise ConfigError(f'checkpoint {step} is not in {workdir}; saved steps: '
                        f'{steps}.')
    return step
  tag, _, metric = config.best_checkpoint_metric.rpartition('/')
  sign = -1.0 if config.best_checkpoint_mode == 'min' else 1.0
  scored = [(sign * row[metric], row['step']) for row in _metric_rows(workdir)
            if row.get('split') == tag and row.get('step') in steps and
            isinstance(row.get(metric), (int, float)) and
            np.isfinite(row[metric])]
  return max(scored)[1] if scored else steps[-1]


def load_variables(workdir, step, ema=False):
  """{'params', 'batch_stats'} of checkpoint `step` as host NumPy arrays."""
  item = str(epath.Path(workdir) / 'checkpoints' / str(step) / 'state')
  checkpointer = ocp.PyTreeCheckpointer()
  tree = checkpointer.metadata(item).item_metadata.tree
  saved = checkpointer.restore(item, restore_args=jax.tree.map(
      lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree))
  prefix = 'ema_' if ema else ''
  if ema and not saved.get('ema_params'):
    raise ConfigError(f'{workdir}: checkpoint {step} holds no EMA weights '
                      '(the run had ema_decay=0).')
  return {'params': saved[prefix + 'params'],
          'batch_stats': saved.get(prefix + 'batch_stats') or {}}


def inference_options(config, **overrides):
  """`config.inference` over the defaults, with `overrides` on top."""
  options = dict(INFERENCE_DEFAULTS)
  options.update(dict(config.inference))
  options.update({k: v for k, v in overrides.items() if v is not None})
  unknown = sorted(set(options) - set(INFERENCE_DEFAULTS))
  if unknown:
    raise ConfigError(f'config.inference has unknown field(s) {unknown}; '
                      f'known: {sorted(INFERENCE_DEFAULTS)}.')
  if options['mode'] == 'slide' and options['window'] and not (
      options['stride']):
    options['stride'] = tuple(max(1, 2 * w // 3) for w in options['window'])
  return options


def eval_size(config):
  """(h, w) from `config.data.eval_preprocess` = 'resize(h, w)', else None.

  Only resize and pad mean something for inference on whole images (pad is
  what buckets do); anything else is a ConfigError naming it.
  """
  spec = config.data.eval_preprocess or ''
  size = None
  for op in filter(None, (s.strip() for s in spec.split('|'))):
    match = re.fullmatch(r'(resize|pad)\(\s*(\d+)\s*,\s*(\d+)\s*\)', op)
    if not match:
      raise ConfigError(f'config.data.eval_preprocess op {op!r}: inference '
                        'on whole images supports resize(h, w) and pad(h, w).')
    if match.group(1) == 'resize':
      size = (int(match.group(2)), int(match.group(3)))
  return size


# What inference needs of a data set's spec (segjax.data.datasets imports
# TensorFlow; a run's run_info.json holds these without it).
@dataclasses.dataclass(frozen=True)
class RunSpec:
  class_names: tuple
  thing_classes: tuple
  ignore_index: int = 255

  @property
  def num_classes(self):
    return len(self.class_names)


def run_spec(workdir, config):
  """The classes of a run, from run_info.json (else from the data set)."""
  path = epath.Path(workdir) / 'run_info.json'
  info = json.loads(path.read_text()) if path.exists() else {}
  if 'class_names' in info and 'thing_classes' in info:
    # Runs recorded before the spec owned it: their config's, else 255.
    ignore = info.get('ignore_index', config.data.get('ignore_index', 255))
    return RunSpec(tuple(info['class_names']), tuple(info['thing_classes']),
                   int(ignore))
  from segjax.data import datasets  # pylint: disable=g-import-not-at-top
  spec = datasets.spec_for(config.data)  # Older runs: imports TF.
  return RunSpec(tuple(spec.class_names), tuple(spec.thing_classes),
                 spec.ignore_index)


def build(config, task):
  """The model of a run's config, with its task's output channels."""
  try:
    return models.build_model(config.model, task.num_outputs())
  except ValueError as e:
    raise ConfigError(str(e)) from e


def _as_list(images):
  """(list of [H, W, 3] uint8 arrays, how to return results)."""
  if isinstance(images, (list, tuple)):
    return [np.asarray(x) for x in images], 'list'
  images = np.asarray(images)
  if images.ndim == 3:
    return [images], 'single'
  if images.ndim == 4:
    return list(images), 'batch'
  raise ValueError(f'images: expected [H, W, 3], [B, H, W, 3] or a list, got '
                   f'shape {images.shape}.')


def _stack(arrays):
  """Stacks per-image arrays; [N] arrays of different N are padded with
  zeros (a binary run's per-instance arrays: 'valid' False there)."""
  if len({a.shape for a in arrays}) > 1 and all(a.ndim == 1
                                                 for a in arrays):
    n = max(a.shape[0] for a in arrays)
    arrays = [np.pad(a, (0, n - a.shape[0])) for a in arrays]
  return np.stack(arrays)


def _crop(prediction, padded, size):
  """Crops [H', W', ...] maps of a padded image's prediction to `size`."""
  return {k: v[:size[0], :size[1]] if v.shape[:2] == padded else v
          for k, v in prediction.items()}


def forward_of(config, model, task, **inference_overrides):
  """(forward, activated, options, resize_to) of a run: the model pass of
  `segjax.evaluation.loop.make_forward` with the run's inference options
  (`inference_overrides` on top) and evaluation size."""
  options = inference_options(config, **inference_overrides)
  resize_to = eval_size(config)
  try:
    forward, activated = eval_loop.make_forward(model, task, options,
                                                resize_to)
  except ValueError as e:
    raise ConfigError(f'config.inference: {e}') from e
  return forward, activated, options, resize_to


def make_predict_fn(config, model, variables, task, **inference_overrides):
  """`predict_fn(images)` for a run (see the module docstring)."""
  forward, activated, options, resize_to = forward_of(
      config, model, task, **inference_overrides)
  variables = jax.device_put(variables)
  predict = jax.jit(lambda v, x, pixels: task.predict(forward(v, x, pixels),
                                                      activated))

  def one(image, raw=False):
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
      raise ValueError(f'images: each must be [H, W, 3] RGB, got '
                       f'{image.shape}.')
    size = image.shape[:2]
    # Buckets bound the number of compiled shapes for mixed sizes; with a
    # fixed evaluation resize the model sees one shape already.
    target = size if resize_to else modes.bucket_shape(
        *size, buckets=tuple(options['buckets']))
    padded, pixels = modes.pad_to(image[None], target)
    out = jax.device_get(predict(variables, padded, pixels))
    out = _crop({k: v[0] for k, v in out.items()}, tuple(target), size)
    out = task.host_predictions(out)
    return out if raw else task.user_result(out)

  def predict_fn(images):
    items, kind = _as_list(images)
    results = [one(x) for x in items]
    if kind == 'single':
      return results[0]
    if kind == 'batch':
      if isinstance(results[0], dict):
        return {k: _stack([r[k] for r in results]) for k in results[0]}
      return np.stack(results)
    return results

  predict_fn.options = options
  predict_fn.task = task
  predict_fn.jitted = predict  # The compiled program per input shape.
  # One [H, W, 3] image -> the task's whole predictions dict (what
  # `Task.write_outputs` takes).
  predict_fn.raw = lambda image: one(image, raw=True)
  return predict_fn


def load_model(workdir, overrides=()):
  """(config, task, model) of a run's workdir, `overrides` applied."""
  config = load_config(workdir, overrides)
  task = tasks.get_task(config, run_spec(workdir, config))
  return config, task, build(config, task)


def load_run(workdir, checkpoint='best', *, ema=False, **inference_overrides):
  """(config, model, variables, predict_fn) of a trained run.

  Args:
    workdir: the run's folder (local or gs://).
    checkpoint: 'best' (by the run's best_checkpoint_metric), 'latest' or a
      step number.
    ema: the EMA weights instead of the raw ones.
    **inference_overrides: fields of `config.inference` (mode, window,
      stride, scales, flip, buckets), e.g. `scales=(0.75, 1.0, 1.25),
      flip=True`.
  """
  config, task, model = load_model(workdir)
  step = resolve_step(workdir, config, checkpoint)
  variables = load_variables(workdir, step, ema=ema)
  predict_fn = make_predict_fn(config, model, variables, task,
                               **inference_overrides)
  predict_fn.step = step
  return config, model, variables, predict_fn
