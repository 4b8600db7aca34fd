"""The `:tpu` variants of the full-size recipes: bfloat16 compute, batch
sizes per chip, the mesh, and an estimate of the step time.

A recipe's `tpu` variant keeps its global batch and schedule (the published
ones) and names the slice it is sized for; the batch then divides into a
whole number of examples per chip. Parameters, optimizer state and the loss
stay float32 (`config.model.dtype` is the compute dtype).

Step-time estimates in the recipes' docstrings are estimates, never
measured: train-step FLOPs as 3 x XLA's forward count (forward + backward,
the convention of `segjax.bench train_step`'s MFU), over the slice's
published bfloat16 peak, at 100% and at 40% of that peak (40% is a
typical model FLOP utilisation for convolutional networks; no segjax run
has measured it on a TPU).
"""

# Published dense bfloat16 peak per chip, FLOP/s (Google Cloud TPU system
# architecture pages: v4, v5e, v5p, v6e).
PEAK_BF16_FLOPS = {
    'v4': 275e12,
    'v5e': 197e12,
    'v5p': 459e12,
    'v6e': 918e12,
}


def apply(config, *, chips, per_chip_batch, eval_per_chip_batch=1,
          mesh=(('data', -1),)):
  """Turns `config` into its TPU variant, in place; returns it.

  Args:
    config: a recipe's full-size config.
    chips: JAX devices of the slice it is sized for (a v4-32 slice: 16).
    per_chip_batch: training examples per chip; `config.batch_size`
      becomes chips x per_chip_batch.
    eval_per_chip_batch: evaluation examples per chip.
    mesh: `config.mesh`; data parallel by default.

  Raises:
    ValueError if the batch does not match the recipe's global batch.
  """
  if config.batch_size != chips * per_chip_batch:
    raise ValueError(
        f'{chips} chips x {per_chip_batch} examples != the recipe\'s batch '
        f'{config.batch_size}.')
  config.model.dtype = 'bfloat16'
  config.eval_batch_size = chips * eval_per_chip_batch
  config.mesh = tuple(mesh)
  return config


def step_seconds(forward_flops_per_image, batch_size, chips, chip='v4',
                 utilisation=1.0):
  """Estimated seconds per train step (see the module docstring)."""
  return (3 * forward_flops_per_image * batch_size /
          (chips * PEAK_BF16_FLOPS[chip] * utilisation))
