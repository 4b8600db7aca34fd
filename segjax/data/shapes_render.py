"""Draws the synthetic `shapes` scenes (pure NumPy, no TensorFlow).

Each scene is a textured background split into two "stuff" regions by a wavy
boundary, with several overlapping "thing" instances (circles, triangles,
rectangles) painted on top in random order, so later shapes occlude earlier
ones. Classes are told apart by geometry and texture, never by colour: every
colour is drawn at random, so a model cannot shortcut through a colour lookup.

Every random choice comes from `numpy.random.default_rng(seed)`, so one seed
gives one scene. Rasterisation is float64 NumPy with no platform rasteriser;
the only source of cross-machine drift is the last bit of `np.sin`/`np.cos`,
whose SIMD kernels differ between CPUs, which can at most flip a pixel that
sits exactly on a texture or shape boundary.

Generator parameters (all in `RenderParams`):
  image_size:      side of the square image in pixels (default 128).
  min_things, max_things: instances per scene, drawn uniformly (default 3..7).
  min_radius, max_radius: instance size as a fraction of image_size
                   (circle radius, half the rectangle's long side; a
                   triangle's circumradius is 1.4x it, which roughly evens
                   out the three classes' areas; default 0.10..0.22).
  max_occlusion:   a new instance is re-drawn (up to 20 tries, then skipped)
                   if it would hide more than this fraction of an instance
                   already painted, so every instance keeps a recognisable
                   silhouette (default 0.5).
  stuff textures:  class `stripes` = sinusoidal stripes, random angle and period
                   in [period_min, period_max] px; class `checker` =
                   checkerboard, random angle and cell size in the same range.
  thing textures:  solid (60%), linear gradient or speckle noise (20% each),
                   in colours >= 60 levels away from every colour already in
                   the scene, so no instance blends into its surroundings.
  noise_std:       std of the Gaussian pixel noise added to the whole image
                   (default 6 grey levels), so no class is a flat colour.
"""

import dataclasses

import numpy as np

# Class ids of the semantic label map. Stuff first, then things.
CLASS_NAMES = ('stripes', 'checker', 'circle', 'triangle', 'rectangle')
STUFF_CLASSES = (0, 1)
THING_CLASSES = (2, 3, 4)
NUM_CLASSES = len(CLASS_NAMES)


@dataclasses.dataclass(frozen=True)
class RenderParams:
  """Parameters of the scene generator; see the module docstring."""
  image_size: int = 128
  min_things: int = 3
  max_things: int = 7
  min_radius: float = 0.10
  max_radius: float = 0.22
  max_occlusion: float = 0.5
  period_min: float = 0.05  # Texture period as a fraction of image_size.
  period_max: float = 0.10
  noise_std: float = 6.0


def _random_colour(rng):
  return rng.uniform(0, 255, size=3)


def _distinct_colour(rng, used, min_diff):
  """A random colour at least `min_diff` levels (in some channel) away from
  every colour in `used`, which it is appended to. Gives up after 100 tries
  (then the last draw is used), so it always terminates."""
  for _ in range(100):
    c = _random_colour(rng)
    if all(np.abs(c - u).max() >= min_diff for u in used):
      break
  used.append(c)
  return c


def _contrasting_colours(rng, used):
  """Two colours at least 80 levels apart, so a texture stays visible."""
  a = _distinct_colour(rng, used, 0)
  b = _distinct_colour(rng, [a], 80)
  used.append(b)
  return a, b


def _rotated(yy, xx, angle):
  """Coordinates along and across a direction of `angle` radians."""
  c, s = np.cos(angle), np.sin(angle)
  return xx * c + yy * s, -xx * s + yy * c


def _stripes(rng, yy, xx, size, p, used):
  u, _ = _rotated(yy, xx, rng.uniform(0, np.pi))
  period = rng.uniform(p.period_min, p.period_max) * size
  t = 0.5 + 0.5 * np.sin(2 * np.pi * u / period)
  a, b = _contrasting_colours(rng, used)
  return t[..., None] * a + (1 - t[..., None]) * b


def _checker(rng, yy, xx, size, p, used):
  u, v = _rotated(yy, xx, rng.uniform(0, np.pi / 2))
  cell = rng.uniform(p.period_min, p.period_max) * size / 2
  t = (np.floor(u / cell) + np.floor(v / cell)) % 2
  a, b = _contrasting_colours(rng, used)
  return t[..., None] * a + (1 - t[..., None]) * b


def _thing_texture(rng, yy, xx, size, used):
  """A [H, W, 3] float64 fill for one instance.

  Mostly solid (60%), else a linear gradient (20%) or speckle noise (20%):
  the texture varies within every thing class, so it says nothing about it.
  Its colours keep a contrast of >= 60 levels to every colour already in the
  scene (`used`), so no instance blends into what is behind or beside it.
  """
  kind = rng.choice(3, p=[0.6, 0.2, 0.2])
  a = _distinct_colour(rng, used, 60)
  if kind == 0:
    return np.broadcast_to(a, yy.shape + (3,))
  if kind == 1:
    b = _distinct_colour(rng, used, 60)
    u, _ = _rotated(yy, xx, rng.uniform(0, 2 * np.pi))
    t = np.clip((u - u.min()) / max(np.ptp(u), 1.0), 0, 1)[..., None]
    return t * a + (1 - t) * b
  speckle = rng.normal(0, 15, size=yy.shape + (1,))
  return a + speckle


def _stuff_split(rng, yy, xx, size):
  """Boolean [H, W] mask of the second stuff region: one side of a wavy line."""
  angle = rng.uniform(0, 2 * np.pi)
  u, v = _rotated(yy - size / 2, xx - size / 2, angle)
  offset = rng.uniform(-0.25, 0.25) * size
  amp = rng.uniform(0.02, 0.10) * size
  freq = rng.uniform(0.5, 2.0) * 2 * np.pi / size
  phase = rng.uniform(0, 2 * np.pi)
  return v > offset + amp * np.sin(freq * u + phase)


def _thing_mask(rng, cls, yy, xx, size, p):
  """Boolean [H, W] mask of one instance of thing class `cls`."""
  r = rng.uniform(p.min_radius, p.max_radius) * size
  cy, cx = rng.uniform(0.1, 0.9, size=2) * size
  dy, dx = yy - cy, xx - cx
  name = CLASS_NAMES[cls]
  if name == 'circle':
    return dy * dy + dx * dx <= r * r
  if name == 'rectangle':
    u, v = _rotated(dy, dx, rng.uniform(0, np.pi))
    aspect = rng.uniform(0.5, 1.0)
    return (np.abs(u) <= r) & (np.abs(v) <= r * aspect)
  # Triangle: intersection of three half-planes around (cy, cx); the vertex
  # angles are jittered so triangles are not all equilateral.
  r *= 1.4
  start = rng.uniform(0, 2 * np.pi)
  angles = start + np.array([0.0, 2.0, 4.0]) * np.pi / 3
  angles = angles + rng.uniform(-0.35, 0.35, size=3)
  vy, vx = cy + r * np.sin(angles), cx + r * np.cos(angles)
  inside = np.ones(yy.shape, bool)
  for i in range(3):
    j = (i + 1) % 3
    cross = (vx[j] - vx[i]) * (yy - vy[i]) - (vy[j] - vy[i]) * (xx - vx[i])
    inside &= cross >= 0
  return inside


def _max_hidden_fraction(painted, mask):
  """Largest fraction of any painted instance's visible pixels `mask` hides."""
  ids = painted[painted > 0]
  if not ids.size:
    return 0.0
  visible = np.bincount(ids)
  hidden = np.bincount(painted[mask & (painted > 0)], minlength=len(visible))
  present = visible > 0
  return float((hidden[present] / visible[present]).max())


def render_scene(seed, params=RenderParams()):
  """Draws one scene.

  Args:
    seed: anything `numpy.random.default_rng` accepts (an int or a sequence of
      ints); the scene is a pure function of it and `params`.
    params: a `RenderParams`.

  Returns:
    A dict with
      'image': [S, S, 3] uint8 RGB.
      'segmentation': [S, S] uint8 class ids in [0, NUM_CLASSES).
      'instances': [S, S] uint16 instance ids: 0 on stuff, 1..K on the K
        visible thing instances (numbered in painting order; an instance that
        ends fully occluded is dropped, so the ids stay contiguous).
      'num_instances': int, K.
  """
  rng = np.random.default_rng(seed)
  size = params.image_size
  yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5

  second = _stuff_split(rng, yy, xx, size)
  first_cls, second_cls = rng.permutation(STUFF_CLASSES)
  textures = {0: _stripes, 1: _checker}
  used = []  # Every colour in the scene so far.
  image = np.where(second[..., None],
                   textures[second_cls](rng, yy, xx, size, params, used),
                   textures[first_cls](rng, yy, xx, size, params, used))
  segmentation = np.where(second, second_cls, first_cls).astype(np.uint8)
  painted = np.zeros((size, size), np.int32)  # Painting order, 0 = none.

  num_things = rng.integers(params.min_things, params.max_things + 1)
  thing_classes = []
  for k in range(num_things):
    cls = int(rng.choice(THING_CLASSES))
    for _ in range(20):
      mask = _thing_mask(rng, cls, yy, xx, size, params)
      if _max_hidden_fraction(painted, mask) <= params.max_occlusion:
        break
    else:
      continue  # No placement found that keeps the others visible.
    fill = _thing_texture(rng, yy, xx, size, used)
    image = np.where(mask[..., None], fill, image)
    segmentation[mask] = cls
    painted[mask] = k + 1
    thing_classes.append(cls)

  # Renumber the visible instances 1..K in painting order.
  visible = np.unique(painted[painted > 0])
  lookup = np.zeros(num_things + 1, np.uint16)
  lookup[visible] = np.arange(1, len(visible) + 1, dtype=np.uint16)
  instances = lookup[painted]

  image = image + rng.normal(0, params.noise_std, size=image.shape)
  image = np.clip(np.round(image), 0, 255).astype(np.uint8)
  return {
      'image': image,
      'segmentation': segmentation,
      'instances': instances,
      'num_instances': len(visible),
  }
