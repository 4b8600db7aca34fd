"""Input side (TensorFlow on the host only): TFDS builders and tf.data.

  datasets.py      which data sets exist, their label meaning, their builders
  shapes.py        the embedded synthetic `shapes` TFDS builder
  shapes_render.py how a `shapes` scene is drawn (NumPy only)
  pipeline.py      training stream and padded evaluation passes
  augment.py       joint image / label-map augmentation
"""
