"""Orbax checkpoints of the train state, behind one small class.

Saves are asynchronous (training continues while the arrays are written);
every N steps, on preemption where the platform signals it, and on demand
(`force=True`, used for the last step). Restores go straight into the target
shardings from an abstract state, so a model never materialises unsharded.
A checkpoint is a folder `<workdir>/checkpoints/<step>/` that Orbax writes
under a temporary name and renames when complete, so a killed run leaves
either a whole checkpoint or none.
"""

from absl import logging
from etils import epath
import orbax.checkpoint as ocp

_policies = ocp.checkpoint_managers


class Checkpointer:
  """Saves and restores `TrainState`s in `directory`.

  Args:
    directory: folder of the checkpoints (local path or gs://...).
    every_steps: save when step % every_steps == 0.
    keep: how many of the latest checkpoints to keep.
  """

  def __init__(self, directory, every_steps, keep):
    self.directory = epath.Path(directory)
    options = ocp.CheckpointManagerOptions(
        save_decision_policy=_policies.AnySavePolicy([
            _policies.FixedIntervalPolicy(int(every_steps)),
            _policies.PreemptionCheckpointingPolicy(),
        ]),
        preservation_policy=_policies.LatestN(int(keep)),
        enable_async_checkpointing=True,
        cleanup_tmp_directories=True,
    )
    self._manager = ocp.CheckpointManager(
        self.directory, options=options, item_names=('state',))

  def latest_step(self):
    """The step of the newest complete checkpoint, or None."""
    return self._manager.latest_step()

  def save(self, step, state, force=False):
    """Starts an async save if the policy (or `force`) says so.

    Returns:
      True if a save was started.
    """
    saved = self._manager.save(
        int(step), args=ocp.args.Composite(state=ocp.args.StandardSave(state)),
        force=force)
    if saved:
      logging.info('Saving checkpoint at step %d to %s', step, self.directory)
    return saved

  def restore(self, step, abstract_state):
    """Reads checkpoint `step` into the shapes, dtypes and shardings given.

    Args:
      step: the checkpoint's step.
      abstract_state: pytree of `jax.ShapeDtypeStruct`s with shardings.
    """
    restored = self._manager.restore(
        int(step),
        args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))
    return restored['state']

  def reached_preemption(self, step):
    return self._manager.reached_preemption(int(step))

  def close(self):
    """Waits for pending saves, then releases the manager (idempotent)."""
    if self._manager is not None:
      self._manager.wait_until_finished()
      self._manager.close()
      self._manager = None
