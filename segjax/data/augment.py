"""Joint augmentation of an image and its label maps (tf.data side).

Every op transforms 'image', 'labels' and 'instances' together from one
stateless seed, so they stay aligned; label maps are only ever moved, never
interpolated, and any pixel an op has to invent in a label map is the ignore
label (255) or "no instance" (0).
"""

from segjax.data.tf_host import tf


def _flip_lr(example, rng):
  """Mirrors every map left-right with probability 1/2."""
  flip = tf.random.stateless_uniform([], rng) < 0.5
  out = dict(example)
  for key in ('image', 'labels', 'instances'):
    if key in example:
      x = example[key]
      # Maps are [H, W] or [H, W, C]; axis 1 is the width in both.
      out[key] = tf.cond(flip, lambda x=x: tf.reverse(x, axis=[1]),
                         lambda x=x: x)
  return out


def train_transform(example, rng, data_config):
  """Applies the augmentations `config.data` switches on.

  Args:
    example: standard example ('image' [H, W, 3] uint8, 'labels' [H, W],
      optionally 'instances' [H, W]).
    rng: [2] int64 stateless seed, unique to this example's stream position.
    data_config: reads `flip_lr` (bool, default True).

  Returns:
    The augmented example, same keys, shapes and dtypes.
  """
  seeds = tf.random.experimental.stateless_split(rng, 4)
  if data_config.get('flip_lr', True):
    example = _flip_lr(example, seeds[0])
  return example
