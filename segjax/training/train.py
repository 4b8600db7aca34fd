"""`train_and_evaluate(config, workdir)`: the whole training run.

Order of events: check the config and workdir (clear errors before anything
heavy), build data set / model / optimizer, restore the latest checkpoint in
the workdir (one that does not fit the config is a ConfigError, and leaves
config.json as it was) or initialise, write config.json, compile the train
step ahead of time (which also gives its FLOPs), then loop: step, log,
evaluate, checkpoint. Re-running the same command on the same workdir
resumes from its latest checkpoint, and the data stream resumes at the same
position (see `segjax.data.pipeline`).
"""

import os
import sys

from absl import logging
from etils import epath
import jax
from jax.experimental import multihost_utils

from segjax import models
from segjax import tasks
from segjax.data import datasets
from segjax.data import pipeline
from segjax.errors import ConfigError
from segjax.evaluation import loop as eval_loop
from segjax.parallel import sharding as sharding_lib
from segjax.training import checkpointing
from segjax.training import distributed
from segjax.training import model_init
from segjax.training import monitoring
from segjax.training import optimizer as optimizer_lib
from segjax.training import run_record
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
    probe = path / f'.segjax_write_test_{jax.process_index()}'
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
    value = config[field]
    if not isinstance(value, int) or value < 1:
      raise ConfigError(f'config.{field} must be a positive int, got '
                        f'{value!r}.')
  n = jax.device_count()
  for field in ('batch_size', 'eval_batch_size'):
    value = config[field] or config.batch_size
    if value % n:
      raise ConfigError(
          f'config.{field}={value} is not divisible by the number of devices '
          f'({n}); use a multiple of {n}, e.g. {max(n, value // n * n)}.')
  k = config.grad_accum_steps
  if not isinstance(k, int) or k < 1 or config.batch_size % (k * n):
    raise ConfigError(
        f'config.grad_accum_steps={k!r}: must be a positive int, and '
        f'batch_size={config.batch_size} must split into {k} micro-batches '
        f'that the {n} devices share evenly (a multiple of {k * n}).')
  ema = config.ema_decay
  if not 0.0 <= ema < 1.0:
    raise ConfigError(f'config.ema_decay={ema!r} must be in [0, 1).')
  steps = config.profile_steps
  if not all(isinstance(s, int) and 1 <= s <= config.num_train_steps
             for s in steps):
    raise ConfigError(
        f'config.profile_steps={tuple(steps)!r}: give step numbers from 1 '
        f'to num_train_steps={config.num_train_steps}, e.g. (11, 15).')


def _initial_state(config, model, tx, image_shape, mesh, shardings, ema):
  """(state, model_init report or None): a fresh state, from
  `config.model_init` if set, else initialised."""
  state, _ = state_lib.create_train_state(
      model, tx, image_shape, jax.random.PRNGKey(config.seed), mesh,
      shardings=shardings, ema=ema)
  init_config = config.model_init
  if not init_config.path:
    return state, None
  variables, report = model_init.load(init_config,
                                      jax.device_get(state.variables()))
  logging.info('%s', model_init.describe(report))
  build = jax.jit(lambda v, rng: state_lib.from_variables(v, tx, rng, ema),
                  out_shardings=shardings)
  return build(variables, state.rng), report


def _resume_position(saved, layout, step):
  """Where the input stream restarts: from the step when the stream's layout
  is unchanged (the same position), else from the saved (epoch, index)."""
  if all(saved.get(k) == v for k, v in layout.items()):
    return None
  logging.warning(
      'The input layout changed since the checkpoint at step %d (%s, now '
      '%s): continuing the stream at its saved position (epoch %d, example '
      '%d); the run is no longer the one an uninterrupted run would be.',
      step, {k: saved.get(k) for k in layout}, layout, saved['epoch'],
      saved['index'])
  return saved['epoch'], saved['index']


def _check_memory(compiled, limit_bytes):
  """Stops a step that cannot fit before it runs, with the figures."""
  need = monitoring.memory_bytes_of(compiled)
  if need is None:
    return None
  analysis = compiled.memory_analysis()
  if limit_bytes is None:
    limit_bytes = monitoring.device_memory_limit()
  if limit_bytes is not None and need > limit_bytes:
    gib = 2.0 ** 30
    raise ConfigError(
        f'The train step needs {need / gib:.2f} GiB per device (arguments '
        f'{analysis.argument_size_in_bytes / gib:.2f}, temporaries '
        f'{analysis.temp_size_in_bytes / gib:.2f}, outputs '
        f'{analysis.output_size_in_bytes / gib:.2f}, less '
        f'{analysis.alias_size_in_bytes / gib:.2f} donated) but '
        f'{limit_bytes / gib:.2f} GiB are available. Try a smaller '
        'config.batch_size (or config.grad_accum_steps > 1), a smaller '
        'crop, rematerialisation, or a larger config.model.output_stride.')
  return need


def _evaluate(evaluator, variables, step, split, config, task, builder,
              record, tag=None):
  """One pass over `split`: writes its metrics row and image panel.

  Returns:
    The task's row of scores ({name: float}).
  """
  tag = tag or split
  eval_batch = config.eval_batch_size or config.batch_size
  _, ds = pipeline.eval_dataset(
      config.data, split, eval_batch, process_index=jax.process_index(),
      process_count=jax.process_count(),
      with_instances='instances' in task.eval_fields)
  result = evaluator.run(variables, pipeline.as_numpy(ds),
                         panel_size=config.num_images_to_save)
  row = result.row
  expected = builder.info.splits[split].num_examples
  if row['num_examples'] != expected:  # The padding logic is broken.
    raise RuntimeError(f'Evaluated {row["num_examples"]} examples of '
                       f'{split!r}, expected {expected}.')
  record.write_metrics(step, tag, row)
  if result.panel is not None:
    record.write_image(step, tag, result.panel)
  logging.info('step %d %s: %s (%d images)', step, tag, task.summary(row),
               row['num_examples'])
  return row


def train_and_evaluate(config, workdir):
  """Trains `config` in `workdir`, resuming if it holds a checkpoint.

  Args:
    config: an ml_collections.ConfigDict as returned by an experiment's
      `get_config()` (see experiments/).
    workdir: output folder (local or gs://).

  Returns:
    {split: scores dict} of the final evaluation ('<split>_ema' too when
    the run keeps an EMA).
  """
  workdir = prepare_workdir(workdir)
  check_config(config)
  spec = datasets.spec_for(config.data)
  ema_decay = float(config.ema_decay)
  task = tasks.get_task(config, spec)
  try:
    model = models.build_model(config.model,
                               task.num_outputs())
  except ValueError as e:
    raise ConfigError(str(e)) from e
  loss_fn = task.loss_fn()

  record = run_record.RunRecord(workdir, tensorboard=config.tensorboard)
  # One process prepares the data set; the others wait, then read it.
  if jax.process_index() == 0:
    datasets.builder_for(config.data)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices('segjax: data set prepared')
  builder = datasets.builder_for(config.data, prepare=False)

  best_tag, _, best_metric = config.best_checkpoint_metric.rpartition('/')
  checkpointer = checkpointing.Checkpointer(
      workdir / 'checkpoints', config.checkpoint_every_steps,
      config.keep_checkpoints, best_metric=best_metric,
      keep_best=config.keep_best_checkpoints,
      best_mode=config.best_checkpoint_mode)
  data_seed = config.seed if config.data_seed is None else config.data_seed
  # The stream's element shapes fix the compiled step's (building a tf.data
  # pipeline reads nothing yet).
  element = pipeline.train_dataset(
      config.data, config.batch_size, seed=data_seed,
      process_count=jax.process_count(),
      targets=task.train_targets()).element_spec
  if not element['image'].shape.is_fully_defined():
    raise ConfigError(
        f'{config.data.name!r} images have no fixed size '
        f'({element["image"].shape[1:]}); end config.data.augment='
        f'{config.data.augment!r} with crop(h, w) or resize(h, w).')
  image_shape = tuple(element['image'].shape[1:])
  layout = {'examples_per_epoch': pipeline.num_train_examples(config.data),
            'global_batch': config.batch_size, 'data_seed': data_seed}

  mesh = sharding_lib.mesh_from_config(config.mesh,
                                       dcn_axes=config.mesh_dcn)
  try:  # Tracing the model's init surfaces its own checks as ValueErrors.
    abstract_vars = jax.eval_shape(
        lambda: state_lib.init_variables(model, image_shape,
                                         jax.random.PRNGKey(0)))
    tx, schedule = optimizer_lib.build_optimizer(
        config, config.num_train_steps, abstract_vars['params'])
    abstract = state_lib.abstract_state(
        model, tx, image_shape, mesh, ema=bool(ema_decay),
        fsdp_min_size=config.fsdp_min_size)
  except ValueError as e:
    raise ConfigError(f'config.model: {e}') from e
  shardings = jax.tree.map(lambda x: x.sharding, abstract)
  try:
    restored = checkpointer.restore_latest(abstract)
  except ConfigError as e:
    checkpointer.close()
    changes = record.config_changes(config)
    if changes:
      raise ConfigError(f'{e} Changed since config.json: {changes}.') from e
    raise
  # Written once the workdir's checkpoint (if any) fits this config:
  # evaluation and prediction build their model from config.json, so a
  # rejected config must not replace it.
  record.write_config(config)
  init_report = None  # What model_init loaded (a fresh start only).
  if restored is not None:
    latest, state, saved_position = restored
    logging.info('Resuming from checkpoint at step %d in %s', latest,
                 checkpointer.directory)
    if int(state.step) != latest:
      raise RuntimeError(f'Checkpoint {latest} holds step {int(state.step)}.')
    start_position = _resume_position(saved_position, layout, latest)
  else:
    latest, start_position = None, None
    state, init_report = _initial_state(config, model, tx, image_shape, mesh,
                                        shardings, bool(ema_decay))
  start_step = latest or 0
  train_ds = pipeline.train_dataset(
      config.data, config.batch_size, seed=data_seed, start_step=start_step,
      start_position=start_position, process_index=jax.process_index(),
      process_count=jax.process_count(), targets=task.train_targets())

  def position(step):
    """What a checkpoint at `step` records about the input stream."""
    per_epoch = layout['examples_per_epoch']
    if start_position:  # Continued from a position of another layout.
      consumed = (start_position[0] * per_epoch + start_position[1] +
                  (step - start_step) * config.batch_size)
    else:
      consumed = step * config.batch_size
    epoch, index = divmod(consumed, per_epoch)
    return {'step': int(step), 'epoch': int(epoch), 'index': int(index),
            **layout}

  train_step = jax.jit(
      steps_lib.make_train_step(
          model, tx, loss_fn, schedule, metrics_fn=task.train_metrics,
          accum_steps=config.grad_accum_steps,
          aux_loss_weight=config.aux_loss_weight,
          ema_decay=ema_decay),
      # The batch keeps the sharding to_global_array gave it.
      in_shardings=(shardings, None),
      out_shardings=(shardings, sharding_lib.replicated(mesh)),
      donate_argnums=0)
  batch_spec = sharding_lib.abstract_batch({
      k: (tuple(v.shape), v.dtype.as_numpy_dtype) for k, v in element.items()
  }, mesh)
  compiled_train_step = train_step.lower(abstract, batch_spec).compile()
  step_bytes = _check_memory(compiled_train_step,
                             config.memory_limit_bytes)
  flops = monitoring.flops_of(compiled_train_step, mesh.devices.size)
  num_params = state_lib.count_params(state.params)
  logging.info('Model %s: %d parameters, %.3g GFLOP and %.3g GiB per train '
               'step.', config.model.name, num_params, (flops or 0) / 1e9,
               (step_bytes or 0) / 2**30)
  record.write_run_info(
      num_params=num_params, flops_per_train_step=flops,
      resumed_from_step=latest, num_classes=spec.num_classes,
      class_names=list(spec.class_names),
      thing_classes=list(spec.thing_classes),
      ignore_index=spec.ignore_index, task=config.task,
      kernels=config.model.kernels, model_init=init_report)

  evaluator = eval_loop.Evaluator(
      task, *eval_loop.make_forward(model, task), mesh,
      {'params': shardings.params, 'batch_stats': shardings.batch_stats})

  def evaluate(step, split):
    scores = {split: _evaluate(evaluator, state.variables(), step, split,
                               config, task, builder, record)}
    if ema_decay:
      scores[f'{split}_ema'] = _evaluate(
          evaluator, state.variables(ema=True), step, split, config, task,
          builder, record, tag=f'{split}_ema')
    return scores

  distributed.wait_for_all('train step compiled')
  writer = record.is_writer  # Only process 0 reports progress.
  progress = monitoring.Progress(
      start_step, config.num_train_steps, config.batch_size, flops,
      bar_stream=sys.stderr if writer and sys.stderr.isatty() else None)
  trace = monitoring.TraceWindow(config.profile_steps,
                                 workdir / 'tensorboard')
  try:  # Saves already started complete even if a step fails.
    train_iter = pipeline.as_numpy(train_ds)
    history = []  # Per-step metrics on the device since the last fetch.
    results = {}  # split -> scores of the latest evaluation.
    eval_split = config.data.eval_split
    if start_step < config.num_train_steps:
      logging.info('Training from step %d to %d.', start_step,
                   config.num_train_steps)
    # SIGTERM: JAX's preemption service, where it runs, makes every process
    # stop at one agreed step (`reached_preemption`); a single process
    # without it catches the signal itself.
    with monitoring.StopSignal(
        install=not distributed.preemption_service()) as stop:
      for step in range(start_step, config.num_train_steps):
        done = step + 1
        batch = sharding_lib.to_global_array(next(train_iter), mesh)
        trace.before(done)
        state, step_metrics = compiled_train_step(state, batch)
        trace.after(done, state)
        progress.tick(done)
        history.append(step_metrics)
        here = position(done)  # The stream position after this step.
        last = done == config.num_train_steps
        evaluating = last or done % config.eval_every_steps == 0
        preempted = stop.received or checkpointer.reached_preemption(done)
        if (last or evaluating or preempted or
            done % config.checkpoint_every_steps == 0 or
            done % config.log_every_steps == 0):
          # The NaN guard: every step since the last fetch is checked before
          # this state can be evaluated or saved.
          means = monitoring.summarize(jax.device_get(history),
                                       done - len(history) + 1)
          history = []
          means.update(progress.measure(done))
          means['epoch'] = (here['epoch'] +
                            here['index'] / layout['examples_per_epoch'])
          memory = monitoring.device_memory_in_use()
          if memory is not None:
            means['device_memory_bytes'] = memory
          record.write_metrics(done, 'train', means)
          if writer:
            progress.clear()
            logging.info('%s', progress.line(done, means))
        best = None
        if evaluating:
          results.update(evaluate(done, eval_split))
          if best_tag in results:
            best = {best_metric: results[best_tag][best_metric]}
        # After an evaluation always, so the best checkpoint is one of them.
        checkpointer.save(done, state, here, metrics=best,
                          force=last or preempted or best is not None)
        if preempted:
          logging.warning(
              'Stop requested (%s): saved step %d and stopping. Re-run the '
              'same command to resume.', stop.received or 'preemption', done)
          return {}

    final_step = int(state.step)
    for split in [eval_split] + list(config.data.final_eval_splits):
      if split in results:
        continue
      if split not in builder.info.splits:  # E.g. CamVid without test/.
        logging.info('No %r split in %s; not evaluated.', split,
                     config.data.name)
        continue
      results.update(evaluate(final_step, split))
    return results
  finally:
    trace.close()
    progress.clear()
    checkpointer.close()
    record.close()
