r"""Panoptic-DeepLab ResNet-50 on Cityscapes panoptic (19 classes, 8 things).

The published setup it follows: Panoptic-DeepLab R50-os32 (torchvision
ResNet-50, output stride 32), Cityscapes val PQ 59.8, AP 26.9, mIoU 78.6
(source: github.com/bowenc0221/panoptic-deeplab, MODEL_ZOO.md, Cityscapes
baselines); the paper's settings (Cheng et al. 2020, Section 4): Adam, lr
0.001, poly schedule, batch 32, 60k-90k iterations, random scale 0.5-2.0,
crop and flip, loss weights 1 / 200 / 0.01, top-20% bootstrapped
cross-entropy, center sigma 8, small instances (< 4096 px) weighted 3, and
post-processing with threshold 0.1, NMS kernel 7, top-k 200 and a stuff
area limit of 2048 (deeplab2's Cityscapes defaults). This recipe: 512x1024
crops (detectron2's Panoptic-DeepLab recipe; the reference used full
1025x2049 crops), 90k steps, evaluation on whole 1024x2048 images.

Prepare once: unzip (or just place) `leftImg8bit_trainvaltest.zip` and
`gtFine_trainvaltest.zip` from www.cityscapes-dataset.com in one folder;
segjax's `cityscapes_panoptic` builder reads the instanceIds files on first
use. Start from ImageNet weights (torchvision's resnet50) to aim at the
number above. Run on a TPU VM or GPU machine:

  python -m segjax.main --config experiments/cityscapes_panoptic_deeplab.py \
      --config.data.manual_dir=/path/to/cityscapes \
      --config.model_init.path=/path/to/resnet50.safetensors \
      --config.model_init.source=torchvision --workdir gs://bucket/cs_pdl

Variants (`--config experiments/cityscapes_panoptic_deeplab.py:local`):
  (none)  the recipe above.
  tpu     the recipe on a TPU v4-32 slice (16 chips): bfloat16
          compute (float32 parameters and optimizer state), batch 32 as
          2 per chip, data-parallel mesh. Estimated step time, not
          measured: 115 GFLOP forward per 512x1024 image (XLA's count),
          x3 for the train step, over 16 x 275 TFLOP/s (TPU v4's published
          bfloat16 peak): 2.5 ms at peak, ~6.2 ms at 40% of it
          (segjax/configs/tpu.py).
  local   CPU (tens of minutes on 2 cores): images resized to 256x512 for
          training and evaluation (scores not comparable with full
          resolution), 128x256 crops, a half-width ResNet-18, narrow
          decoders, 300 steps.
  tiny    seconds; for tests.
"""

import ml_collections

from segjax.configs import base
from segjax.configs import tpu
from segjax.configs import options


def get_config(arg=None):
  """Returns the experiment config; `arg` picks a variant (see docstring)."""
  if arg not in (None, '', 'local', 'tiny', 'tpu'):
    raise ValueError(f'Unknown variant {arg!r} of cityscapes_panoptic_deeplab'
                     '; use "local", "tiny", "tpu" or nothing.')
  config = base.get_config()
  config.data_seed = 0

  config.data.name = 'cityscapes_panoptic'
  config.data.final_eval_splits = ()  # Test labels are placeholders.
  config.data.augment = 'scale(0.5, 2.0)|crop(512, 1024)|flip_lr'
  config.data.eval_preprocess = ''  # Whole 1024x2048 images.

  config.model.name = 'panoptic_deeplab'
  config.model.backbone = 'resnet50'
  config.model.output_stride = 32
  config.model.rates = (3, 6, 9)  # The reference's ASPP rates at stride 32.
  config.model.update(options.panoptic_deeplab_widths('paper'))
  config.model.dropout = 0.1

  config.loss = ml_collections.ConfigDict({
      'semantic_weight': 1.0, 'center_weight': 200.0, 'offset_weight': 0.01,
      'top_k_percent_pixels': 0.2})
  # The paper's pixel values at 1024 x 2048; up to ~100 instances a class.
  options.add_panoptic_options(config, image_height=1024,
                               max_instances=512, max_dets=200)

  config.optimizer.learning_rate = 1e-3
  config.schedule.name = 'poly'
  config.schedule.power = 0.9
  config.schedule.end_factor = 0.0

  config.best_checkpoint_metric = 'validation/pq'

  config.batch_size = 32
  config.eval_batch_size = 8
  config.num_train_steps = 90_000
  config.eval_every_steps = 10_000
  config.checkpoint_every_steps = 2_000

  if arg == 'tpu':
    tpu.apply(config, chips=16, per_chip_batch=2,
              eval_per_chip_batch=1)
  if arg in ('local', 'tiny'):
    config.data.cache = False
    config.data.augment = ('resize(256, 512)|scale(0.75, 1.5)|'
                           'crop(128, 256)|flip_lr')
    config.data.eval_preprocess = 'resize(256, 512)'
    config.model.backbone = 'resnet18'
    config.model.width = 32
    config.model.output_stride = 16
    config.model.rates = None
    config.model.update(options.panoptic_deeplab_widths('cpu'))
    # Heads at stride 4 cannot draw a Gaussian much under 4 px (scaling
    # gives 2 at 256 px): sigma 4.
    options.add_panoptic_options(config, image_height=256, sigma=4.0,
                                 max_instances=512, max_dets=200)
    config.batch_size = 8
    config.eval_batch_size = 8
    config.num_train_steps = 300
    config.log_every_steps = 25
    config.eval_every_steps = 300
    config.checkpoint_every_steps = 100
  if arg == 'tiny':
    config.data.augment = 'resize(32, 64)|flip_lr'
    config.data.eval_preprocess = 'resize(32, 64)'
    config.model.update(options.panoptic_deeplab_widths('tiny'))
    options.add_panoptic_options(config, image_height=32, sigma=2.0,
                                 top_k=16, max_instances=64)
    config.num_train_steps = 4
    config.log_every_steps = 2
    config.eval_every_steps = 4
    config.checkpoint_every_steps = 4
    config.num_images_to_save = 0
  return config
