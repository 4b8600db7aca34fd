"""What the training loop reports: the NaN guard, throughput, FLOP/s, memory.

The train step returns small scalar metrics every step; the loop keeps them
on the device and fetches them only at log and checkpoint steps (a fetch per
step would stall the asynchronous dispatch). `summarize` then checks every
step's values before anything from those steps is logged or saved.
"""

import collections
import math
import pathlib
import shutil
import signal
import tempfile
import threading
import time

from etils import epath
import jax
import numpy as np


class NonFiniteError(FloatingPointError):
  """A training step produced a non-finite loss term or gradient."""


# Checked in this order, so the message names the root cause (a loss term)
# before its consequences (the total, the gradient norm).
def _check_order(names):
  terms = sorted(n for n in names if n.startswith('loss_'))
  rest = [n for n in ('loss', 'grad_norm', 'update_norm', 'param_norm')
          if n in names]
  return terms + rest


def summarize(history, first_step):
  """Means over steps of fetched per-step metrics, after the NaN guard.

  Args:
    history: list of per-step metric dicts (NumPy scalars), oldest first.
    first_step: the step number (1-based, after the update) of history[0].

  Returns:
    {name: float mean}.

  Raises:
    NonFiniteError naming the first step and every term that is NaN or
    infinite there.
  """
  for i, row in enumerate(history):
    bad = [f'{name}={float(row[name])}' for name in _check_order(row)
           if not math.isfinite(float(row[name]))]
    if bad:
      raise NonFiniteError(
          f'Non-finite training values at step {first_step + i}: '
          f'{", ".join(bad)}. Stopping before anything from this step is '
          'saved; the latest checkpoint is from before it.')
  return {k: float(np.mean([row[k] for row in history])) for k in history[0]}


def memory_bytes_of(compiled):
  """Bytes one device needs for an AOT-compiled function (XLA's memory
  analysis: arguments + outputs + temporaries - donated), or None."""
  analysis = compiled.memory_analysis()
  if analysis is None:
    return None
  return int(analysis.argument_size_in_bytes + analysis.output_size_in_bytes
             + analysis.temp_size_in_bytes - analysis.alias_size_in_bytes)


def flops_of(compiled, num_devices=1):
  """FLOPs of one call of an AOT-compiled function, from XLA's cost model.

  XLA analyses the per-device (SPMD-partitioned) program, so a step
  compiled for a mesh of `num_devices` counts num_devices times that.
  On GPUs the count leaves out the convolutions XLA hands to cuDNN (custom
  calls, 0 FLOPs in its cost model): the ResNet-34 U-Net's bfloat16 step
  (batch 16, 352x480) counted 14.5 GFLOP on an H100 against ~1,960 by
  PyTorch's 3 x forward convention. `python -m segjax.bench train_step`'s
  `fwd_flops_per_image` is counted by XLA:CPU and holds on every backend.
  """
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):  # Older JAX: one dict per device.
    analysis = analysis[0] if analysis else {}
  flops = (analysis or {}).get('flops')
  return float(flops) * num_devices if flops is not None else None


def _memory_stat(key):
  """One of the first local device's memory statistics, or None where the
  backend does not report it (XLA:CPU)."""
  try:
    stats = jax.local_devices()[0].memory_stats()
  except Exception:  # pylint: disable=broad-except  (backend-specific)
    return None
  return (stats or {}).get(key)


def device_memory_in_use():
  """Bytes in use on the first local device, or None (see _memory_stat)."""
  return _memory_stat('bytes_in_use')


def device_memory_limit():
  """Bytes the first local device can hold, or None (see _memory_stat)."""
  return _memory_stat('bytes_limit')


class StopSignal:
  """Turns SIGTERM (how schedulers and preemptible VMs say "stop soon") into
  a flag the training loop polls, so it can save the current step and exit
  cleanly instead of dying mid-step. Restores the previous handler on exit.

  `received` is None, or the signal's name once one arrived. With
  `install=False` it installs nothing and never fires: where JAX's
  preemption service runs (several processes), its own SIGTERM listener
  must stay in place, and the loop asks it instead.
  """

  def __init__(self, signals=(signal.SIGTERM,), install=True):
    self.signals, self.received, self._previous = signals, None, {}
    self._install = install

  def _handle(self, signum, frame):
    del frame
    self.received = signal.Signals(signum).name

  def __enter__(self):
    # Handlers can only be installed from the main thread (a notebook's
    # kernel runs cells there; a training thread simply goes without).
    if self._install and (threading.current_thread() is
                          threading.main_thread()):
      for s in self.signals:
        self._previous[s] = signal.signal(s, self._handle)
    return self

  def __exit__(self, *exc):
    for s, handler in self._previous.items():
      signal.signal(s, handler)
    return False


class TraceWindow:
  """A `jax.profiler` trace of the training steps from min(steps) to
  max(steps) (1-based: step n makes the update that yields state.step == n),
  written under `logdir`/plugins/profile/, where TensorBoard's profile plugin
  finds it. Every process traces its own host.
  """

  def __init__(self, steps, logdir):
    steps = sorted(int(s) for s in steps)
    self.first, self.last = (steps[0], steps[-1]) if steps else (None, None)
    self.logdir, self.active = str(logdir), False
    self._local = None  # Where the profiler writes (a URI's is a copy).

  def before(self, step):
    """Call before step `step` is dispatched."""
    if step == self.first:
      # The profiler writes local files only; a gs:// workdir gets a copy.
      self._local = (tempfile.mkdtemp(prefix='segjax_profile_')
                     if '://' in self.logdir else self.logdir)
      jax.profiler.start_trace(self._local)
      self.active = True

  def after(self, step, state):
    """Call once step `step` is dispatched; ends the trace after the last,
    waiting for it to run (the step is asynchronous)."""
    if self.active and step >= self.last:
      jax.block_until_ready(state)
      self.close()

  def close(self):
    if not self.active:
      return
    jax.profiler.stop_trace()
    self.active = False
    if self._local != self.logdir:
      local = pathlib.Path(self._local)
      for path in sorted(local.rglob('*')):
        if path.is_file():
          target = epath.Path(self.logdir) / str(path.relative_to(local))
          target.parent.mkdir(parents=True, exist_ok=True)
          target.write_bytes(path.read_bytes())
      shutil.rmtree(local)


def _duration(seconds):
  seconds = int(seconds)
  if seconds >= 3600:
    return f'{seconds // 3600}h{seconds % 3600 // 60:02d}m'
  return f'{seconds // 60}m{seconds % 60:02d}s'


class Progress:
  """Step time, images/s and achieved FLOP/s between log points, an ETA,
  and (in an interactive terminal) a progress bar.

  The ETA uses the mean wall time per step over the last `window` log
  intervals (evaluations and checkpoints inside them included, as they will
  recur), not the last interval alone, which swings with every evaluation.
  The first interval, which holds the step's first dispatch, is left out.

  Args:
    start_step: the first step of this (possibly resumed) run.
    num_steps: the last step.
    batch_size: global examples per step.
    flops_per_step: XLA's estimate for one train step (None if unknown).
    window: log intervals the ETA averages over.
    bar_stream: where the bar is drawn (a terminal), or None for no bar.
    clock: seconds now (time.monotonic; injectable for tests).
  """

  def __init__(self, start_step, num_steps, batch_size, flops_per_step,
               window=10, bar_stream=None, clock=time.monotonic):
    self.num_steps, self.batch_size = num_steps, batch_size
    self.flops_per_step = flops_per_step
    self._clock, self._bar = clock, bar_stream
    self.last_step, self.last_time = start_step, clock()
    self._start = (self.last_step, self.last_time)
    self._points = collections.deque(maxlen=window + 1)  # (step, time)
    self._drawn = 0.0  # When the bar was last drawn.

  def measure(self, step):
    """{'step_time_s', 'images_per_s', 'achieved_flops_per_s'} since the
    last call (the first interval includes the first step's dispatch)."""
    now = self._clock()
    step_time = (now - self.last_time) / max(step - self.last_step, 1)
    self.last_step, self.last_time = step, now
    self._points.append((step, now))
    out = {'step_time_s': step_time,
           'images_per_s': self.batch_size / max(step_time, 1e-9)}
    if self.flops_per_step:
      out['achieved_flops_per_s'] = self.flops_per_step / max(step_time, 1e-9)
    return out

  def seconds_per_step(self):
    """Mean wall seconds per step over the window (None before the first
    log point; the first interval alone until there is a second)."""
    if not self._points:
      return None
    (s0, t0), (s1, t1) = (self._start if len(self._points) == 1
                          else self._points[0]), self._points[-1]
    return (t1 - t0) / max(s1 - s0, 1)

  def eta_seconds(self, step):
    rate = self.seconds_per_step()
    return None if rate is None else (self.num_steps - step) * rate

  def line(self, step, means):
    eta = self.eta_seconds(step)
    text = (f'step {step}/{self.num_steps} '
            f'({100 * step / self.num_steps:.0f}%) | '
            f'{1 / max(means["step_time_s"], 1e-9):.2f} steps/s, '
            f'{means["images_per_s"]:.1f} img/s')
    if 'achieved_flops_per_s' in means:
      text += f', {means["achieved_flops_per_s"] / 1e12:.3g} TFLOP/s'
    text += f' | loss {means["loss"]:.4f}'
    return text + (f' | ETA {_duration(eta)}' if eta is not None else '')

  def tick(self, step, width=30):
    """Redraws the bar after `step` (at most twice a second)."""
    now = self._clock()
    if self._bar is None or (now - self._drawn < 0.5 and
                             step < self.num_steps):
      return
    self._drawn = now
    filled = int(width * step / self.num_steps)
    eta = self.eta_seconds(step)
    self._bar.write(
        f'\r[{"#" * filled}{"." * (width - filled)}] {step}/'
        f'{self.num_steps} ETA {_duration(eta) if eta is not None else "?"}'
        '\033[K')
    self._bar.flush()

  def clear(self):
    """Erases the bar, so that a log line starts on a clean line."""
    if self._bar is not None and self._drawn:
      self._bar.write('\r\033[K')
      self._bar.flush()
