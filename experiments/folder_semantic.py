r"""U-Net on your own folder of images and folder of class-id masks.

No code to write: point the `folder` data set (segjax/data/folder.py has
every rule) at the two folders and name the classes:

  python -m segjax.main --config experiments/folder_semantic.py:local \
      --config.data.images_dir=/data/images \
      --config.data.masks_dir=/data/masks \
      --config.data.class_names="('background', 'road', 'car')" \
      --workdir /tmp/segjax/my_data

Fields of `config.data` (all may be overridden on the command line):
  images_dir, masks_dir   the folders (local or gs://); subfolders pair by
                          relative path
  image_suffix, mask_suffix  '0001.jpg' <-> '0001_mask.png':
                          mask_suffix='_mask'
  class_names             in class-id order (required)
  ignore_value            the mask value that is void (255)
  palette, ignore_color   RGB masks: one (r, g, b) per class, and void's
  splits                  'auto' (train/ val/ test/ subfolders if present,
                          else split_lists if set, else a hash split),
                          'folders', 'lists'
                          (split_lists.train / .validation / .test: text
                          files of names), 'hash' (split_fractions, default
                          (0.8, 0.1, 0.1), by the SHA-256 of each name)
  data_dir                where the prepared copy goes (TFDS's folder)
The data is prepared on first use and again whenever a file or one of the
fields changes.

Variants:
  (none)  accelerator: U-Net (32..256), 512x512 crops, batch 16, 20k steps.
  local   CPU (2 cores: about 25 minutes): U-Net (16..128), 256x256 crops,
          batch 8, 1000 steps (about 1.3 s each, body at half resolution).
  tiny    seconds; for tests.
"""

from segjax.configs import base


def get_config(arg=None):
  """Returns the experiment config; `arg` picks a variant (see docstring)."""
  if arg not in (None, '', 'local', 'tiny'):
    raise ValueError(f'Unknown variant {arg!r} of folder_semantic; use '
                     '"local", "tiny" or nothing.')
  config = base.get_config()
  config.data_seed = 0
  config.data.name = 'folder'
  config.data.mask_kind = 'semantic'
  config.data.final_eval_splits = ('test',)
  config.data.augment = ('scale(0.75, 1.5)|crop(512, 512)|flip_lr|'
                         'jitter(0.2, 0.2, 0.2, 0.05)')
  config.data.eval_preprocess = ''  # Whole images, padded to size buckets.

  config.model.name = 'unet'
  config.model.features = (32, 64, 128, 256)
  config.model.upsample = 'bilinear'

  config.optimizer.learning_rate = 2e-3
  config.optimizer.weight_decay = 1e-4
  config.optimizer.grad_clip_norm = 1.0
  config.schedule.warmup_steps = 200
  config.best_checkpoint_metric = 'validation/miou'

  config.batch_size = 16
  config.eval_batch_size = 8
  config.num_train_steps = 20_000
  config.eval_every_steps = 2_000
  config.checkpoint_every_steps = 2_000

  if arg in ('local', 'tiny'):
    config.data.augment = ('scale(0.75, 1.5)|crop(256, 256)|flip_lr|'
                           'jitter(0.2, 0.2, 0.2, 0.05)')
    config.model.features = (16, 32, 64, 128)
    config.model.stem_stride = 2  # The body at half resolution.
    config.batch_size = 8
    config.eval_batch_size = 1
    config.num_train_steps = 1000
    config.log_every_steps = 100
    config.eval_every_steps = 500
    config.checkpoint_every_steps = 500
    config.schedule.warmup_steps = 50
  if arg == 'tiny':
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
