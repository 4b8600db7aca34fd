"""Segmentation metrics as jitted functions; importing this never imports TF.

Every statistic here is a sum (a confusion matrix, intersection and union
counts), so it accumulates across batches, devices and hosts by addition:
compute it per batch inside `jit` (on sharded inputs the result is already the
global sum over devices), add the batches up, and turn the total into scores
once at the end with `segmentation_scores`. Averaging per-batch mIoUs instead
gives a different, wrong number.
"""

from segjax.metrics.confusion import confusion_matrix
from segjax.metrics.confusion import mean_iou
from segjax.metrics.confusion import segmentation_scores

__all__ = ['confusion_matrix', 'mean_iou', 'segmentation_scores']
