"""One evaluation loop for the trainer and for `python -m segjax.evaluate`.

    forward, activated = make_forward(model, task, options, resize_to)
    evaluator = Evaluator(task, forward, activated, mesh, shardings)
    result = evaluator.run(variables, batches, panel_size=4)

Per batch, one jitted step runs the model (`make_forward`: the whole image,
or the inference modes of `segjax.evaluation.modes` with test-time
augmentation and an evaluation-size resize), the task's post-processing
(`Task.predict`) and its statistics (`Task.eval_stats`), already summed
over devices and processes. The host adds the batches up, collects the
task's per-image results (`Task.image_results`, e.g. instances for mask
AP), gathers them from every process, and scores everything once
(`Task.score`), so padding examples and ragged last batches never bias the
result. The trainer and `segjax.evaluate` differ only in what they pass
in: the same forward options and data give the same integers.
"""

import dataclasses
import pickle
from typing import Any, Optional

import jax
from jax.experimental import multihost_utils
import numpy as np

from segjax.configs import base as base_config
from segjax.evaluation import modes
from segjax.models.inputs import model_inputs
from segjax.parallel import sharding as sharding_lib
from segjax.tasks.base import resize

INFERENCE_DEFAULTS = base_config.INFERENCE_DEFAULTS


def single_pass(options):
  """Whether `options` run the model once on the whole image."""
  return (options['mode'] == 'whole' and tuple(options['scales']) == (1.0,)
          and not options['flip'])


def make_forward(model, task, options=None, resize_to=None):
  """The model's outputs for a batch, at the batch's resolution.

  Args:
    model: the Flax module.
    task: the run's `Task` (output channels, activation, resizing).
    options: `config.inference`-style dict (`INFERENCE_DEFAULTS`); None:
      one whole-image pass.
    resize_to: (h, w) the model runs at (the run's evaluation size); its
      outputs are resized back to the input's size. None: as given.

  Returns:
    (forward, activated): `forward(variables, images [B, H, W, 3] uint8 or
    normalised float, pixels [B, H, W] bool of real pixels, or None) ->
    outputs at [B, H, W, ...]`, and whether those outputs are averaged
    activations (test-time augmentation or a resize: probabilities are
    what averages and resizes) rather than the model's raw outputs.

  Raises:
    ValueError for options the task cannot run (test-time augmentation of
    a task without an activation) or bad mode options.
  """
  options = dict(INFERENCE_DEFAULTS, **(options or {}))
  apply = lambda v, x: model.apply(v, x, train=False)
  if single_pass(options) and (resize_to is None or task.activation is None):
    # Raw outputs: a task without an activation (panoptic heads) resizes
    # them itself; the others average or resize probabilities below.
    def forward(variables, images, pixels):
      del pixels
      x = model_inputs(images)
      if resize_to is None:
        return apply(variables, x)
      size = x.shape[1:3]
      outputs = apply(variables, resize(x, resize_to))
      return task.resize_outputs(outputs, size)
    return forward, False
  if task.activation is None:
    raise ValueError(f'the {task.name!r} task has no test-time '
                     'augmentation: use one whole-image pass.')
  probs_fn = modes.make_predict_fn(
      apply, task.num_outputs(), mode=options['mode'],
      window=options['window'], stride=options['stride'],
      scales=tuple(options['scales']), flip=bool(options['flip']),
      activation=task.activation)

  def forward(variables, images, pixels):
    x = model_inputs(images)
    size = x.shape[1:3]
    if pixels is None or resize_to is not None:
      pixels = np.ones(x.shape[:1] + (resize_to or size), bool)
    if resize_to is not None:
      x = resize(x, resize_to)
    probs = probs_fn(variables, x, pixels)
    return probs if resize_to is None else resize(probs, size)

  return forward, True


def local_rows(x):
  """This process's rows of a batch-sharded global array, as NumPy."""
  shards = sorted(x.addressable_shards, key=lambda s: s.index[0].start or 0)
  seen, rows = set(), []
  for s in shards:
    start = s.index[0].start or 0
    if start not in seen:  # Replicas of one shard hold the same rows.
      seen.add(start)
      rows.append(np.asarray(s.data))
  return np.concatenate(rows)


def gather_objects(items):
  """Every process's list of picklable items, in process order (each
  process's evaluation slice is contiguous, so this is split order)."""
  if jax.process_count() == 1:
    return list(items)
  data = np.frombuffer(pickle.dumps(list(items)), np.uint8)
  sizes = np.asarray(multihost_utils.process_allgather(
      np.asarray([data.size], np.int64))).reshape(-1)
  buffer = np.zeros(int(sizes.max()), np.uint8)
  buffer[:data.size] = data
  everything = np.asarray(multihost_utils.process_allgather(buffer))
  return [item for p, size in enumerate(sizes)
          for item in pickle.loads(everything[p, :size].tobytes())]


def _host_sum(total, stats):
  """Adds fetched statistics, integers as int64 (no overflow on large
  splits; floats keep their dtype and summation order)."""
  stats = jax.tree.map(
      lambda x: x.astype(np.int64) if np.issubdtype(x.dtype, np.integer)
      else x, jax.device_get(stats))
  return stats if total is None else jax.tree.map(np.add, total, stats)


@dataclasses.dataclass
class Result:
  """What one pass over a split gives."""
  row: dict  # The task's scores: {name: float}, 'num_examples' an int.
  sums: Any  # The summed statistics (NumPy pytree).
  panel: Optional[np.ndarray]  # [rows, W, 3] uint8, or None.


class Evaluator:
  """Scores variables on padded, masked, sharded batches of a split.

  Args:
    task: the run's `Task`.
    forward: `make_forward(...)`'s function and `activated` flag.
    activated: see `make_forward`.
    mesh: the device mesh.
    variable_shardings: shardings of {'params', 'batch_stats'} (None:
      replicated as given).
  """

  def __init__(self, task, forward, activated, mesh,
               variable_shardings=None):
    self.task, self.mesh = task, mesh

    def step(variables, batch):
      outputs = forward(variables, batch['image'], batch.get('pixels'))
      predictions = task.predict(outputs, activated)
      return task.eval_stats(predictions, batch), predictions

    self._step = jax.jit(
        step, in_shardings=(variable_shardings, None),  # Batch: as given.
        # Predictions split by rows only, so each process holds whole maps
        # of its rows (for per-image results and the image panel).
        out_shardings=(sharding_lib.replicated(mesh),
                       sharding_lib.batch_sharding(mesh, 1)))

  def run(self, variables, batches, panel_size=0):
    """One pass: `batches` yields local NumPy batches ('image', 'labels',
    'mask' and the task's `eval_fields`); returns a `Result`."""
    sums, images, panel = None, [], None
    for i, local in enumerate(batches):
      stats, predictions = self._step(
          variables, sharding_lib.to_global_array(local, self.mesh))
      sums = _host_sum(sums, stats)
      if i == 0 and panel_size or self.task.has_image_results:
        mine = jax.tree.map(local_rows, predictions)
        results = self.task.image_results(mine, local)
        # Keyed by the example's place in the split, so every process
        # count and batch order scores the images in one order.
        order = local.get('index', np.full(len(local['mask']), i, np.int64))
        images.extend(zip(np.asarray(order)[local['mask']].tolist(), results))
        if i == 0 and panel_size:
          panel = self.task.panel(local, mine, panel_size)
    if sums is None:
      raise ValueError('the evaluation split gave no batch.')
    gathered = sorted(gather_objects(images), key=lambda item: item[0])
    row = self.task.score(sums, [result for _, result in gathered])
    return Result(row=row, sums=sums, panel=panel)
