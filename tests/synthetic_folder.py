"""Synthetic folder data sets for tests: `shapes` scenes written as a user's
folder of images and folder of masks (class-id, binary or instance-id)."""

import numpy as np
from PIL import Image

from segjax.data import shapes_render

PARAMS = shapes_render.RenderParams(image_size=40, min_things=2,
                                    max_things=4)


def write_scenes(root, n, *, mask_suffix='', classes=False, seed=0):
  """Writes n scenes under root/images and root/masks_* ; returns
  {key: scene} (the rendered arrays: 'image', 'segmentation', 'instances').

  root/masks_semantic: class ids; root/masks_binary: 0/255 things;
  root/masks_instances: uint16 instance ids; root/classes (with `classes`):
  class ids on thing pixels only, 0 elsewhere.
  """
  folders = ['images', 'masks_semantic', 'masks_binary', 'masks_instances']
  folders += ['classes'] if classes else []
  for f in folders:
    (root / f).mkdir(parents=True, exist_ok=True)
  scenes = {}
  for i in range(n):
    key = f'scene{i:03d}'
    scene = shapes_render.render_scene((seed, i), PARAMS)
    scenes[key] = scene
    Image.fromarray(scene['image']).save(root / 'images' / f'{key}.png')
    name = f'{key}{mask_suffix}.png'
    Image.fromarray(scene['segmentation']).save(root / 'masks_semantic' / name)
    things = scene['instances'] > 0
    Image.fromarray((things * 255).astype(np.uint8)).save(
        root / 'masks_binary' / name)
    Image.fromarray(scene['instances'].astype(np.uint16)).save(
        root / 'masks_instances' / name)
    if classes:
      Image.fromarray(np.where(things, scene['segmentation'], 0).astype(
          np.uint8)).save(root / 'classes' / name)
  return scenes
