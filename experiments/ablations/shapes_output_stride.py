r"""Ablation: does output stride 8 beat 16 for the price? (DeepLabV3+, shapes)

DeepLabV3+ ResNet-18 (experiments/shapes_deeplab.py) at output stride 8 and
16 (ASPP rates doubled at 8, as in the paper), seeds 0 and 1; the comparison
is accuracy against `flops_per_train_step` (recorded in run_info.json), e.g.
with `segjax.results.plot_cost`. Run:

  python -m segjax.sweep --config experiments/ablations/shapes_output_stride.py:cpu \
      --workdir runs/ablations/shapes_output_stride

Variants: (none) 2000 steps, 3 seeds; `cpu` 400 steps, 2 seeds; `tiny` for
tests.
"""

import importlib.util
import pathlib

from segjax import sweeps

_path = pathlib.Path(__file__).resolve().parents[1] / 'shapes_deeplab.py'
_spec = importlib.util.spec_from_file_location('shapes_deeplab', _path)
shapes_deeplab = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(shapes_deeplab)


def get_config(arg=None):
  config = shapes_deeplab.get_config('tiny' if arg == 'tiny' else None)
  if arg == 'cpu':
    config.num_train_steps = 400
    config.eval_every_steps = 200
    config.checkpoint_every_steps = 200
    config.num_images_to_save = 0
  return config


def get_sweep(arg=None):
  strides = sweeps.axis('model.output_stride', [8, 16])
  return sweeps.seeds(strides, [0, 1] if arg in ('cpu', 'tiny') else [0, 1, 2])
