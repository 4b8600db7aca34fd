r"""U-Net on DSB2018 nuclei (Kaggle Data Science Bowl 2018, stage 1 train).

Semantic background / nucleus segmentation with a softmax head, or (the
`binary` and `boundary` variants) with sigmoid heads whose instances are
scored beside Panoptic-DeepLab's (experiments/dsb2018_panoptic.py; see
docs/instances.md). Prepare once: unzip
Kaggle's `stage1_train.zip` (see `segjax/data/dsb2018.py`) and point
`config.data.manual_dir` at the folder holding `stage1_train/`; segjax builds
the TFDS data set on first use (about 16 s). Run:

  python -m segjax.main --config experiments/dsb2018_unet.py \
      --config.data.manual_dir=/path/to/dsb2018 --workdir /tmp/segjax/dsb_unet

Splits (a function of the image id, see `dsb2018.split_of`): train 425,
validation 63, test 60 on the 548-image copy. Images have mixed sizes
(256x256 to 1388x1040): training uses random 256x256 crops (128x128 locally);
evaluation runs on whole images at their own size (each batch padded to its
largest image with ignored labels, so no label is resized).

Variants (`--config experiments/dsb2018_unet.py:local`):
  (none)  accelerator recipe: U-Net (32..256) at full resolution, batch 16,
          rotation / scale / flip / colour jitter, 10k steps.
  local   CPU run (minutes on 2 cores): narrower U-Net, 128x128 crops,
          batch 8, 400 steps; evaluation one image at a time (one compiled
          program per image size: about 9 sizes).
  tiny    seconds; for tests.
  binary  CPU run (16 min 48 s alone on the 2-core CI machine; README):
          the `local` U-Net, one sigmoid logit (nucleus), BCE + binary
          Dice, 1500 steps; scored by foreground IoU / Dice / precision /
          recall, and its instances (connected components of the
          thresholded mask, >= 8 px) by PQ and COCO mask AP; best
          checkpoint by validation IoU.
  boundary  as `binary` with a second sigmoid channel for instance
          boundaries (width 1 px, the same losses); instances are the
          components of foreground minus boundary, grown back over the
          foreground; best checkpoint by validation PQ.
  binary_tiny, boundary_tiny  seconds; for tests.

  python -m segjax.main --config experiments/dsb2018_unet.py:boundary \
      --config.data.manual_dir=/path/to/dsb2018 --workdir /tmp/segjax/dsb_bnd
"""

import ml_collections

from segjax.configs import base
from segjax.configs import options


# Variant -> (head, size): head None is the softmax one.
VARIANTS = {
    None: (None, 'full'), '': (None, 'full'), 'local': (None, 'local'),
    'tiny': (None, 'tiny'), 'binary': ('binary', 'local'),
    'boundary': ('boundary', 'local'), 'binary_tiny': ('binary', 'tiny'),
    'boundary_tiny': ('boundary', 'tiny'),
}


def get_config(arg=None):
  """Returns the experiment config; `arg` picks a variant (see docstring)."""
  if arg not in VARIANTS:
    raise ValueError(f'Unknown variant {arg!r} of dsb2018_unet; use one of '
                     f'{sorted(v for v in VARIANTS if v)} or nothing.')
  head, size = VARIANTS[arg]
  config = base.get_config()
  config.data_seed = 0

  config.data.name = 'dsb2018'
  # config.data.manual_dir holds stage1_train/; None means
  # <data_dir>/downloads/manual(/dsb2018).
  config.data.final_eval_splits = ('test',)
  # Microscopy has no "up": any rotation, then scale and crop (one fused warp).
  config.data.augment = ('rotate(180)|scale(0.75, 1.5)|crop(256, 256)|'
                         'flip_lr|jitter(0.2, 0.2, 0.2, 0.05)')
  config.data.eval_preprocess = ''  # Whole images at their own size.

  config.model.name = 'unet'
  config.model.features = (32, 64, 128, 256)
  config.model.upsample = 'bilinear'
  config.model.stem_stride = 1  # Small nuclei (a few pixels) need full res.

  config.loss = ml_collections.ConfigDict({'cross_entropy': 1.0, 'dice': 1.0})

  config.optimizer.learning_rate = 2e-3
  config.optimizer.weight_decay = 1e-4
  config.optimizer.grad_clip_norm = 1.0
  config.schedule.warmup_steps = 200

  config.batch_size = 16
  config.eval_batch_size = 8
  config.num_train_steps = 10_000

  if size in ('local', 'tiny'):
    config.data.augment = ('rotate(180)|scale(0.75, 1.5)|crop(128, 128)|'
                           'flip_lr|jitter(0.2, 0.2, 0.2, 0.05)')
    config.model.features = (16, 32, 64, 128)
    config.batch_size = 8
    config.eval_batch_size = 1
    config.num_train_steps = 400
    config.log_every_steps = 50
    config.eval_every_steps = 400
    config.checkpoint_every_steps = 200
    config.schedule.warmup_steps = 20
  if head is not None:
    config.loss = ml_collections.ConfigDict(
        {'binary_cross_entropy': 1.0, 'binary_dice': 1.0})
    # Nuclei have 21 px or more (1% have < 26): smaller components are
    # noise. Up to 375 nuclei per image: COCO maxDets 1000, as the
    # Panoptic-DeepLab recipe.
    options.add_binary_options(
        config, boundary=head == 'boundary', boundary_width=1,
        instances=True, min_area=8, max_dets=1000)
    config.best_checkpoint_metric = ('validation/pq' if head == 'boundary'
                                     else 'validation/iou')
    config.num_train_steps = 1500
    config.eval_every_steps = 1500
    config.checkpoint_every_steps = 500
    config.log_every_steps = 100
  if size == 'tiny':
    config.data.augment = 'crop(32, 32)|flip_lr'
    config.data.final_eval_splits = ()
    config.model.features = (8, 16)
    config.eval_batch_size = 8
    config.num_train_steps = 4
    config.log_every_steps = 2
    config.eval_every_steps = 4
    config.checkpoint_every_steps = 4
    config.schedule.warmup_steps = 1
    config.num_images_to_save = 2
  return config
