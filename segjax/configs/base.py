"""The base config every experiment starts from: every field segjax reads.

    config = base.get_config()
    config.data.name = 'shapes/default'
    config.model.name = 'unet'
    ...

Library code reads config fields directly (`config.ema_decay`, not
`config.get('ema_decay', 0.0)`), so each default is written once, here. An
experiment changes what differs from it, `--config.a.b=value` overrides
any field, and a run's `config.json` (written in full) is read back onto
this base (`merge`), so a workdir written before a field existed still
loads, with that field at its default. What the fields do:
docs/training.md (trainer), docs/data.md (data), docs/inference.md
(`inference`).
"""

import ml_collections

from segjax.data import buckets

_placeholder = ml_collections.config_dict.placeholder

# How a run predicts unless its config.inference says otherwise
# (segjax.evaluation.modes, segjax.inference).
INFERENCE_DEFAULTS = {
    'mode': 'whole',  # 'whole' or 'slide'.
    'window': None,  # (h, w) of 'slide'.
    'stride': None,  # (h, w) of 'slide'; None: 2/3 of the window.
    'scales': (1.0,),
    'flip': False,
    'buckets': buckets.BUCKETS,
}


def _data():
  return ml_collections.ConfigDict({
      'name': _placeholder(str),  # A segjax.data.datasets name, or 'folder'.
      'data_dir': _placeholder(str),  # TFDS's folder (~/tensorflow_datasets).
      'manual_dir': _placeholder(str),  # Downloaded-by-hand data.
      'train_split': 'train',
      'eval_split': 'validation',  # Evaluated during training.
      'final_eval_splits': (),  # Evaluated once, at the end.
      'shuffle_buffer': 10_000,
      'cache': True,  # Decoded training examples kept in memory.
      # Seedless ops applied once per training example, before the cache.
      'train_preprocess': '',
      # Per-step joint augmentation, e.g. 'scale(0.5, 2.0)|crop(256, 256)'.
      'augment': '',
      # Deterministic ops before evaluation, e.g. 'resize(360, 480)'.
      'eval_preprocess': '',
      # name='folder': a folder of images and one of masks
      # (segjax/data/folder.py has every rule).
      'images_dir': _placeholder(str),
      'masks_dir': _placeholder(str),
      'classes_dir': _placeholder(str),  # instances: class-id maps.
      'image_suffix': '',  # 0001<image_suffix>.jpg
      'mask_suffix': '',  # 0001<mask_suffix>.png
      'mask_kind': 'semantic',  # 'semantic', 'binary' or 'instances'.
      'class_names': (),  # In id order; binary / instances have defaults.
      'thing_classes': _placeholder(tuple),  # Names or ids; None: default.
      'ignore_value': 255,  # Void in semantic class-id masks.
      'palette': (),  # Semantic RGB masks: class id -> (r, g, b).
      'ignore_color': (),  # Semantic RGB masks: void (r, g, b).
      'binary_threshold': 0.5,  # Of the mask's range (1, 255 or 65535).
      'splits': 'auto',  # 'auto', 'folders', 'lists' or 'hash'.
      'split_lists': {'train': _placeholder(str),
                      'validation': _placeholder(str),
                      'test': _placeholder(str)},
      'split_fractions': (0.8, 0.1, 0.1),  # 'hash': train, val, test.
  })


def get_config():
  """The defaults of every field (an experiment sets what differs)."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.data_seed = _placeholder(int)  # Shuffle and augmentation; None: seed.
  # What kind of segmentation (segjax/tasks): 'semantic', 'binary',
  # 'panoptic' or an import path 'package.module:ClassName'.
  config.task = 'semantic'
  config.data = _data()
  config.model = ml_collections.ConfigDict({
      'name': _placeholder(str),  # segjax.models.MODELS names.
      # Compute dtype; 'bfloat16' = mixed precision (params, optimizer
      # state, losses and metrics stay float32).
      'dtype': 'float32',
      # Kernel formulations (segjax/kernels.py): 'auto' picks per platform
      # when the program is lowered; 'segjax' / 'xla' everywhere.
      'kernels': 'auto',
  })
  # Loss name -> weight (segjax.losses.build_loss).
  config.loss = ml_collections.ConfigDict({'cross_entropy': 1.0})
  config.optimizer = ml_collections.ConfigDict({
      'name': 'adamw', 'learning_rate': 1e-3, 'weight_decay': 0.0,
      'grad_clip_norm': 0.0,
      'freeze': (),  # Regexes of parameter paths.
      'lr_multipliers': (),  # ((regex, factor), ...)
  })
  config.schedule = ml_collections.ConfigDict({'name': 'cosine',
                                               'warmup_steps': 0})
  config.batch_size = 8  # Global, over all devices and hosts.
  config.eval_batch_size = _placeholder(int)  # None: batch_size.
  config.num_train_steps = 1000
  config.log_every_steps = 100
  config.eval_every_steps = 1000
  config.checkpoint_every_steps = 1000
  config.keep_checkpoints = 3
  config.num_images_to_save = 4  # Prediction panels per evaluation.
  # TensorBoard event files in <workdir>/tensorboard/ (scalars and panels).
  config.tensorboard = True
  # Steps to trace with jax.profiler (their span, e.g. (101, 105)), written
  # to <workdir>/tensorboard/plugins/profile for TensorBoard's profile tab.
  config.profile_steps = ()
  # EMA of the weights, evaluated and saved beside them (0 = off).
  config.ema_decay = 0.0
  config.grad_accum_steps = 1  # Micro-batches per step.
  config.aux_loss_weight = 0.0  # An auxiliary head's (FCN aux_head=True).
  # Start from other weights: a torchvision / timm backbone file or another
  # segjax run (source 'segjax'). allow_missing: regexes of required arrays
  # the file may lack, e.g. ('head/.*',) for a fine-tuning run's new head
  # (segjax/training/model_init.py says which arrays are required).
  config.model_init = ml_collections.ConfigDict({
      'path': _placeholder(str), 'source': 'segjax',
      'step': _placeholder(int), 'exclude': (), 'allow_missing': ()})
  # Besides the latest checkpoints, keep the best by '<eval split>/<metric>'
  # (higher is better, or lower with best_checkpoint_mode='min').
  config.keep_best_checkpoints = 1
  config.best_checkpoint_metric = 'validation/miou'
  config.best_checkpoint_mode = 'max'
  # Stop before training when the compiled step needs more bytes per device
  # than this (None: the device's own limit where reported).
  config.memory_limit_bytes = _placeholder(int)
  # Device mesh: (axis, size) pairs over 'data', 'fsdp', 'spatial'
  # (docs/scaling.md); state leaves this large are split over 'fsdp'.
  config.mesh = (('data', -1),)
  # Multi-slice TPU runs: (axis, slices) pairs, how many slices each axis
  # spans over the data-centre network; the rest of each axis stays within
  # a slice (docs/scaling.md). None: one slice.
  config.mesh_dcn = _placeholder(tuple)
  config.fsdp_min_size = 2**14
  # XLA:CPU devices (training/cpu_devices.py): -1 = one per core, as many
  # as divide the batch; N = N. No effect on GPUs / TPUs.
  config.cpu_devices = -1
  # How a trained run predicts (segjax.inference, segjax.evaluate).
  config.inference = ml_collections.ConfigDict(INFERENCE_DEFAULTS)
  return config


# Fields that map free names to values (loss name -> weight): a saved one
# replaces the base's whole, rather than adding to it.
_MAPPINGS = ('loss',)


def _tuples(value):
  """JSON lists back to the tuples a config holds."""
  if isinstance(value, list):
    return tuple(_tuples(v) for v in value)
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  return value


def merge(base, saved):
  """`base` with every field of the plain dict `saved` (a run's
  config.json) set over it, recursively; fields `base` lacks are added
  (an older run's), so nothing saved is lost."""
  for key, value in _tuples(saved).items():
    if (isinstance(value, dict) and key in base and key not in _MAPPINGS and
        isinstance(base[key], ml_collections.ConfigDict)):
      merge(base[key], value)
    elif key in base and not isinstance(value, dict):
      base[key] = value
    else:  # A new field, or a whole block: its own types.
      with base.ignore_type():
        base[key] = value
  return base
