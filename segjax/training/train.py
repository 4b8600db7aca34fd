"""`train_and_evaluate(config, workdir)`: the whole training run.

Order of events: check the config and workdir (clear errors before anything
heavy), build data set / model / optimizer, restore the latest checkpoint in
the workdir or initialise, compile the train step ahead of time (which also
gives its FLOPs), then loop: step, log, evaluate, checkpoint. Re-running the
same command on the same workdir resumes from its latest checkpoint, and the
data stream resumes at the same position (see `segjax.data.pipeline`).
"""

import math
import os
import time

from absl import logging
from etils import epath
import jax
from jax.experimental import multihost_utils
import numpy as np

from segjax import losses
from segjax import metrics as metrics_lib
from segjax import models
from segjax.data import datasets
from segjax.data import pipeline
from segjax.errors import ConfigError
from segjax.inference import visualize
from segjax.training import checkpointing
from segjax.training import optimizer as optimizer_lib
from segjax.training import run_record
from segjax.training import sharding as sharding_lib
from segjax.training import state as state_lib
from segjax.training import steps as steps_lib


def prepare_workdir(workdir):
  """Creates `workdir`, checks that it can be written to, returns its path.

  A local path is made absolute (Orbax requires absolute checkpoint paths);
  a URI such as gs://bucket/run is kept as it is.

  Raises:
    ConfigError naming the folder and the reason.
  """
  workdir = str(workdir)
  if '://' not in workdir:
    workdir = os.path.abspath(os.path.expanduser(workdir))
  path = epath.Path(workdir)
  try:
    path.mkdir(parents=True, exist_ok=True)
    probe = path / '.segjax_write_test'
    probe.write_text('ok')
    probe.unlink()
  except OSError as e:
    raise ConfigError(f'workdir {workdir!r} is not writable: '
                      f'{e.strerror or e}.') from e
  return path


def check_config(config):
  """Checks what would otherwise fail deep inside JAX or tf.data."""
  for field in ('batch_size', 'num_train_steps', 'log_every_steps',
                'eval_every_steps', 'checkpoint_every_steps'):
    value = config.get(field)
    if not isinstance(value, int) or value < 1:
      raise ConfigError(f'config.{field} must be a positive int, got '
                        f'{value!r}.')
  n = jax.device_count()
  for field in ('batch_size', 'eval_batch_size'):
    value = config.get(field) or config.batch_size
    if value % n:
      raise ConfigError(
          f'config.{field}={value} is not divisible by the number of devices '
          f'({n}); use a multiple of {n}, e.g. {max(n, value // n * n)}.')


def _local_rows(x):
  """This process's rows of a batch-sharded global array, as NumPy."""
  shards = sorted(x.addressable_shards, key=lambda s: s.index[0].start or 0)
  seen, rows = set(), []
  for s in shards:
    start = s.index[0].start or 0
    if start not in seen:  # Replicas of one shard hold the same rows.
      seen.add(start)
      rows.append(np.asarray(s.data))
  return np.concatenate(rows)


class _Progress:
  """Logs step rate, throughput and ETA."""

  def __init__(self, start_step, num_steps, batch_size):
    self.num_steps = num_steps
    self.batch_size = batch_size
    self.last_step, self.last_time = start_step, time.time()

  def line(self, step, loss):
    now = time.time()
    rate = (step - self.last_step) / max(now - self.last_time, 1e-9)
    self.last_step, self.last_time = step, now
    eta = (self.num_steps - step) / max(rate, 1e-9)
    return (f'step {step}/{self.num_steps} ({100 * step / self.num_steps:.0f}%)'
            f' | {rate:.2f} steps/s, {rate * self.batch_size:.1f} img/s'
            f' | loss {loss:.4f} | ETA {_duration(eta)}')


def _duration(seconds):
  seconds = int(seconds)
  if seconds >= 3600:
    return f'{seconds // 3600}h{seconds % 3600 // 60:02d}m'
  return f'{seconds // 60}m{seconds % 60:02d}s'


def _flops(compiled):
  """FLOPs of one call of an AOT-compiled function, from XLA's cost model."""
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):  # Older JAX: one dict per device.
    analysis = analysis[0] if analysis else {}
  flops = (analysis or {}).get('flops')
  return float(flops) if flops is not None else None


def train_and_evaluate(config, workdir):
  """Trains `config` in `workdir`, resuming if it holds a checkpoint.

  Args:
    config: an ml_collections.ConfigDict as returned by an experiment's
      `get_config()` (see experiments/).
    workdir: output folder (local or gs://).

  Returns:
    {split: scores dict} of the final evaluation.
  """
  workdir = prepare_workdir(workdir)
  check_config(config)
  spec = datasets.get_spec(config.data.name)
  ignore_index = config.data.get('ignore_index', datasets.IGNORE_INDEX)
  num_classes = spec.num_classes
  try:
    model = models.build_model(config.model, num_classes)
    loss_fn = losses.build_loss(config.loss, ignore_index=ignore_index)
  except ValueError as e:
    raise ConfigError(str(e)) from e
  tx, schedule = optimizer_lib.build_optimizer(config, config.num_train_steps)

  record = run_record.RunRecord(workdir)
  record.write_config(config)
  # One process prepares the data set; the others wait, then read it.
  if jax.process_index() == 0:
    datasets.builder_for(config.data)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices('segjax: data set prepared')
  builder = datasets.builder_for(config.data, prepare=False)

  checkpointer = checkpointing.Checkpointer(
      workdir / 'checkpoints', config.checkpoint_every_steps,
      config.get('keep_checkpoints', 3))
  latest = checkpointer.latest_step()
  start_step = latest or 0
  # The training stream resumes at the checkpoint's step (see
  # pipeline.train_dataset); its element shapes fix the compiled step's.
  train_ds = pipeline.train_dataset(
      config.data, config.batch_size, seed=config.get('data_seed', config.seed),
      start_step=start_step, process_index=jax.process_index(),
      process_count=jax.process_count())
  element = train_ds.element_spec
  if not element['image'].shape.is_fully_defined():
    raise ConfigError(
        f'{config.data.name!r} images have no fixed size '
        f'({element["image"].shape[1:]}); end config.data.augment='
        f'{config.data.get("augment")!r} with crop(h, w) or resize(h, w).')
  image_shape = tuple(element['image'].shape[1:])
  examples_per_epoch = pipeline.num_local_examples(config.data,
                                                   jax.process_count())
  local_batch = config.batch_size // jax.process_count()

  mesh = sharding_lib.make_mesh()
  try:  # Tracing the model's init surfaces its own checks as ValueErrors.
    abstract = state_lib.abstract_state(model, tx, image_shape, mesh)
  except ValueError as e:
    raise ConfigError(f'config.model: {e}') from e
  shardings = jax.tree.map(lambda x: x.sharding, abstract)
  if latest is not None:
    logging.info('Resuming from checkpoint at step %d in %s', latest,
                 checkpointer.directory)
    state = checkpointer.restore(latest, abstract)
  else:
    state, _ = state_lib.create_train_state(
        model, tx, image_shape, jax.random.PRNGKey(config.seed), mesh,
        shardings=shardings)
  if int(state.step) != start_step:
    raise RuntimeError(f'Checkpoint {latest} holds step {int(state.step)}.')

  data_sharding = sharding_lib.batch_sharding(mesh)
  replicated = sharding_lib.replicated(mesh)
  train_step = jax.jit(
      steps_lib.make_train_step(model, tx, loss_fn, schedule),
      in_shardings=(shardings, data_sharding),
      out_shardings=(shardings, replicated),
      donate_argnums=0)
  batch_spec = sharding_lib.abstract_batch({
      k: (tuple(v.shape), v.dtype.as_numpy_dtype) for k, v in element.items()
  }, mesh)
  compiled_train_step = train_step.lower(abstract, batch_spec).compile()
  flops = _flops(compiled_train_step)
  num_params = state_lib.count_params(state.params)
  logging.info('Model %s: %d parameters, %.3g GFLOP per train step.',
               config.model.name, num_params, (flops or 0) / 1e9)
  record.write_run_info(
      num_params=num_params, flops_per_train_step=flops,
      resumed_from_step=latest, num_classes=num_classes,
      class_names=list(spec.class_names))

  eval_step = jax.jit(
      steps_lib.make_eval_step(model, num_classes, ignore_index),
      in_shardings=(shardings, data_sharding),
      out_shardings=(replicated, data_sharding))

  def evaluate(step, split):
    eval_batch = config.get('eval_batch_size') or config.batch_size
    _, ds = pipeline.eval_dataset(
        config.data, split, eval_batch, process_index=jax.process_index(),
        process_count=jax.process_count())
    cm = np.zeros((num_classes, num_classes), np.int64)
    count = 0
    for i, local in enumerate(pipeline.as_numpy(ds)):
      stats, predictions = eval_step(
          state, sharding_lib.to_global_array(local, mesh))
      cm += np.asarray(stats['confusion_matrix'], np.int64)
      count += int(stats['num_examples'])
      if i == 0 and config.get('num_images_to_save', 0):
        n = config.num_images_to_save
        panel = visualize.prediction_panel(
            local['image'][:n], local['labels'][:n],
            _local_rows(predictions)[:n], ignore_index)
        record.write_image(f'step_{step:07d}_{split}', panel)
    expected = builder.info.splits[split].num_examples
    if count != expected:  # The padding logic is broken if this fires.
      raise RuntimeError(f'Evaluated {count} examples of {split!r}, expected '
                         f'{expected}.')
    scores = metrics_lib.segmentation_scores(cm)
    row = {k: scores[k] for k in ('miou', 'mean_dice', 'pixel_accuracy',
                                  'mean_accuracy', 'fw_iou')}
    row.update({f'iou/{name}': scores['iou'][c]
                for c, name in enumerate(spec.class_names)})
    row['num_examples'] = count
    record.write_metrics(step, split, row)
    logging.info('step %d %s: mIoU %.4f, pixel accuracy %.4f (%d images)',
                 step, split, row['miou'], row['pixel_accuracy'], count)
    return scores

  train_iter = pipeline.as_numpy(train_ds)
  progress = _Progress(start_step, config.num_train_steps, config.batch_size)
  history = []
  results = {}  # split -> scores of the latest evaluation.
  eval_split = config.data.get('eval_split', 'validation')
  if start_step < config.num_train_steps:
    logging.info('Training from step %d to %d.', start_step,
                 config.num_train_steps)
  for step in range(start_step, config.num_train_steps):
    batch = sharding_lib.to_global_array(next(train_iter), mesh)
    state, step_metrics = compiled_train_step(state, batch)
    history.append(step_metrics)
    done = step + 1
    last = done == config.num_train_steps
    will_save = last or done % config.checkpoint_every_steps == 0
    if will_save or last or done % config.log_every_steps == 0:
      means = jax.tree.map(lambda *x: float(np.mean(x)),
                           *jax.device_get(history))
      history = []
      if not math.isfinite(means['loss']):
        raise FloatingPointError(
            f'Training loss is {means["loss"]} at step {done}; stopping '
            'before saving a checkpoint from this step.')
      means['epoch'] = done * local_batch / examples_per_epoch
      record.write_metrics(done, 'train', means)
      logging.info('%s', progress.line(done, means['loss']))
    if last or done % config.eval_every_steps == 0:
      results[eval_split] = evaluate(done, eval_split)
    checkpointer.save(done, state, force=last)
    if checkpointer.reached_preemption(done):
      logging.warning('Preemption signalled: saved step %d and stopping.',
                      done)
      checkpointer.close()
      return {}

  final_step = int(state.step)
  for split in [eval_split] + list(config.data.get('final_eval_splits', ())):
    if split in results:
      continue
    if split not in builder.info.splits:  # E.g. CamVid without test/.
      logging.info('No %r split in %s; not evaluated.', split,
                   config.data.name)
      continue
    results[split] = evaluate(final_step, split)
  checkpointer.close()
  record.close()
  return results
