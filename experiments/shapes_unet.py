r"""U-Net on the embedded `shapes` data set: segjax's default experiment.

Run (CPU, about 5 minutes on 2 cores; see README for the measured mIoU):

  python -m segjax.main --config experiments/shapes_unet.py \
      --workdir /tmp/segjax/shapes_unet

Variants, chosen by the config argument (`--config experiments/shapes_unet.py:tiny`):
  (none)  128x128 `shapes/default`, the README's quick-start run.
  tiny    32x32 `shapes/tiny`, a tiny U-Net and a few steps: seconds, for
          tests and smoke runs.

Any field can be overridden, e.g. `--config.num_train_steps=2000` or
`--config.data.data_dir=/tmp/tfds`.
"""

import ml_collections

from segjax.configs import base


def get_config(arg=None):
  """Returns the experiment config; `arg` picks a variant (see docstring)."""
  config = base.get_config()
  config.data_seed = 0  # Shuffle order and augmentation.

  config.data.name = 'shapes/default'
  config.data.final_eval_splits = ('test',)  # Evaluated once, at the end.
  # Joint image / label-map augmentation (segjax.data.augment): a string of
  # ops, e.g. 'scale(0.5, 2.0)|crop(128, 128)|flip_lr|jitter(0.2, 0.2, 0.2)'.
  config.data.augment = 'flip_lr'

  config.model.name = 'unet'
  config.model.features = (16, 32, 64, 128)
  config.model.upsample = 'bilinear'
  # The body runs at 64x64 behind a strided conv: 1.8x faster on a CPU than
  # stem_stride=1, and it reaches the target mIoU in fewer steps.
  config.model.stem_stride = 2

  # Loss name -> weight (see segjax.losses.build_loss).
  config.loss = ml_collections.ConfigDict({'cross_entropy': 1.0, 'dice': 1.0})

  config.optimizer.learning_rate = 5e-3
  config.optimizer.weight_decay = 1e-4
  config.optimizer.grad_clip_norm = 1.0
  config.schedule.warmup_steps = 50

  config.batch_size = 8  # Global, over all devices and hosts.
  config.eval_batch_size = 40
  config.num_train_steps = 2000
  config.checkpoint_every_steps = 500

  if arg == 'tiny':
    config.data.name = 'shapes/tiny'
    config.model.features = (8, 16)
    config.model.stem_stride = 1
    config.batch_size = 8
    config.eval_batch_size = 8
    config.num_train_steps = 20
    config.log_every_steps = 5
    config.eval_every_steps = 10
    config.checkpoint_every_steps = 10
    config.schedule.warmup_steps = 2
  elif arg:
    raise ValueError(f'Unknown variant {arg!r} of shapes_unet; use "tiny" or '
                     'nothing.')
  return config
