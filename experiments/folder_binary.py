r"""Binary U-Net (one sigmoid logit) on your own folder of images and masks.

For foreground / background masks: 0/255 or 0/1 PNGs (or TIFFs),
foreground where the value is above half of the mask's range
(`config.data.binary_threshold`, default 0.5). No code to write:

  python -m segjax.main --config experiments/folder_binary.py:local \
      --config.data.images_dir=/data/images \
      --config.data.masks_dir=/data/masks \
      --workdir /tmp/segjax/my_binary

Scored by foreground IoU, Dice, precision and recall. For one mask per
object (instance-id maps) and PQ / mask AP, use
experiments/folder_instances.py.

Fields of `config.data` (segjax/data/folder.py has every rule):
  images_dir, masks_dir   the folders (local or gs://); subfolders pair by
                          relative path; one folder if mask_suffix is set
  image_suffix, mask_suffix  '0001.jpg' <-> '0001_mask.png':
                          mask_suffix='_mask'
  binary_threshold        foreground above this fraction of the mask's
                          range (0.5; the range is 1, 255 or 65535)
  class_names             default ('background', 'foreground')
  splits                  'auto' (train/ val/ test/ subfolders if present,
                          else split_lists if set, else a hash split),
                          'folders', 'lists' (split_lists.train /
                          .validation / .test: text files of names), 'hash'
                          (split_fractions, default (0.8, 0.1, 0.1), by the
                          SHA-256 of each name)
  data_dir                where the prepared copy goes (TFDS's folder)

Variants:
  (none)  accelerator: U-Net (32..256), 512x512 crops, batch 16, 10k steps.
  local   CPU (2 cores: about 25 minutes): U-Net (16..128), 256x256 crops,
          batch 8, 1000 steps (about 1.3 s each, body at half resolution).
  tiny    seconds; for tests.
"""

import importlib.util
import pathlib

import ml_collections

from segjax.configs import options

# The sibling experiment, loaded by path so this file works from any folder.
_spec = importlib.util.spec_from_file_location(
    'folder_semantic', pathlib.Path(__file__).with_name('folder_semantic.py'))
folder_semantic = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(folder_semantic)


def get_config(arg=None):
  """Returns the experiment config; `arg` picks a variant (see docstring)."""
  if arg not in (None, '', 'local', 'tiny'):
    raise ValueError(f'Unknown variant {arg!r} of folder_binary; use '
                     '"local", "tiny" or nothing.')
  config = folder_semantic.get_config(arg)
  config.data.mask_kind = 'binary'
  config.loss = ml_collections.ConfigDict(
      {'binary_cross_entropy': 1.0, 'binary_dice': 1.0})
  options.add_binary_options(config)
  config.best_checkpoint_metric = 'validation/iou'
  if arg in (None, ''):
    config.num_train_steps = 10_000
  return config
