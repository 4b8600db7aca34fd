"""Config blocks that a task or a model adds to the base config.

  add_panoptic_options(config, image_height)  `config.panoptic`, task
                                              'panoptic' (Panoptic-DeepLab)
  add_binary_options(config, **fields)        `config.binary`, task 'binary'
  panoptic_deeplab_widths(size)               Panoptic-DeepLab's widths

What the fields do: segjax/tasks/panoptic.py, segjax/tasks/binary.py and
docs/instances.md.
"""

import ml_collections


# Panoptic-DeepLab's published settings are for Cityscapes crops of
# 1024 x 2048; `add_panoptic_options` scales the pixel-sized ones to an
# experiment's image size (sigma with the side, areas with the area).
_REFERENCE_HEIGHT = 1024


def add_panoptic_options(config, image_height, **overrides):
  """Sets `config.panoptic` and `config.task = 'panoptic'` (Panoptic-DeepLab).

  Args:
    config: an experiment's ConfigDict.
    image_height: the training crop's height in pixels; sigma (8 px), the
      small-instance area (4096 px) and the stuff area limit (2048 px) are
      the paper's / deeplab2's Cityscapes values scaled by
      image_height / 1024 (areas by its square).
    **overrides: any field below, e.g. top_k=500 for DSB2018.

  Returns:
    `config`, for chaining.
  """
  scale = image_height / _REFERENCE_HEIGHT
  fields = {
      # Panoptic ids: category * label_divisor + instance (> top_k).
      'label_divisor': 1000,
      # Targets (segjax/data/panoptic_targets.py).
      'sigma': round(max(8.0 * scale, 1.0), 2),
      'small_instance_area': int(4096 * scale ** 2),
      'small_instance_weight': 3.0,
      # Post-processing (segjax/inference/panoptic.py).
      'center_threshold': 0.1,
      'nms_kernel': 7,
      'top_k': 200,
      'stuff_area': int(2048 * scale ** 2),
      # Static bound on instance ids in PQ (> top_k and > every
      # ground-truth instance number).
      'max_instances': 256,
      # COCO mask AP of the instances (host side, pycocotools) and its
      # maxDets (at least the most instances an image holds).
      'mask_ap': True,
      'max_dets': 100,
  }
  unknown = sorted(set(overrides) - set(fields))
  if unknown:
    raise ValueError(f'add_panoptic_options: unknown field(s) {unknown}.')
  fields.update(overrides)
  config.panoptic = ml_collections.ConfigDict(fields)
  config.task = 'panoptic'
  return config


# `config.binary` fields and their defaults (segjax/tasks/binary.py checks
# them; docs/instances.md says what they do).
BINARY_DEFAULTS = {
    # Probability threshold: foreground (scores, instances) and boundary.
    'threshold': 0.5,
    # A second output channel predicting instance boundaries, its target
    # width in pixels and its loss weight (relative to the foreground's).
    'boundary': False,
    'boundary_width': 1,
    'boundary_weight': 1.0,
    # Instances at evaluation (host post-processing), scored by PQ and COCO
    # mask AP; seeds / components below min_area pixels are dropped.
    'instances': False,
    'min_area': 1,
    # Panoptic ids: category * label_divisor + instance; at most
    # max_instances - 1 instances per image (PQ's static bound).
    'label_divisor': 1000,
    'max_instances': 1000,
    'mask_ap': True,
    'max_dets': 100,
}


def add_binary_options(config, **overrides):
  """Sets `config.binary`: a sigmoid head (the trainer's 'binary' task).

  Sets `config.task = 'binary'`: one sigmoid logit per pixel (foreground =
  any class but 0) instead of softmax logits (one per class), plus one for
  instance boundaries with `boundary=True` (segjax/tasks/binary.py).

  Args:
    config: an experiment's ConfigDict.
    **overrides: any field of `BINARY_DEFAULTS`, e.g. `boundary=True,
      instances=True`.

  Returns:
    `config`, for chaining.

  Raises:
    ValueError naming unknown fields.
  """
  unknown = sorted(set(overrides) - set(BINARY_DEFAULTS))
  if unknown:
    raise ValueError(f'add_binary_options: unknown field(s) {unknown}; '
                     f'known: {sorted(BINARY_DEFAULTS)}.')
  config.binary = ml_collections.ConfigDict({**BINARY_DEFAULTS, **overrides})
  config.task = 'binary'
  return config


# Panoptic-DeepLab decoder and head widths by size: the paper's, a CPU size
# (a quarter of them; with plain 5x5 convs: with depthwise-separable ones a
# shapes train step took 1.4x as long on XLA:CPU, 459 vs 329 ms) and a test
# size.
_PANOPTIC_DEEPLAB_WIDTHS = {
    'paper': dict(semantic_features=256, semantic_low_level=(64, 32),
                  semantic_head_features=256, instance_features=128,
                  instance_low_level=(32, 16), instance_head_features=32,
                  separable=True),
    'cpu': dict(semantic_features=64, semantic_low_level=(32, 16),
                semantic_head_features=64, instance_features=32,
                instance_low_level=(16, 8), instance_head_features=32,
                separable=False),
    'tiny': dict(semantic_features=8, semantic_low_level=(8, 8),
                 semantic_head_features=8, instance_features=8,
                 instance_low_level=(8, 8), instance_head_features=8,
                 separable=False),
}


def panoptic_deeplab_widths(size):
  """`config.model` fields sizing Panoptic-DeepLab: 'paper', 'cpu', 'tiny'.

  Use as `config.model.update(panoptic_deeplab_widths('cpu'))`; any field
  can still be overridden afterwards or with --config.model.<field>.
  """
  if size not in _PANOPTIC_DEEPLAB_WIDTHS:
    raise ValueError(f'panoptic_deeplab_widths: size {size!r} is not one of '
                     f'{sorted(_PANOPTIC_DEEPLAB_WIDTHS)}.')
  return dict(_PANOPTIC_DEEPLAB_WIDTHS[size])
