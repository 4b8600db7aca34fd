r"""U-Net on Oxford-IIIT Pet: pet / background segmentation from the trimaps.

`oxford_iiit_pet` (TFDS's builder, downloaded on first use, about 800 MB):
2 classes, background 0 and pet 1, with the trimap's uncertain border
ignored; trained on `train` (the official trainval list, 3,680 images) and
evaluated on `test` (3,669). `--config.data.name=oxford_iiit_pet_trimap`
gives the 3-class task (border as class 2). The labels are also the targets
of a one-logit sigmoid head (`segjax/data/pets.py`).

Published number: none is standard for this task. The data set's paper
(Parkhi et al., "Cats and Dogs", CVPR 2012) is about breed classification,
and the TensorFlow / Keras U-Net tutorials that use these trimaps report no
test mIoU; there is no agreed split, resolution or border handling to
compare against. The figure this recipe produces is its own baseline.

Images come in many sizes (most near 500x375): training resizes to 288x288
(aspect not kept), crops 256x256, flips and jitters colours; evaluation
scores images and label maps resized to 256x256 (nearest for labels), one
shape for every batch.

Run (an accelerator, e.g. a TPU VM; the download needs internet):

  python -m segjax.main --config experiments/pets_unet.py \
      --workdir /tmp/segjax/pets_unet

Variants (`--config experiments/pets_unet.py:local`):
  (none)  U-Net (32..512) at 256x256, batch 32, 10k steps (~87 epochs).
  local   laptop CPU (tens of minutes on 2 cores): 128x128, a narrow U-Net,
          batch 8, 300 steps, no cache.
  tiny    seconds; for tests.
"""

import ml_collections

from segjax.configs import base


def get_config(arg=None):
  """Returns the experiment config; `arg` picks a variant (see docstring)."""
  if arg not in (None, '', 'local', 'tiny'):
    raise ValueError(f'Unknown variant {arg!r} of pets_unet; use "local", '
                     '"tiny" or nothing.')
  config = base.get_config()
  config.data_seed = 0

  config.data.name = 'oxford_iiit_pet'
  config.data.eval_split = 'test'  # The data set has no validation split.
  config.data.augment = ('resize(288, 288)|crop(256, 256)|flip_lr|'
                         'jitter(0.2, 0.2, 0.2, 0.02)')
  config.data.eval_preprocess = 'resize(256, 256)'

  config.model.name = 'unet'
  config.model.features = (32, 64, 128, 256, 512)
  config.model.upsample = 'bilinear'
  config.model.stem_stride = 1

  config.loss = ml_collections.ConfigDict({'cross_entropy': 1.0, 'dice': 1.0})

  config.optimizer.learning_rate = 1e-3
  config.optimizer.weight_decay = 1e-4
  config.optimizer.grad_clip_norm = 1.0
  config.schedule.warmup_steps = 200

  config.batch_size = 32
  config.eval_batch_size = 32
  config.num_train_steps = 10_000

  if arg in ('local', 'tiny'):
    config.data.cache = False
    config.data.augment = 'resize(144, 144)|crop(128, 128)|flip_lr'
    config.data.eval_preprocess = 'resize(128, 128)'
    config.model.features = (16, 32, 64, 128)
    config.batch_size = 8
    config.eval_batch_size = 8
    config.num_train_steps = 300
    config.log_every_steps = 25
    config.eval_every_steps = 300
    config.checkpoint_every_steps = 100
    config.schedule.warmup_steps = 20
  if arg == 'tiny':
    config.data.augment = 'resize(16, 16)|flip_lr'
    config.data.eval_preprocess = 'resize(16, 16)'
    config.model.features = (8, 16)
    config.num_train_steps = 4
    config.log_every_steps = 2
    config.eval_every_steps = 4
    config.checkpoint_every_steps = 4
    config.schedule.warmup_steps = 1
    config.num_images_to_save = 0
  return config
