"""Predicts files for `python -m segjax.predict` (see segjax/predict.py).

Where each image's files go (`plan_outputs`); no two inputs ever share an
output file:

* One input (a folder or a file): straight into the output folder,
  `out/<stem>_labels.png` etc.
* Several inputs: a subfolder per input root (a folder given, or the
  parent folder of a file given), named after it and holding that root's
  images: `--input x,y` with x/a.png and y/a.png gives out/x/a_*.png and
  out/y/a_*.png. Roots with the same folder name (p/x and q/x) get x, x_2,
  x_3, ... in the order given, skipping any name that another root has by
  its own name (so a root really named x_2 keeps it); the log names the
  root of each subfolder.
* Stems: the file name without its extension. Images of one output folder
  with the same stem (a.png, a.jpg) keep it for the first and get
  `<stem>_<ext>`, then `<stem>_<ext>_2`, ..., for the others, skipping any
  stem another image has by its own name (a real a_png_2.png keeps it).
  Names are compared case-insensitively, as macOS and Windows file systems
  do.

Inputs and the output folder may be local or on an object store (gs://...,
through etils.epath). The run's task writes each image's files
(`task.write_outputs`) into a staging folder: a hidden one inside a local
output folder, a local temporary one for an object store. They are then
moved into place (os.replace, or one upload per object, which is
all-or-nothing there), JSON files last: a panoptic JSON appears after the
PNG it names.
Should a file name be one an earlier image of this run already wrote (a
panoptic run's `a_panoptic_color.png` is written for both a.png and
a_panoptic.png), the image is written again under its next stem, so
nothing this run wrote is overwritten. Files of earlier runs are.
"""

import collections
import itertools
import os
import pathlib
import shutil
import tempfile
from typing import NamedTuple

from absl import logging

from segjax import files
from segjax.errors import ConfigError
from segjax.imaging import image_io
from segjax.inference import run as run_lib


class Output(NamedTuple):
  """Where one input image's prediction files go."""
  # pathlib.Path locally, epath.Path for a URI (`files.as_path`).
  path: pathlib.Path  # The image file.
  root: pathlib.Path  # Its input root (absolute).
  folder: pathlib.Path  # Its output folder.
  stem: str  # Its files are <folder>/<stem>_labels.png etc.


def _free_names(wanted, alternatives):
  """One name per item, all distinct (case-insensitively).

  Item i gets wanted[i] unless an earlier item has it, else the first of
  `alternatives(i)` that no item wants and no item has: a renamed item
  never takes the name another item has by right.
  """
  reserved = {name.casefold() for name in wanted}
  taken, names = set(), []
  for i, name in enumerate(wanted):
    if name.casefold() in taken:
      name = next(n for n in alternatives(i)
                  if n.casefold() not in taken and n.casefold() not in reserved)
    taken.add(name.casefold())
    names.append(name)
  return names


def _stem_alternatives(path):
  """Stems for an image whose own stem is taken: a_png, a_png_2, ..."""
  stem = f'{path.stem}_{path.suffix.lstrip(".").lower() or "file"}'
  return itertools.chain([stem], (f'{stem}_{n}' for n in itertools.count(2)))


def plan_outputs(inputs, output):
  """[Output] for every image of `inputs`, in `find_images` order per root.

  Args:
    inputs: image files and / or folders (a list, or one path).
    output: the output folder.

  Raises:
    DataError: a missing input, or no image found.
  """
  if isinstance(inputs, (str, os.PathLike)):
    inputs = [inputs]
  groups = image_io.find_images_by_root(inputs)
  output = files.as_path(output)
  if len(inputs) == 1:
    folders = [output]  # One input has one root.
  else:
    names = [root.name or 'root' for root, _ in groups]
    folders = [output / name for name in _free_names(
        names, lambda i: (f'{names[i]}_{n}' for n in itertools.count(2)))]
  plan = []
  for folder, (root, paths) in zip(folders, groups):
    stems = _free_names([p.stem for p in paths],
                        lambda i, paths=paths: _stem_alternatives(paths[i]))
    plan += [Output(p, root, folder, s) for p, s in zip(paths, stems)]
  return plan


def _make_folders(output, plan):
  """Creates the output folders; ConfigError when one cannot be."""
  output = files.as_path(output)
  if output.exists() and not output.is_dir():
    raise ConfigError(f'output {str(output)!r} is an existing file, not a '
                      'folder; give a folder for the predictions.')
  for folder in dict.fromkeys(item.folder for item in plan):
    try:
      folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # E.g. a file where a folder should be.
      raise ConfigError(f'output folder {str(folder)!r} cannot be created: '
                        f'{e.strerror or e}.') from e


def _make_stage(folder):
  """A new, empty local staging folder for the files bound for `folder`."""
  if files.is_uri(folder):
    return pathlib.Path(tempfile.mkdtemp(prefix='segjax-predict-'))
  stage = folder / f'.segjax-predict-{os.getpid()}.tmp'
  stage.mkdir(exist_ok=True)
  return stage


def _move(staged, final):
  """Moves a staged file into place: a rename, or an upload then delete."""
  if files.is_uri(final):
    files.write_bytes(final, staged.read_bytes())
    staged.unlink()
  else:
    os.replace(staged, final)


def write_predictions(plan, task, predict_raw, max_pixels=64_000_000):
  """Reads, predicts and writes every image of `plan`; returns {path: error}.

  Args:
    plan: [Output] from `plan_outputs`, folders created.
    task: the run's task; `task.write_outputs(folder, stem, image,
      prediction)` writes one image's files.
    predict_raw: [H, W, 3] uint8 image -> the task's predictions dict.
    max_pixels: larger images are refused before decoding.
  """
  failed = {}
  planned = collections.defaultdict(set)  # folder -> stems (casefolded).
  written = collections.defaultdict(set)  # folder -> this run's file names.
  for item in plan:
    planned[item.folder].add(item.stem.casefold())
  stages = {}
  try:
    for item in plan:
      try:
        image = image_io.read_image(item.path, max_pixels=max_pixels)
      except image_io.ImageReadError as e:
        logging.error('%s', e)
        failed[str(item.path)] = str(e)
        continue
      prediction = predict_raw(image)
      folder = item.folder
      if folder not in stages:
        stages[folder] = _make_stage(folder)
      stage = stages[folder]
      others = (s for s in _stem_alternatives(item.path)
                if s.casefold() not in planned[folder])
      clashes = []
      for stem in itertools.chain([item.stem], others):
        # The task's files: label maps, and e.g. panoptic PNG / JSON.
        task.write_outputs(stage, stem, image, prediction)
        names = sorted(os.listdir(stage))
        clash = [n for n in names if n.casefold() in written[folder]]
        if not clash:
          break
        clashes += clash
        for name in names:
          os.unlink(stage / name)
      if clashes:
        logging.warning('%s: written as %s in %s: an earlier image of this '
                        'run wrote %s.', item.path, stem, folder,
                        sorted(set(clashes)))
        planned[folder].add(stem.casefold())
      # JSON last: a JSON that names a file is never there before it.
      for name in sorted(names, key=lambda n: n.endswith('.json')):
        _move(stage / name, folder / name)
        written[folder].add(name.casefold())
  finally:
    for stage in stages.values():
      shutil.rmtree(stage, ignore_errors=True)
  return failed


def predict(workdir, inputs, output, checkpoint='best', ema=False,
            overrides=(), max_pixels=64_000_000):
  """Writes predictions for every input image; returns {path: error}.

  Outputs are laid out as the module docstring says.

  Raises:
    ConfigError: a bad workdir, checkpoint or override, or an output that
      is an existing file (or cannot be created).
    DataError: a missing input, or no image found.
  """
  plan = plan_outputs(inputs, output)
  _make_folders(output, plan)
  config, task, model = run_lib.load_model(workdir, overrides)
  step = run_lib.resolve_step(workdir, config, checkpoint)
  predict_fn = run_lib.make_predict_fn(
      config, model, run_lib.load_variables(workdir, step, ema=ema), task)
  logging.info('Predicting %d images with %s step %d.', len(plan), workdir,
               step)
  for root, folder in dict.fromkeys((i.root, i.folder) for i in plan):
    logging.info('%s -> %s', root, folder)
  return write_predictions(plan, task, predict_fn.raw, max_pixels)
