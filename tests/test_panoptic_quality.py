"""Panoptic quality against an independent NumPy version of panopticapi.

`_np_panopticapi_stats` follows panopticapi's `pq_compute_single_core`
(github.com/cocodataset/panopticapi, evaluation.py) as its rules are
described there, image by image, with dicts of segment areas and pair
intersections and float64 IoUs; `_np_pq_average` follows its `pq_average`.
Neither uses segjax code.
"""

import collections
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segjax import metrics
from segjax.bench import __main__ as bench_main
from segjax.metrics import panoptic

IGNORE = 255
DIV = 1000  # label_divisor
C = 6  # Categories 0-2 are things, 3-5 stuff.
THINGS = (0, 1, 2)


def _np_panopticapi_stats(pred, gt, num_categories, label_divisor=DIV):
  """Per-category TP/FP/FN (int64) and IoU sums (float64), image by image."""
  tp = np.zeros(num_categories, np.int64)
  fp = np.zeros(num_categories, np.int64)
  fn = np.zeros(num_categories, np.int64)
  iou_sum = np.zeros(num_categories, np.float64)
  pred, gt = np.asarray(pred, np.int64), np.asarray(gt, np.int64)
  if gt.ndim == 2:
    pred, gt = pred[None], gt[None]
  category = lambda segment_id: segment_id // label_divisor  # noqa: E731
  for pred_image, gt_image in zip(pred, gt):
    pairs = collections.Counter(zip(gt_image.ravel().tolist(),
                                    pred_image.ravel().tolist()))
    gt_area, pred_area = collections.Counter(), collections.Counter()
    on_void = collections.Counter()  # Pred segment id -> pixels on gt void.
    for (g, p), n in pairs.items():
      if category(g) != IGNORE:
        gt_area[g] += n
      if category(p) != IGNORE:
        pred_area[p] += n
        if category(g) == IGNORE:
          on_void[p] += n
    gt_matched, pred_matched = set(), set()
    for (g, p), intersection in pairs.items():
      if g not in gt_area or p not in pred_area:
        continue
      if category(g) != category(p):
        continue
      union = pred_area[p] + gt_area[g] - intersection - on_void[p]
      iou = intersection / union
      if iou > 0.5:
        tp[category(g)] += 1
        iou_sum[category(g)] += iou
        gt_matched.add(g)
        pred_matched.add(p)
    for g in gt_area:
      if g not in gt_matched:
        fn[category(g)] += 1
    for p, area in pred_area.items():
      if p not in pred_matched and not on_void[p] / area > 0.5:
        fp[category(p)] += 1
  return {'tp': tp, 'fp': fp, 'fn': fn, 'iou_sum': iou_sum}


def _np_pq_average(stats, thing_ids):
  """(results per group, per-category pq), as panopticapi's pq_average."""
  num_categories = len(stats['tp'])
  per_category = {}
  results = {}
  for group, members in (('', range(num_categories)),
                         ('_things', thing_ids),
                         ('_stuff', [k for k in range(num_categories)
                                     if k not in thing_ids])):
    pq = sq = rq = 0.0
    n = 0
    for k in members:
      tp, fp, fn = (float(stats[x][k]) for x in ('tp', 'fp', 'fn'))
      if tp + fp + fn == 0:
        continue
      n += 1
      pq_k = stats['iou_sum'][k] / (tp + 0.5 * fp + 0.5 * fn)
      sq_k = stats['iou_sum'][k] / tp if tp != 0 else 0
      rq_k = tp / (tp + 0.5 * fp + 0.5 * fn)
      per_category[k] = pq_k
      pq, sq, rq = pq + pq_k, sq + sq_k, rq + rq_k
    for name, total in (('pq', pq), ('sq', sq), ('rq', rq)):
      results[name + group] = total / n if n else np.nan
    results['n' + group] = n
  return results, per_category


def _random_maps(seed, shape=(4, 24, 32), max_instance=40, void_frac=0.1):
  """Blocky gt panoptic maps and predictions that partly agree with them."""
  rng = np.random.default_rng(seed)
  b, h, w = shape
  gt = np.zeros(shape, np.int64)
  pred = np.zeros(shape, np.int64)
  for k in range(b):
    gt[k] = rng.integers(3, 6) * DIV  # A stuff background.
    gt[k, :, : rng.integers(0, w)] = rng.integers(3, 6) * DIV
    for _ in range(rng.integers(0, 12)):
      y, x = rng.integers(0, h - 2), rng.integers(0, w - 2)
      hh, ww = rng.integers(2, 10, 2)
      gt[k, y:y + hh, x:x + ww] = (rng.integers(0, 3) * DIV
                                   + rng.integers(1, max_instance))
    # The prediction: the gt with renumbered instances, shifted boxes and
    # relabelled pixels, so IoUs spread around 0.5.
    renumber = rng.permutation(max_instance)
    p = gt[k] // DIV * DIV + renumber[gt[k] % DIV]
    p = np.roll(p, rng.integers(-2, 3, 2), axis=(0, 1))
    for _ in range(rng.integers(0, 6)):
      y, x = rng.integers(0, h - 2), rng.integers(0, w - 2)
      hh, ww = rng.integers(1, 9, 2)
      p[y:y + hh, x:x + ww] = (rng.integers(0, 6) * DIV
                               + rng.integers(0, max_instance))
    noise = rng.random((h, w)) < 0.05
    p[noise] = rng.integers(0, 6, noise.sum()) * DIV
    pred[k] = p
    for target in (gt[k], pred[k]):
      void = rng.random((h, w)) < void_frac
      target[void] = IGNORE * DIV + rng.integers(0, 3, void.sum())
      y, x = rng.integers(0, h), rng.integers(0, w)
      target[y:y + rng.integers(0, 8), x:x + rng.integers(0, 8)] = IGNORE * DIV
  return pred.astype(np.int32), gt.astype(np.int32)


def _assert_stats_equal(got, want):
  for key in ('tp', 'fp', 'fn'):
    assert got[key].dtype == jnp.int32
    np.testing.assert_array_equal(got[key], want[key], err_msg=key)
  np.testing.assert_allclose(got['iou_sum'], want['iou_sum'], rtol=1e-5,
                             atol=1e-6)
  assert int(got['overflow']) == 0


def _stats(pred, gt, **kwargs):
  return metrics.panoptic_stats(pred, gt, num_categories=C, label_divisor=DIV,
                                **kwargs)


@pytest.mark.parametrize('seed', range(6))
def test_stats_match_panopticapi_on_random_maps(seed):
  pred, gt = _random_maps(seed)
  _assert_stats_equal(_stats(pred, gt), _np_panopticapi_stats(pred, gt, C))


@pytest.mark.parametrize('max_instances', [40, 7])
def test_instance_bounds_that_are_not_powers_of_four(max_instances):
  # The candidate search splits instance ids into two base-r digits; these
  # bounds leave digit combinations that name no instance.
  pred, gt = _random_maps(10 + max_instances, max_instance=max_instances)
  _assert_stats_equal(_stats(pred, gt, max_instances=max_instances),
                      _np_panopticapi_stats(pred, gt, C))


def test_many_small_segments():
  rng = np.random.default_rng(3)
  # 2x2 blocks, each its own thing instance (up to 255), in one category.
  blocks = rng.permutation(256)[:192].reshape(12, 16) + 0
  gt = np.kron(blocks, np.ones((2, 2), np.int64)) + 1 * DIV
  pred = gt.copy()
  pred[:, 1::4] = 1 * DIV + rng.integers(0, 256, (24, 8))  # Halve a quarter.
  pred[rng.random(gt.shape) < 0.1] = IGNORE * DIV
  want = _np_panopticapi_stats(pred, gt, C)
  assert want['tp'][1] > 50 and want['fn'][1] > 20
  _assert_stats_equal(_stats(pred, gt), want)


def _row(*ids):
  return np.array([ids], np.int32)


def test_iou_of_exactly_one_half_is_not_a_match():
  # gt segment 1001 has 2 pixels; the pred segment covers them and 2 more.
  stats = _stats(_row(1001, 1001, 1001, 1001), _row(1001, 1001, 3000, 3000))
  assert stats['tp'][1] == 0 and stats['fn'][1] == 1 and stats['fp'][1] == 1
  # Pred pixels on gt void leave the union: 2 / (2 + 5 - 2 - 2) = 2 / 3.
  stats = _stats(_row(1001, 1001, 1001, 1001, 1001),
                 _row(1001, 1001, 3000, 255000, 255000))
  assert stats['tp'][1] == 1 and stats['fn'][1] == 0
  np.testing.assert_allclose(stats['iou_sum'][1], 2 / 3, rtol=1e-6)
  # 2 / (2 + 6 - 2 - 2) = 1/2 again.
  stats = _stats(_row(1001, 1001, 1001, 1001, 1001, 1001),
                 _row(1001, 1001, 3000, 3000, 255000, 255000))
  assert stats['tp'][1] == 0


def test_prediction_mostly_on_void_is_not_a_false_positive():
  # 3 of 5 pixels on void: ignored. 2 of 4: a false positive.
  gt = _row(255000, 255001, 255002, 4000, 4000, 255000, 255000, 4000, 4000)
  pred = _row(2001, 2001, 2001, 2001, 2001, 2002, 2002, 2002, 2002)
  stats = _stats(pred, gt)
  assert stats['fp'][2] == 1 and stats['tp'].sum() == 0
  assert stats['fn'][4] == 1


def test_gt_void_of_any_instance_is_void_and_pred_void_forms_no_segment():
  gt = _row(255000, 255007, 3000, 3000, 3000, 5000, 5000, 5000)
  pred = _row(3000, 3000, 3000, 3000, 255123, 255999, 255999, 5000)
  _assert_stats_equal(_stats(pred, gt), _np_panopticapi_stats(pred, gt, C))
  stats = _stats(pred, gt)  # I = 2, union = 3 + 4 - 2 - 2 = 3.
  np.testing.assert_allclose(stats['iou_sum'][3], 2 / 3, rtol=1e-6)
  # Pred void (any instance) is no segment: only 5000 is a false positive.
  assert stats['fp'].sum() == 1 and stats['fp'][5] == stats['fn'][5] == 1


def test_a_majority_of_digits_without_a_majority_segment_matches_nothing():
  # gt segment 1001 (8 pixels) is split among pred instances 17..24, which
  # share the high base-16 digit 1; no one of them holds a majority.
  gt = np.full((1, 8), 1001, np.int32)
  pred = 1000 + np.arange(17, 25, dtype=np.int32)[None]
  stats = _stats(pred, gt)
  assert stats['tp'][1] == 0 and stats['fn'][1] == 1 and stats['fp'][1] == 8


def test_stuff_only_images():
  gt = np.zeros((2, 8, 8), np.int32) + 3 * DIV
  gt[:, :, 5:] = 4 * DIV
  pred = gt.copy()
  pred[0, :, 3:] = 4 * DIV  # Stuff 4 grows over most of stuff 3.
  pred[1, :2] = 5 * DIV
  want = _np_panopticapi_stats(pred, gt, C)
  _assert_stats_equal(_stats(pred, gt), want)
  scores = metrics.panoptic_scores(_stats(pred, gt), THINGS)
  assert np.isnan(scores['pq_things']) and scores['n_things'] == 0
  np.testing.assert_allclose(scores['pq'], scores['pq_stuff'])


def test_empty_prediction_makes_every_gt_segment_a_false_negative():
  pred, gt = _random_maps(20)
  empty = np.full_like(pred, IGNORE * DIV)
  stats = _stats(empty, gt)
  want = _np_panopticapi_stats(empty, gt, C)
  _assert_stats_equal(stats, want)
  assert stats['tp'].sum() == 0 and stats['fp'].sum() == 0
  assert stats['fn'].sum() > 0
  scores = metrics.panoptic_scores(stats, THINGS)
  assert scores['pq'] == 0 and scores['sq'] == 0


def test_categories_present_on_one_side_only():
  gt = np.array([[1001, 1001, 3000, 3000]], np.int32)
  pred = np.array([[2001, 2001, 3000, 3000]], np.int32)
  stats = _stats(pred, gt)
  _assert_stats_equal(stats, _np_panopticapi_stats(pred, gt, C))
  scores = metrics.panoptic_scores(stats, THINGS)
  np.testing.assert_array_equal(scores['pq_per_category'],
                                [np.nan, 0, 0, 1, np.nan, np.nan])
  assert scores['n'] == 3 and scores['n_things'] == 2
  np.testing.assert_allclose(scores['pq'], 1 / 3, rtol=1e-6)


def test_instance_ids_at_or_above_max_instances_overflow_not_merge():
  gt = _row(1003, 1003, 1003, 1035)
  pred = _row(1003, 1003, 1003, 1003)
  stats = _stats(pred, gt, max_instances=32)  # 35 would alias 3 (mod 32).
  assert int(stats['overflow']) == 1
  with pytest.warns(RuntimeWarning, match='max_instances'):
    scores = metrics.panoptic_scores(stats, THINGS)
  assert all(np.all(np.isnan(scores[k])) for k in ('pq', 'sq', 'rq',
                                                    'pq_per_category'))
  _assert_stats_equal(_stats(pred, gt, max_instances=64),
                      _np_panopticapi_stats(pred, gt, C))


def test_stats_are_sums_over_images_and_devices():
  pred, gt = _random_maps(30, shape=(8, 16, 24))
  whole = _stats(pred, gt)
  per_image = jax.tree.map(lambda *x: sum(x),
                           *[_stats(p, g) for p, g in zip(pred, gt)])
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:8]), ('data',))
  sharding = jax.sharding.NamedSharding(mesh,
                                        jax.sharding.PartitionSpec('data'))
  sharded = jax.jit(_stats)(jax.device_put(pred, sharding),
                            jax.device_put(gt, sharding))
  want = _np_panopticapi_stats(pred, gt, C)
  for got in (whole, per_image, sharded):
    _assert_stats_equal(got, want)
  for key in ('tp', 'fp', 'fn'):
    np.testing.assert_array_equal(sharded[key], whole[key])


def test_bad_categories_raise_eagerly_and_overflow_under_jit():
  pred, gt = _random_maps(40, shape=(1, 6, 8))
  bad = gt.copy()
  bad[0, 0, :2] = 9 * DIV, -5  # Category -1: floor division.
  with pytest.raises(ValueError, match=r'gt holds categories \[-1, 9\]'):
    _stats(pred, bad)
  assert int(jax.jit(_stats)(pred, bad)['overflow']) == 2
  with pytest.raises(ValueError, match='too large'):
    metrics.panoptic_stats(pred, gt, num_categories=2**12, label_divisor=2**16,
                           max_instances=2**16)
  with pytest.raises(ValueError, match='same shape'):
    _stats(pred[:, :3], gt)
  with pytest.raises(ValueError, match='integer'):
    _stats(pred.astype(np.float32), gt)
  with pytest.raises(ValueError, match=r'\[H, W\] or \[B, H, W\]'):
    _stats(pred[None], gt[None])
  with pytest.raises(ValueError, match='thing_ids'):
    metrics.panoptic_scores(_stats(pred, gt), [C])


@pytest.mark.parametrize('seed', range(3))
def test_scores_match_panopticapi_averages(seed):
  pred, gt = _random_maps(50 + seed)
  want, want_per_category = _np_pq_average(
      _np_panopticapi_stats(pred, gt, C), THINGS)
  stats = _stats(pred, gt)
  for s in (stats, jax.tree.map(np.asarray, stats)):
    scores = metrics.panoptic_scores(s, THINGS)
    for key, value in want.items():
      np.testing.assert_allclose(scores[key], value, rtol=1e-5, err_msg=key)
    pq = np.asarray(scores['pq_per_category'])
    for k in range(C):
      np.testing.assert_allclose(pq[k], want_per_category.get(k, np.nan),
                                 rtol=1e-5)


def test_scores_of_no_segment_at_all_are_nan():
  empty = {'tp': np.zeros(C, np.int64), 'fp': np.zeros(C, np.int64),
           'fn': np.zeros(C, np.int64), 'iou_sum': np.zeros(C),
           'overflow': np.int64(0)}
  scores = metrics.panoptic_scores(empty, THINGS)
  for key in ('pq', 'sq', 'rq', 'pq_things', 'rq_stuff', 'pq_per_category'):
    assert np.all(np.isnan(scores[key])), key
  assert scores['n'] == 0


def test_single_image_and_jit_agree_with_the_batched_call():
  pred, gt = _random_maps(60, shape=(1, 12, 16))
  batched = _stats(pred, gt)
  single = _stats(pred[0], gt[0])
  jitted = jax.jit(lambda p, g: metrics.panoptic_scores(_stats(p, g), THINGS))(
      pred, gt)
  for key in ('tp', 'fp', 'fn', 'iou_sum'):
    np.testing.assert_array_equal(single[key], batched[key])
  eager = metrics.panoptic_scores(batched, THINGS)
  np.testing.assert_allclose(jitted['pq'], eager['pq'], rtol=1e-6)


def test_looped_and_vmapped_batches_agree():
  pred, gt = _random_maps(70)
  kwargs = dict(num_categories=C, label_divisor=DIV, ignore_index=IGNORE,
                max_instances=64)
  core = panoptic._panoptic_stats  # pylint: disable=protected-access
  looped = core(pred, gt, loop=True, **kwargs)
  vmapped = core(pred, gt, loop=False, **kwargs)
  for key in looped:
    np.testing.assert_allclose(looped[key], vmapped[key], rtol=1e-6)


def test_pq_benchmark_prints_one_json_line(capsys):
  code = bench_main.main(['bench', 'pq', '--batch', '2', '--height', '32',
                          '--width', '48', '--repeats', '2', '--no-peer'])
  assert code == 0
  result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert result['shape'] == [2, 32, 48] and result['peer'] is None
  assert result['segjax_s_per_image'] > 0 and result['numpy_s_per_image'] > 0
  assert 0 <= result['pq'] <= 1


def test_benchmark_registry_does_not_import_tensorflow():
  code = ('import sys; import segjax.bench.__main__; '
          'sys.exit("tensorflow" in sys.modules)')
  assert subprocess.run([sys.executable, '-c', code], check=False,
                        timeout=120).returncode == 0
