r"""U-Net on CamVid: the DeepLabV3+ recipe's data, loss and schedule.

Run:

  python -m segjax.main --config experiments/camvid_unet.py \
      --config.data.manual_dir=/path/to/CamVid --workdir /tmp/segjax/camvid_unet

Variants as in experiments/camvid_deeplabv3plus.py (`:local`, `:tiny`). The
default is the ResNet-34-encoder U-Net (segmentation_models_pytorch's `Unet`
layout); `--config.model.name=unet` gives the paper's plain U-Net.
"""

import importlib.util
import pathlib

import ml_collections

# The sibling experiment, loaded by path so this file works from any folder.
_spec = importlib.util.spec_from_file_location(
    'camvid_deeplabv3plus',
    pathlib.Path(__file__).with_name('camvid_deeplabv3plus.py'))
camvid_deeplabv3plus = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(camvid_deeplabv3plus)


def get_config(arg=None):
  """The DeepLabV3+ recipe with a U-Net; `arg` picks a variant."""
  config = camvid_deeplabv3plus.get_config(arg)
  config.model = ml_collections.ConfigDict()
  config.model.name = 'resnet_unet'
  # Compute dtype; 'bfloat16' = mixed precision (params, optimizer state,
  # losses and metrics stay float32).
  config.model.dtype = 'float32'
  config.model.backbone = 'resnet34' if not arg else 'resnet18'
  if arg == 'tiny':
    config.model.decoder_features = (16, 16, 8, 8, 8)
  return config
