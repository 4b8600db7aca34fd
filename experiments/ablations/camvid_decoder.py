r"""Ablation: what does DeepLabV3+'s decoder buy on CamVid?

DeepLabV3 (ASPP only) against DeepLabV3+ (ASPP + the stride-4 decoder), the
CamVid recipe (experiments/camvid_deeplabv3plus.py) otherwise unchanged, two
seeds. Per-class IoU shows where the decoder helps (thin classes: pole,
sign_symbol, pedestrian, bicyclist). Run (CamVid in its SegNet layout):

  python -m segjax.sweep --config experiments/ablations/camvid_decoder.py:local \
      --config.data.manual_dir=/path/to/CamVid --workdir runs/ablations/camvid_decoder

Variants: (none) the accelerator recipe, 3 seeds; `local` the recipe's CPU
variant (half resolution, 300 steps), 2 seeds; `tiny` for tests.
"""

import importlib.util
import pathlib

from segjax import sweeps

_path = pathlib.Path(__file__).resolve().parents[1] / 'camvid_deeplabv3plus.py'
_spec = importlib.util.spec_from_file_location('camvid_deeplabv3plus', _path)
camvid = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(camvid)


def get_config(arg=None):
  return camvid.get_config(arg)


def get_sweep(arg=None):
  heads = sweeps.axis('model.name', ['deeplabv3', 'deeplabv3plus'])
  return sweeps.seeds(heads, [0, 1] if arg in ('local', 'tiny') else [0, 1, 2])
