r"""DeepLabV3+ ResNet-101, output stride 8, on Cityscapes (19 classes, gtFine).

The published setup it reproduces: mmsegmentation's DeepLabV3+ R-101-D8,
512x1024 crops, 80k iterations, Cityscapes val mIoU 80.97 single-scale (82.03
with multi-scale + flip); with the torchvision-layout ResNet-101 (no deep
stem, "R-101b-D8"), which is segjax's `resnet101` and its torchvision
weights: 80.16. Source: github.com/open-mmlab/mmsegmentation,
configs/deeplabv3plus/README.md, Cityscapes table. Those runs use an
ImageNet-pretrained backbone, SGD (lr 0.01, momentum 0.9, weight decay 5e-4),
a poly schedule (power 0.9, final lr 1e-4), random scale 0.5-2.0, crop and
flip, and whole 1024x2048 images for evaluation, as here; they differ in a
batch of 8 (4 GPUs x 2; this recipe: 16, as the issue asks and the DeepLab
papers use), 512-channel heads (here 256, the DeepLabV3+ paper's), an
auxiliary FCN head (none here) and photometric distortion (none here).

Prepare once: download `leftImg8bit_trainvaltest.zip` and
`gtFine_trainvaltest.zip` from www.cityscapes-dataset.com (registration) into
one folder; TFDS's `cityscapes` builder reads them on first use. Start from
ImageNet weights (torchvision's resnet101 as .safetensors/.npz) to aim at the
number above. Run on a TPU VM (one host; about 25 GB of host RAM caches the
decoded training set):

  python -m segjax.main --config experiments/cityscapes_deeplabv3plus.py \
      --config.data.manual_dir=/path/to/cityscapes_zips \
      --config.model_init.path=/path/to/resnet101.safetensors \
      --config.model_init.source=torchvision --workdir gs://bucket/cs_dl

Variants (`--config experiments/cityscapes_deeplabv3plus.py:local`):
  (none)  the recipe above: batch 16, 80k steps, evaluation every 8k steps.
  tpu     the recipe on a TPU v4-16 slice (8 chips): bfloat16
          compute (float32 parameters and optimizer state), batch 16 as
          2 per chip, data-parallel mesh. Estimated step time, not
          measured: 752 GFLOP forward per 512x1024 image (XLA's count),
          x3 for the train step, over 8 x 275 TFLOP/s (TPU v4's published
          bfloat16 peak): 16 ms at peak, ~41 ms at 40% of it
          (segjax/configs/tpu.py).
  local   laptop CPU (tens of minutes on 2 cores): images and label maps
          resized to 256x512 for training *and* evaluation (its mIoU is not
          comparable with full-resolution numbers), 128x256 crops,
          ResNet-18 at output stride 16, narrow heads, 300 steps, no cache.
  tiny    seconds; for tests.

Select on `validation` (500 images); the test split's labels are
placeholders, so it is never evaluated here.
"""

from segjax.configs import base
from segjax.configs import tpu


def get_config(arg=None):
  """Returns the experiment config; `arg` picks a variant (see docstring)."""
  if arg not in (None, '', 'local', 'tiny', 'tpu'):
    raise ValueError(f'Unknown variant {arg!r} of cityscapes_deeplabv3plus; '
                     'use "local", "tiny", "tpu" or nothing.')
  config = base.get_config()
  config.data_seed = 0

  config.data.name = 'cityscapes/semantic_segmentation'  # TFDS's, gtFine.
  # config.data.manual_dir: the folder holding the two zips; None means
  # <data_dir>/downloads/manual.
  config.data.final_eval_splits = ()  # Test labels are placeholders.
  config.data.augment = 'scale(0.5, 2.0)|crop(512, 1024)|flip_lr'
  config.data.eval_preprocess = ''  # Whole 1024x2048 images.

  config.model.name = 'deeplabv3plus'
  config.model.dtype = 'float32'  # The published runs are float32.
  config.model.backbone = 'resnet101'
  config.model.output_stride = 8  # ASPP rates (12, 24, 36).
  config.model.deep_stem = False  # torchvision layout, for its weights.
  config.model.separable = True
  config.model.aspp_features = 256
  config.model.low_level_features = 48

  config.optimizer.name = 'sgd'
  config.optimizer.learning_rate = 0.01
  config.optimizer.momentum = 0.9
  config.optimizer.weight_decay = 5e-4
  config.schedule.name = 'poly'
  config.schedule.power = 0.9
  config.schedule.end_factor = 0.01  # Final lr 1e-4.

  config.batch_size = 16
  config.eval_batch_size = 8
  config.num_train_steps = 80_000
  config.eval_every_steps = 8_000
  config.checkpoint_every_steps = 2_000

  if arg == 'tpu':
    tpu.apply(config, chips=8, per_chip_batch=2,
              eval_per_chip_batch=1)
  if arg in ('local', 'tiny'):
    config.data.cache = False  # 25 GB decoded: decode on the fly instead.
    config.data.augment = ('resize(256, 512)|scale(0.75, 1.5)|'
                           'crop(128, 256)|flip_lr')
    config.data.eval_preprocess = 'resize(256, 512)'
    config.model.backbone = 'resnet18'
    config.model.output_stride = 16
    config.model.separable = False
    config.model.aspp_features = 64
    config.model.low_level_features = 32
    config.batch_size = 8
    config.eval_batch_size = 8
    config.num_train_steps = 300
    config.log_every_steps = 25
    config.eval_every_steps = 300
    config.checkpoint_every_steps = 100
  if arg == 'tiny':
    config.data.augment = 'resize(16, 32)|flip_lr'
    config.data.eval_preprocess = 'resize(16, 32)'
    config.model.aspp_features = 8
    config.model.low_level_features = 8
    config.num_train_steps = 4
    config.log_every_steps = 2
    config.eval_every_steps = 4
    config.checkpoint_every_steps = 4
    config.num_images_to_save = 0
  return config
