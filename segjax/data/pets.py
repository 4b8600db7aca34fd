"""Oxford-IIIT Pet (TFDS `oxford_iiit_pet`) trimaps as segmentation labels.

TFDS's builder (tensorflow_datasets/datasets/oxford_iiit_pet, version 4.0.0)
downloads the data itself (about 800 MB): splits `train` (the official
`trainval` list, 3,680 images) and `test` (3,669), no validation split.
Features used here: 'image' [H, W, 3] uint8 and 'segmentation_mask'
[H, W, 1] uint8, the trimap PNG stored as it is: 1 = pet (foreground),
2 = background, 3 = border ("not classified": the uncertain band along the
pet's outline). TFDS does not shift the values (its segmentation tutorial
subtracts 1 itself), and the PNGs hold no 0.

Two segjax data sets read it, with the same class order (background 0,
pet 1) so models and thresholds carry over:

  oxford_iiit_pet          2 classes, border -> 255 (ignored). This is also
                           the binary pet / background task: the labels are
                           the 0/1 targets of a sigmoid head, with 255
                           ignored (e.g. losses 'binary_cross_entropy').
  oxford_iiit_pet_trimap   3 classes: background 0, pet 1, border 2.

Any other value (none in the real data) becomes 255.
"""

import numpy as np

from segjax.data.tf_host import tf

IGNORE_INDEX = 255
# The values of TFDS's 'segmentation_mask'.
TRIMAP_PET, TRIMAP_BACKGROUND, TRIMAP_BORDER = 1, 2, 3

BINARY_CLASS_NAMES = ('background', 'pet')
TRIMAP_CLASS_NAMES = ('background', 'pet', 'border')
THING_CLASSES = (1,)  # One pet per image, no instance maps.


def class_table(with_border):
  """[256] uint8: trimap value -> segjax class (255 = ignore)."""
  table = np.full(256, IGNORE_INDEX, np.uint8)
  table[TRIMAP_BACKGROUND] = 0
  table[TRIMAP_PET] = 1
  if with_border:
    table[TRIMAP_BORDER] = 2
  return table


def _standardize(example, with_border):
  table = tf.constant(class_table(with_border))
  mask = tf.cast(example['segmentation_mask'][..., 0], tf.int32)
  return {'image': example['image'], 'labels': tf.gather(table, mask)}


@tf.autograph.experimental.do_not_convert
def standardize_binary(example):
  """`oxford_iiit_pet`: {'image' [H, W, 3] uint8, 'labels' [H, W] uint8}
  with 0 background, 1 pet, 255 border."""
  return _standardize(example, with_border=False)


@tf.autograph.experimental.do_not_convert
def standardize_trimap(example):
  """`oxford_iiit_pet_trimap`: {'image' [H, W, 3] uint8, 'labels' [H, W]
  uint8} with 0 background, 1 pet, 2 border."""
  return _standardize(example, with_border=True)
