"""Training targets made from each augmented example, by name.

A task asks the training pipeline for targets with `{name: kwargs}`
(`segjax.tasks.Task.train_targets`); each maker here takes the augmented
'labels' [H, W] int32 and 'instances' [H, W] int32 maps (TF tensors) and
returns the new fields of the example:

  'panoptic'    Panoptic-DeepLab's center heatmap, offsets and loss weights
                (`panoptic_targets.panoptic_targets`)
  'boundaries'  instance-boundary labels 1 / 0 / ignore
                (`boundary_targets.boundary_targets`)
"""

from segjax.data import boundary_targets
from segjax.data import panoptic_targets


def _boundaries(labels, instances, **kwargs):
  return {'boundaries': boundary_targets.boundary_targets(
      labels, instances, **kwargs)}


# Name -> maker(labels, instances, **kwargs) -> {field: tensor}.
MAKERS = {
    'panoptic': panoptic_targets.panoptic_targets,
    'boundaries': _boundaries,
}


def check(targets):
  """Raises ValueError naming a target no maker makes."""
  unknown = sorted(set(targets or {}) - set(MAKERS))
  if unknown:
    raise ValueError(f'unknown training target(s) {unknown}; known: '
                     f'{sorted(MAKERS)}.')


def make(targets, labels, instances):
  """The fields of every target in `targets` ({name: kwargs})."""
  out = {}
  for name, kwargs in (targets or {}).items():
    out.update(MAKERS[name](labels, instances, **kwargs))
  return out
