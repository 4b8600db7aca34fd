"""Reads what a run saved, straight through Orbax, for tests.

Independent of segjax's own restore path (`segjax/training/checkpointing.py`,
which needs the model to build a target): the saved tree comes back as
NumPy arrays, whatever the saving run's devices were.
"""

import jax
import numpy as np
import orbax.checkpoint as ocp


def read_state(workdir, step):
  """The TrainState saved at `step` in `workdir`, as nested dicts of NumPy."""
  item = str(workdir / 'checkpoints' / str(step) / 'state')
  checkpointer = ocp.PyTreeCheckpointer()
  tree = checkpointer.metadata(item).item_metadata.tree
  return checkpointer.restore(item, restore_args=jax.tree.map(
      lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree))
