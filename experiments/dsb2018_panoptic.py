r"""Panoptic-DeepLab on DSB2018 nuclei: instances (nuclei) on background stuff.

One thing class (nucleus) and one stuff class (background). Images hold up
to 375 nuclei, so post-processing keeps up to top_k=500 centers (ids up to
500 need label_divisor 1000 and PQ's max_instances 1024) and COCO mask AP
counts up to maxDets=1000 predictions per image. The mask AP reported is
COCO's (AP over IoU 0.50:0.95, AP50, AP75 from predictions ranked by
score), not the Kaggle DSB2018 score (mean over images and IoU thresholds
of TP / (TP + FP + FN)).

Prepare once as experiments/dsb2018_unet.py says (Kaggle's stage1_train
layout in config.data.manual_dir). Run:

  python -m segjax.main --config experiments/dsb2018_panoptic.py:local \
      --config.data.manual_dir=/path/to/dsb2018 --workdir /tmp/segjax/dsb_pdl

Splits: train 425, validation 63, test 60 (by image id, see
`dsb2018.split_of`). Evaluation runs on whole images at their own size (one
program per size: about 9), labels never resized.

Nuclei are small (a median of ~15 px across): the center Gaussian is sigma 3
(not Cityscapes' 8, which would merge neighbours' peaks; the heads run at
stride 4, so narrower peaks are not drawn well) and the NMS window 5 px.

Variants (`--config experiments/dsb2018_panoptic.py:local`):
  (none)  accelerator recipe: ResNet-50 (start from ImageNet weights with
          config.model_init), 256x256 crops, batch 16, 10k steps.
  local   CPU (about 25 minutes on 2 cores; README has the result): a
          half-width ResNet-18, narrow decoders, 192x192 crops, batch 8,
          1500 steps.
  tiny    seconds; for tests.
"""

import ml_collections

from segjax.configs import base
from segjax.configs import options


def get_config(arg=None):
  """Returns the experiment config; `arg` picks a variant (see docstring)."""
  if arg not in (None, '', 'local', 'tiny'):
    raise ValueError(f'Unknown variant {arg!r} of dsb2018_panoptic; use '
                     '"local", "tiny" or nothing.')
  config = base.get_config()
  config.data_seed = 0

  config.data.name = 'dsb2018'
  config.data.final_eval_splits = ('test',)
  # Microscopy has no "up": any rotation, then scale and crop (one warp).
  config.data.augment = ('rotate(180)|scale(0.75, 1.5)|crop(256, 256)|'
                         'flip_lr|jitter(0.2, 0.2, 0.2, 0.05)')
  config.data.eval_preprocess = ''  # Whole images at their own size.

  config.model.name = 'panoptic_deeplab'
  config.model.backbone = 'resnet50'
  config.model.output_stride = 16
  config.model.update(options.panoptic_deeplab_widths('paper'))
  config.model.dropout = 0.1

  config.loss = ml_collections.ConfigDict({
      'semantic_weight': 1.0, 'center_weight': 200.0, 'offset_weight': 0.01,
      'top_k_percent_pixels': 0.2})
  options.add_panoptic_options(
      config, image_height=256, sigma=3.0, nms_kernel=5,
      small_instance_area=64, stuff_area=0, top_k=500, label_divisor=1000,
      max_instances=1024, max_dets=1000)

  config.optimizer.learning_rate = 1e-3
  config.optimizer.weight_decay = 1e-4
  config.optimizer.grad_clip_norm = 1.0
  config.schedule.warmup_steps = 200

  config.best_checkpoint_metric = 'validation/pq'

  config.batch_size = 16
  config.eval_batch_size = 8
  config.num_train_steps = 10_000

  if arg in ('local', 'tiny'):
    config.data.augment = ('rotate(180)|scale(0.75, 1.5)|crop(192, 192)|'
                           'flip_lr|jitter(0.2, 0.2, 0.2, 0.05)')
    config.model.backbone = 'resnet18'
    config.model.width = 32
    config.model.update(options.panoptic_deeplab_widths('cpu'))
    config.batch_size = 8
    config.eval_batch_size = 1  # Images of ~9 sizes, one program each.
    config.num_train_steps = 1500
    config.log_every_steps = 100
    config.eval_every_steps = 1500
    config.checkpoint_every_steps = 500
    config.schedule.warmup_steps = 50
  if arg == 'tiny':
    config.data.augment = 'crop(32, 32)|flip_lr'
    config.data.final_eval_splits = ()
    config.model.update(options.panoptic_deeplab_widths('tiny'))
    config.eval_batch_size = 8
    config.num_train_steps = 4
    config.log_every_steps = 2
    config.eval_every_steps = 4
    config.checkpoint_every_steps = 4
    config.schedule.warmup_steps = 1
    config.num_images_to_save = 2
  return config
