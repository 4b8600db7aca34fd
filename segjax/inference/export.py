"""A run's predict function for one input shape, for `jax.export`.

`serving_fn` is what `python -m segjax.export` (segjax/export.py: the file
format and how to reload it) serialises and `python -m segjax.bench latency`
times: normalisation, the run's evaluation resize and back, the inference
mode of `config.inference` (`segjax.evaluation.loop.make_forward`, the
function evaluation scores), then the task's post-processing and serving
outputs (`Task.export_outputs`: label maps, or a panoptic run's dict; a
binary run's instance post-processing runs on the host, outside the
exported program). Kernel formulations are chosen per platform when the
program is lowered, so an export for a platform holds that platform's.
"""

from etils import epath
import jax
import jax.numpy as jnp

from segjax import files
from segjax.errors import ConfigError
from segjax.inference import run as run_lib


def serving_fn(config, model, variables, task, height, width,
               **inference_overrides):
  """`serve(images)` for one input size: uint8 [B, H, W, 3] -> outputs.

  Shapes are fixed, so no bucket padding: the model sees the image (or its
  evaluation-size resize) itself.
  """
  forward, activated, _, _ = run_lib.forward_of(config, model, task,
                                                **inference_overrides)
  del height, width  # The traced input's shape is the only one served.

  def serve(images):
    return task.export_outputs(task.predict(
        forward(variables, images, None), activated))
  return serve


def export(workdir, output, *, height, width, batch=1, checkpoint='best',
           ema=False, platforms=None, overrides=()):
  """Writes the serialized predict function of a run; returns its path."""
  if min(height or 0, width or 0, batch or 0) < 1:
    raise ConfigError(f'height={height}, width={width}, batch={batch}: all '
                      'must be positive.')
  config, task, model = run_lib.load_model(workdir, overrides)
  step = run_lib.resolve_step(workdir, config, checkpoint)
  variables = run_lib.load_variables(workdir, step, ema=ema)
  serve = serving_fn(config, model, variables, task, height, width)
  exported = jax.export.export(
      jax.jit(serve), platforms=tuple(platforms) if platforms else None)(
          jax.ShapeDtypeStruct((batch, height, width, 3), jnp.uint8))
  path = epath.Path(output)
  path.parent.mkdir(parents=True, exist_ok=True)
  files.write_bytes(path, bytes(exported.serialize()))
  return path
