r"""Scores a trained run on a split, at the label maps' own resolution.

  python -m segjax.evaluate --workdir runs/camvid [--checkpoint best|latest|STEP]
      [--split test] [--ema] [--tag NAME]
      [--config.inference.scales='(0.75, 1.0, 1.25)' --config.inference.flip=True]
      [--config.inference.mode=slide --config.inference.window='(256, 256)']

Every example of the split is predicted by `segjax.inference.load_run`'s
predict function at its original size: when the run was evaluated on
resized images (`config.data.eval_preprocess='resize(h, w)'`), the model
sees the resized image and its probabilities are resized back; labels are
never resized. Images are padded to size buckets, so a split of mixed sizes
compiles a few programs. Scores are sums over the split (confusion matrix;
for panoptic models also PQ counts and COCO mask AP; for binary runs the
foreground's IoU / Dice / precision / recall counts, and with
`config.binary.instances` PQ and mask AP of the post-processed instances),
scored once.

Writes `<workdir>/eval/<split>_step<N>[_<tag>]`: `.json` (scores, per-class
table, inference options, checkpoint, timing), `_confusion.png` (row-
normalised confusion matrix) and `_iou.png` (per-class IoU bars); prints the
per-class table. Single-process.
"""

import sys

from absl import app
from absl import flags
from absl import logging

from segjax.errors import ConfigError
from segjax.inference import run as run_lib
from segjax.inference.report import evaluate
from segjax.inference.report import table

_WORKDIR = flags.DEFINE_string('workdir', None, 'The run to evaluate.')
_CHECKPOINT = flags.DEFINE_string('checkpoint', 'best',
                                  "'best', 'latest' or a step number.")
_SPLIT = flags.DEFINE_string('split', None,
                             'TFDS split (default: the run\'s eval split).')
_EMA = flags.DEFINE_bool('ema', False, 'Evaluate the EMA weights.')
_TAG = flags.DEFINE_string('tag', '', 'Suffix of the report files.')
_MAX_IMAGES = flags.DEFINE_integer('max_images', 0,
                                   'Evaluate only the first N (0: all).')

def main(argv):
  overrides = [a for a in argv[1:] if a.startswith('--config.')]
  rest = [a for a in argv[1:] if not a.startswith('--config.')]
  if rest:
    raise app.UsageError(f'Unexpected arguments: {rest}')
  if not _WORKDIR.value:
    raise app.UsageError('--workdir is required.')
  try:
    report = evaluate(_WORKDIR.value, _CHECKPOINT.value, _SPLIT.value,
                      _EMA.value, _TAG.value, overrides, _MAX_IMAGES.value)
  except ConfigError as e:
    print(f'segjax.evaluate: {e}', file=sys.stderr)
    return 2
  logging.info('Evaluated %s step %d on %s (%d images).', report['workdir'],
               report['checkpoint_step'], report['split'],
               report['num_images'])
  print(table(report))
  return 0


if __name__ == '__main__':
  app.run(main, flags_parser=run_lib.parse_flags)
