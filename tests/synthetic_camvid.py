"""A synthetic CamVid copy in the SegNet tutorial's layout, for tests."""

import numpy as np
from PIL import Image


def write_split(root, folder, names, *, size=(12, 8), listing=True, seed=0):
  """Writes `folder/` + `folder`annot/ PNGs (and a SegNet-style list)."""
  rng = np.random.default_rng(seed)
  (root / folder).mkdir(parents=True, exist_ok=True)
  (root / f'{folder}annot').mkdir(exist_ok=True)
  labels = {}
  for name in names:
    image = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    label = rng.integers(0, 12, (size[1], size[0]), dtype=np.uint8)  # 11=void
    Image.fromarray(image).save(root / folder / f'{name}.png')
    Image.fromarray(label).save(root / f'{folder}annot' / f'{name}.png')
    labels[name] = label
  if listing:
    (root / f'{folder}.txt').write_text(''.join(
        f'/SegNet/CamVid/{folder}/{n}.png /SegNet/CamVid/{folder}annot/{n}.png\n'
        for n in names))
  return labels
