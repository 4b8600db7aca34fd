r"""Panoptic-DeepLab ResNet-50 on COCO panoptic (133 classes, 80 things).

The published reference: Panoptic-DeepLab R-50 on COCO val2017, about 35.5
PQ (github.com/bowenc0221/panoptic-deeplab, README news of 2021/01/25,
training crops up to 960 px; the paper's Table 4 reports its COCO models
with larger backbones). Settings here follow the paper's COCO setup where
it is stated (Adam, lr 0.001, poly schedule, loss weights 1 / 200 / 0.01,
top-20% bootstrapped cross-entropy, center sigma 8) and deeplab2's COCO
post-processing (threshold 0.1, NMS kernel 7, top-k 200, stuff area 4096):
640x640 crops after random scaling 0.5-1.5, batch 64, 200k steps, torchvision
ResNet-50 at output stride 32. Not yet run here (no accelerator and no COCO
download on the development machine): treat it as a starting point.

TFDS downloads and prepares `coco/2017_panoptic` itself (about 19 GB; see
segjax/data/coco_panoptic.py for the label mapping and crowd handling). Run
on a TPU VM or GPU machine:

  python -m segjax.main --config experiments/coco_panoptic_deeplab.py \
      --config.model_init.path=/path/to/resnet50.safetensors \
      --config.model_init.source=torchvision --workdir gs://bucket/coco_pdl

Evaluation pads every validation image to 640x640 (COCO's longest side), so
one program serves the whole split; padding is void and counts nowhere.

Variants (`--config experiments/coco_panoptic_deeplab.py:local`):
  (none)  the recipe above.
  tpu     the recipe on a TPU v4-64 slice (32 chips): bfloat16
          compute (float32 parameters and optimizer state), batch 64 as
          2 per chip, data-parallel mesh. Estimated step time, not
          measured: 110 GFLOP forward per 640x640 image (XLA's count),
          x3 for the train step, over 32 x 275 TFLOP/s (TPU v4's published
          bfloat16 peak): 2.4 ms at peak, ~6.0 ms at 40% of it
          (segjax/configs/tpu.py).
  local   CPU: 128x128 crops of images resized to 160x160, a half-width
          ResNet-18, narrow decoders, 300 steps, evaluation at 160x160.
  tiny    seconds; for tests.
"""

import ml_collections

from segjax.configs import base
from segjax.configs import tpu
from segjax.configs import options


def get_config(arg=None):
  """Returns the experiment config; `arg` picks a variant (see docstring)."""
  if arg not in (None, '', 'local', 'tiny', 'tpu'):
    raise ValueError(f'Unknown variant {arg!r} of coco_panoptic_deeplab; use '
                     '"local", "tiny", "tpu" or nothing.')
  config = base.get_config()
  config.data_seed = 0

  config.data.name = 'coco/2017_panoptic'
  config.data.cache = False  # 118k decoded images do not fit in host RAM.
  config.data.augment = 'scale(0.5, 1.5)|crop(640, 640)|flip_lr'
  config.data.eval_preprocess = 'pad(640, 640)'

  config.model.name = 'panoptic_deeplab'
  config.model.backbone = 'resnet50'
  config.model.output_stride = 32
  config.model.rates = (3, 6, 9)
  config.model.update(options.panoptic_deeplab_widths('paper'))
  config.model.dropout = 0.1

  config.loss = ml_collections.ConfigDict({
      'semantic_weight': 1.0, 'center_weight': 200.0, 'offset_weight': 0.01,
      'top_k_percent_pixels': 0.2})
  # sigma 8 and the paper's areas as they are (not scaled: COCO objects at
  # 640 px are about Cityscapes' size at 1024); deeplab2's COCO stuff limit.
  options.add_panoptic_options(config, image_height=1024, stuff_area=4096,
                               max_instances=256, max_dets=100)

  config.optimizer.learning_rate = 1e-3
  config.schedule.name = 'poly'
  config.schedule.power = 0.9
  config.schedule.end_factor = 0.0

  config.best_checkpoint_metric = 'validation/pq'

  config.batch_size = 64
  config.eval_batch_size = 16
  config.num_train_steps = 200_000
  config.eval_every_steps = 20_000
  config.checkpoint_every_steps = 2_000

  if arg == 'tpu':
    tpu.apply(config, chips=32, per_chip_batch=2,
              eval_per_chip_batch=1)
  if arg in ('local', 'tiny'):
    config.data.augment = 'resize(160, 160)|crop(128, 128)|flip_lr'
    config.data.eval_preprocess = 'resize(160, 160)'
    config.model.backbone = 'resnet18'
    config.model.width = 32
    config.model.output_stride = 16
    config.model.rates = None
    config.model.update(options.panoptic_deeplab_widths('cpu'))
    options.add_panoptic_options(config, image_height=160, sigma=4.0,
                                 max_instances=256, max_dets=100)
    config.batch_size = 8
    config.eval_batch_size = 8
    config.num_train_steps = 300
    config.log_every_steps = 25
    config.eval_every_steps = 300
    config.checkpoint_every_steps = 100
  if arg == 'tiny':
    config.data.augment = 'resize(32, 32)|flip_lr'
    config.data.eval_preprocess = 'resize(32, 32)'
    config.model.update(options.panoptic_deeplab_widths('tiny'))
    options.add_panoptic_options(config, image_height=32, sigma=2.0,
                                 top_k=16, max_instances=64)
    config.num_train_steps = 4
    config.log_every_steps = 2
    config.eval_every_steps = 4
    config.checkpoint_every_steps = 4
    config.num_images_to_save = 0
  return config
