r"""Ablation: does Dice + cross-entropy beat cross-entropy alone on `shapes`?

The default U-Net (experiments/shapes_unet.py, loss `{'cross_entropy': 1,
'dice': w}`) with the Dice weight w = 0 (cross-entropy alone: zero-weight
terms are skipped) and w = 1, over seeds (seed and data_seed together:
initialisation, dropout and data order). Run and compare:

  python -m segjax.sweep --config experiments/ablations/shapes_loss.py:cpu \
      --workdir runs/ablations/shapes_loss
  SEGJAX_SWEEP_ROOT=runs/ablations/shapes_loss jupyter nbconvert --execute \
      experiments/notebooks/compare_ablations.ipynb --to html

Variants: (none) the full 2000-step default, 3 seeds; `cpu` 600 steps and
2 seeds (about 8 minutes for the 4 runs on 2 cores); `tiny` for tests.
"""

import importlib.util
import pathlib

from segjax import sweeps

_path = pathlib.Path(__file__).resolve().parents[1] / 'shapes_unet.py'
_spec = importlib.util.spec_from_file_location('shapes_unet', _path)
shapes_unet = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(shapes_unet)


def get_config(arg=None):
  config = shapes_unet.get_config('tiny' if arg == 'tiny' else None)
  if arg == 'cpu':
    config.num_train_steps = 600
    config.eval_every_steps = 300
    config.checkpoint_every_steps = 300
    config.num_images_to_save = 0
  return config


def get_sweep(arg=None):
  losses = sweeps.axis('loss.dice', [0.0, 1.0])
  return sweeps.seeds(losses, [0, 1] if arg in ('cpu', 'tiny') else [0, 1, 2])
