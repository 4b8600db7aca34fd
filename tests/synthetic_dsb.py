"""A synthetic DSB2018 copy in Kaggle's stage1_train layout, for tests:
small images of a few sizes with bright discs as nuclei, ids chosen so that
each split (by the builder's own rule) gets its images."""

import numpy as np
from PIL import Image

from segjax.data import dsb2018

# Sizes (H, W) of the synthetic copy's images, by split.
SIZES = {'train': [(20, 24), (16, 16), (24, 18)],
         'validation': [(12, 20), (18, 14), (16, 16)],
         'test': [(10, 10)]}


def ids():
  """Image ids that land in each split by the builder's own rule."""
  want = {split: len(sizes) for split, sizes in SIZES.items()}
  found = {split: [] for split in want}
  n = 0
  while any(len(found[s]) < want[s] for s in want):
    image_id = f'img{n:04d}'
    split = dsb2018.split_of(image_id)
    if len(found[split]) < want[split]:
      found[split].append(image_id)
    n += 1
  return found


def write_copy(root):
  """Writes the copy under `root`; returns {image_id: [H, W] semantic map}
  (1 on nuclei)."""
  rng = np.random.default_rng(0)
  truth = {}
  for split, image_ids in ids().items():
    for image_id, (h, w) in zip(image_ids, SIZES[split]):
      d = root / 'stage1_train' / image_id
      (d / 'images').mkdir(parents=True)
      (d / 'masks').mkdir()
      image = rng.integers(0, 60, (h, w, 4), dtype=np.uint8)
      image[..., 3] = 255
      semantic = np.zeros((h, w), np.uint8)
      yy, xx = np.mgrid[:h, :w]
      for k in range(2):
        cy, cx = rng.integers(3, h - 3), rng.integers(3, w - 3)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= 4
        image[disc, :3] = 220  # Bright nuclei on a dark background.
        semantic |= disc
        Image.fromarray(disc.astype(np.uint8) * 255).save(
            d / 'masks' / f'{k}.png')
      Image.fromarray(image, 'RGBA').save(d / 'images' / f'{image_id}.png')
      truth[image_id] = semantic
  return truth
