"""Tests of segjax.metrics.mask_ap against an independent NumPy COCO mask AP."""

import contextlib
import io
import math

import numpy as np
import pytest

from segjax.metrics.mask_ap import MaskAP
from segjax.metrics.mask_ap import mask_ap

THINGS = (1, 2)
STUFF = 3
# COCOeval's own grids (np.linspace, not arange, so that thresholds like 0.55
# are the same doubles in both implementations).
IOU_THRS = np.linspace(0.5, 0.95, 10)
REC_THRS = np.linspace(0.0, 1.0, 101)


# ----------------------------------------------------------------- reference
def _reference(images, thing_classes, max_dets):
  """COCO mask AP/AR ('all' areas, maxDets = max_dets) in float64 NumPy.

  images: list of (labels, instances, instance_ids, scores, classes, valid).
  """
  gts, dts = [], []  # per image: [(class, mask)], [(class, score, mask)]
  for labels, instances, ids, scores, classes, valid in images:
    gts.append([(c, (labels == c) & (instances == i))
                for c in thing_classes
                for i in np.unique(instances[labels == c]) if i > 0])
    dts.append([(int(classes[k]), float(scores[k]), ids == k + 1)
                for k in range(len(scores))
                if valid[k] and (ids == k + 1).any()])
  ap, ar, per_class = np.zeros((0, 10)), np.zeros((0, 10)), {}
  for c in thing_classes:
    npos = sum(g == c for img in gts for g, _ in img)
    if not npos:
      per_class[c] = math.nan
      continue
    hits = [[] for _ in IOU_THRS]  # per threshold: (score, is_tp)
    for g_img, d_img in zip(gts, dts):
      gm = [m for g, m in g_img if g == c]
      ds = [(s, m) for d, s, m in d_img if d == c]
      order = sorted(range(len(ds)), key=lambda i: -ds[i][0])[:max_dets]
      ds = [ds[i] for i in order]
      iou = np.array([[np.sum(d & g) / np.sum(d | g) for g in gm]
                      for _, d in ds], np.float64).reshape(len(ds), len(gm))
      for t, thr in enumerate(IOU_THRS):
        taken = np.zeros(len(gm), bool)
        for j, (s, _) in enumerate(ds):
          cand = np.where(~taken & (iou[j] >= thr), iou[j], -1.0)
          tp = bool(cand.size) and cand.max() >= 0
          if tp:
            taken[np.argmax(cand)] = True
          hits[t].append((s, tp))
    ap_c, ar_c = np.zeros(10), np.zeros(10)
    for t, h in enumerate(hits):
      h = sorted(h, key=lambda x: -x[0])
      tp = np.cumsum([x[1] for x in h], dtype=np.float64)
      fp = np.cumsum([not x[1] for x in h], dtype=np.float64)
      if not h:
        continue
      rc, pr = tp / npos, tp / (tp + fp)
      pr = np.maximum.accumulate(pr[::-1])[::-1]
      first = np.searchsorted(rc, REC_THRS, side='left')
      ap_c[t] = np.mean([pr[i] if i < len(pr) else 0.0 for i in first])
      ar_c[t] = rc[-1]
    ap, ar = np.vstack([ap, ap_c]), np.vstack([ar, ar_c])
    per_class[c] = ap_c.mean()
  nan = math.nan
  return {'ap': ap.mean() if ap.size else nan,
          'ap50': ap[:, 0].mean() if ap.size else nan,
          'ap75': ap[:, 5].mean() if ap.size else nan,
          'ar': ar.mean() if ar.size else nan, 'per_class': per_class}


# ----------------------------------------------------------------- synthetic
def _shape(rng, h, w):
  yy, xx = np.mgrid[:h, :w]
  cy, cx = rng.uniform(0, h), rng.uniform(0, w)
  ry, rx = rng.uniform(2, 10), rng.uniform(2, 12)
  if rng.random() < 0.5:
    return (np.abs(yy - cy) <= ry) & (np.abs(xx - cx) <= rx)
  return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1


def _perturb(rng, m):
  kind = rng.integers(4)
  if kind == 0:  # shift
    dy, dx = rng.integers(-3, 4, size=2)
    out = np.zeros_like(m)
    h, w = m.shape
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = (
        m[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)])
    return out
  p = np.pad(m, 1)
  nb = [p[1:-1, 1:-1], p[:-2, 1:-1], p[2:, 1:-1], p[1:-1, :-2], p[1:-1, 2:]]
  if kind == 1:  # erode
    return np.logical_and.reduce(nb)
  if kind == 2:  # dilate
    return np.logical_or.reduce(nb)
  return m


def _image(rng, h=40, w=50, k=24):
  labels = np.full((h, w), STUFF, np.int32)
  labels[rng.random((h, w)) < 0.1] = 0  # background class, no instances
  instances = np.zeros((h, w), np.int32)
  count = {c: 0 for c in THINGS}
  for _ in range(rng.integers(0, 9)):
    c = int(rng.choice(THINGS))
    count[c] += 1  # numbered per class, so numbers repeat across classes
    m = _shape(rng, h, w)
    labels[m], instances[m] = c, count[c]
  if rng.random() < 0.5:  # void over part of the image, instances kept
    y, x = rng.integers(0, h - 8), rng.integers(0, w - 8)
    labels[y:y + 8, x:x + 8] = 255
  ids = np.zeros((h, w), np.int32)
  scores = rng.random(k).astype(np.float32)
  classes = rng.integers(0, 9, size=k)  # junk in unused / invalid slots
  valid = np.zeros(k, bool)
  preds = [((labels == c) & (instances == i), c)
           for c in THINGS for i in range(1, count[c] + 1)
           if rng.random() < 0.8]  # the rest are missed
  preds += [(_shape(rng, h, w), int(rng.choice(THINGS)))
            for _ in range(rng.integers(0, 4))]  # false positives
  slots = rng.permutation(k)
  for j, (m, c) in enumerate(preds):
    m = _perturb(rng, m)
    if rng.random() < 0.1:
      c = 3 - c  # wrong class
    s = slots[j]
    ids[m], classes[s], valid[s] = s + 1, c, True
  for s in slots[len(preds):len(preds) + 2]:  # invalid ones with pixels
    ids[_shape(rng, h, w)] = s + 1
  return labels, instances, ids, scores, classes, valid


def _check_close(got, ref):
  for key in ('ap', 'ap50', 'ap75', 'ar'):
    np.testing.assert_allclose(got[key], ref[key], rtol=0, atol=1e-12,
                               err_msg=key)
  for c, v in ref['per_class'].items():
    np.testing.assert_allclose(got['per_class'][str(c)], v, atol=1e-12)


@pytest.mark.parametrize('seed,max_dets', [(0, 100), (1, 100), (2, 100),
                                           (3, 3), (4, 5), (5, 1000)])
def test_matches_reference(seed, max_dets):
  rng = np.random.default_rng(seed)
  images = [_image(rng) for _ in range(6)]
  metric = MaskAP(THINGS, max_dets=max_dets)
  for img in images:
    metric.add(*img)
  got = metric.result()
  ref = _reference(images, THINGS, max_dets)
  _check_close(got, ref)
  assert got['num_images'] == 6
  assert 0 < got['ap'] < 1


def test_summary_equals_cocoeval_summarize():
  rng = np.random.default_rng(7)
  metric = MaskAP(THINGS)
  for _ in range(4):
    metric.add(*_image(rng))
  got, ev = metric.result(), metric.evaluator()
  with contextlib.redirect_stdout(io.StringIO()):
    ev.summarize()
  keys = ('ap', 'ap50', 'ap75', 'ap_small', 'ap_medium', 'ap_large', 'ar_1',
          'ar_10', 'ar', 'ar_small', 'ar_medium', 'ar_large')
  for key, stat in zip(keys, ev.stats):
    want = math.nan if stat == -1 else stat
    np.testing.assert_allclose(got[key], want, atol=1e-12, err_msg=key)


def test_max_dets_1000_gives_ap():
  # summarize() would report AP -1 here (it reads maxDets=100 for stats[0]).
  rng = np.random.default_rng(8)
  img = _image(rng)
  got = mask_ap(*img, thing_classes=THINGS, max_dets=1000)
  _check_close(got, _reference([img], THINGS, 1000))


def _grid(n, classes, h=40, w=50):
  """n separate 4x4 squares; square j has class classes[j]."""
  labels = np.zeros((h, w), np.int32)
  instances = np.zeros((h, w), np.int32)
  ids = np.zeros((h, w), np.int32)
  for j in range(n):
    y, x = 6 * (j // 8), 6 * (j % 8)
    labels[y:y + 4, x:x + 4] = classes[j]
    instances[y:y + 4, x:x + 4] = j + 1
    ids[y:y + 4, x:x + 4] = j + 1
  return labels, instances, ids


def test_perfect_none_and_wrong_class():
  labels, instances, ids = _grid(6, [1, 2] * 3)
  classes = np.array([1, 2] * 3)
  scores, valid = np.linspace(0.9, 0.4, 6), np.ones(6, bool)
  perfect = mask_ap(labels, instances, ids, scores, classes, valid,
                    thing_classes=THINGS)
  assert perfect['ap'] == perfect['ap50'] == perfect['ar'] == 1.0
  assert perfect['per_class'] == {'1': 1.0, '2': 1.0}
  assert (perfect['num_gt'], perfect['num_predictions']) == (6, 6)
  none = mask_ap(labels, instances, ids, scores, classes, ~valid,
                 thing_classes=THINGS)
  assert none['ap'] == none['ar'] == 0.0 and none['num_predictions'] == 0
  wrong = mask_ap(labels, instances, ids, scores, 3 - classes, valid,
                  thing_classes=THINGS)
  assert wrong['ap'] == 0.0
  no_gt = mask_ap(np.full_like(labels, STUFF), instances, ids, scores,
                  classes, valid, thing_classes=THINGS)
  assert math.isnan(no_gt['ap']) and math.isnan(no_gt['per_class']['1'])


def test_class_zero_and_names():
  labels, instances, ids = _grid(4, [0, 0, 2, 2])
  metric = MaskAP((0, 2), class_names=['zero', 'one', 'two'])
  metric.add(labels, instances, ids, np.ones(4), np.array([0, 0, 2, 2]),
             np.ones(4, bool))
  assert metric.result()['per_class'] == {'zero': 1.0, 'two': 1.0}


def test_max_dets_keeps_top_scores():
  labels, instances, ids = _grid(12, [1] * 12)
  args = (labels, instances, ids, np.linspace(0.9, 0.3, 12), np.ones(12, int),
          np.ones(12, bool))
  assert mask_ap(*args, thing_classes=THINGS, max_dets=10)['ar'] == (
      pytest.approx(10 / 12, abs=1e-12))
  assert mask_ap(*args, thing_classes=THINGS, max_dets=12)['ar'] == 1.0
  # Predictions 1 and 2 (first by index, last by score) become false
  # positives: keeping the top 10 by score leaves recall 10/12 (the first 10
  # by index would give 8/12), and precision 1 up to it.
  ids[ids <= 2] = 0
  ids[35:38, 45:48] = 1
  ids[35:38, 40:43] = 2
  scores = np.array([0.1, 0.2] + list(np.linspace(0.9, 0.5, 10)))
  got = mask_ap(labels, instances, ids, scores, *args[4:],
                thing_classes=THINGS, max_dets=10)
  assert got['ar'] == pytest.approx(10 / 12, abs=1e-12)
  assert got['ar_1'] == pytest.approx(1 / 12, abs=1e-12)
  assert got['ap'] == pytest.approx(84 / 101, abs=1e-12)  # r in 0..0.83


def test_max_dets_is_per_image_and_class():
  labels, instances, ids = _grid(10, [1] * 8 + [2] * 2)
  got = mask_ap(labels, instances, ids, np.linspace(1, 0.1, 10),
                np.array([1] * 8 + [2] * 2), np.ones(10, bool),
                thing_classes=THINGS, max_dets=5)
  assert got['ar'] == pytest.approx((5 / 8 + 1) / 2, abs=1e-12)


def test_repeated_instance_numbers_and_void():
  labels, instances, ids = _grid(3, [1, 2, 1])
  instances[instances > 0] = 7  # same number in both classes and twice in 1
  instances[labels == 1] = np.where(ids[labels == 1] == 1, 7, 8)
  labels[30:34, 0:4], instances[30:34, 0:4] = 255, 9  # void: not GT
  ids[30:34, 0:4] = 4  # a prediction on void is a false positive
  got = mask_ap(labels, instances, ids, np.array([0.9, 0.8, 0.7, 0.95]),
                np.array([1, 2, 1, 1]), np.ones(4, bool), thing_classes=THINGS)
  assert (got['num_gt'], got['num_predictions']) == (3, 4)
  # COCOeval's precision is tp / (tp + fp + eps): 1 GT gives 1 - 2e-16.
  assert got['per_class']['2'] == pytest.approx(1.0, abs=1e-12)
  assert got['per_class']['1'] < 1.0


def test_batch_with_padding_row():
  rng = np.random.default_rng(11)
  imgs = [_image(rng) for _ in range(3)]
  batch = [np.stack(x) for x in zip(*imgs)]
  metric = MaskAP(THINGS)
  metric.add(*batch, mask=np.array([True, False, True]))
  single = MaskAP(THINGS)
  single.add(*imgs[0])
  single.add(*imgs[2])
  got, want = metric.result(), single.result()
  assert got['num_images'] == 2
  np.testing.assert_equal(got, want)  # NaN == NaN here
  _check_close(got, _reference([imgs[0], imgs[2]], THINGS, 100))


def test_errors():
  labels, instances, ids = _grid(2, [1, 2])
  ok = (np.ones(2), np.array([1, 2]), np.ones(2, bool))
  metric = MaskAP(THINGS)
  with pytest.raises(ValueError, match=r'\(40, 50\).*\(40, 49\)'):
    metric.add(labels, instances[:, :49], ids, *ok)
  with pytest.raises(ValueError, match=r'scores \(3,\)'):
    metric.add(labels, instances, ids, np.ones(3), *ok[1:])
  with pytest.raises(ValueError,
                     match=r'\[\[0, 1\]\]\) have classes \[3\], not in thing'):
    metric.add(labels, instances, ids, ok[0], np.array([1, 3]), ok[2])
  with pytest.raises(ValueError, match='outside 0..K'):
    metric.add(labels, instances, ids * 2, *ok)
  with pytest.raises(ValueError, match='integers'):
    metric.add(labels.astype(float), instances, ids, *ok)
  batch = [x[None] for x in (labels, instances, ids) + ok]
  with pytest.raises(ValueError, match=r'mask \(2,\)'):
    metric.add(*batch, mask=np.ones(2, bool))
  batch = [np.stack([x, x]) for x in (labels, instances, ids) + ok]
  batch[4][1, 0] = 5  # a bad class in row 1: row 0 is not added either
  with pytest.raises(ValueError, match=r'\[\[1, 0\]\]'):
    metric.add(*batch)
  assert metric.result()['num_images'] == 0
  # An invalid prediction may carry any class.
  metric.add(labels, instances, ids, ok[0], np.array([1, 99]),
             np.array([True, False]))
  assert metric.result()['num_predictions'] == 1
