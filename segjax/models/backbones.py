"""Backbones by name, and how a segmentation model builds its own.

A segmentation model names its backbone in its `backbone` attribute
('resnet50', 'mobilenet_v2', ...) and calls `backbone_of(self)` inside its
`nn.compact` method: the submodule 'backbone' is built with every attribute
the model shares with that backbone class (output_stride, deep_stem,
bn_momentum, dtype, ...). Attributes the backbone lacks (deep_stem for a
MobileNetV2) are ignored.
"""

import dataclasses

from segjax.models.mobilenet import MobileNetV2
from segjax.models.resnet import ResNet

# Name -> (module class, fixed attributes).
BACKBONES = {
    **{f'resnet{d}': (ResNet, {'depth': d}) for d in (18, 34, 50, 101, 152)},
    'mobilenet_v2': (MobileNetV2, {}),
}


def fields(cls):
  """The attributes a Flax module class takes."""
  return {f.name for f in dataclasses.fields(cls)} - {'parent', 'name'}


def backbone_of(model):
  """The backbone submodule named by `model.backbone`, configured by `model`."""
  if model.backbone not in BACKBONES:
    raise ValueError(f'backbone {model.backbone!r} is not one of '
                     f'{sorted(BACKBONES)}.')
  cls, fixed = BACKBONES[model.backbone]
  shared = (fields(cls) & fields(type(model))) - set(fixed)
  return cls(name='backbone', **fixed,
             **{k: getattr(model, k) for k in shared})
