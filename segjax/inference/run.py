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
     dropped: buckets pad),
  2. otherwise zero-padded to a size bucket (`modes.bucket_shape`), so
     mixed sizes compile a handful of programs (padding is seen by the
     model, including ASPP's global average: where all images share one
     size, a bucket equal to it avoids that),
  3. run through the jitted inference mode of `config.inference` (whole
     image, sliding window, multi-scale and flip averaging; see `modes.py`),
  4. cropped and, after step 1, resized back (bilinear probabilities), then
     argmax'ed.
Panoptic models (Panoptic-DeepLab) return dicts instead: 'labels' (semantic
argmax), 'panoptic', 'instance_ids' and per-instance 'scores' / 'classes' /
'valid' from `segjax.postprocess.panoptic.panoptic_postprocess`; they run whole
images (test-time augmentation of centers and offsets is not implemented).
Binary (sigmoid) runs (`config.binary`) return dicts too: 'labels' (the
thresholded foreground, 0 / 1), 'probabilities' [H, W, K] (foreground,
boundary), and with `config.binary.instances` the same instance keys as
panoptic runs (`segjax.postprocess.instances`, on the host); their
probabilities go through the inference modes (sigmoids averaged).
"""

import ast
import dataclasses
import json
import re

from absl import flags
from etils import epath
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from segjax import models
from segjax.errors import ConfigError
from segjax.postprocess import instances as instances_lib
from segjax.evaluation import modes
from segjax.postprocess import panoptic as postprocess_lib
from segjax.models.inputs import normalize_images
from segjax.training import binary as binary_lib

# config.inference defaults: how a run predicts unless told otherwise.
INFERENCE_DEFAULTS = {
    'mode': 'whole',  # 'whole' or 'slide'.
    'window': None,  # (h, w) of 'slide'.
    'stride': None,  # (h, w) of 'slide'; None: 2/3 of the window.
    'scales': (1.0,),
    'flip': False,
    'buckets': modes.BUCKETS,
}


def load_config(workdir, overrides=()):
  """The run's config (`<workdir>/config.json`) as a ConfigDict, with
  `--config.a.b=value` `overrides` applied (see `apply_overrides`)."""
  path = epath.Path(workdir) / 'config.json'
  if not path.exists():
    raise ConfigError(f'{workdir}: no config.json; is it a segjax workdir?')
  config = ml_collections.ConfigDict(json.loads(path.read_text()))
  return apply_overrides(config, overrides)


def apply_overrides(config, overrides):
  """Sets `--config.a.b=value` pairs on `config`; unknown fields are errors.

  Values are Python literals where they parse as one ('(0.75, 1.0)',
  'True', '512'), strings otherwise. `config.inference.*` may be set even
  when the run's config has no `inference` block.
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
    if parents[:1] == ['inference'] and 'inference' not in config:
      config.inference = dict(INFERENCE_DEFAULTS)
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
  tag, _, metric = config.get('best_checkpoint_metric',
                              'validation/miou').rpartition('/')
  sign = -1.0 if config.get('best_checkpoint_mode', 'max') == 'min' else 1.0
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
  options.update(dict(config.get('inference', None) or {}))
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
  spec = config.data.get('eval_preprocess') or ''
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

  @property
  def num_classes(self):
    return len(self.class_names)


def run_spec(workdir, config):
  """The classes of a run, from run_info.json (else from the data set)."""
  path = epath.Path(workdir) / 'run_info.json'
  info = json.loads(path.read_text()) if path.exists() else {}
  if 'class_names' in info and 'thing_classes' in info:
    return RunSpec(tuple(info['class_names']), tuple(info['thing_classes']))
  from segjax.data import datasets  # pylint: disable=g-import-not-at-top
  spec = datasets.get_spec(config.data.name)  # Older runs: imports TF.
  return RunSpec(tuple(spec.class_names), tuple(spec.thing_classes))


def build(config, spec):
  """The model of a run's config."""
  model_config = dict(config.model)
  for key in ('dtype', 'param_dtype'):
    if isinstance(model_config.get(key), str):
      model_config[key] = jnp.dtype(model_config[key])
  try:
    return models.build_model(
        model_config, binary_lib.num_outputs(config, spec.num_classes))
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


def resize(x, shape):
  """Bilinear resize of [B, h, w, ...] maps to [B, *shape, ...]."""
  return jax.image.resize(x, x.shape[:1] + tuple(shape) + x.shape[3:],
                          'bilinear')


def panoptic_predictions(outputs, size, config, spec):
  """Panoptic-DeepLab outputs [B, h, w, ...] -> post-processed at `size`.

  Outputs at another size (a run evaluated on resized images) are resized
  to `size` = (H, W) first; offsets are in pixels, so they scale too.

  Returns:
    {'labels', 'panoptic', 'instance_ids'} [B, H, W] int32 and
    {'scores', 'classes', 'valid'} [B, top_k].
  """
  h, w = outputs['semantic'].shape[1:3]
  if (h, w) != tuple(size):
    factor = jnp.asarray([size[0] / h, size[1] / w], jnp.float32)
    outputs = {
        'semantic': resize(outputs['semantic'], size),
        'center_heatmap': resize(outputs['center_heatmap'][..., None],
                                 size)[..., 0],
        'center_offsets': resize(outputs['center_offsets'], size) * factor}
  opts = config.panoptic
  result = postprocess_lib.panoptic_postprocess(
      outputs['semantic'], outputs['center_heatmap'],
      outputs['center_offsets'], thing_classes=tuple(spec.thing_classes),
      label_divisor=opts['label_divisor'],
      ignore_index=config.data.get('ignore_index', 255),
      **{k: opts[k] for k in postprocess_lib.OPTIONS})
  return {'labels': result['semantic'], 'panoptic': result['panoptic'],
          'instance_ids': result['instance_ids'],
          'scores': result['instance_scores'],
          'classes': result['instance_classes'],
          'valid': result['instance_valid']}


def binary_predictions(probs, opts, spec):
  """A binary run's [H, W, K] sigmoid probabilities -> its predictions.

  Returns:
    {'labels': [H, W] int32 thresholded foreground, 'probabilities':
    [H, W, K] float32}, and with `opts['instances']` 'instance_ids',
    'panoptic' [H, W] int32 and per-instance 'scores', 'classes', 'valid'
    [N] (all valid).
  """
  out = {'labels': (probs[..., 0] >= opts['threshold']).astype(np.int32),
         'probabilities': probs.astype(np.float32)}
  if opts['instances']:
    ids, scores = binary_lib.instances_of(probs, opts)
    thing = spec.thing_classes[0]
    out.update({
        'instance_ids': ids, 'scores': scores,
        'classes': np.full(scores.shape, thing, np.int32),
        'valid': np.ones(scores.shape, bool),
        'panoptic': instances_lib.instance_panoptic(
            ids, thing_class=thing, label_divisor=opts['label_divisor'])})
  return out


def _stack(arrays):
  """Stacks per-image arrays; [N] arrays of different N are padded with
  zeros (a binary run's per-instance arrays: 'valid' False there)."""
  if len({a.shape for a in arrays}) > 1 and all(a.ndim == 1
                                                 for a in arrays):
    n = max(a.shape[0] for a in arrays)
    arrays = [np.pad(a, (0, n - a.shape[0])) for a in arrays]
  return np.stack(arrays)


def make_predict_fn(config, model, variables, spec, **inference_overrides):
  """`predict_fn(images)` for a run (see the module docstring)."""
  options = inference_options(config, **inference_overrides)
  resize_to = eval_size(config)
  variables = jax.device_put(variables)
  task = binary_lib.task(config)
  panoptic = task == 'panoptic'
  binary = binary_lib.options(config, spec) if task == 'binary' else None

  if not panoptic:
    probs_fn = modes.make_predict_fn(
        lambda v, x: model.apply(v, x, train=False),
        binary_lib.num_outputs(config, spec.num_classes),
        mode=options['mode'], window=options['window'],
        stride=options['stride'], scales=tuple(options['scales']),
        flip=bool(options['flip']),
        activation='softmax' if binary is None else 'sigmoid')
  else:
    apply = jax.jit(lambda v, x: model.apply(v, x, train=False))

  def one(image):
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
      raise ValueError(f'images: each must be [H, W, 3] RGB, got '
                       f'{image.shape}.')
    h, w = image.shape[:2]
    x = normalize_images(jnp.asarray(image)[None])
    if resize_to:
      x = resize(x, resize_to)
    size = x.shape[1:3]
    # Buckets bound the number of compiled shapes for mixed sizes; after a
    # fixed resize there is one shape already, and padding would change
    # what global pooling (ASPP's image branch) averages over.
    target = size if resize_to else modes.bucket_shape(
        *size, buckets=tuple(options['buckets']))
    padded, mask = modes.pad_to(np.asarray(x), target)
    if not panoptic:
      probs = probs_fn(variables, padded, mask)[:, :size[0], :size[1]]
      if resize_to:
        probs = resize(probs, (h, w))
      if binary is not None:
        return binary_predictions(np.asarray(probs[0]), binary, spec)
      return np.asarray(jnp.argmax(probs[0], -1), np.int32)
    out = apply(variables, jnp.asarray(padded))
    out = {k: v[:, :size[0], :size[1]] for k, v in out.items()}
    return {k: np.asarray(v[0])
            for k, v in panoptic_predictions(out, (h, w), config, spec).items()}

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
  return predict_fn


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
  config = load_config(workdir)
  spec = run_spec(workdir, config)
  model = build(config, spec)
  step = resolve_step(workdir, config, checkpoint)
  variables = load_variables(workdir, step, ema=ema)
  predict_fn = make_predict_fn(config, model, variables, spec,
                               **inference_overrides)
  predict_fn.step = step
  return config, model, variables, predict_fn
