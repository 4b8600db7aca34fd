"""A run's predict function for one input shape, for `jax.export`.

`serving_fn` is what `python -m segjax.export` (segjax/export.py: the file
format and how to reload it) serialises and `python -m segjax.bench latency`
times: normalisation, the run's evaluation resize and back, the inference
mode of `config.inference`, then argmax (or panoptic post-processing; a
binary run's thresholded foreground: its instance post-processing runs on
the host, outside the exported program).
"""

from etils import epath
import jax
import jax.numpy as jnp

from segjax.errors import ConfigError
from segjax.evaluation import modes
from segjax.inference import run as run_lib
from segjax.models.inputs import normalize_images
from segjax.training import binary as binary_lib


def serving_fn(config, model, variables, spec, height, width,
               **inference_overrides):
  """`serve(images)` for one input size: uint8 [B, H, W, 3] -> labels.

  Shapes are fixed, so no bucket padding: the model sees the image (or its
  evaluation-size resize) itself. Labels are [B, H, W] int32: argmax
  classes, or a binary run's foreground (probability >= its threshold);
  a panoptic run returns `run.panoptic_predictions`' dict.
  """
  options = run_lib.inference_options(config, **inference_overrides)
  resize_to = run_lib.eval_size(config)
  size = resize_to or (height, width)

  task = binary_lib.task(config)
  if task != 'panoptic':
    binary = binary_lib.options(config, spec) if task == 'binary' else None
    probs_fn = modes.make_predict_fn(
        lambda v, x: model.apply(v, x, train=False),
        binary_lib.num_outputs(config, spec.num_classes),
        mode=options['mode'], window=options['window'],
        stride=options['stride'], scales=tuple(options['scales']),
        flip=bool(options['flip']),
        activation='softmax' if binary is None else 'sigmoid')

    def serve(images):
      x = run_lib.resize(normalize_images(images), size)
      mask = jnp.ones(x.shape[:3], bool)
      probs = run_lib.resize(probs_fn(variables, x, mask), (height, width))
      if binary is not None:
        return (probs[..., 0] >= binary['threshold']).astype(jnp.int32)
      return jnp.argmax(probs, -1).astype(jnp.int32)
    return serve

  def serve_panoptic(images):
    x = run_lib.resize(normalize_images(images), size)
    out = model.apply(variables, x, train=False)
    return run_lib.panoptic_predictions(out, (height, width), config, spec)
  return serve_panoptic


def export(workdir, output, *, height, width, batch=1, checkpoint='best',
           ema=False, platforms=None, overrides=()):
  """Writes the serialized predict function of a run; returns its path."""
  if min(height or 0, width or 0, batch or 0) < 1:
    raise ConfigError(f'height={height}, width={width}, batch={batch}: all '
                      'must be positive.')
  config = run_lib.load_config(workdir, overrides)
  spec = run_lib.run_spec(workdir, config)
  model = run_lib.build(config, spec)
  step = run_lib.resolve_step(workdir, config, checkpoint)
  variables = run_lib.load_variables(workdir, step, ema=ema)
  serve = serving_fn(config, model, variables, spec, height, width)
  exported = jax.export.export(
      jax.jit(serve), platforms=tuple(platforms) if platforms else None)(
          jax.ShapeDtypeStruct((batch, height, width, 3), jnp.uint8))
  path = epath.Path(output)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(bytes(exported.serialize()))
  return path
