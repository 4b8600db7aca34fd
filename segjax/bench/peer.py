"""What every benchmark shares: median timing and running a PyTorch peer.

The peers (torchmetrics, segmentation_models_pytorch) live in their own
virtual environment (../shared/bench/README.md; ~/.venvs/peer by default)
and run as a child process, so segjax's process never imports PyTorch.
"""

import json
import os
import statistics
import subprocess
import time


def median_time(fn, repeats):
  """Median wall time of `repeats` calls of `fn`, after one warm-up call
  (compilation). `fn` must block until its result is ready."""
  fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def run_peer(python, script, args, timeout=3600):
  """The last JSON line a peer script prints, or None without a peer.

  Args:
    python: the peer venv's Python (None: ~/.venvs/peer/bin/python).
    script: the peer benchmark script (../shared/bench/peer_metrics.py).
    args: its command-line arguments (strings).
  """
  python = python or os.path.expanduser('~/.venvs/peer/bin/python')
  if not (os.path.exists(python) and os.path.exists(script)):
    return None
  out = subprocess.run([python, script, *args], capture_output=True,
                       text=True, check=True, timeout=timeout)
  return json.loads(out.stdout.strip().splitlines()[-1])
