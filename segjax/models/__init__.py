"""Segmentation models: pure Flax Linen modules, built by name.

`build(name, num_classes=None, **kwargs)` is the one name -> constructor
mapping; `build_model(config.model, num_classes)` resolves an experiment
config through it. Every segmentation model maps [B, H, W, 3] float images
(normalised, see `inputs.py`) and a `train` flag to [B, H, W, C] float32
logits; a backbone name gives the backbone alone, returning its feature dict.

  unet            U-Net (Ronneberger et al. 2015)            unet.py
  resnet_unet     U-Net on a ResNet encoder (SMP's Unet)     resnet_unet.py
  deeplabv3       ASPP on a dilated ResNet                   deeplab.py
  deeplabv3plus   DeepLabV3 + low-level decoder              deeplab.py
  fcn32s/16s/8s   FCN skip fusion (output stride 32)         fcn.py
  fcn             dilated FCN head (mmsegmentation style)    fcn.py
  panoptic_deeplab  Panoptic-DeepLab (semantic + instance    panoptic_deeplab.py
                  decoders; returns a dict, see `outputs_of`)
  resnet18..152   torchvision-layout ResNet backbones         resnet.py
  mobilenet_v2    light backbone                             mobilenet.py

Pretrained torchvision / timm ResNet weights: `load_pretrained` (in
pretrained.py).
"""

import functools

import jax.numpy as jnp

from segjax.models.backbones import BACKBONES
from segjax.models.backbones import fields
from segjax.models.deeplab import DeepLab
from segjax.models.fcn import FCN
from segjax.models.mobilenet import MobileNetV2
from segjax.models.panoptic_deeplab import PanopticDeepLab
from segjax.models.pretrained import load_pretrained
from segjax.models.resnet import ResNet
from segjax.models.resnet_unet import ResNetUNet
from segjax.models.unet import UNet

# Name -> (module class, fixed attributes). Segmentation models take
# `num_classes`; backbones do not.
MODELS = {
    'unet': (UNet, {}),
    'resnet_unet': (ResNetUNet, {}),
    'deeplabv3': (DeepLab, {'plus': False}),
    'deeplabv3plus': (DeepLab, {'plus': True}),
    'fcn32s': (FCN, {'skips': '32s'}),
    'fcn16s': (FCN, {'skips': '16s'}),
    'fcn8s': (FCN, {'skips': '8s'}),
    'fcn': (FCN, {'skips': None}),  # Dilated FCN head; pass output_stride=8.
    'panoptic_deeplab': (PanopticDeepLab, {}),
}

# What a model returns when it is not [B, H, W, C] logits: Panoptic-DeepLab
# returns a dict of heads ('semantic', 'center_heatmap', 'center_offsets').
OUTPUTS = {'panoptic_deeplab': 'panoptic_heads'}


def outputs_of(model_name):
  """'logits' ([B, H, W, C] array) or 'panoptic_heads' (a dict)."""
  return OUTPUTS.get(model_name, 'logits')


def build(name, num_classes=None, **kwargs):
  """Builds a model or a backbone by name.

  Args:
    name: a key of `MODELS` (needs `num_classes`) or of `BACKBONES`.
    num_classes: output classes of a segmentation model (1 gives a single
      sigmoid logit).
    **kwargs: the module's attributes, e.g. `backbone='resnet101'` or
      `backbone='mobilenet_v2'`, `output_stride=8`.

  Returns:
    An unbound `flax.linen.Module`.

  Raises:
    ValueError naming an unknown model or backbone, a missing `num_classes`,
    or an attribute the module does not have.
  """
  kwargs = {k: tuple(v) if isinstance(v, list) else v
            for k, v in kwargs.items()}
  if name in BACKBONES:
    if num_classes is not None:
      raise ValueError(f'{name!r} is a backbone: it returns features and '
                       'takes no num_classes.')
    cls, fixed = BACKBONES[name]
  elif name in MODELS:
    if num_classes is None:
      raise ValueError(f'model {name!r} needs num_classes.')
    cls, fixed = MODELS[name]
    kwargs['num_classes'] = num_classes
    if 'backbone' in kwargs and kwargs['backbone'] not in BACKBONES:
      raise ValueError(f'model {name!r}: unsupported backbone '
                       f'{kwargs["backbone"]!r}; choose one of '
                       f'{sorted(BACKBONES)}.')
  else:
    raise ValueError(f'{name!r} is not a known model; choose one of '
                     f'{sorted(MODELS) + sorted(BACKBONES)}.')
  unknown = sorted(set(kwargs) - fields(cls))
  if unknown:
    raise ValueError(f'model {name!r} has no field(s) {unknown}; it takes '
                     f'{sorted(fields(cls) - set(fixed))}.')
  return functools.partial(cls, **fixed)(**kwargs)


def build_model(model_config, num_classes, **overrides):
  """Instantiates `config.model` ({'name': ..., attributes...}); 'dtype' /
  'param_dtype' may be dtype names ('bfloat16')."""
  kwargs = dict(model_config)
  name = kwargs.pop('name', None)
  kwargs.update(overrides)
  for key in ('dtype', 'param_dtype'):
    if isinstance(kwargs.get(key), str):
      try:
        kwargs[key] = jnp.dtype(kwargs[key])
      except TypeError as e:
        raise ValueError(f'config.model.{key}={kwargs[key]!r} is not a '
                         'dtype (e.g. "bfloat16").') from e
  try:
    return build(name, num_classes, **kwargs)
  except ValueError as e:
    raise ValueError(f'config.model: {e}') from e


__all__ = ['BACKBONES', 'MODELS', 'DeepLab', 'FCN',
           'MobileNetV2', 'OUTPUTS', 'PanopticDeepLab', 'ResNet', 'ResNetUNet',
           'UNet', 'build', 'build_model', 'load_pretrained', 'outputs_of']
