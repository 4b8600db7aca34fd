r"""Runs a trained checkpoint on your own images.

  python -m segjax.predict --workdir runs/camvid --input photo.jpg,more/ \
      --output preds/ [--checkpoint best|latest|STEP] [--ema]
      [--max_pixels 64000000] [--config.inference.flip=True ...]

For each image (any size; grayscale, palette, RGBA, 16-bit and CMYK are
converted to RGB, EXIF orientation applied) it writes, under --output:
  <stem>_labels.png    class ids (8-bit, 16-bit above 255 classes)
  <stem>_color.png     the class colours
  <stem>_overlay.png   the image blended with the colours
and for panoptic models also
  <stem>_panoptic.png        COCO panoptic format (id = R + 256 G + 256^2 B)
  <stem>_panoptic.json       its segments (category_id = segjax class id)
  <stem>_panoptic_color.png  each instance its own shade of its class colour
One --input (a folder or a file) writes straight into --output; several
(`--input x,y`) write into a subfolder per input folder (a file's: its
parent folder): x/a.png -> preds/x/a_labels.png, y/a.png ->
preds/y/a_labels.png; two input folders of the same name get x and x_2.
Images of the same stem in one folder (a.png, a.jpg) get a and a_jpg. No
two inputs ever share an output file (segjax/inference/predict.py has the
rules). An image over --max_pixels is refused before decoding
(decompression bombs); an unreadable file is reported and skipped; the
others still complete. Exit status 0 when every image was written, 1 when
some failed, 2 for a bad workdir, input, output (e.g. an existing file) or
flag.
"""

import sys

from absl import app
from absl import flags

from segjax.errors import ConfigError
from segjax.errors import DataError
from segjax.inference import run as run_lib
from segjax.inference.predict import predict

_WORKDIR = flags.DEFINE_string('workdir', None, 'The trained run.')
_INPUT = flags.DEFINE_list('input', None, 'Image files and/or folders.')
_OUTPUT = flags.DEFINE_string('output', None, 'Folder for the predictions.')
_CHECKPOINT = flags.DEFINE_string('checkpoint', 'best',
                                  "'best', 'latest' or a step number.")
_EMA = flags.DEFINE_bool('ema', False, 'Use the EMA weights.')
_MAX_PIXELS = flags.DEFINE_integer(
    'max_pixels', 64_000_000, 'Refuse images with more pixels than this.')

def main(argv):
  overrides = [a for a in argv[1:] if a.startswith('--config.')]
  rest = [a for a in argv[1:] if not a.startswith('--config.')]
  if rest:
    raise app.UsageError(f'Unexpected arguments: {rest}')
  for flag in (_WORKDIR, _INPUT, _OUTPUT):
    if not flag.value:
      raise app.UsageError(f'--{flag.name} is required.')
  try:
    failed = predict(_WORKDIR.value, _INPUT.value, _OUTPUT.value,
                     _CHECKPOINT.value, _EMA.value, overrides,
                     _MAX_PIXELS.value)
  except (ConfigError, DataError) as e:
    print(f'segjax.predict: {e}', file=sys.stderr)
    return 2
  for path, error in failed.items():
    print(f'segjax.predict: skipped {error}', file=sys.stderr)
  return 1 if failed else 0


if __name__ == '__main__':
  app.run(main, flags_parser=run_lib.parse_flags)
