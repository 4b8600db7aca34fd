r"""DeepLabV3+ on CamVid (11 classes, SegNet split): the semantic benchmark.

Prepare once: download the SegNet tutorial's CamVid folder (see
`segjax/data/camvid.py`), then point `config.data.manual_dir` at it; segjax
builds the TFDS data set on first use (a few seconds). Run:

  python -m segjax.main --config experiments/camvid_deeplabv3plus.py \
      --config.data.manual_dir=/path/to/CamVid --workdir /tmp/segjax/camvid_dl

Variants (`--config experiments/camvid_deeplabv3plus.py:cpu`):
  (none)  accelerator budget (also `:gpu`): full 360x480 resolution,
          ResNet-50 at output stride 16, batch 16, scale 0.5-2.0 / crop /
          flip / colour jitter, 20k steps (~870 epochs), meant for about 30
          minutes on one GPU; not measured (no GPU run on CamVid yet).
  cpu     the 60-minute CPU budget of the README's results table (2 cores):
          half resolution (images and label maps resized to 180x240 for
          training *and* evaluation, so its mIoU is not comparable with
          full-resolution numbers), ResNet-18, narrow heads, batch 8, AdamW +
          poly, the step count that fits the budget (see README).
  local   CPU smoke run (minutes): the `cpu` recipe for 300 steps.
  tiny    seconds; for tests.

Select on `validation`; `test` is evaluated at the end when the CamVid
folder has `test/` + `testannot/`. Trained from scratch (no weights can be
downloaded here); with an ImageNet backbone file, torchvision's weights for
the variant's ResNet (ResNet-50, or ResNet-18 for `cpu` / `local` /
`tiny`; e.g. the `.pth` that `torchvision.models.resnet50(weights=
'IMAGENET1K_V1')` saves under ~/.cache/torch/hub/checkpoints/), add

  --config.model_init.path=resnet50.pth --config.model_init.source=torchvision

The file is read without PyTorch and without running its pickle: a file
holding anything but tensors, or in torch.save's pre-1.6 format, is refused
(segjax/models/pretrained.py gives a one-command conversion to
.safetensors). Every array of the backbone must load; ASPP, decoder and
classifier start as initialised (segjax/training/model_init.py;
docs/training.md).
"""

from segjax.configs import base


def get_config(arg=None):
  """Returns the experiment config; `arg` picks a variant (see docstring)."""
  if arg not in (None, '', 'gpu', 'cpu', 'local', 'tiny'):
    raise ValueError(f'Unknown variant {arg!r} of camvid_deeplabv3plus; use '
                     '"gpu" (= nothing), "cpu", "local" or "tiny".')
  config = base.get_config()
  config.data_seed = 0

  config.data.name = 'camvid'
  # config.data.manual_dir: the SegNet CamVid folder; None means
  # <data_dir>/downloads/manual(/camvid).
  config.data.final_eval_splits = ('test',)  # Skipped when absent.
  config.data.augment = ('scale(0.5, 2.0)|crop(360, 480)|flip_lr|'
                         'jitter(0.2, 0.2, 0.2, 0.02)')
  config.data.eval_preprocess = ''  # Full 360x480.

  config.model.name = 'deeplabv3plus'
  config.model.backbone = 'resnet50'
  config.model.output_stride = 16
  config.model.separable = True
  config.model.aspp_features = 256
  config.model.low_level_features = 48

  config.optimizer.learning_rate = 1e-3
  config.optimizer.weight_decay = 1e-4
  config.optimizer.grad_clip_norm = 1.0
  config.schedule.name = 'poly'
  config.schedule.power = 0.9
  config.schedule.warmup_steps = 200

  config.batch_size = 16
  config.eval_batch_size = 16
  config.num_train_steps = 20_000
  config.eval_every_steps = 2000

  if arg in ('cpu', 'local', 'tiny'):
    config.data.augment = ('resize(180, 240)|scale(0.75, 1.5)|'
                           'crop(176, 240)|flip_lr')
    config.data.eval_preprocess = 'resize(180, 240)'
    config.model.backbone = 'resnet18'
    config.model.separable = False
    config.model.aspp_features = 64
    config.model.low_level_features = 32
    config.batch_size = 8
    config.eval_batch_size = 8
    config.num_train_steps = 300
    config.log_every_steps = 25
    config.eval_every_steps = 300
    config.checkpoint_every_steps = 100
    config.schedule.warmup_steps = 20
  if arg == 'cpu':
    # 2,830 steps (61.7 epochs): the README's run took 62.8 minutes of wall
    # time on the 2-core CI machine (0.75-0.84 steps/s), ten evaluations
    # included. The U-Net's `cpu` recipe runs 2,400 (camvid_unet.py).
    config.num_train_steps = 2_830
    config.eval_every_steps = 283
    config.checkpoint_every_steps = 283
    config.log_every_steps = 50
    # As experiments/peers/smp_camvid_train.py: no gradient clipping.
    config.optimizer.grad_clip_norm = 0.0
  if arg == 'tiny':
    config.data.augment = 'resize(24, 32)|flip_lr'
    config.data.eval_preprocess = 'resize(24, 32)'
    config.data.final_eval_splits = ()
    config.model.aspp_features = 8
    config.model.low_level_features = 8
    config.num_train_steps = 4
    config.log_every_steps = 2
    config.eval_every_steps = 4
    config.checkpoint_every_steps = 4
    config.schedule.warmup_steps = 1
    config.num_images_to_save = 0
  return config
