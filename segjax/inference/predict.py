"""Predicts files for `python -m segjax.predict` (see segjax/predict.py)."""

from absl import logging

from segjax.imaging import image_io
from segjax.inference import run as run_lib


def _stems(paths):
  """Output stems, unique even when a.png and a.jpg share a folder."""
  stems, seen = [], {}
  for path in paths:
    stem = path.stem
    if stem in seen:
      seen[stem] += 1
      stem = f'{stem}_{path.suffix.lstrip(".").lower()}'
      if stem in seen:
        stem = f'{stem}_{seen[path.stem]}'
    seen.setdefault(stem, 0)
    stems.append(stem)
  return stems


def predict(workdir, inputs, output, checkpoint='best', ema=False,
            overrides=(), max_pixels=64_000_000):
  """Writes predictions for every input image; returns {path: error}."""
  config, task, model = run_lib.load_model(workdir, overrides)
  step = run_lib.resolve_step(workdir, config, checkpoint)
  predict_fn = run_lib.make_predict_fn(
      config, model, run_lib.load_variables(workdir, step, ema=ema), task)
  paths = image_io.find_images(inputs)
  logging.info('Predicting %d images with %s step %d.', len(paths), workdir,
               step)
  failed = {}
  for path, stem in zip(paths, _stems(paths)):
    try:
      image = image_io.read_image(path, max_pixels=max_pixels)
    except image_io.ImageReadError as e:
      logging.error('%s', e)
      failed[str(path)] = str(e)
      continue
    # The task's files: label maps, and e.g. panoptic PNG / JSON.
    task.write_outputs(output, stem, image, predict_fn.raw(image))
  return failed
