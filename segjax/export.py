r"""Exports a trained run's predict function with `jax.export`.

  python -m segjax.export --workdir runs/camvid --output camvid.jaxexport \
      --height 360 --width 480 [--batch 1] [--checkpoint best] \
      [--platforms cpu,cuda] [--config.inference.flip=True]

The file holds the serialized StableHLO of one function with the weights
baked in as constants:

  uint8 images [batch, height, width, 3] -> int32 label maps [batch, height, width]

(Panoptic models: a dict of 'labels', 'panoptic', 'instance_ids' [B, H, W]
and 'scores', 'classes', 'valid' [B, top_k].) It is reloaded without segjax,
Flax or the checkpoint, by JAX alone:

  import jax
  serve = jax.export.deserialize(open('camvid.jaxexport', 'rb').read())
  labels = serve.call(images)

The function is the one `segjax.inference.load_run` uses: normalisation,
the run's evaluation resize (and back), and the inference mode of
`config.inference` (whole image, sliding window, scales and flip), for one
fixed input shape.
"""

import sys

from absl import app
from absl import flags

from segjax.errors import ConfigError
from segjax.inference import run as run_lib
from segjax.inference.export import export

_WORKDIR = flags.DEFINE_string('workdir', None, 'The trained run.')
_OUTPUT = flags.DEFINE_string('output', None, 'The file to write.')
_HEIGHT = flags.DEFINE_integer('height', None, 'Input height.')
_WIDTH = flags.DEFINE_integer('width', None, 'Input width.')
_BATCH = flags.DEFINE_integer('batch', 1, 'Input batch size.')
_CHECKPOINT = flags.DEFINE_string('checkpoint', 'best',
                                  "'best', 'latest' or a step number.")
_EMA = flags.DEFINE_bool('ema', False, 'Export the EMA weights.')
_PLATFORMS = flags.DEFINE_list(
    'platforms', None, 'Platforms to lower for (cpu, cuda, rocm, tpu); '
    'default: this machine\'s.')

def main(argv):
  overrides = [a for a in argv[1:] if a.startswith('--config.')]
  rest = [a for a in argv[1:] if not a.startswith('--config.')]
  if rest:
    raise app.UsageError(f'Unexpected arguments: {rest}')
  for flag in (_WORKDIR, _OUTPUT, _HEIGHT, _WIDTH):
    if flag.value is None:
      raise app.UsageError(f'--{flag.name} is required.')
  try:
    path = export(_WORKDIR.value, _OUTPUT.value, height=_HEIGHT.value,
                  width=_WIDTH.value, batch=_BATCH.value,
                  checkpoint=_CHECKPOINT.value, ema=_EMA.value,
                  platforms=_PLATFORMS.value, overrides=overrides)
  except ConfigError as e:
    print(f'segjax.export: {e}', file=sys.stderr)
    return 2
  print(f'Wrote {path} ({path.stat().length / 2**20:.1f} MiB).')
  return 0


if __name__ == '__main__':
  app.run(main, flags_parser=run_lib.parse_flags)
