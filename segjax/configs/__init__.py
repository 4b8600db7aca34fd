"""Experiment configs: the base every experiment starts from and the
blocks a task or model adds.

  base.py     `get_config()`: every field segjax reads, at its default;
              `merge` reads a run's config.json back onto it
  options.py  `add_panoptic_options`, `add_binary_options`,
              `panoptic_deeplab_widths`
"""
