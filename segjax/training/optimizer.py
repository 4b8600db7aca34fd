"""Optimizer and learning-rate schedule from `config.optimizer`/`schedule`.

config.optimizer: name ('adamw' | 'sgd'), learning_rate (peak),
  weight_decay (decoupled; applied to kernels only, never to biases or
  normalisation scales), momentum and nesterov (sgd), b1 and b2 (adamw),
  grad_clip_norm (0 = off).
config.schedule: name ('cosine' | 'poly' | 'constant'), warmup_steps (linear
  from 0), power (poly; DeepLab's 0.9), end_factor (final lr / peak lr).
"""

import jax
import optax

from segjax.errors import ConfigError


def build_schedule(config, num_steps):
  """`step -> learning rate` from `config.optimizer` and `config.schedule`."""
  peak = config.optimizer.learning_rate
  sched = config.schedule
  warmup = int(sched.get('warmup_steps', 0))
  decay_steps = max(num_steps - warmup, 1)
  end = peak * sched.get('end_factor', 0.0)
  name = sched.get('name', 'constant')
  if name == 'cosine':
    main = optax.cosine_decay_schedule(peak, decay_steps, alpha=end / peak
                                       if peak else 0.0)
  elif name == 'poly':
    main = optax.polynomial_schedule(peak, end, sched.get('power', 0.9),
                                     decay_steps)
  elif name == 'constant':
    main = optax.constant_schedule(peak)
  else:
    raise ConfigError(f"config.schedule.name={name!r}: choose 'cosine', "
                      "'poly' or 'constant'.")
  if not warmup:
    return main
  return optax.join_schedules(
      [optax.linear_schedule(0.0, peak, warmup), main], [warmup])


def _decay_mask(params):
  # Decay kernels (ndim > 1) only: biases and norm scales/offsets are 1-D.
  return jax.tree.map(lambda p: p.ndim > 1, params)


def build_optimizer(config, num_steps):
  """Returns (optax transformation, schedule)."""
  opt = config.optimizer
  schedule = build_schedule(config, num_steps)
  name = opt.get('name', 'adamw')
  if name == 'adamw':
    tx = optax.adamw(schedule, b1=opt.get('b1', 0.9), b2=opt.get('b2', 0.999),
                     weight_decay=opt.get('weight_decay', 0.0),
                     mask=_decay_mask)
  elif name == 'sgd':
    tx = optax.chain(
        optax.add_decayed_weights(opt.get('weight_decay', 0.0), _decay_mask),
        optax.sgd(schedule, momentum=opt.get('momentum', 0.9),
                  nesterov=opt.get('nesterov', False)))
  else:
    raise ConfigError(f"config.optimizer.name={name!r}: choose 'adamw' or "
                      "'sgd'.")
  clip = opt.get('grad_clip_norm', 0.0)
  if clip:
    tx = optax.chain(optax.clip_by_global_norm(clip), tx)
  return tx, schedule
