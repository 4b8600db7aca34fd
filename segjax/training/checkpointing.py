"""Orbax checkpoints of the train state, behind one small class.

A checkpoint `<workdir>/checkpoints/<step>/` holds two items:
  state  the whole `TrainState` (params, batch statistics, optimizer and EMA
         state, step, rng), restored straight into the target shardings from
         an abstract state, so a model never materialises unsharded and a
         run may resume on a different number of devices;
  data   the input stream's position: {'epoch', 'index'} plus what the
         position depends on (examples per epoch, local batch, processes,
         data seed), as JSON.
Saves are asynchronous (training continues while the arrays are written):
every N steps, on preemption (Orbax's policy where the platform signals it;
SIGTERM is handled by the training loop, which forces a save), after each
evaluation (with its metrics, for the best-N policy) and on demand. Kept:
the last `keep`, plus the best `keep_best` by a validation metric. Orbax
writes a checkpoint under a temporary name and renames it when complete.

A checkpoint that cannot be read (truncated files, a half-copied folder) is
moved aside to `<step>.corrupt` with a warning naming it, and the previous
one is used; one whose arrays do not fit the model (a changed config) is a
`ConfigError` and stays where it is.
"""

from absl import logging
from etils import epath
import jax
import orbax.checkpoint as ocp

from segjax.errors import ConfigError

_policies = ocp.checkpoint_managers


def _names(path):
  """A key path as plain names: dataclass fields and dict keys alike (the
  state is a dataclass in memory, nested dicts in the metadata)."""
  return tuple(str(getattr(k, 'name', getattr(k, 'key', getattr(k, 'idx', k))))
               for k in path)


class Checkpointer:
  """Saves and restores `TrainState`s and stream positions in `directory`.

  Args:
    directory: folder of the checkpoints (local path or gs://...).
    every_steps: save when step % every_steps == 0.
    keep: how many of the latest checkpoints to keep.
    best_metric: name of a metric passed to `save(metrics=...)` to rank
      checkpoints by (e.g. 'miou'); None keeps no best checkpoints.
    keep_best: how many of the best to keep besides the latest.
    best_mode: 'max' (higher is better) or 'min'.
  """

  def __init__(self, directory, every_steps, keep, best_metric=None,
               keep_best=0, best_mode='max'):
    self.directory = epath.Path(directory)
    self.best_metric = best_metric if keep_best else None
    preservation = [_policies.LatestN(int(keep))]
    if self.best_metric:
      if best_mode not in ('max', 'min'):
        raise ConfigError(f"config.best_checkpoint_mode={best_mode!r}: "
                          "'max' or 'min'.")
      preservation.append(_policies.BestN(
          get_metric_fn=lambda metrics: metrics[best_metric],
          # BestN keeps the *last* n after sorting: ascending for 'max'.
          reverse=best_mode == 'min', n=int(keep_best),
          # Saves between evaluations carry no metrics; LatestN rules them.
          keep_checkpoints_without_metrics=False))
    options = ocp.CheckpointManagerOptions(
        save_decision_policy=_policies.AnySavePolicy([
            _policies.FixedIntervalPolicy(int(every_steps)),
            _policies.PreemptionCheckpointingPolicy(),
        ]),
        preservation_policy=_policies.AnyPreservationPolicy(preservation),
        enable_async_checkpointing=True,
        cleanup_tmp_directories=True,
    )
    self._manager = ocp.CheckpointManager(
        self.directory, options=options,
        # Handlers up front, so metadata can be read before a restore.
        item_handlers={'state': ocp.StandardCheckpointHandler(),
                       'data': ocp.JsonCheckpointHandler()})

  def latest_step(self):
    """The step of the newest complete checkpoint, or None."""
    return self._manager.latest_step()

  def best_step(self):
    """The step of the best checkpoint by `best_metric`, or None."""
    return self._manager.best_step() if self.best_metric else None

  def save(self, step, state, position, metrics=None, force=False):
    """Starts an async save if the policy (or `force`) says so.

    Args:
      step: the state's step.
      state: the TrainState.
      position: JSON-able dict of the input stream's position.
      metrics: {name: float} of an evaluation at this step, for best-N.
      force: save whatever the interval.

    Returns:
      True if a save was started.
    """
    if metrics is not None:
      metrics = {k: float(v) for k, v in metrics.items()}
    saved = self._manager.save(
        int(step), args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave(position)),
        metrics=metrics, force=force)
    if saved:
      logging.info('Saving checkpoint at step %d to %s', step, self.directory)
    return saved

  def _check_fits(self, step, abstract_state):
    """ConfigError if checkpoint `step`'s arrays differ from the model's."""
    saved = self._manager.item_metadata(step)['state']
    saved = getattr(saved, 'tree', saved)
    flat = {_names(p): leaf for p, leaf in
            jax.tree_util.tree_flatten_with_path(saved)[0]}
    for path, leaf in jax.tree_util.tree_flatten_with_path(abstract_state)[0]:
      meta = flat.get(_names(path))
      shape = None if meta is None else tuple(getattr(meta, 'shape', ()))
      if shape != tuple(leaf.shape):
        raise ConfigError(
            f'Checkpoint {self.directory / str(step)} does not fit the '
            f'model: {"/".join(_names(path))} is {shape} there, '
            f'{tuple(leaf.shape)} now. Did the config change? Use a new '
            'workdir, or config.model_init to start from it.')

  def restore_latest(self, abstract_state):
    """(step, state, position) of the newest readable checkpoint, or None.

    Unreadable checkpoints are moved aside (`<step>.corrupt`) with a
    warning, and the one before is tried.

    Args:
      abstract_state: pytree of `jax.ShapeDtypeStruct`s with shardings.
    """
    while (step := self._manager.latest_step()) is not None:
      try:
        self._check_fits(step, abstract_state)
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            data=ocp.args.JsonRestore()))
        return step, restored['state'], dict(restored['data'])
      except ConfigError:
        raise
      except Exception as e:  # pylint: disable=broad-except  (any I/O error)
        self._move_aside(step, e)
    return None

  def _move_aside(self, step, error):
    source = self.directory / str(step)
    target = self.directory / f'{step}.corrupt'
    n = 1
    while target.exists():
      n += 1
      target = self.directory / f'{step}.corrupt{n}'
    source.rename(target)
    logging.warning(
        'Checkpoint %s cannot be read (%s: %s); moved it to %s and trying '
        'the previous one.', source, type(error).__name__,
        str(error).splitlines()[0][:300] if str(error) else '', target)
    self._manager.reload()

  def reached_preemption(self, step):
    return self._manager.reached_preemption(int(step))

  def close(self):
    """Waits for pending saves, then releases the manager (idempotent)."""
    if self._manager is not None:
      self._manager.wait_until_finished()
      self._manager.close()
      self._manager = None
