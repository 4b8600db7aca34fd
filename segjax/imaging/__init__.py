"""Images in and out: safe image reading, label-map and panoptic files,
colouring and prediction panels (NumPy and Pillow only).

  image_io.py   reading images, writing label maps and panoptic PNG/JSON
  visualize.py  colour tables, label-map colouring, image panels
"""
