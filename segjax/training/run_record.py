"""What a run leaves in its workdir, besides checkpoints.

  config.json     the resolved config the run was started with, written
                  once the workdir's checkpoint (if any) is found to fit it
                  (`train.py`); an earlier, different one is kept as
                  config.<n>.json.
  run_info.json   git SHA, package versions, devices, parameter count,
                  FLOPs per train step (XLA cost analysis).
  metrics.jsonl   one JSON object per line: {"step", "split", metrics...};
                  split is "train" or an eval split name.
  tensorboard/    the same scalars, and the prediction panels, as
                  TensorBoard event files (clu's metric writer); a
                  profile of config.profile_steps under plugins/profile/.
  images/         PNGs of predictions beside the ground truth.

Only process 0 writes these; every process takes part in checkpoints.
"""

import datetime
import importlib
import importlib.metadata
import json
import math
import platform
import subprocess
import sys
import time

from absl import logging
from etils import epath
import jax
import numpy as np

PACKAGES = ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'chex',
            'ml-collections', 'numpy', 'tensorflow-cpu', 'tensorflow',
            'tensorflow-datasets', 'segjax')


def git_sha():
  """The git commit of the segjax checkout in use, or None."""
  src = epath.Path(__file__).parent
  try:
    out = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=src, check=True,
                         capture_output=True, text=True, timeout=10)
    dirty = subprocess.run(['git', 'status', '--porcelain'], cwd=src,
                           check=True, capture_output=True, text=True,
                           timeout=10).stdout.strip()
    return out.stdout.strip() + ('-dirty' if dirty else '')
  except (OSError, subprocess.SubprocessError):
    return None


def package_versions():
  versions = {}
  for name in PACKAGES:
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      pass
  return versions


def device_info():
  devices = jax.devices()
  return {
      'platform': devices[0].platform,
      'device_kind': devices[0].device_kind,
      'device_count': jax.device_count(),
      'local_device_count': jax.local_device_count(),
      'process_count': jax.process_count(),
  }


def _jsonable(value):
  if isinstance(value, (np.ndarray, jax.Array)):
    value = np.asarray(value)
    return value.item() if value.ndim == 0 else value.tolist()
  if isinstance(value, (np.floating, np.integer)):
    return value.item()
  return value


def _finite_or_none(value):
  # JSON has no NaN; a class with no pixels is written as null.
  if isinstance(value, float) and not math.isfinite(value):
    return None
  if isinstance(value, list):
    return [_finite_or_none(v) for v in value]
  return value


def _flatten(tree, prefix=''):
  """{'a.b': value} of a nested JSON dict."""
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict) and value:
      flat.update(_flatten(value, f'{prefix}{key}.'))
    else:
      flat[prefix + key] = value
  return flat


class RunRecord:
  """Writes the workdir's config, run info, metrics, summaries and images.

  `tensorboard=False` writes no event files (nothing imports TensorFlow's
  summary writer then).
  """

  def __init__(self, workdir, tensorboard=True):
    self.workdir = epath.Path(workdir)
    self.tensorboard = tensorboard
    self.is_writer = jax.process_index() == 0
    self._tb = None
    self._metrics_text = None  # metrics.jsonl so far, on an object store.

  def write_config(self, config):
    """Writes config.json; a different one from an earlier start is kept
    as config.<n>.json, so a resumed run never loses what it started with.

    Call it only once `config` is accepted for the workdir (its checkpoint
    fits): evaluation and prediction build their model from config.json.
    """
    if not self.is_writer:
      return
    text = config.to_json_best_effort(indent=2, sort_keys=True) + '\n'
    path = self.workdir / 'config.json'
    if path.exists():
      old = path.read_text()
      if old == text:
        return
      n = 1
      while (self.workdir / f'config.{n}.json').exists():
        n += 1
      (self.workdir / f'config.{n}.json').write_text(old)
      logging.warning('The config differs from the one this workdir was '
                      'started with; the old one is kept as config.%d.json.',
                      n)
    path.write_text(text)

  def config_changes(self, config, limit=4):
    """What `config` changes against the workdir's config.json, as one
    line: 'ema_decay: 0.99 -> 0.0, optimizer.name: "adamw" -> "sgd"' (at
    most `limit` fields, then how many more); '' when nothing differs or
    there is no config.json to compare with."""
    try:
      old = _flatten(json.loads((self.workdir / 'config.json').read_text()))
    except (OSError, ValueError):
      return ''
    new = _flatten(json.loads(config.to_json_best_effort()))
    def show(flat, key):
      return json.dumps(flat[key]) if key in flat else '(unset)'
    changed = [f'{k}: {show(old, k)} -> {show(new, k)}'
               for k in sorted(set(old) | set(new))
               if k not in old or k not in new or old[k] != new[k]]
    more = len(changed) - limit
    return ', '.join(changed[:limit]) + (f' and {more} more' if more > 0
                                         else '')

  def write_run_info(self, **extra):
    if not self.is_writer:
      return
    info = {
        'git_sha': git_sha(),
        'started': datetime.datetime.now(datetime.timezone.utc).isoformat(),
        'command': sys.argv,
        'python': platform.python_version(),
        'host': platform.node(),
        'packages': package_versions(),
        'devices': device_info(),
        **extra,
    }
    (self.workdir / 'run_info.json').write_text(
        json.dumps(info, indent=2, default=str) + '\n')

  def write_metrics(self, step, split, metrics):
    """Appends one line to metrics.jsonl and writes scalar summaries."""
    if not self.is_writer:
      return
    # Wall-clock seconds since the epoch: runs' durations and learning
    # curves against time (segjax.results) come from these.
    row = {'step': int(step), 'split': split, 'time': time.time()}
    row.update({k: _finite_or_none(_jsonable(v)) for k, v in metrics.items()})
    self._append_metrics(json.dumps(row) + '\n')
    if not self.tensorboard:
      return
    writer = self._writer()
    writer.write_scalars(int(step), {
        f'{split}/{k}': v for k, v in row.items()
        if isinstance(v, (int, float)) and k != 'step'})
    writer.flush()

  def _append_metrics(self, line):
    path = self.workdir / 'metrics.jsonl'
    if '://' not in str(self.workdir):
      with path.open('a') as f:
        f.write(line)
      return
    # Object stores cannot append (gcsfs silently overwrites): the whole
    # file is uploaded again, from what an earlier start of the run left.
    if self._metrics_text is None:
      self._metrics_text = path.read_text() if path.exists() else ''
    self._metrics_text += line
    path.write_text(self._metrics_text)

  def write_image(self, step, tag, image):
    """Saves a [H, W, 3] uint8 panel as images/step_<step>_<tag>.png and as
    the TensorBoard image `<tag>/predictions` at `step`."""
    if not self.is_writer:
      return
    from PIL import Image  # pylint: disable=g-import-not-at-top
    image = np.asarray(image, np.uint8)
    folder = self.workdir / 'images'
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / f'step_{int(step):07d}_{tag}.png').open('wb') as f:
      Image.fromarray(image).save(f, format='PNG')
    if not self.tensorboard:
      return
    writer = self._writer()
    writer.write_images(int(step), {f'{tag}/predictions': image[None]})
    writer.flush()

  def _writer(self):
    """clu's TensorBoard writer (TensorFlow summaries: local and gs://
    folders alike), created on first use so that only a writing process
    imports TensorFlow through it."""
    if self._tb is None:
      # segjax's TensorFlow set-up (host CPU only) comes before clu's import.
      importlib.import_module('segjax.data.tf_host')
      from clu import metric_writers  # pylint: disable=g-import-not-at-top
      self._tb = metric_writers.SummaryWriter(
          str(self.workdir / 'tensorboard'))
    return self._tb

  def close(self):
    if self._tb is not None:
      self._tb.close()
