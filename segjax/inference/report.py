"""Scores a saved run on a split: the library side of `python -m
segjax.evaluate` (segjax/evaluate.py: the command and what it writes).

It runs the one evaluation loop of `segjax.evaluation.loop`, the trainer's,
with the run's task, on the split's padded batches: with the run's
inference options (`config.inference`: test-time augmentation) and, when
the run was evaluated on resized images (`config.data.eval_preprocess=
'resize(h, w)'`), at the labels' own resolution (the model sees the resized
image, its probabilities are resized back, one image per batch). Without
either, it evaluates exactly what the trainer evaluated and gives the same
integers.
"""

import json
import time

from etils import epath
import jax
import numpy as np

from segjax import metrics
from segjax.errors import ConfigError
from segjax.evaluation import loop as eval_loop
from segjax.parallel import sharding as sharding_lib
from segjax.inference import run as run_lib


def _save(fig, path):
  """Writes a figure as PNG through epath (local or gs://)."""
  with epath.Path(path).open('wb') as f:
    fig.savefig(f, format='png', dpi=100)


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
  _save(fig, f'{prefix}_confusion.png')
  plt.close(fig)
  fig, ax = plt.subplots(figsize=(2.0 + 0.4 * n, 3.5))
  ax.bar(range(n), np.nan_to_num(scores['iou']))
  ax.set_xticks(range(n), class_names, rotation=90)
  ax.set_ylim(0, 1)
  ax.set_ylabel('IoU')
  ax.set_title(f'per-class IoU (mIoU {scores["miou"]:.3f})')
  fig.tight_layout()
  _save(fig, f'{prefix}_iou.png')
  plt.close(fig)


def _batches(config, task, split, batch_size, resize_to, limit):
  """Local batches of `split` (TF inside), the first `limit` examples real
  (0: all)."""
  from segjax.data import pipeline  # pylint: disable=g-import-not-at-top
  _, ds = pipeline.eval_dataset(
      config.data, split, batch_size,
      with_instances='instances' in task.eval_fields,
      **({'preprocess': '', 'buckets': False} if resize_to else {}))
  seen = 0
  for batch in pipeline.as_numpy(ds):
    if limit:
      keep = np.cumsum(batch['mask']) + seen <= limit
      batch['mask'] = batch['mask'] & keep
      seen += int(batch['mask'].sum())
    yield batch
    if limit and seen >= limit:
      return


def _mesh(batch_size):
  """A mesh of as many local devices as divide the batch."""
  devices = jax.local_devices()
  n = max(k for k in range(1, len(devices) + 1) if batch_size % k == 0)
  return sharding_lib.make_mesh(devices[:n])


def evaluate(workdir, checkpoint='best', split=None, ema=False, tag='',
             overrides=(), max_images=0):
  """Scores a run on a split; returns the report dict (also written)."""
  config, task, model = run_lib.load_model(workdir, overrides)
  split = split or config.data.eval_split
  step = run_lib.resolve_step(workdir, config, checkpoint)
  variables = run_lib.load_variables(workdir, step, ema=ema)
  forward, activated, options, resize_to = run_lib.forward_of(
      config, model, task)
  # Full resolution after a resize: images keep their own sizes, one a
  # batch; otherwise the trainer's batches.
  batch_size = 1 if resize_to else (config.eval_batch_size or
                                    config.batch_size)
  evaluator = eval_loop.Evaluator(task, forward, activated, _mesh(batch_size))
  start = time.perf_counter()
  result = evaluator.run(
      variables, _batches(config, task, split, batch_size, resize_to,
                          max_images))
  seconds = time.perf_counter() - start
  row, count = dict(result.row), result.row['num_examples']
  if not count:
    raise ConfigError(f'split {split!r} of {config.data.name!r} is empty.')
  report = {
      'workdir': str(workdir), 'split': split, 'checkpoint_step': step,
      'ema': ema, 'num_images': count, 'seconds_per_image': seconds / count,
      'inference': {k: list(v) if isinstance(v, tuple) else v
                    for k, v in options.items()},
      'eval_size': resize_to,
  }
  cm = result.sums.get('confusion_matrix')
  if cm is not None:  # Every built-in task; a task of one's own may not.
    cm = np.asarray(cm, np.int64)
    scores = metrics.segmentation_scores(cm)
    report['per_class'] = {
        name: {'iou': float(scores['iou'][c]), 'dice': float(scores['dice'][c])}
        for c, name in enumerate(task.spec.class_names)}
    report['confusion_matrix'] = cm.tolist()
    for key in list(row):
      name = key.partition('/')[2]
      if key.startswith('pq/') and name in report['per_class']:
        report['per_class'][name]['pq'] = row.pop(key)
      elif key.startswith('iou/'):
        row.pop(key)
  row.pop('num_examples')
  report.update(row)
  folder = epath.Path(workdir) / 'eval'
  folder.mkdir(parents=True, exist_ok=True)
  name = f'{split}_step{step}' + (f'_{tag}' if tag else '')
  (folder / f'{name}.json').write_text(
      json.dumps(report, indent=2, default=_json_default) + '\n')
  if cm is not None:
    _plots(str(folder / name), cm, scores, list(task.spec.class_names))
  return report


def _json_default(x):
  if isinstance(x, (np.integer, np.floating)):
    return x.item()
  raise TypeError(f'{type(x).__name__} is not JSON serialisable')


def table(report):
  """The report as a text table: per-class IoU (and PQ), then the scores."""
  lines = []
  if 'per_class' in report:
    lines.append(f'{"class":<16} {"IoU":>7}' +
                 ('  PQ' if 'pq' in report else ''))
    for name, row in report['per_class'].items():
      pq = f' {row["pq"]:7.4f}' if 'pq' in row else ''
      lines.append(f'{name:<16} {row["iou"]:7.4f}{pq}')
  skip = {'workdir', 'split', 'checkpoint_step', 'ema', 'num_images',
          'seconds_per_image', 'inference', 'eval_size', 'per_class',
          'confusion_matrix'}
  for key, value in report.items():
    if key not in skip and isinstance(value, (int, float)):
      lines.append(f'{key:<16} {value:7.4f}')
  return '\n'.join(lines)
