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
  config = run_lib.load_config(workdir, overrides)
  spec = run_lib.run_spec(workdir, config)
  model = run_lib.build(config, spec)
  step = run_lib.resolve_step(workdir, config, checkpoint)
  predict_fn = run_lib.make_predict_fn(
      config, model, run_lib.load_variables(workdir, step, ema=ema), spec)
  ignore_index = config.data.get('ignore_index', 255)
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
    out = predict_fn(image)
    # Panoptic and binary runs return dicts, semantic ones a label map.
    labels = out['labels'] if isinstance(out, dict) else out
    image_io.write_semantic(output, stem, image, labels,
                            class_names=spec.class_names,
                            ignore_index=ignore_index)
    if isinstance(out, dict) and 'panoptic' in out:
      divisor = (config.get('panoptic') or config.binary).label_divisor
      scores = {int(c) * divisor + k + 1: float(s) for k, (c, s, v) in
                enumerate(zip(out['classes'], out['scores'], out['valid']))
                if v}
      image_io.write_panoptic(
          output, stem, out['panoptic'], label_divisor=divisor,
          thing_classes=spec.thing_classes, class_names=spec.class_names,
          ignore_index=ignore_index, scores=scores, image_id=stem)
  return failed
