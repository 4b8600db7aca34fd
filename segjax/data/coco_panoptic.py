"""COCO panoptic (TFDS `coco/2017_panoptic`) as segjax's standard example.

TFDS's builder (tensorflow_datasets/object_detection/coco.py) downloads COCO
2017 and the panoptic annotations itself (about 19 GB; train 118,287 /
validation 5,000 images). Its panoptic features:

  'image'             [H, W, 3] uint8
  'panoptic_image'    [H, W, 3] uint8: the panoptic PNG, segment id =
                      R + 256 G + 256^2 B; 0 = void (unlabelled)
  'panoptic_objects'  a sequence of segments: 'id' int64 (the segment id),
                      'label' int64 in 0..132, 'is_crowd' bool, 'area',
                      'bbox'

'label' is TFDS's ClassLabel: the position of the segment's category in the
`categories` list of `panoptic_{train,val}2017.json`, which lists the 133
categories of panopticapi's `panoptic_coco_categories.json` in increasing id
order: the 80 things (ids 1..90) first, then the 53 stuff categories (ids
92..200). So TFDS's label is already segjax's contiguous class id, things are
classes 0..79, and `CATEGORIES[c]` gives the COCO id to submit for class c.

`standardize` decodes the segment ids, looks each pixel's segment up among
the example's objects and writes its class to 'labels' and, for things, an
instance number 1..K (segment order) to 'instances'. Void pixels, pixels of
ids missing from the objects, and crowd segments get label 255 and instance
0. Crowd -> ignore is a simplification of panopticapi's PQ, which exempts a
crowd region only from matching predicted segments of the crowd's own
category (a prediction of another class there still counts as a false
positive); training with it ignores those pixels for every class.
"""

import collections

from segjax.data.tf_host import tf

IGNORE_INDEX = 255

Category = collections.namedtuple('Category', ['id', 'name', 'is_thing'])

# (id, name) of panopticapi's panoptic_coco_categories.json, in file (= id)
# order: 80 things, then 53 stuff categories.
_THINGS = (
    (1, 'person'), (2, 'bicycle'), (3, 'car'), (4, 'motorcycle'),
    (5, 'airplane'), (6, 'bus'), (7, 'train'), (8, 'truck'), (9, 'boat'),
    (10, 'traffic light'), (11, 'fire hydrant'), (13, 'stop sign'),
    (14, 'parking meter'), (15, 'bench'), (16, 'bird'), (17, 'cat'),
    (18, 'dog'), (19, 'horse'), (20, 'sheep'), (21, 'cow'), (22, 'elephant'),
    (23, 'bear'), (24, 'zebra'), (25, 'giraffe'), (27, 'backpack'),
    (28, 'umbrella'), (31, 'handbag'), (32, 'tie'), (33, 'suitcase'),
    (34, 'frisbee'), (35, 'skis'), (36, 'snowboard'), (37, 'sports ball'),
    (38, 'kite'), (39, 'baseball bat'), (40, 'baseball glove'),
    (41, 'skateboard'), (42, 'surfboard'), (43, 'tennis racket'),
    (44, 'bottle'), (46, 'wine glass'), (47, 'cup'), (48, 'fork'),
    (49, 'knife'), (50, 'spoon'), (51, 'bowl'), (52, 'banana'), (53, 'apple'),
    (54, 'sandwich'), (55, 'orange'), (56, 'broccoli'), (57, 'carrot'),
    (58, 'hot dog'), (59, 'pizza'), (60, 'donut'), (61, 'cake'),
    (62, 'chair'), (63, 'couch'), (64, 'potted plant'), (65, 'bed'),
    (67, 'dining table'), (70, 'toilet'), (72, 'tv'), (73, 'laptop'),
    (74, 'mouse'), (75, 'remote'), (76, 'keyboard'), (77, 'cell phone'),
    (78, 'microwave'), (79, 'oven'), (80, 'toaster'), (81, 'sink'),
    (82, 'refrigerator'), (84, 'book'), (85, 'clock'), (86, 'vase'),
    (87, 'scissors'), (88, 'teddy bear'), (89, 'hair drier'),
    (90, 'toothbrush'),
)
_STUFF = (
    (92, 'banner'), (93, 'blanket'), (95, 'bridge'), (100, 'cardboard'),
    (107, 'counter'), (109, 'curtain'), (112, 'door-stuff'),
    (118, 'floor-wood'), (119, 'flower'), (122, 'fruit'), (125, 'gravel'),
    (128, 'house'), (130, 'light'), (133, 'mirror-stuff'), (138, 'net'),
    (141, 'pillow'), (144, 'platform'), (145, 'playingfield'),
    (147, 'railroad'), (148, 'river'), (149, 'road'), (151, 'roof'),
    (154, 'sand'), (155, 'sea'), (156, 'shelf'), (159, 'snow'),
    (161, 'stairs'), (166, 'tent'), (168, 'towel'), (171, 'wall-brick'),
    (175, 'wall-stone'), (176, 'wall-tile'), (177, 'wall-wood'),
    (178, 'water-other'), (180, 'window-blind'), (181, 'window-other'),
    (184, 'tree-merged'), (185, 'fence-merged'), (186, 'ceiling-merged'),
    (187, 'sky-other-merged'), (188, 'cabinet-merged'),
    (189, 'table-merged'), (190, 'floor-other-merged'),
    (191, 'pavement-merged'), (192, 'mountain-merged'),
    (193, 'grass-merged'), (194, 'dirt-merged'), (195, 'paper-merged'),
    (196, 'food-other-merged'), (197, 'building-other-merged'),
    (198, 'rock-merged'), (199, 'wall-other-merged'), (200, 'rug-merged'),
)
CATEGORIES = tuple(Category(i, n, True) for i, n in _THINGS) + tuple(
    Category(i, n, False) for i, n in _STUFF)
CLASS_NAMES = tuple(c.name for c in CATEGORIES)
NUM_THINGS = len(_THINGS)
THING_CLASSES = tuple(range(NUM_THINGS))


@tf.autograph.experimental.do_not_convert
def segment_ids(panoptic_image):
  """[H, W] int32 segment ids of an RGB panoptic PNG: R + 256 G + 256^2 B."""
  rgb = tf.cast(panoptic_image, tf.int32)
  return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


@tf.autograph.experimental.do_not_convert
def standardize(example):
  """A TFDS `coco/2017_panoptic` example as segjax's standard example.

  Args:
    example: 'image' [H, W, 3] uint8, 'panoptic_image' [H, W, 3] uint8,
      'panoptic_objects': {'id': [N] int64, 'label': [N] int64 (0..132),
      'is_crowd': [N] bool}.

  Returns:
    {'image': [H, W, 3] uint8, 'labels': [H, W] uint8 (0..132, 255 = void,
    crowd or unknown segment), 'instances': [H, W] int32 (1..K the thing
    segments in object order, 0 otherwise)}.
  """
  ids = segment_ids(example['panoptic_image'])
  objects = example['panoptic_objects']
  crowd = objects['is_crowd']
  classes = tf.cast(objects['label'], tf.int32)
  counted = (classes < NUM_THINGS) & ~crowd
  numbers = tf.where(counted, tf.cumsum(tf.cast(counted, tf.int32)), 0)
  # A sentinel segment (id -1, never a pixel value) takes the pixels whose id
  # matches no object, and keeps the lookup defined for N = 0.
  seg_ids = tf.concat([tf.cast(objects['id'], tf.int32), [-1]], 0)
  seg_labels = tf.concat([tf.where(crowd, IGNORE_INDEX, classes),
                          [IGNORE_INDEX]], 0)
  seg_numbers = tf.concat([numbers, [0]], 0)
  # Look up the few distinct ids of the image, not every pixel: [U, N + 1].
  unique, index = tf.unique(tf.reshape(ids, [-1]))
  match = tf.equal(unique[:, None], seg_ids[None, :])
  row = tf.where(tf.reduce_any(match, 1),
                 tf.argmax(tf.cast(match, tf.int32), 1, output_type=tf.int32),
                 tf.size(seg_ids) - 1)
  shape = tf.shape(ids)
  labels = tf.gather(tf.gather(seg_labels, row), index)
  instances = tf.gather(tf.gather(seg_numbers, row), index)
  return {
      'image': example['image'],
      'labels': tf.reshape(tf.cast(labels, tf.uint8), shape),
      'instances': tf.reshape(instances, shape),
  }
