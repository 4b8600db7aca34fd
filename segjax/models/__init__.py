"""Segmentation models: pure Flax Linen modules, chosen by name from a config.

`build_model(model_config, num_classes)` is the one place a config's
`model.name` is resolved; add new architectures to `MODELS`.
"""

import dataclasses

from segjax.models.unet import UNet

# Name -> module class. Every field of `config.model` except `name` is passed
# to the constructor, so a config names exactly the module's attributes.
MODELS = {
    'unet': UNet,
}


def build_model(model_config, num_classes, **overrides):
  """Instantiates `config.model` as a Flax module.

  Args:
    model_config: a mapping (ConfigDict or dict) with `name` and the module's
      attributes, e.g. `{'name': 'unet', 'features': (16, 32, 64)}`.
    num_classes: number of output classes.
    **overrides: further attributes (e.g. `dtype`), taking precedence.

  Returns:
    An unbound `flax.linen.Module`.

  Raises:
    ValueError: unknown model name or an attribute the module does not have.
  """
  kwargs = dict(model_config)
  name = kwargs.pop('name', None)
  if name not in MODELS:
    raise ValueError(f'config.model.name={name!r} is not a known model; '
                     f'choose one of {sorted(MODELS)}.')
  cls = MODELS[name]
  fields = {f.name for f in dataclasses.fields(cls)} - {'parent', 'name'}
  unknown = sorted(set(kwargs) - fields)
  if unknown:
    raise ValueError(f'config.model has field(s) {unknown} that model '
                     f'{name!r} does not take; it takes {sorted(fields)}.')
  # ConfigDict turns tuples into lists; modules expect hashable tuples.
  kwargs = {k: tuple(v) if isinstance(v, list) else v
            for k, v in kwargs.items()}
  kwargs.update(overrides)
  kwargs['num_classes'] = num_classes
  return cls(**kwargs)
