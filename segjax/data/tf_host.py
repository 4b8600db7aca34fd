"""Imports TensorFlow for host-side work only (input pipelines, summaries).

TensorFlow here reads, augments and writes; JAX owns the accelerators. Hiding
GPUs from TF keeps it from reserving their memory. Model, loss and metric
code never imports this module.
"""

import os

# TensorFlow's C++ INFO lines (oneDNN, CPU features) are noise for users.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')

import tensorflow as tf  # pylint: disable=g-import-not-at-top

tf.config.set_visible_devices([], 'GPU')

__all__ = ['tf']
