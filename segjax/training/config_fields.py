"""The trainer's optional config fields, declared once for every experiment.

An experiment's `get_config` calls `add_trainer_options(config)` after it has
set `config.optimizer`, so that each field below exists (at its default) and
`--config.<field>=...` can set it; a field an experiment already set is left
as it is. What the fields do: docs/training.md.
"""

import ml_collections

_placeholder = ml_collections.config_dict.placeholder


def add_trainer_options(config):
  """Adds the optional trainer fields `config` does not set yet.

  Args:
    config: an experiment's ConfigDict with `optimizer` set.

  Returns:
    `config`, for chaining.
  """
  defaults = {
      # EMA of the weights, evaluated and saved beside them (0 = off).
      'ema_decay': 0.0,
      # Micro-batches per step (gradient accumulation).
      'grad_accum_steps': 1,
      # Loss weight of an auxiliary head (FCN aux_head=True).
      'aux_loss_weight': 0.0,
      # Start from other weights: a torchvision / timm backbone file or
      # another segjax run (source 'segjax').
      'model_init': ml_collections.ConfigDict({
          'path': _placeholder(str), 'source': 'segjax',
          'step': _placeholder(int), 'exclude': ()}),
      # Besides the latest checkpoints, keep the best by
      # '<eval split>/<metric>' (higher is better; best_checkpoint_mode).
      'keep_best_checkpoints': 1,
      'best_checkpoint_metric': 'validation/miou',
      'best_checkpoint_mode': 'max',
      # Stop before training when the compiled step needs more bytes per
      # device than this (None: the device's own limit where reported).
      'memory_limit_bytes': _placeholder(int),
      # Device mesh: (axis, size) pairs over 'data', 'fsdp', 'spatial'
      # (docs/scaling.md); state leaves this large are split over 'fsdp'.
      'mesh': (('data', -1),),
      'fsdp_min_size': 2**14,
  }
  for key, value in defaults.items():
    if key not in config:
      config[key] = value
  optimizer_defaults = {
      'freeze': (),  # Regexes of parameter paths.
      'lr_multipliers': (),  # ((regex, factor), ...)
  }
  for key, value in optimizer_defaults.items():
    if key not in config.optimizer:
      config.optimizer[key] = value
  return config
