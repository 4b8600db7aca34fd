"""Scores a trained run on a split (the library side of `python -m segjax.evaluate`).

See segjax/evaluate.py for the command and what it writes; `evaluate()` is
the same from Python.
"""

import json
import time

from etils import epath
import jax
import numpy as np

from segjax import metrics
from segjax.errors import ConfigError
from segjax.inference import run as run_lib
from segjax.training import binary as binary_lib
from segjax.training import panoptic as panoptic_lib


def examples(config, split):
  """Yields standardized examples of `split` as NumPy dicts (TF inside)."""
  from segjax.data import datasets  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = datasets.builder_for(config.data, prepare=False)
  if split not in builder.info.splits:
    raise ConfigError(f'split {split!r} is not in {config.data.name!r}; it '
                      f'has {sorted(builder.info.splits)}.')
  spec = datasets.get_spec(config.data.name)
  ds = builder.as_dataset(split=split, shuffle_files=False).map(
      spec.standardize)
  yield from tfds.as_numpy(ds)


def _confusion(labels, predictions, num_classes, ignore_index):
  # Host NumPy, not metrics.confusion_matrix: images come at their own
  # sizes, and a jitted function would compile once per size.
  valid = (labels != ignore_index) & (labels < num_classes)
  index = labels[valid].astype(np.int64) * num_classes + predictions[valid]
  return np.bincount(index, minlength=num_classes ** 2).reshape(
      num_classes, num_classes)


def _plots(prefix, cm, scores, class_names):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  n = len(class_names)
  rows = cm / np.maximum(cm.sum(1, keepdims=True), 1)
  fig, ax = plt.subplots(figsize=(1.0 + 0.45 * n, 1.0 + 0.45 * n))
  ax.imshow(rows, cmap='Blues', vmin=0, vmax=1)
  ax.set_xticks(range(n), class_names, rotation=90)
  ax.set_yticks(range(n), class_names)
  ax.set_xlabel('predicted')
  ax.set_ylabel('ground truth')
  ax.set_title('confusion (rows normalised)')
  fig.tight_layout()
  fig.savefig(f'{prefix}_confusion.png', dpi=100)
  plt.close(fig)
  fig, ax = plt.subplots(figsize=(2.0 + 0.4 * n, 3.5))
  ax.bar(range(n), np.nan_to_num(scores['iou']))
  ax.set_xticks(range(n), class_names, rotation=90)
  ax.set_ylim(0, 1)
  ax.set_ylabel('IoU')
  ax.set_title(f'per-class IoU (mIoU {scores["miou"]:.3f})')
  fig.tight_layout()
  fig.savefig(f'{prefix}_iou.png', dpi=100)
  plt.close(fig)


def evaluate(workdir, checkpoint='best', split=None, ema=False, tag='',
             overrides=(), max_images=0):
  """Scores a run on a split; returns the report dict (also written)."""
  config = run_lib.load_config(workdir, overrides)
  split = split or config.data.get('eval_split', 'validation')
  spec = run_lib.run_spec(workdir, config)
  model = run_lib.build(config, spec)
  step = run_lib.resolve_step(workdir, config, checkpoint)
  variables = run_lib.load_variables(workdir, step, ema=ema)
  predict_fn = run_lib.make_predict_fn(config, model, variables, spec)
  ignore_index = config.data.get('ignore_index', 255)
  n = spec.num_classes
  task = binary_lib.task(config)
  panoptic = task == 'panoptic'
  binary = binary_lib.options(config, spec) if task == 'binary' else None
  cm = np.zeros((n, n), np.int64)
  pq_stats, mask_ap, binary_stats, instance_scores = None, None, None, None
  if binary is not None and binary['instances']:
    instance_scores = binary_lib.InstanceScores(binary, spec, ignore_index)
  if panoptic:
    opts = dict(config.panoptic)
    mask_ap = metrics.MaskAP(spec.thing_classes, class_names=spec.class_names,
                             max_dets=opts.get('max_dets', 100),
                             ignore_index=ignore_index)
  count, seconds = 0, 0.0
  for example in examples(config, split):
    labels = example['labels'].astype(np.int64)
    start = time.perf_counter()
    out = predict_fn(example['image'])
    seconds += time.perf_counter() - start
    pred = out['labels'] if isinstance(out, dict) else out
    cm += _confusion(labels, pred, n, ignore_index)
    if binary is not None:
      stats = jax.device_get(metrics.binary_stats(
          labels, out['probabilities'][..., 0], binary['threshold'],
          ignore_index=ignore_index))
      binary_stats = stats if binary_stats is None else jax.tree.map(
          np.add, binary_stats, stats)
    if instance_scores is not None:
      instance_scores.add(labels, example['instances'],
                          out['instance_ids'], out['scores'])
    if panoptic:
      gt = np.asarray(panoptic_lib.ground_truth_panoptic(
          labels[None], example['instances'][None].astype(np.int32),
          thing_classes=tuple(spec.thing_classes),
          label_divisor=opts['label_divisor'], ignore_index=ignore_index))
      stats = metrics.panoptic_stats(
          out['panoptic'][None], gt, num_categories=n,
          label_divisor=opts['label_divisor'], ignore_index=ignore_index,
          max_instances=opts['max_instances'])
      stats = {k: np.asarray(v) for k, v in stats.items()}
      pq_stats = stats if pq_stats is None else {
          k: pq_stats[k] + stats[k] for k in stats}
      mask_ap.add(labels, example['instances'], out['instance_ids'],
                  out['scores'], out['classes'], out['valid'])
    count += 1
    if max_images and count >= max_images:
      break
  if not count:
    raise ConfigError(f'split {split!r} of {config.data.name!r} is empty.')
  scores = metrics.segmentation_scores(cm)
  report = {
      'workdir': str(workdir), 'split': split, 'checkpoint_step': step,
      'ema': ema, 'num_images': count,
      'seconds_per_image': seconds / count,
      'inference': {k: list(v) if isinstance(v, tuple) else v
                    for k, v in predict_fn.options.items()},
      'eval_size': run_lib.eval_size(config),
      'miou': float(scores['miou']),
      'pixel_accuracy': float(scores['pixel_accuracy']),
      'mean_accuracy': float(scores['mean_accuracy']),
      'per_class': {name: {'iou': float(scores['iou'][c]),
                           'dice': float(scores['dice'][c])}
                    for c, name in enumerate(spec.class_names)},
      'confusion_matrix': cm.tolist(),
  }
  if binary_stats is not None:
    binary_scores = metrics.binary_scores_from_stats(binary_stats)
    report.update({k: float(binary_scores[k])
                   for k in binary_lib.BINARY_KEYS})
  instance_row = (instance_scores.result() if instance_scores is not None
                  else panoptic_lib.instance_scores_row(pq_stats, mask_ap,
                                                        spec))
  for name in spec.class_names:
    if f'pq/{name}' in instance_row:
      report['per_class'][name]['pq'] = instance_row.pop(f'pq/{name}')
  report.update(instance_row)
  folder = epath.Path(workdir) / 'eval'
  folder.mkdir(parents=True, exist_ok=True)
  name = f'{split}_step{step}' + (f'_{tag}' if tag else '')
  (folder / f'{name}.json').write_text(json.dumps(report, indent=2) + '\n')
  _plots(str(folder / name), cm, scores, list(spec.class_names))
  return report


def table(report):
  lines = [f'{"class":<16} {"IoU":>7}' + ('  PQ' if 'pq' in report else '')]
  for name, row in report['per_class'].items():
    pq = f' {row["pq"]:7.4f}' if 'pq' in row else ''
    lines.append(f'{name:<16} {row["iou"]:7.4f}{pq}')
  lines.append(f'{"mIoU":<16} {report["miou"]:7.4f}')
  for key in ('iou', 'dice', 'precision', 'recall', 'pq', 'pq_things',
              'pq_stuff', 'mask_ap', 'mask_ap50', 'mask_ap75'):
    if key in report:
      lines.append(f'{key:<16} {report[key]:7.4f}')
  return '\n'.join(lines)
