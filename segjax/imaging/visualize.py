"""Colour label and panoptic maps; lay out image | truth | prediction panels."""

import numpy as np

# A fixed palette of distinguishable colours; class c gets _PALETTE[c % n].
# Ignored pixels (255) are drawn white.
_PALETTE = np.array([
    [64, 64, 64], [150, 150, 150], [230, 25, 75], [60, 180, 75],
    [0, 130, 200], [245, 130, 48], [145, 30, 180], [70, 240, 240],
    [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128],
    [220, 190, 255], [170, 110, 40], [255, 250, 200], [128, 0, 0],
    [170, 255, 195], [128, 128, 0], [255, 215, 180], [0, 0, 128],
], np.uint8)


def colorize(labels, ignore_index=255):
  """[H, W] integer class ids -> [H, W, 3] uint8 colours."""
  labels = np.asarray(labels)
  out = _PALETTE[np.where(labels == ignore_index, 0, labels) % len(_PALETTE)]
  out[labels == ignore_index] = 255
  return out


def colorize_panoptic(panoptic, label_divisor, ignore_index=255):
  """[H, W] panoptic ids -> [H, W, 3] uint8, each instance its own shade.

  A pixel's colour is its category's palette colour (as `colorize`), made
  lighter or darker by its instance id: instance 0 (stuff) keeps the
  category colour, instances k >= 1 step through eight shades, so touching
  instances of one category stay apart and their category stays visible.
  Void pixels (category == ignore_index) are white.
  """
  panoptic = np.asarray(panoptic).astype(np.int64)
  category, instance = np.divmod(panoptic, label_divisor)
  base = colorize(category, ignore_index).astype(np.float32)
  # Shades alternate lighter / darker so neighbours in id order differ most.
  shades = np.array([0.0, 0.45, -0.45, 0.25, -0.25, 0.6, -0.6, 0.1, -0.1],
                    np.float32)
  shade = np.where(instance > 0, shades[1 + (instance - 1) % 8], 0.0)[..., None]
  out = np.where(shade > 0, base + shade * (255.0 - base), base * (1 + shade))
  out = np.clip(np.round(out), 0, 255).astype(np.uint8)
  out[category == ignore_index] = 255
  return out


def prediction_panel(images, labels, predictions, ignore_index=255, gap=2):
  """Stacks rows of (image, ground truth, prediction).

  Args:
    images: [N, H, W, 3] uint8.
    labels: [N, H, W] integer ground truth (or [N, H, W, 3] uint8 colours).
    predictions: [N, H, W] integer predictions (or colours, as labels).
    ignore_index: label drawn white.
    gap: white pixels between panels.

  Returns:
    [N * (H + gap) - gap, 3 * W + 2 * gap, 3] uint8.
  """
  def colours(x):
    x = np.asarray(x)
    return x if x.ndim == 3 else colorize(x, ignore_index)

  rows = []
  for image, label, pred in zip(images, labels, predictions):
    h = image.shape[0]
    sep = np.full((h, gap, 3), 255, np.uint8)
    rows.append(np.concatenate(
        [np.asarray(image, np.uint8), sep, colours(label), sep,
         colours(pred)], axis=1))
  width = rows[0].shape[1]
  out = []
  for i, row in enumerate(rows):
    if i:
      out.append(np.full((gap, width, 3), 255, np.uint8))
    out.append(row)
  return np.concatenate(out, axis=0)
