"""Optimizer and learning-rate schedule from `config.optimizer`/`schedule`.

config.optimizer:
  name: 'adamw' | 'sgd'.
  learning_rate: peak learning rate.
  weight_decay: decoupled for AdamW (optax.adamw), L2 added to the gradient
    for SGD (as PyTorch's SGD); applied to kernels only, never to biases or
    normalisation scales and offsets (every 1-D parameter).
  momentum, nesterov: SGD. b1, b2: AdamW.
  grad_clip_norm: clip gradients by global norm (0 = off); the norm is taken
    over the trainable parameters only.
  freeze: regexes over parameter paths ('backbone/stage1/.*'); matching
    parameters get no update and no optimizer state (bit-identical after
    any number of steps).
  lr_multipliers: ((regex, factor), ...): the learning rate of matching
    parameters is scaled, e.g. (('backbone/.*', 0.1),) when fine-tuning;
    the first matching pattern wins. (Pairs, not a dict: ConfigDict keys
    cannot hold the dots of a regex.)
config.schedule:
  name: 'cosine' | 'poly' | 'step' | 'constant', after `warmup_steps` of
    linear warm-up from 0.
  power: poly (DeepLab's 0.9). end_factor: final lr / peak (cosine, poly).
  boundaries, decay_factor: step; the lr is multiplied by decay_factor at
    each boundary (steps counted from the start of training).

A parameter's path is its key path in the params tree joined by '/', e.g.
'backbone/stage1_block0/conv1/kernel'; `param_paths(params)` lists them.
"""

import re

import flax
import jax
import optax

from segjax.errors import ConfigError

_FROZEN = '__frozen__'


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
  elif name == 'step':
    # Boundaries are training steps; join_schedules counts from the end of
    # warm-up, so shift them.
    boundaries = [int(b) - warmup for b in sched.get('boundaries', ())]
    if any(b <= 0 for b in boundaries):
      raise ConfigError(f'config.schedule.boundaries={sched.boundaries} must '
                        f'lie after warmup_steps={warmup}.')
    main = optax.piecewise_constant_schedule(
        peak, {b: sched.get('decay_factor', 0.1) for b in boundaries})
  elif name == 'constant':
    main = optax.constant_schedule(peak)
  else:
    raise ConfigError(f"config.schedule.name={name!r}: choose 'cosine', "
                      "'poly', 'step' or 'constant'.")
  if not warmup:
    return main
  return optax.join_schedules(
      [optax.linear_schedule(0.0, peak, warmup), main], [warmup])


def param_paths(params):
  """{path: leaf} of a params tree, paths joined by '/'."""
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params), sep='/')
  return dict(sorted(flat.items()))


def _labels(params, freeze, multipliers):
  """Per-leaf label: _FROZEN, 'lr_<i>' (multiplier i) or 'default'."""
  patterns = [(re.compile(p), _FROZEN) for p in freeze] + [
      (re.compile(p), f'lr_{i}') for i, p in enumerate(multipliers)]

  def label(path):
    for pattern, name in patterns:
      if pattern.fullmatch(path):
        return name
    return 'default'

  flat = {tuple(k.split('/')): label(k) for k in param_paths(params)}
  return flax.traverse_util.unflatten_dict(flat)


def _check_patterns(params, freeze, multipliers):
  paths = list(param_paths(params))
  for field, patterns in (('freeze', freeze), ('lr_multipliers',
                                                list(multipliers))):
    for p in patterns:
      try:
        regex = re.compile(p)
      except re.error as e:
        raise ConfigError(f'config.optimizer.{field}: bad regex {p!r}: '
                          f'{e}.') from e
      if not any(regex.fullmatch(path) for path in paths):
        raise ConfigError(
            f'config.optimizer.{field}: {p!r} matches no parameter; paths '
            f'look like {paths[:3]} (see optimizer.param_paths).')


def _decay_mask(params):
  # Decay kernels (ndim > 1) only: biases and norm scales/offsets are 1-D.
  return jax.tree.map(lambda p: p.ndim > 1, params)


def _base(opt, learning_rate):
  name = opt.get('name', 'adamw')
  if name == 'adamw':
    return optax.adamw(learning_rate, b1=opt.get('b1', 0.9),
                       b2=opt.get('b2', 0.999),
                       weight_decay=opt.get('weight_decay', 0.0),
                       mask=_decay_mask)
  if name == 'sgd':
    return optax.chain(
        optax.add_decayed_weights(opt.get('weight_decay', 0.0), _decay_mask),
        optax.sgd(learning_rate, momentum=opt.get('momentum', 0.9),
                  nesterov=opt.get('nesterov', False)))
  raise ConfigError(f"config.optimizer.name={name!r}: choose 'adamw' or "
                    "'sgd'.")


def build_optimizer(config, num_steps, params=None):
  """Returns (optax transformation, schedule).

  Args:
    config: the experiment config (reads `optimizer` and `schedule`).
    num_steps: training steps (for decaying schedules).
    params: the params tree (or its abstract shapes); needed when `freeze`
      or `lr_multipliers` are set, to check every pattern matches something.
  """
  opt = config.optimizer
  schedule = build_schedule(config, num_steps)
  freeze = tuple(opt.get('freeze', ()) or ())
  multipliers = opt.get('lr_multipliers', ()) or ()
  if hasattr(multipliers, 'items'):
    multipliers = multipliers.items()
  try:
    multipliers = {str(p): float(f) for p, f in multipliers}
  except (TypeError, ValueError) as e:
    raise ConfigError(
        'config.optimizer.lr_multipliers must be (regex, factor) pairs, got '
        f'{opt.get("lr_multipliers")!r}.') from e
  if (freeze or multipliers) and params is None:
    raise ValueError('build_optimizer needs params to freeze or scale.')
  if freeze or multipliers:
    _check_patterns(params, freeze, multipliers)
    transforms = {'default': _base(opt, schedule), _FROZEN: optax.set_to_zero()}
    for i, factor in enumerate(multipliers.values()):
      transforms[f'lr_{i}'] = _base(
          opt, lambda step, f=float(factor): f * schedule(step))
    tx = optax.multi_transform(
        transforms, lambda p: _labels(p, freeze, multipliers))
  else:
    tx = _base(opt, schedule)
  clip = opt.get('grad_clip_norm', 0.0)
  if clip:
    if freeze:  # Frozen gradients must not shrink the trainable ones.
      clip_tx = optax.masked(
          optax.clip_by_global_norm(clip),
          lambda p: jax.tree.map(lambda l: l != _FROZEN,
                                 _labels(p, freeze, multipliers)))
    else:
      clip_tx = optax.clip_by_global_norm(clip)
    tx = optax.chain(clip_tx, tx)
  return tx, schedule
