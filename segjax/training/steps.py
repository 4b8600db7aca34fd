"""The pure train and eval steps. Jitting and sharding happen in `train.py`.

Both take the whole state and a global batch and return new values; nothing
is read from or written to anywhere else, so the same function runs on one
device or many, and `jax.jit` with shardings does the distribution.
"""

import jax
import jax.numpy as jnp
import optax

from segjax import metrics
from segjax.models.inputs import model_inputs


def make_train_step(model, tx, loss_fn, schedule):
  """Builds `train_step(state, batch) -> (state, metrics)`.

  Args:
    model: Flax module mapping [B, H, W, 3] float images to [B, H, W, C]
      logits, with a `train` argument.
    tx: optax transformation.
    loss_fn: `(logits, labels) -> (total, {name: term})`, e.g. from
      `segjax.losses.build_loss`.
    schedule: `step -> learning rate`, only for logging.

  The batch holds 'image' [B, H, W, 3] uint8 (or float32, already
  normalised) and 'labels' [B, H, W] int32.
  Metrics are float32 scalars: 'loss', each loss term, 'grad_norm',
  'learning_rate', and 'pixel_accuracy' over non-ignored pixels.
  """

  def train_step(state, batch):
    images = model_inputs(batch['image'])
    labels = batch['labels']
    # A fresh key per step; deterministic in (seed, step), so a resumed run
    # draws the same dropout masks as an uninterrupted one.
    step_rng = jax.random.fold_in(state.rng, state.step)

    def loss_of(params):
      logits, new_vars = model.apply(
          {'params': params, 'batch_stats': state.batch_stats}, images,
          train=True, mutable=['batch_stats'], rngs={'dropout': step_rng})
      total, terms = loss_fn(logits, labels)
      return total, (terms, new_vars.get('batch_stats', {}), logits)

    grad_fn = jax.value_and_grad(loss_of, has_aux=True)
    (loss, (terms, batch_stats, logits)), grads = grad_fn(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)

    num_classes = logits.shape[-1]
    valid = (labels >= 0) & (labels < num_classes)
    correct = (jnp.argmax(logits, -1) == labels) & valid
    metrics = {
        'loss': loss,
        **{f'loss_{k}': v for k, v in terms.items()},
        'grad_norm': optax.tree.norm(grads),
        'learning_rate': jnp.asarray(schedule(state.step), jnp.float32),
        'pixel_accuracy': correct.sum() / jnp.maximum(valid.sum(), 1),
    }
    new_state = state.replace(step=state.step + 1, params=params,
                              batch_stats=batch_stats, opt_state=opt_state)
    return new_state, metrics

  return train_step


def make_eval_step(model, num_classes, ignore_index):
  """Builds `eval_step(state, batch) -> (stats, predictions)`.

  The batch holds 'image' [B, H, W, 3] uint8, 'labels' [B, H, W] int32 and
  'mask' [B] bool (False on padding examples, which count nowhere).

  Returns:
    stats: {'confusion_matrix': [C, C] int32 (global sum over devices),
            'num_examples': int32 count of real examples}.
    predictions: [B, H, W] int32 argmax classes.
  """

  def eval_step(state, batch):
    images = model_inputs(batch['image'])
    logits = model.apply(
        {'params': state.params, 'batch_stats': state.batch_stats}, images,
        train=False)
    predictions = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    mask = batch['mask'][:, None, None]
    labels = jnp.where(mask, batch['labels'], ignore_index)
    cm = metrics.confusion_matrix(labels, predictions, num_classes,
                                  ignore_index=ignore_index)
    stats = {'confusion_matrix': cm,
             'num_examples': batch['mask'].sum().astype(jnp.int32)}
    return stats, predictions

  return eval_step
