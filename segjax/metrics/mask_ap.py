"""COCO-style instance-mask AP on the host, with pycocotools as the engine.

What is measured: COCO mask AP, i.e. `COCOeval(iouType='segm')` from
pycocotools: AP averaged over IoU thresholds 0.50:0.05:0.95 ('ap'), at 0.50
('ap50') and 0.75 ('ap75'), for small (area <= 32^2 pixels), medium (32^2 to
96^2) and large (>= 96^2) ground-truth instances (COCOeval's ranges are
closed, so an area of exactly 32^2 is small and medium), and the average
recall 'ar' at `max_dets` predictions (plus 'ar_1', 'ar_10' and AR by size).
Areas are in pixels of the maps passed in. COCO category ids are the class
ids themselves (pycocotools accepts 0; only annotation ids must be >= 1).

This is not the Kaggle DSB2018 score, which averages per-image precision
TP / (TP + FP + FN) over IoU thresholds 0.5..0.95; COCO AP ranks predictions
by score over the whole data set.

Inputs per image (NumPy, e.g. fetched from a jitted post-processing step):
  labels        [H, W] int, class ids, `ignore_index` = void;
  instances     [H, W] int, instance numbers, 0 = none; a ground-truth (GT)
                instance is the pixels sharing one (label, instance) pair
                with label in `thing_classes` and instance > 0, so instance
                numbers may repeat across classes;
  instance_ids  [H, W] int, 0 = none, k = the k-th prediction (1-based);
  scores [K] float, classes [K] int, valid [K] bool: a prediction counts if
                it is valid and has at least one pixel.
`add` also takes a batch ([B, H, W] maps, [B, K] arrays, optional `mask`
[B] bool whose False rows are padding).

Limits:
  * Void pixels are no GT; a prediction over them is scored normally (its
    void pixels count in its union). Crowd regions are not modelled as COCO
    `iscrowd` annotations: segjax's data adapters map crowd to void.
  * maxDets (default 100) caps predictions per image *and class*, keeping
    the highest-scoring ones, not per image over all classes. DSB2018
    images hold up to 375 nuclei: pass max_dets=1000 there.
  * Cost: COCOeval matches in Python loops, about 1 s per image with 370
    instances (256x256) at `result`; `add` takes ~25 ms for such an image.
  * Classes with no GT in any image are NaN and left out of the means (their
    false positives count nowhere), as in COCOeval, which marks them -1.
  * Host-side and not jitted; masks are stored as RLEs, encoded in `add`.
"""

import contextlib
import io
import math

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


def _as_int(name, x):
  x = np.asarray(x)
  if not np.issubdtype(x.dtype, np.integer):
    raise ValueError(f'{name} must hold integers, got dtype {x.dtype}.')
  return x


def _segments(keys, selected):
  """Yields (key, column-major pixel indices) of each distinct key.

  Args:
    keys: [H * W] int64 keys of the pixels in column-major order.
    selected: [H * W] bool, the pixels that belong to some segment.
  """
  idx = np.flatnonzero(selected)
  if not idx.size:
    return
  k = keys[idx]
  order = np.argsort(k, kind='stable')
  k, idx = k[order], idx[order]
  starts = np.concatenate([[0], np.flatnonzero(np.diff(k)) + 1, [k.size]])
  for a, b in zip(starts[:-1], starts[1:]):
    yield int(k[a]), idx[a:b]


class MaskAP:
  """Accumulates images with `add`, scores them with `result`."""

  def __init__(self, thing_classes, *, class_names=None, max_dets=100,
               ignore_index=255):
    self.thing_classes = tuple(sorted({int(c) for c in thing_classes}))
    if any(c < 0 for c in self.thing_classes):
      # COCO category ids here are the class ids; pycocotools accepts 0 but
      # uses -1 for "no category", so negative ids are refused.
      raise ValueError(f'thing_classes must be >= 0, got {thing_classes}.')
    if ignore_index in self.thing_classes:
      raise ValueError(f'ignore_index {ignore_index} is in thing_classes.')
    if int(max_dets) < 1:
      raise ValueError(f'max_dets must be >= 1, got {max_dets}.')
    self.max_dets = int(max_dets)
    self.ignore_index = ignore_index
    if class_names is None:
      self.names = {c: str(c) for c in self.thing_classes}
    else:  # Indexed by class id, as segjax's DatasetSpec.class_names.
      if self.thing_classes and max(self.thing_classes) >= len(class_names):
        raise ValueError(f'class_names has {len(class_names)} entries; '
                         f'thing_classes go up to {max(self.thing_classes)}.')
      self.names = {c: str(class_names[c]) for c in self.thing_classes}
    self._images, self._gt, self._dt = [], [], []

  def add(self, labels, instances, instance_ids, scores, classes, valid,
          mask=None):
    """Adds one image ([H, W] maps, [K] arrays) or a batch ([B, H, W])."""
    labels = _as_int('labels', labels)
    instances = _as_int('instances', instances)
    instance_ids = _as_int('instance_ids', instance_ids)
    classes = _as_int('classes', classes)
    scores, valid = np.asarray(scores), np.asarray(valid)
    if labels.ndim not in (2, 3):
      raise ValueError(f'labels must be [H, W] or [B, H, W], got shape '
                       f'{labels.shape}.')
    if instances.shape != labels.shape or instance_ids.shape != labels.shape:
      raise ValueError(
          f'labels {labels.shape}, instances {instances.shape} and '
          f'instance_ids {instance_ids.shape} must have the same shape.')
    want = labels.shape[:-2] + scores.shape[-1:]
    if (scores.ndim != labels.ndim - 1 or scores.shape != want
        or classes.shape != want or valid.shape != want):
      raise ValueError(
          f'scores {scores.shape}, classes {classes.shape} and valid '
          f'{valid.shape} must all be [K] for [H, W] maps or [B, K] for '
          f'[B, H, W] maps; the maps are {labels.shape}.')
    if labels.ndim == 2:
      if mask is not None:
        raise ValueError('mask is for a batch; got [H, W] maps '
                         f'{labels.shape}.')
      labels, instances, instance_ids = (
          labels[None], instances[None], instance_ids[None])
      scores, classes, valid = scores[None], classes[None], valid[None]
    if mask is None:
      mask = np.ones(labels.shape[0], bool)
    mask = np.asarray(mask, bool)
    if mask.shape != labels.shape[:1]:
      raise ValueError(f'mask {mask.shape} must be [B] for maps '
                       f'{labels.shape}.')
    # Check every kept row before adding any, so a bad batch adds nothing.
    valid = valid.astype(bool)
    v, c, ids = valid[mask], classes[mask], instance_ids[mask]
    bad = v & ~np.isin(c, self.thing_classes)
    if bad.any():
      raise ValueError(
          f'valid predictions (at [row, k] {np.argwhere(bad).tolist()}) have '
          f'classes {c[bad].tolist()}, not in thing_classes '
          f'{list(self.thing_classes)}.')
    if not np.isfinite(scores[mask][v]).all():
      raise ValueError('valid predictions have non-finite scores.')
    if ids.size and (ids.min() < 0 or ids.max() > scores.shape[-1]):
      raise ValueError(
          f'instance_ids range over [{ids.min()}, {ids.max()}], outside '
          f'0..K with K = {scores.shape[-1]}.')
    for b in np.flatnonzero(mask):
      self._add_one(labels[b], instances[b], instance_ids[b], scores[b],
                    classes[b], valid[b])

  def _add_one(self, labels, instances, instance_ids, scores, classes, valid):
    self.add_encoded(self.encode(labels, instances, instance_ids, scores,
                                 classes, valid))

  def encode(self, labels, instances, instance_ids, scores, classes, valid):
    """One image ([H, W] maps, [K] arrays; checked by `add`) as RLEs.

    Returns:
      {'height', 'width', 'gt': [annotation], 'dt': [annotation]}: plain
      Python values (picklable, so images encoded on several hosts can be
      gathered), with no ids yet; `add_encoded` numbers them.
    """
    labels, instances = np.asarray(labels), np.asarray(instances)
    instance_ids = np.asarray(instance_ids)
    height, width = labels.shape
    # Work in column-major pixel order: RLEs run down columns, so a mask
    # filled in this order is encoded without a Fortran-order copy.
    lab, inst = labels.T.ravel(), instances.T.ravel()
    ids = instance_ids.T.ravel()
    buf = np.zeros(height * width, np.uint8)

    def encode(idx):
      buf[idx] = 1
      rle = mask_utils.encode(buf.reshape(width, height).T[:, :, None])[0]
      buf[idx] = 0
      return {'segmentation': rle, 'area': float(idx.size),
              'bbox': [float(v) for v in mask_utils.toBbox(rle)],
              'iscrowd': 0}

    is_gt = (np.isin(lab, self.thing_classes) & (inst > 0)
             & (lab != self.ignore_index))
    stride = int(inst.max()) + 1 if inst.size else 1
    keys = lab.astype(np.int64) * stride + inst
    gt = [{**encode(idx), 'category_id': key // stride}
          for key, idx in _segments(keys, is_gt)]
    kept = (ids > 0) & np.concatenate([[False], np.asarray(valid, bool)])[ids]
    dt = [{**encode(idx), 'category_id': int(classes[k - 1]),
           'score': float(scores[k - 1])}
          for k, idx in _segments(ids.astype(np.int64), kept)]
    return {'height': height, 'width': width, 'gt': gt, 'dt': dt}

  def add_encoded(self, image):
    """Adds one `encode`d image, numbering it and its annotations."""
    image_id = len(self._images) + 1
    self._images.append({'id': image_id, 'height': image['height'],
                         'width': image['width']})
    # Annotation ids start at 1: COCOeval stores matched GT ids in
    # dtMatches, where 0 means "unmatched".
    for a in image['gt']:
      self._gt.append({**a, 'image_id': image_id, 'id': len(self._gt) + 1})
    for a in image['dt']:
      self._dt.append({**a, 'image_id': image_id, 'id': len(self._dt) + 1})

  def evaluator(self):
    """The evaluated and accumulated COCOeval (its prints silenced)."""
    cats = [{'id': c, 'name': self.names[c]} for c in self.thing_classes]
    with contextlib.redirect_stdout(io.StringIO()):
      gt, dt = COCO(), COCO()
      # Built in memory rather than with loadRes: loadRes fails on an empty
      # list, and given a 'bbox' key it replaces the mask area by the box's.
      # Copies, because COCOeval writes flags into the annotation dicts.
      gt.dataset = {'images': list(self._images), 'categories': cats,
                    'annotations': [dict(a) for a in self._gt]}
      dt.dataset = {'images': list(self._images), 'categories': cats,
                    'annotations': [dict(a) for a in self._dt]}
      gt.createIndex()
      dt.createIndex()
      ev = COCOeval(gt, dt, iouType='segm')
      ev.params.catIds = list(self.thing_classes)
      ev.params.maxDets = sorted({1, 10, self.max_dets} & set(
          range(1, self.max_dets + 1)))
      ev.evaluate()
      ev.accumulate()
    return ev

  def result(self):
    """COCO mask AP/AR of the images added so far; see the module doc."""
    keys = ('ap', 'ap50', 'ap75', 'ap_small', 'ap_medium', 'ap_large',
            'ar_1', 'ar_10', 'ar', 'ar_small', 'ar_medium', 'ar_large')
    out = {k: math.nan for k in keys}
    out['per_class'] = {self.names[c]: math.nan for c in self.thing_classes}
    out.update(num_images=len(self._images), num_gt=len(self._gt),
               num_predictions=len(self._dt))
    if not self._images or not self.thing_classes:
      return out
    ev = self.evaluator()
    p = ev.params
    prec, rec = ev.eval['precision'], ev.eval['recall']  # [T,R,K,A,M] [T,K,A,M]

    def mean(x):  # COCOeval's summarize(): -1 marks "no GT", left out.
      x = x[x > -1]
      return float(x.mean()) if x.size else math.nan

    # Index maxDets and areas ourselves: summarize() computes stats[0] at a
    # hard-coded maxDets=100 and returns -1 for AP whenever max_dets != 100.
    m = p.maxDets.index(self.max_dets)
    area = {n: p.areaRngLbl.index(n) for n in ('all', 'small', 'medium',
                                               'large')}
    t50, t75 = (int(np.argmin(np.abs(p.iouThrs - t))) for t in (0.5, 0.75))
    out['ap'] = mean(prec[..., area['all'], m])
    out['ap50'] = mean(prec[t50, ..., area['all'], m])
    out['ap75'] = mean(prec[t75, ..., area['all'], m])
    for size in ('small', 'medium', 'large'):
      out[f'ap_{size}'] = mean(prec[..., area[size], m])
      out[f'ar_{size}'] = mean(rec[..., area[size], m])
    for n in (1, 10):
      if n in p.maxDets:
        out[f'ar_{n}'] = mean(rec[..., area['all'], p.maxDets.index(n)])
    out['ar'] = mean(rec[..., area['all'], m])
    for k, c in enumerate(p.catIds):
      out['per_class'][self.names[c]] = mean(prec[:, :, k, area['all'], m])
    return out


def mask_ap(labels, instances, instance_ids, scores, classes, valid, *,
            thing_classes, max_dets=100, ignore_index=255):
  """One-shot `MaskAP(...).add(...)` then `.result()` over a batch or image."""
  metric = MaskAP(thing_classes, max_dets=max_dets, ignore_index=ignore_index)
  metric.add(labels, instances, instance_ids, scores, classes, valid)
  return metric.result()
