r"""DeepLabV3+ ResNet-101, output stride 8, on ADE20K (SceneParse150), 512x512.

The published setup it aims at: mmsegmentation's DeepLabV3+ R-101-D8,
512x512 crops, 160k iterations, batch 16 (4 GPUs x 4), ADE20K val mIoU 45.47
single-scale (46.35 with multi-scale + flip; 44.60 after 80k iterations).
Source: github.com/open-mmlab/mmsegmentation, configs/deeplabv3plus/
README.md, ADE20K table. Those runs use an ImageNet-pretrained backbone
(ResNetV1c, a deep stem; here torchvision's layout), SGD (lr 0.01, momentum
0.9, weight decay 5e-4), a poly schedule (power 0.9, final lr 1e-4), random
rescaling (0.5-2.0 of 2048x512), 512x512 crops, flips and photometric
distortion, 512-channel heads and an auxiliary FCN head (here: 256 channels,
no auxiliary head, no photometric distortion).

Evaluation differs: mmseg resizes each image to a short side of 512 (aspect
kept) and scores at the original resolution; segjax's evaluation needs one
shape per batch to avoid a compile per image size, so this recipe scores on
images and label maps resized to 512x512 (nearest for labels). Expect its
mIoU to be close to, not equal to, the published protocol's.

Prepare once: download ADEChallengeData2016.zip (see `segjax/data/ade20k.py`)
into a folder; segjax builds the TFDS data set `ade20k` from it on first use.
Start from ImageNet weights to aim at the number above. Run on a TPU VM (one
host; roughly 30 GB of host RAM caches the decoded training set):

  python -m segjax.main --config experiments/ade20k_deeplabv3plus.py \
      --config.data.manual_dir=/path/to/ade \
      --config.model_init.path=/path/to/resnet101.safetensors \
      --config.model_init.source=torchvision --workdir gs://bucket/ade_dl

Variants (`--config experiments/ade20k_deeplabv3plus.py:local`):
  (none)  the recipe above: batch 16, 160k steps.
  tpu     the recipe on a TPU v4-16 slice (8 chips): bfloat16
          compute (float32 parameters and optimizer state), batch 16 as
          2 per chip, data-parallel mesh. Estimated step time, not
          measured: 386 GFLOP forward per 512x512 image (XLA's count),
          x3 for the train step, over 8 x 275 TFLOP/s (TPU v4's published
          bfloat16 peak): 8.4 ms at peak, ~21 ms at 40% of it
          (segjax/configs/tpu.py).
  local   laptop CPU (tens of minutes on 2 cores): 128x128 crops of images
          scaled by 0.25-0.5, evaluation at 128x128, ResNet-18 at output
          stride 16, narrow heads, 300 steps, no cache.
  tiny    seconds; for tests.
"""

from segjax.configs import base
from segjax.configs import tpu


def get_config(arg=None):
  """Returns the experiment config; `arg` picks a variant (see docstring)."""
  if arg not in (None, '', 'local', 'tiny', 'tpu'):
    raise ValueError(f'Unknown variant {arg!r} of ade20k_deeplabv3plus; use '
                     '"local", "tiny", "tpu" or nothing.')
  config = base.get_config()
  config.data_seed = 0

  config.data.name = 'ade20k'
  # config.data.manual_dir holds ADEChallengeData2016/ or its zip; None:
  # <data_dir>/downloads/manual.
  config.data.augment = 'scale(0.5, 2.0)|crop(512, 512)|flip_lr'
  config.data.eval_preprocess = 'resize(512, 512)'  # See the docstring.

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
  config.eval_batch_size = 16
  config.num_train_steps = 160_000
  config.eval_every_steps = 16_000
  config.checkpoint_every_steps = 2_000

  if arg == 'tpu':
    tpu.apply(config, chips=8, per_chip_batch=2,
              eval_per_chip_batch=2)
  if arg in ('local', 'tiny'):
    config.data.cache = False
    config.data.augment = 'scale(0.25, 0.5)|crop(128, 128)|flip_lr'
    config.data.eval_preprocess = 'resize(128, 128)'
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
    config.data.augment = 'resize(16, 16)|flip_lr'
    config.data.eval_preprocess = 'resize(16, 16)'
    config.model.aspp_features = 8
    config.model.low_level_features = 8
    config.num_train_steps = 4
    config.log_every_steps = 2
    config.eval_every_steps = 4
    config.checkpoint_every_steps = 4
    config.num_images_to_save = 0
  return config
