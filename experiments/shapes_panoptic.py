r"""Panoptic-DeepLab on the embedded `shapes` set: panoptic segmentation.

Things are the shapes (circle, triangle, rectangle: every shape its own
instance, overlapping ones included); stuff is the two textured background
classes. Run (CPU, 2 cores; the README has the measured PQ and time):

  python -m segjax.main --config experiments/shapes_panoptic.py \
      --workdir /tmp/segjax/shapes_panoptic

Scores on the validation split during training and on test at the end:
panoptic quality (PQ, things / stuff), COCO mask AP of the instances and
semantic mIoU; prediction PNGs are in panoptic colours (each instance its
own shade of its category's colour).

Variants (`--config experiments/shapes_panoptic.py:tiny`):
  (none)  128x128 `shapes/default`, Panoptic-DeepLab on a half-width
          ResNet-18, decoders at a quarter of the paper's widths; 2400
          steps (about 330 ms each on 2 CPU cores).
  tiny    32x32 `shapes/tiny`, a tiny model, a few steps: for tests.
"""

import ml_collections

from segjax.configs import base
from segjax.configs import options


def get_config(arg=None):
  """Returns the experiment config; `arg` picks a variant (see docstring)."""
  if arg not in (None, '', 'tiny'):
    raise ValueError(f'Unknown variant {arg!r} of shapes_panoptic; use '
                     '"tiny" or nothing.')
  config = base.get_config()
  config.data_seed = 0

  config.data.name = 'shapes/default'
  config.data.final_eval_splits = ('test',)
  config.data.augment = 'flip_lr'

  config.model.name = 'panoptic_deeplab'
  # Sized for a 2-core CPU (see the docstring): a ResNet-18 of half width
  # and the decoders at a quarter of the paper's widths, with plain 5x5
  # convs (XLA:CPU runs depthwise ones slowly). Step times measured here,
  # batch 8: paper-width decoders on a full ResNet-18, separable 1262 ms;
  # half-width backbone 932 ms (plain convs 621); these decoders 459 ms
  # separable, 329 ms plain (this config).
  config.model.backbone = 'resnet18'
  config.model.width = 32
  config.model.output_stride = 16
  config.model.update(options.panoptic_deeplab_widths('cpu'))
  config.model.dropout = 0.1

  # Panoptic-DeepLab's loss terms and the paper's weights.
  config.loss = ml_collections.ConfigDict({
      'semantic_weight': 1.0, 'center_weight': 200.0, 'offset_weight': 0.01,
      'top_k_percent_pixels': 0.2})

  # Targets, post-processing and scoring (segjax/configs/options.py). The
  # heads run at stride 4, so a center Gaussian narrower than ~4 px cannot
  # be drawn by them: sigma 4 rather than the 1 px that scaling Cityscapes'
  # 8 px to 128 px images would give. At most 7 shapes per image: top_k 16.
  options.add_panoptic_options(
      config, image_height=128, sigma=4.0, top_k=16, max_instances=32,
      max_dets=100)

  config.optimizer.learning_rate = 1e-3
  config.optimizer.weight_decay = 1e-4
  config.optimizer.grad_clip_norm = 1.0
  config.schedule.warmup_steps = 100

  config.best_checkpoint_metric = 'validation/pq'

  config.batch_size = 8
  config.eval_batch_size = 50
  config.num_train_steps = 2400
  config.eval_every_steps = 1200
  config.checkpoint_every_steps = 500

  if arg == 'tiny':
    config.data.name = 'shapes/tiny'
    config.model.update(options.panoptic_deeplab_widths('tiny'))
    options.add_panoptic_options(
        config, image_height=32, sigma=2.0, top_k=8, max_instances=16)
    config.eval_batch_size = 8
    config.num_train_steps = 6
    config.log_every_steps = 2
    config.eval_every_steps = 6
    config.checkpoint_every_steps = 6
    config.schedule.warmup_steps = 2
    config.num_images_to_save = 2
  return config
