"""Post-processing of model outputs into instances and panoptic maps.

  panoptic.py   Panoptic-DeepLab grouping (jitted): centers, offsets, stuff
  instances.py  instances of a binary (sigmoid) model on the host
"""
