"""Joint augmentation of an image and its label maps, built from a spec string.

A spec names ops in a small big_vision-like language, applied left to right:

  build('scale(0.5, 2.0)|crop(512, 1024)|flip_lr|rotate(10)|'
        'jitter(0.2, 0.2, 0.2, 0.05)')

Arguments are Python literals, positional or keyword (`flip_lr(p=0.5)`); a
list of such strings is the same as joining them with '|'; '' / None / []
is the identity. A bad spec is a `ConfigError` at build time, naming the op.

Every op moves 'image' [H, W, 3] uint8, 'labels' [H, W] (255 = ignore) and
'instances' [H, W] int32 (0 = none) together from one stateless seed, so
they stay aligned; label maps are never interpolated. The ops and their
conventions are in `augment_ops`; `OPS` is the registry, open to additions:

  OPS['my_op'] = lambda *args: fn  # fn(example, seed) -> example
"""

import ast
import inspect
import re

from segjax.data import augment_ops
from segjax.data import augment_warp
from segjax.data.tf_host import tf
from segjax.errors import ConfigError

OPS = {
    'scale': augment_ops.scale,
    'resize': augment_ops.resize,
    'crop': augment_ops.crop,
    'pad': augment_ops.pad,
    'center_crop': augment_ops.center_crop,
    'flip_lr': augment_ops.flip_lr,
    'rotate': augment_ops.rotate,
    'jitter': augment_ops.jitter,
    'normalize': augment_ops.normalize,
}

_OP_RE = re.compile(r'([A-Za-z_]\w*)\s*(?:\((.*)\))?', re.DOTALL)


def _split(spec):
  """The op strings of `spec`, split on '|' outside brackets and quotes."""
  if spec is None:
    return []
  if isinstance(spec, (list, tuple)):
    return [op for part in spec for op in _split(part)]
  if not isinstance(spec, str):
    raise ConfigError(f'augment spec must be a string or a list of strings, '
                      f'got {spec!r}.')
  ops, depth, quote, start = [], 0, None, 0
  for i, c in enumerate(spec):
    if quote:
      quote = None if c == quote else quote
    elif c in '\'"':
      quote = c
    elif c in '([{':
      depth += 1
    elif c in ')]}':
      depth -= 1
    elif c == '|' and depth == 0:
      ops.append(spec[start:i])
      start = i + 1
  ops.append(spec[start:])
  return [op.strip() for op in ops if op.strip()]


def _parse(text):
  """'name(1, p=0.5)' -> ('name', (1,), {'p': 0.5}); raises ConfigError."""
  def error(why):
    return ConfigError(f'augment op {text!r}: {why}. Known ops: '
                       f'{", ".join(sorted(OPS))}.')

  match = _OP_RE.fullmatch(text)
  if not match:
    raise error('expected name or name(args)')
  name, args = match.group(1), match.group(2)
  if name not in OPS:
    raise error(f'unknown op {name!r}')
  if not args or not args.strip():
    return name, (), {}
  try:
    call = ast.parse(f'f({args})', mode='eval').body
    if any(isinstance(a, ast.Starred) for a in call.args) or any(
        k.arg is None for k in call.keywords):
      raise ValueError('*args and **kwargs are not allowed')
    return name, tuple(ast.literal_eval(a) for a in call.args), {
        k.arg: ast.literal_eval(k.value) for k in call.keywords}
  except (SyntaxError, ValueError, TypeError) as e:
    raise error(f'arguments must be Python literals ({e})') from None


def _make(text):
  """(name, fn, geometry or None) of one op string; bad arguments raise
  ConfigError."""
  name, args, kwargs = _parse(text)
  factory = OPS[name]
  try:
    fn = factory(*args, **kwargs)
  except (TypeError, ValueError) as e:
    try:
      signature = f'{name}{inspect.signature(factory)}'
    except (TypeError, ValueError):  # Builtins may have none.
      signature = name
    raise ConfigError(f'augment op {text!r}: {e}; expected {signature}. '
                      f'Known ops: {", ".join(sorted(OPS))}.') from None
  geometry = None
  if factory is getattr(augment_ops, name, None) and (
      name in augment_warp.GEOMETRY):  # Not when a user replaced the op.
    geometry = augment_warp.GEOMETRY[name](*args, **kwargs)
  return fn, geometry


def _stages(ops, fuse):
  """Groups ops into stages: runs of 2+ geometric ops become one warp.

  Returns:
    [(fn, positions)]: fn(example, seeds) and the op positions whose seeds
    it takes.
  """
  stages, run = [], []

  def close_run():
    if len(run) >= 2:
      stages.append((augment_warp.fused([g for _, g in run]),
                     [i for i, _ in run]))
    elif run:
      i = run[0][0]
      stages.append((lambda ex, seeds, f=ops[i][0]: f(ex, seeds[0]), [i]))
    run.clear()

  for i, (fn, geometry) in enumerate(ops):
    if fuse and geometry is not None:
      run.append((i, geometry))
      continue
    close_run()
    stages.append((lambda ex, seeds, f=fn: f(ex, seeds[0]), [i]))
  close_run()
  return stages


def build(spec, fuse=True):
  """Builds the augmentation that `spec` describes.

  Args:
    spec: op string(s), e.g. 'scale(0.5, 2.0)|crop(512, 512)|flip_lr', or a
      list of them; '' / None / [] mean no augmentation.
    fuse: apply each run of two or more geometric ops (scale, resize, crop,
      pad, center_crop, flip_lr, rotate) as one warp (`augment_warp`): the
      same pixel movements and label maps, 3-4x faster; the image is
      interpolated once (antialiased first when the run shrinks it).

  Returns:
    fn(example, seed) -> example. `example` is a dict with 'image'
    [H, W, 3] uint8 and optionally 'labels' [H, W] uint8/int32 and
    'instances' [H, W] int32; `seed` is a [2] int32/int64 stateless seed.
    Op i uses stateless_fold_in(seed, i), so the output is a pure function of
    (example, seed), eagerly and inside tf.data alike. Keys and dtypes are
    kept (but `normalize` makes the image float32); shapes follow the ops.

  Raises:
    ConfigError: an unknown op or bad arguments, naming the op text.
  """
  stages = _stages([_make(text) for text in _split(spec)], fuse)

  @tf.autograph.experimental.do_not_convert
  def augment(example, seed):
    seed = tf.convert_to_tensor(seed)
    for fn, positions in stages:
      seeds = [tf.random.experimental.stateless_fold_in(seed, i)
               for i in positions]
      example = fn(example, seeds)
    return dict(example)

  return augment


# Ops whose output depends on the example alone (no seed) and that keep
# uint8 images: what `build_deterministic` accepts.
DETERMINISTIC = ('resize', 'pad', 'center_crop')


def build_deterministic(spec, field):
  """fn(example) -> example of a seedless spec, or None when it is empty.

  For work done once per example before the cache, e.g. the training
  split's `config.data.train_preprocess = 'resize(180, 240)'`: the random
  ops after it (`config.data.augment`) then start from the small image
  instead of interpolating the full one on every visit.

  Args:
    spec: op string(s) of `DETERMINISTIC` ops; '' / None / [] -> None.
    field: the config field that holds it, for errors.

  Raises:
    ConfigError: a random or dtype-changing op, or a bad op, naming `field`.
  """
  try:
    texts = _split(spec)
    for text in texts:
      if _parse(text)[0] not in DETERMINISTIC:
        raise ConfigError(
            f'op {text!r} is not one of {", ".join(DETERMINISTIC)} '
            '(random ops belong in config.data.augment).')
    fn = build(texts) if texts else None
  except ConfigError as e:  # Name the field: the same ops can sit in two.
    raise ConfigError(f'{field}: {e}') from None
  if fn is None:
    return None
  seed = tf.constant([0, 0], tf.int64)  # Unused by these ops.
  return tf.autograph.experimental.do_not_convert(
      lambda example: fn(example, seed))
