"""The pure train step. Jitting and sharding happen in `train.py`.

It takes the whole state and a global batch and returns new values; nothing
is read from or written to anywhere else, so the same function runs on one
device or many, and `jax.jit` with shardings does the distribution.
"""

import jax
import jax.numpy as jnp
import optax

from segjax.models.inputs import model_inputs


def _micro_batches(x, k):
  """[B, ...] -> [k, B // k, ...], micro-batch i = rows i, i + k, ...

  Strided rather than contiguous: with B split over devices in contiguous
  blocks, every micro-batch then holds rows of every device, so each one is
  still data-parallel and the reshape moves no data between devices.
  """
  return x.reshape((x.shape[0] // k, k) + x.shape[1:]).swapaxes(0, 1)


def make_train_step(model, tx, loss_fn, schedule, *, metrics_fn=None,
                    accum_steps=1, aux_loss_weight=0.0, ema_decay=0.0):
  """Builds `train_step(state, batch) -> (state, metrics)`.

  Args:
    model: Flax module mapping [B, H, W, 3] float images to [B, H, W, C]
      logits, with a `train` argument. Its `dtype` sets the compute
      precision (e.g. bfloat16); logits are cast to float32 before the loss.
    tx: optax transformation.
    loss_fn: `(outputs, batch) -> (total, {name: term})` where outputs are
      the model's float32 outputs (logits, or Panoptic-DeepLab's dict) and
      batch the whole batch dict; e.g. `segjax.losses.build_loss` (which
      reads batch['labels']) or `segjax.losses.build_panoptic_loss`.
    schedule: `step -> learning rate`, only for logging.
    metrics_fn: `(outputs, batch) -> {name: (numerator, denominator)}`,
      the task's train metrics (`Task.train_metrics`), logged as
      numerator / max(denominator, 1) over the whole batch.
    accum_steps: split the batch into this many micro-batches, run them one
      after another (`lax.scan`) and apply the mean of their gradients in one
      update: the memory of a micro-batch, the update of the whole batch.
      Batch-norm statistics are those of each micro-batch, updated in turn.
    aux_loss_weight: weight of the loss on the auxiliary head's logits (a
      model that sows 'aux_logits' into 'intermediates', e.g. FCN with
      `aux_head=True`); 0 = not computed.
    ema_decay: the state's `ema_params` / `ema_batch_stats` become
      d * ema + (1 - d) * new after each update, with
      d = min(ema_decay, (1 + step) / (10 + step)); 0 = no EMA.

  The batch holds 'image' [B, H, W, 3] uint8 (or float32, already
  normalised), 'labels' [B, H, W] int32 and whatever else the loss reads
  (e.g. Panoptic-DeepLab's targets), every entry [B, ...]. Metrics are float32 scalars:
  'loss', each loss term ('loss_<name>', 'loss_aux'), 'learning_rate',
  'grad_norm', 'param_norm', 'update_norm', and those of `metrics_fn`
  (e.g. 'pixel_accuracy' over non-ignored pixels).
  """
  mutable = ['batch_stats'] + (['intermediates'] if aux_loss_weight else [])

  def loss_of(params, batch_stats, batch, rng):
    outputs, new_vars = model.apply(
        {'params': params, 'batch_stats': batch_stats},
        model_inputs(batch['image']), train=True, mutable=mutable,
        rngs={'dropout': rng})
    # Losses and metrics in float32 whatever the compute dtype.
    outputs = jax.tree.map(lambda x: x.astype(jnp.float32), outputs)
    total, terms = loss_fn(outputs, batch)
    terms = {f'loss_{k}': v for k, v in terms.items()}
    if aux_loss_weight:
      aux_logits = new_vars['intermediates']['aux_logits'][0]
      aux_total, _ = loss_fn(aux_logits.astype(jnp.float32), batch)
      terms['loss_aux'] = aux_total
      total = total + aux_loss_weight * aux_total
    counts = metrics_fn(outputs, batch) if metrics_fn else {}
    return total, (terms, new_vars.get('batch_stats', {}), counts)

  grad_fn = jax.value_and_grad(loss_of, has_aux=True)

  def train_step(state, batch):
    # A fresh key per step; deterministic in (seed, step), so a resumed run
    # draws the same dropout masks as an uninterrupted one.
    step_rng = jax.random.fold_in(state.rng, state.step)
    if accum_steps == 1:
      (loss, (terms, batch_stats, counts)), grads = grad_fn(
          state.params, state.batch_stats, batch, step_rng)
    else:
      def micro(carry, xs):
        grads_sum, batch_stats = carry
        i, micro_batch = xs
        (loss, (terms, batch_stats, counts)), grads = grad_fn(
            state.params, batch_stats, micro_batch,
            jax.random.fold_in(step_rng, i))
        grads_sum = jax.tree.map(jnp.add, grads_sum, grads)
        return (grads_sum, batch_stats), (loss, terms, counts)

      zeros = jax.tree.map(jnp.zeros_like, state.params)
      (grads, batch_stats), (losses, terms, counts) = jax.lax.scan(
          micro, (zeros, state.batch_stats),
          (jnp.arange(accum_steps),
           jax.tree.map(lambda x: _micro_batches(x, accum_steps), batch)))
      grads = jax.tree.map(lambda g: g / accum_steps, grads)
      loss = losses.mean()
      terms = jax.tree.map(jnp.mean, terms)
      counts = jax.tree.map(jnp.sum, counts)

    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(step=state.step + 1, params=params,
                              batch_stats=batch_stats, opt_state=opt_state)
    if ema_decay:
      # Warm-up as TF's ExponentialMovingAverage(num_updates=step): early
      # averages forget the random initialisation quickly (with a constant
      # 0.999, 13% of the initial weights would remain after 2000 steps).
      step = state.step.astype(jnp.float32)
      decay = jnp.minimum(ema_decay, (1 + step) / (10 + step))

      def ema(old, new):
        return jax.tree.map(lambda o, n: decay * o + (1 - decay) * n, old,
                            new)
      new_state = new_state.replace(
          ema_params=ema(state.ema_params, params),
          ema_batch_stats=ema(state.ema_batch_stats, batch_stats))
    step_metrics = {
        'loss': loss,
        **terms,
        'learning_rate': jnp.asarray(schedule(state.step), jnp.float32),
        'grad_norm': optax.tree.norm(grads),
        'param_norm': optax.tree.norm(params),
        'update_norm': optax.tree.norm(updates),
        **{name: num / jnp.maximum(den, 1)
           for name, (num, den) in counts.items()},
    }
    return new_state, step_metrics

  return train_step
