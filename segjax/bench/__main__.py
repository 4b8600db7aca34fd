"""`python -m segjax.bench <what> [options]`: runs one benchmark."""

import sys

from segjax.bench import eval as eval_bench
from segjax.bench import latency
from segjax.bench import memory
from segjax.bench import metrics
from segjax.bench import models
from segjax.bench import options
from segjax.bench import panoptic
from segjax.bench import profile
from segjax.bench import report
from segjax.bench import train_step
from segjax.errors import ConfigError


def _input(argv):
  # Imported on demand: it loads TensorFlow, the others must not.
  from segjax.bench import input as input_bench  # pylint: disable=g-import-not-at-top
  return input_bench.main(argv)


BENCHMARKS = {
    'eval': eval_bench.main,
    'input': _input,
    'latency': latency.main,
    'memory': memory.main,
    'metrics': metrics.main,
    'options': options.main,
    'models': models.main,
    'pq': panoptic.main,
    'profile': profile.main,
    'report': report.main,
    'train_step': train_step.main,
}


def main(argv):
  if len(argv) < 2 or argv[1] not in BENCHMARKS:
    print(f'usage: python -m segjax.bench {{{",".join(BENCHMARKS)}}} '
          '[options]  (--help after the name lists them)', file=sys.stderr)
    return 2
  try:
    return BENCHMARKS[argv[1]](argv[2:])
  except ConfigError as e:  # A bad experiment file or override: one line.
    print(f'segjax.bench: error: {e}', file=sys.stderr)
    return 2


if __name__ == '__main__':
  sys.exit(main(sys.argv))
