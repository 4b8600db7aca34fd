"""Segmentation metrics as jitted functions; importing this never imports TF.

Every statistic here is a sum (a confusion matrix, intersection and union
counts, TP/FP/FN counts), so it accumulates across batches, devices and hosts
by addition: compute it per batch inside `jit` (on sharded inputs the result
is already the global sum over devices), add the batches up, and turn the
total into scores once at the end. Averaging per-batch mIoUs instead gives a
different, wrong number.

  stats (sums)               scores
  confusion_matrix      ->   segmentation_scores   (mean_iou: both at once)
  binary_stats          ->   binary_scores_from_stats  (binary_scores: both)
  boundary_iou_stats    ->   boundary_iou_from_stats   (boundary_iou: both)
  panoptic_stats        ->   panoptic_scores       (panoptic quality)

Instance masks are scored on the host: `MaskAP` (COCO mask AP through
pycocotools' COCOeval) accumulates per-image RLEs and scores them at the end.

Public wrappers validate concrete (eager) inputs with clear ValueErrors and
call jitted cores; under `jit` they skip the checks. Labels are int32 on
the device: a value outside int32 is a ValueError when called directly and
wraps silently under `jit` (JAX's default 32-bit mode).
"""

from segjax.metrics.binary import binary_scores
from segjax.metrics.binary import binary_scores_from_stats
from segjax.metrics.binary import binary_stats
from segjax.metrics.boundary import boundary_iou
from segjax.metrics.boundary import boundary_iou_from_stats
from segjax.metrics.boundary import boundary_iou_stats
from segjax.metrics.confusion import confusion_matrix
from segjax.metrics.confusion import mean_iou
from segjax.metrics.confusion import per_image_mean_iou
from segjax.metrics.confusion import segmentation_scores
from segjax.metrics.mask_ap import mask_ap
from segjax.metrics.mask_ap import MaskAP
from segjax.metrics.panoptic import panoptic_scores
from segjax.metrics.panoptic import panoptic_stats

__all__ = [
    'MaskAP',
    'binary_scores',
    'binary_scores_from_stats',
    'binary_stats',
    'boundary_iou',
    'boundary_iou_from_stats',
    'boundary_iou_stats',
    'confusion_matrix',
    'mask_ap',
    'mean_iou',
    'panoptic_scores',
    'panoptic_stats',
    'per_image_mean_iou',
    'segmentation_scores',
]
