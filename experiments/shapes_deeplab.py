r"""DeepLabV3+ (ResNet-18, output stride 16) on the embedded `shapes` set.

Run:

  python -m segjax.main --config experiments/shapes_deeplab.py \
      --workdir /tmp/segjax/shapes_deeplab

The U-Net recipe (experiments/shapes_unet.py) is the tuned default; this one
is the starting point for DeepLab ablations on `shapes`, e.g.
`--config.model.output_stride=8`, `--config.model.separable=True`,
`--config.model.name=deeplabv3` (no decoder). Its accuracy within a CPU
budget has not been measured yet. `:tiny` runs in seconds.
"""

import importlib.util
import pathlib

import ml_collections

from segjax.configs import base

# The sibling experiment, loaded by path so this file works from any folder.
_spec = importlib.util.spec_from_file_location(
    'shapes_unet', pathlib.Path(__file__).with_name('shapes_unet.py'))
shapes_unet = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(shapes_unet)


def get_config(arg=None):
  """The U-Net experiment's data, loss and schedule with DeepLabV3+."""
  config = shapes_unet.get_config(arg)
  config.model = base.get_config().model  # None of the U-Net's fields.
  config.model.name = 'deeplabv3plus'
  config.model.backbone = 'resnet18'  # resnet18..resnet152, mobilenet_v2.
  config.model.output_stride = 16
  config.model.separable = False
  config.model.aspp_features = 128 if arg != 'tiny' else 16
  config.model.low_level_features = 48 if arg != 'tiny' else 8
  config.model.rates = ml_collections.config_dict.placeholder(tuple)
  config.optimizer.learning_rate = 1e-3
  return config
