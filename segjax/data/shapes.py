"""`shapes`: segjax's embedded synthetic data set, as a TFDS builder.

Generated locally from a seed (no download), so every machine, test and CI run
trains on the same data. One example carries everything the three tasks need:
an RGB image, a semantic label map (2 stuff + 3 thing classes) and an instance
id map, so the same data later serves semantic, instance and panoptic
segmentation (panoptic id = class * label_divisor + instance).

What is drawn and how is documented in `segjax/data/shapes_render.py`.

Builder configs:
  `shapes/default`: 128x128, 2000 train / 250 validation / 250 test images.
  `shapes/tiny`: 32x32, 64 / 24 / 24 images, for tests and smoke runs.

Build it with `tfds.builder('shapes/default', data_dir=...).download_and_prepare()`
(segjax's input pipeline does this on first use); it takes seconds.
"""

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from segjax.data import shapes_render


@dataclasses.dataclass
class ShapesConfig(tfds.core.BuilderConfig):
  """A `shapes` variant: image size, split sizes, seed and drawing options."""
  image_size: int = 128
  num_train: int = 2000
  num_validation: int = 250
  num_test: int = 250
  seed: int = 0
  min_things: int = 3
  max_things: int = 7
  min_radius: float = 0.10
  max_radius: float = 0.22
  max_occlusion: float = 0.5

  def render_params(self):
    return shapes_render.RenderParams(
        image_size=self.image_size,
        min_things=self.min_things,
        max_things=self.max_things,
        min_radius=self.min_radius,
        max_radius=self.max_radius,
        max_occlusion=self.max_occlusion,
    )


# The split index is part of each example's seed, so the splits never share a
# scene. Appending a split here must not renumber the existing ones.
_SPLIT_INDEX = {'train': 0, 'validation': 1, 'test': 2}


class Shapes(tfds.core.GeneratorBasedBuilder):
  """Synthetic scenes of textured stuff regions and overlapping shapes."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'First release.'}
  BUILDER_CONFIGS = [
      ShapesConfig(name='default', description='128x128, 2000/250/250.'),
      ShapesConfig(
          name='tiny',
          description='32x32, 64/24/24, for tests.',
          image_size=32,
          num_train=64,
          num_validation=24,
          num_test=24,
          min_things=1,
          max_things=3,
          min_radius=0.15,
          max_radius=0.3,
      ),
  ]
  DEFAULT_CONFIG_NAME = 'default'

  def _info(self):
    size = self.builder_config.image_size
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(size, size, 3)),
            # Class ids in [0, 5), PNG-encoded (lossless).
            'segmentation': tfds.features.Image(shape=(size, size, 1)),
            # 0 on stuff, 1..K for the visible thing instances.
            'instances': tfds.features.Image(
                shape=(size, size, 1), dtype=np.uint16),
            'num_instances': np.int32,
            'image_id': np.int64,
        }),
        supervised_keys=('image', 'segmentation'),
        metadata=tfds.core.MetadataDict(
            class_names=list(shapes_render.CLASS_NAMES),
            stuff_classes=list(shapes_render.STUFF_CLASSES),
            thing_classes=list(shapes_render.THING_CLASSES),
        ),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    cfg = self.builder_config
    sizes = {
        'train': cfg.num_train,
        'validation': cfg.num_validation,
        'test': cfg.num_test,
    }
    return {
        split: self._generate_examples(split, n) for split, n in sizes.items()
    }

  def _generate_examples(self, split, num_examples):
    cfg = self.builder_config
    params = cfg.render_params()
    for i in range(num_examples):
      scene = shapes_render.render_scene(
          [cfg.seed, _SPLIT_INDEX[split], i], params)
      yield i, {
          'image': scene['image'],
          'segmentation': scene['segmentation'][..., None],
          'instances': scene['instances'][..., None],
          'num_instances': scene['num_instances'],
          'image_id': i,
      }
