"""Cityscapes label definitions and the adapter of TFDS's `cityscapes` builder.

The label table is the one of the official cityscapesScripts
(`cityscapesscripts/helpers/labels.py`, github.com/mcordts/cityscapesScripts):
34 label ids (0..33) stored in the ground-truth images, of which 19 are
evaluated and get a train id (0..18); the rest, and the license plate (id -1,
never drawn into the label images), are ignored: train id 255.

`cityscapes` (TFDS catalog, configs `semantic_segmentation` and
`semantic_segmentation_extra`): 'image_left' [1024, 2048, 3] uint8 and
'segmentation_label' [1024, 2048, 1] uint8 holding the label ids of
`*_gtFine_labelIds.png` (`*_gtCoarse_labelIds.png` for `_extra`). TFDS
prepares it from the two zips users download after registering (see
`MANUAL_DOWNLOAD_INSTRUCTIONS`); splits train 2975 / validation 500 / test
1525 (the test labels are placeholders: do not evaluate on them).
`standardize_semantic` maps label ids to train ids; anything else -> 255.

Instances are not in TFDS's builder: `cityscapes_panoptic` (segjax's builder,
`segjax/data/cityscapes_panoptic.py`) reads them from `*_instanceIds.png`.
"""

import collections

import numpy as np

from segjax.data.tf_host import tf

IGNORE_INDEX = 255

Label = collections.namedtuple(
    'Label', ['name', 'id', 'train_id', 'category', 'has_instances',
              'ignore_in_eval'])

# (name, id, trainId, category, hasInstances, ignoreInEval) of labels.py.
LABELS = tuple(Label(*row) for row in (
    ('unlabeled', 0, 255, 'void', False, True),
    ('ego vehicle', 1, 255, 'void', False, True),
    ('rectification border', 2, 255, 'void', False, True),
    ('out of roi', 3, 255, 'void', False, True),
    ('static', 4, 255, 'void', False, True),
    ('dynamic', 5, 255, 'void', False, True),
    ('ground', 6, 255, 'void', False, True),
    ('road', 7, 0, 'flat', False, False),
    ('sidewalk', 8, 1, 'flat', False, False),
    ('parking', 9, 255, 'flat', False, True),
    ('rail track', 10, 255, 'flat', False, True),
    ('building', 11, 2, 'construction', False, False),
    ('wall', 12, 3, 'construction', False, False),
    ('fence', 13, 4, 'construction', False, False),
    ('guard rail', 14, 255, 'construction', False, True),
    ('bridge', 15, 255, 'construction', False, True),
    ('tunnel', 16, 255, 'construction', False, True),
    ('pole', 17, 5, 'object', False, False),
    ('polegroup', 18, 255, 'object', False, True),
    ('traffic light', 19, 6, 'object', False, False),
    ('traffic sign', 20, 7, 'object', False, False),
    ('vegetation', 21, 8, 'nature', False, False),
    ('terrain', 22, 9, 'nature', False, False),
    ('sky', 23, 10, 'sky', False, False),
    ('person', 24, 11, 'human', True, False),
    ('rider', 25, 12, 'human', True, False),
    ('car', 26, 13, 'vehicle', True, False),
    ('truck', 27, 14, 'vehicle', True, False),
    ('bus', 28, 15, 'vehicle', True, False),
    ('caravan', 29, 255, 'vehicle', True, True),
    ('trailer', 30, 255, 'vehicle', True, True),
    ('train', 31, 16, 'vehicle', True, False),
    ('motorcycle', 32, 17, 'vehicle', True, False),
    ('bicycle', 33, 18, 'vehicle', True, False),
    ('license plate', -1, -1, 'vehicle', False, True),
))

NUM_LABEL_IDS = 34  # Ids 0..33 appear in the label images.
# The 19 evaluated classes, in train id order.
CLASS_NAMES = tuple(l.name for l in sorted(
    (l for l in LABELS if 0 <= l.train_id < IGNORE_INDEX),
    key=lambda l: l.train_id))
# Train ids of the classes with instances: person, rider, car, truck, bus,
# train, motorcycle, bicycle (caravan and trailer have instances but are not
# evaluated).
THING_CLASSES = tuple(sorted(
    l.train_id for l in LABELS
    if l.has_instances and 0 <= l.train_id < IGNORE_INDEX))
# Label ids whose pixels may carry an instance (id * 1000 + k in instanceIds).
INSTANCE_LABEL_IDS = tuple(l.id for l in LABELS if l.has_instances)


def train_id_table():
  """[256] uint8: label id -> train id; 255 for ignored and unknown ids."""
  table = np.full(256, IGNORE_INDEX, np.uint8)
  for label in LABELS:
    if 0 <= label.id < NUM_LABEL_IDS and label.train_id >= 0:
      table[label.id] = label.train_id
  return table


def thing_table():
  """[256] bool: whether a train id is a thing class."""
  table = np.zeros(256, bool)
  table[list(THING_CLASSES)] = True
  return table


@tf.autograph.experimental.do_not_convert
def standardize_semantic(example):
  """A TFDS `cityscapes` example as segjax's standard example.

  Args:
    example: 'image_left' [H, W, 3] uint8, 'segmentation_label' [H, W, 1]
      uint8 label ids.

  Returns:
    {'image': [H, W, 3] uint8, 'labels': [H, W] uint8 train ids 0..18,
    255 = ignore (void, unevaluated and unknown ids)}.
  """
  table = tf.constant(train_id_table())
  label_ids = tf.cast(example['segmentation_label'][..., 0], tf.int32)
  return {'image': example['image_left'],
          'labels': tf.gather(table, label_ids)}
