r"""Instances from your own folder of images and instance-id masks.

Masks are instance-id maps, one per image: 0 background, 1..N the objects
(8 or 16-bit PNG or TIFF; ids need not be contiguous), one object class
unless `config.data.classes_dir` holds a class-id map per mask. No code to
write; for photos `0001.jpg` with masks `0001_mask.png`:

  python -m segjax.main --config experiments/folder_instances.py:local \
      --config.data.images_dir=/data/images \
      --config.data.masks_dir=/data/masks \
      --config.data.mask_suffix=_mask --workdir /tmp/segjax/my_instances

The default is the boundary U-Net (segjax/tasks/binary.py): a foreground
and an instance-boundary sigmoid channel, instances as the components of
foreground minus boundary grown back over the foreground, scored by
panoptic quality (PQ) and COCO mask AP beside foreground IoU / Dice. The
`binary` variants drop the boundary channel (instances are the connected
components of the foreground: fine for objects that rarely touch); the
`panoptic` variants train Panoptic-DeepLab (several thing classes need it).

Fields of `config.data` (segjax/data/folder.py has every rule):
  images_dir, masks_dir   the folders (local or gs://); subfolders pair by
                          relative path; one folder if mask_suffix is set
  image_suffix, mask_suffix  '0001.jpg' <-> '0001_mask.png':
                          mask_suffix='_mask'
  class_names, thing_classes  default ('background', 'object') and (1,)
  classes_dir             several classes: a class-id map per mask (same
                          relative name); then name the classes and things
  splits                  'auto' (train/ val/ test/ subfolders if present,
                          else split_lists if set, else a hash split),
                          'folders', 'lists' (split_lists.train /
                          .validation / .test: text files of names), 'hash'
                          (split_fractions, default (0.8, 0.1, 0.1), by the
                          SHA-256 of each name)
  data_dir                where the prepared copy goes (TFDS's folder)

The `local` variant is sized for a few hundred photos of a few hundred
pixels a side on a 2-core CPU (about 25 minutes): random scale 0.75-1.5 and
256x256 crops with flips and colour jitter (no rotation: photos have an
up), 1000 steps of batch 8 with the U-Net body at half resolution (41.6
GFLOP and 1.3 s a step on the 2-core CI machine kind, DSB2018 written as
such a folder, 2026-12-07); evaluation on whole images, padded to size
buckets (segjax/data/buckets.py) so a set of mixed sizes compiles a few
programs. Objects under 16 pixels are dropped as noise.

Variants:
  (none)          accelerator boundary U-Net (32..256), 512x512 crops.
  local, tiny     boundary U-Net on a CPU; tiny: seconds, for tests.
  binary, binary_local, binary_tiny   the U-Net without the boundary
                  channel (connected components), at the same sizes.
  panoptic        accelerator Panoptic-DeepLab (ResNet-50).
  panoptic_local, panoptic_tiny   its CPU and test sizes.
"""

import ml_collections

from segjax.configs import base
from segjax.configs import options

# Variant -> (head, size).
VARIANTS = {
    None: ('boundary', 'full'), '': ('boundary', 'full'),
    'local': ('boundary', 'local'), 'tiny': ('boundary', 'tiny'),
    'binary': ('binary', 'full'), 'binary_local': ('binary', 'local'),
    'binary_tiny': ('binary', 'tiny'),
    'panoptic': ('panoptic', 'full'), 'panoptic_local': ('panoptic', 'local'),
    'panoptic_tiny': ('panoptic', 'tiny'),
}


def _data(config, crop):
  config.data_seed = 0
  config.data.name = 'folder'
  config.data.mask_kind = 'instances'
  config.data.final_eval_splits = ('test',)
  config.data.augment = (f'scale(0.75, 1.5)|crop({crop}, {crop})|flip_lr|'
                         'jitter(0.2, 0.2, 0.2, 0.05)')
  config.data.eval_preprocess = ''  # Whole images, padded to size buckets.


def _unet(size, boundary):
  config = base.get_config()
  _data(config, 512 if size == 'full' else 256)
  config.model.name = 'unet'
  config.model.features = ((32, 64, 128, 256) if size == 'full'
                           else (16, 32, 64, 128))
  config.model.upsample = 'bilinear'
  if size == 'local':
    # The body at half resolution: a quarter of the FLOPs per step, for
    # objects of tens of pixels and more (stem_stride=1 for tiny ones).
    config.model.stem_stride = 2
  config.loss = ml_collections.ConfigDict(
      {'binary_cross_entropy': 1.0, 'binary_dice': 1.0})
  options.add_binary_options(config, boundary=boundary, boundary_width=1,
                             instances=True, min_area=16, max_dets=1000)
  config.best_checkpoint_metric = 'validation/pq'
  config.optimizer.learning_rate = 2e-3
  config.optimizer.weight_decay = 1e-4
  config.optimizer.grad_clip_norm = 1.0
  return config


def _panoptic(size):
  config = base.get_config()
  _data(config, 512 if size == 'full' else 256)
  config.model.name = 'panoptic_deeplab'
  config.model.backbone = 'resnet50' if size == 'full' else 'resnet18'
  config.model.output_stride = 16
  config.model.update(options.panoptic_deeplab_widths(
      {'full': 'paper', 'local': 'cpu', 'tiny': 'tiny'}[size]))
  if size != 'full':
    config.model.width = 32
  config.loss = ml_collections.ConfigDict({
      'semantic_weight': 1.0, 'center_weight': 200.0, 'offset_weight': 0.01,
      'top_k_percent_pixels': 0.2})
  options.add_panoptic_options(
      config, image_height=256, sigma=4.0, nms_kernel=7,
      small_instance_area=16, stuff_area=0, top_k=200, label_divisor=1000,
      max_instances=256, max_dets=1000)
  config.best_checkpoint_metric = 'validation/pq'
  config.optimizer.learning_rate = 1e-3
  config.optimizer.weight_decay = 1e-4
  config.optimizer.grad_clip_norm = 1.0
  return config


def get_config(arg=None):
  """Returns the experiment config; `arg` picks a variant (see docstring)."""
  if arg not in VARIANTS:
    raise ValueError(f'Unknown variant {arg!r} of folder_instances; use one '
                     f'of {[v for v in VARIANTS if v]} or nothing.')
  head, size = VARIANTS[arg]
  config = (_panoptic(size) if head == 'panoptic'
            else _unet(size, boundary=head == 'boundary'))
  config.batch_size = 16
  config.eval_batch_size = 8
  config.num_train_steps = 10_000
  config.schedule.warmup_steps = 200
  config.eval_every_steps = 2_000
  config.checkpoint_every_steps = 2_000
  if size in ('local', 'tiny'):
    config.batch_size = 8
    config.eval_batch_size = 1
    config.num_train_steps = 1000
    config.log_every_steps = 100
    config.eval_every_steps = 500
    config.checkpoint_every_steps = 500
    config.schedule.warmup_steps = 50
  if size == 'tiny':
    config.data.augment = 'crop(32, 32)|flip_lr'
    config.data.final_eval_splits = ()
    if head != 'panoptic':
      config.model.features = (8, 16)
    config.eval_batch_size = 8
    config.num_train_steps = 4
    config.log_every_steps = 2
    config.eval_every_steps = 4
    config.checkpoint_every_steps = 4
    config.schedule.warmup_steps = 1
    config.num_images_to_save = 2
  return config
