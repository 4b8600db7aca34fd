"""Input side (TensorFlow on the host only): TFDS builders and tf.data.

  datasets.py      which data sets exist, their label meaning, their builders
  shapes.py        the embedded synthetic `shapes` TFDS builder
  shapes_render.py how a `shapes` scene is drawn (NumPy only)
  camvid.py, dsb2018.py, cityscapes_panoptic.py, ade20k.py
                   TFDS builders of data users download by hand
  cityscapes.py, coco_panoptic.py, pets.py
                   adapters of TFDS catalog data sets (class tables and
                   label mappings)
  pipeline.py      training stream and padded evaluation passes
  augment.py       joint image / label-map augmentation
"""
