"""Orbax checkpoints of the train state, behind one small class.

A checkpoint `<workdir>/checkpoints/<step>/` holds three items, written by
one Orbax save (under a temporary name, renamed when every item is
complete, so a checkpoint never has one without the others):
  state      the whole `TrainState` (params, batch statistics, optimizer and
             EMA state, step, rng), restored straight into the target
             shardings from an abstract state, so a model never
             materialises unsharded and a run may resume on a different
             number of devices;
  data       the input stream's position: {'epoch', 'index'} plus what the
             position depends on (examples per epoch, local batch,
             processes, data seed), as JSON;
  checksums  {'algorithm': 'sha256', 'arrays': {path: {'sha256', 'dtype',
             'shape'}}}, JSON: a digest of every state array's bytes as
             saved (C order, its own dtype), path as in 'params/Conv_0/
             kernel'. Orbax checksums only its index files; these catch
             array data that reads back wrong without an error.
Saves are asynchronous (training continues while the arrays are written):
every N steps, on preemption (the step all processes agree on through JAX's
preemption service, or a single process's own SIGTERM handler: the training
loop forces a save there), after each
evaluation (with its metrics, for the best-N policy) and on demand. Kept:
the last `keep`, plus the best `keep_best` by a validation metric.

Restoring the latest checkpoint tells three kinds of trouble apart:
  - Does not fit the config (EMA on / off, another optimizer, model width,
    parameter dtype): the saved tree's metadata (paths, shapes, dtypes) is
    compared with the target before any array is read; the first
    difference is a `ConfigError` naming the path and both shapes and
    dtypes, and every file stays where it is.
  - Unreadable on its own terms: its files do not read back against its own
    metadata (truncated or half-copied files), or an array differs from its
    checksum. It is moved aside to `<step>.corrupt` with a warning naming
    the array or the error, and the previous checkpoint is tried. A target
    that fails to restore is first checked this way: a checkpoint that
    reads on its own is left alone and the error raised.
  - Transient storage errors (an OSError such as EIO, ETIMEDOUT or
    ECONNRESET, a timeout, TensorStore's UNAVAILABLE / DEADLINE_EXCEEDED):
    retried with backoff (`RETRY_DELAYS_S`); if they persist the error is
    raised and nothing is moved. No access or no memory: raised at once,
    nothing moved.
Only process 0 moves a checkpoint aside, on the combined verdict of every
process (the others wait at a barrier, then all re-list the folder).

Checkpoints written before checksums were saved (no `checksums` item) are
restored as before, with one warning saying they are unverified.

Multi-process runs: each process checksums the arrays it holds whole (fully
addressable, or fully replicated: its own copy); process 0 writes the
item. Arrays split across processes (FSDP over hosts) carry no checksum,
and a process verifies only the arrays it holds whole.
"""

import errno
import hashlib
import time

from absl import logging
from etils import epath
import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp

from segjax.errors import ConfigError

_policies = ocp.checkpoint_managers

# Seconds to wait before each retry of a storage operation that failed with
# a transient error; the last failure is raised.
RETRY_DELAYS_S = (1.0, 4.0, 16.0)

_TRANSIENT_ERRNOS = frozenset(
    getattr(errno, name) for name in (
        'EIO', 'ETIMEDOUT', 'ECONNRESET', 'ECONNABORTED', 'ECONNREFUSED',
        'EAGAIN', 'EBUSY', 'ENETDOWN', 'ENETRESET', 'ENETUNREACH',
        'EHOSTUNREACH', 'ESTALE', 'EINTR') if hasattr(errno, name))
# TensorStore reports storage errors as ValueErrors led by an absl status.
_TRANSIENT_STATUSES = ('UNAVAILABLE', 'DEADLINE_EXCEEDED')
# Errors that say nothing about the files: no access, no memory.
_ENVIRONMENT_ERRORS = (PermissionError, MemoryError)
_ENVIRONMENT_STATUSES = ('PERMISSION_DENIED', 'UNAUTHENTICATED',
                         'RESOURCE_EXHAUSTED')

_EMA_FIELDS = ('ema_params', 'ema_batch_stats')
# Who in this config owns a TrainState field, for error messages.
_OWNERS = {'params': "this config's model",
           'batch_stats': "this config's model",
           'opt_state': "this config's optimizer (config.optimizer)"}


def _names(path):
  """A key path as plain names: dataclass fields and dict keys alike (the
  state is a dataclass in memory, nested dicts in the metadata)."""
  return tuple(str(getattr(k, 'name', getattr(k, 'key', getattr(k, 'idx', k))))
               for k in path)


def _spec(leaf):
  """'float32[3, 3, 16, 8]': a leaf's dtype and shape."""
  return f'{np.dtype(leaf.dtype).name}{list(tuple(leaf.shape))}'


def _first_line(error):
  text = str(error).splitlines()[0][:300] if str(error) else ''
  return f'{type(error).__name__}: {text}'


def _chain(error):
  """`error` and the errors it was raised from or while handling."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    yield error
    error = error.__cause__ or error.__context__


def is_transient(error):
  """Whether `error` (or what caused it) is a storage hiccup worth a retry:
  an OSError with a transient errno, a timeout or connection error, or a
  TensorStore UNAVAILABLE / DEADLINE_EXCEEDED."""
  return any(
      isinstance(e, (TimeoutError, ConnectionError)) or
      (isinstance(e, OSError) and e.errno in _TRANSIENT_ERRNOS) or
      str(e).startswith(_TRANSIENT_STATUSES) for e in _chain(error))


def _not_the_files(error):
  """Whether `error` comes from the storage or the machine rather than from
  the checkpoint's files: transient, no access or out of memory. Such a
  checkpoint is never moved aside."""
  return is_transient(error) or any(
      isinstance(e, _ENVIRONMENT_ERRORS) or
      str(e).startswith(_ENVIRONMENT_STATUSES) for e in _chain(error))


def _retrying(fn, what):
  """`fn()`, retried after each of `RETRY_DELAYS_S` while it fails with a
  transient error; any other error, or the last transient one, is raised."""
  for delay in RETRY_DELAYS_S:
    try:
      return fn()
    except Exception as e:  # pylint: disable=broad-except
      if not is_transient(e):
        raise
      logging.warning('%s failed (%s); retrying in %g s.', what,
                      _first_line(e), delay)
      time.sleep(delay)
  return fn()


def _host_copies(leaves):
  """Each leaf as one host NumPy array, or None where this process holds
  only part of it (an array split across processes)."""
  whole = [i for i, x in enumerate(leaves)
           if not isinstance(x, jax.Array) or x.is_fully_addressable]
  copies = [None] * len(leaves)
  # One transfer for all of them, rather than a wait per array.
  for i, x in zip(whole, jax.device_get([leaves[i] for i in whole])):
    copies[i] = np.asarray(x)
  for i, x in enumerate(leaves):
    if copies[i] is None and x.is_fully_replicated:
      copies[i] = np.asarray(x.addressable_data(0))
  return copies


def array_checksums(tree):
  """Checksums of the arrays of `tree` this process holds whole.

  Args:
    tree: a pytree of arrays (a TrainState), on devices or on the host.

  Returns:
    {'algorithm': 'sha256', 'arrays': {path: {'sha256': hex digest of the
    array's bytes in C order, 'dtype': name, 'shape': [dims]}}}; arrays
    split across processes are left out.
  """
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  arrays = {}
  for (path, _), host in zip(flat, _host_copies([x for _, x in flat])):
    if host is None:
      continue
    data = np.ascontiguousarray(host).reshape(-1).view(np.uint8)
    arrays['/'.join(_names(path))] = {
        'sha256': hashlib.sha256(data).hexdigest(),
        'dtype': host.dtype.name, 'shape': list(host.shape)}
  return {'algorithm': 'sha256', 'arrays': arrays}


def _all_processes(outcome):
  """Every process's outcome code combined: the worst (highest) of them."""
  if jax.process_count() == 1:
    return outcome
  return int(np.max(multihost_utils.process_allgather(np.int32(outcome))))


class Checkpointer:
  """Saves and restores `TrainState`s and stream positions in `directory`.

  Args:
    directory: folder of the checkpoints (local path or gs://...).
    every_steps: save when step % every_steps == 0.
    keep: how many of the latest checkpoints to keep.
    best_metric: name of a metric passed to `save(metrics=...)` to rank
      checkpoints by (e.g. 'miou'); None keeps no best checkpoints.
    keep_best: how many of the best to keep besides the latest.
    best_mode: 'max' (higher is better) or 'min'.
  """

  def __init__(self, directory, every_steps, keep, best_metric=None,
               keep_best=0, best_mode='max'):
    self.directory = epath.Path(directory)
    self.best_metric = best_metric if keep_best else None
    preservation = [_policies.LatestN(int(keep))]
    if self.best_metric:
      if best_mode not in ('max', 'min'):
        raise ConfigError(f"config.best_checkpoint_mode={best_mode!r}: "
                          "'max' or 'min'.")
      preservation.append(_policies.BestN(
          get_metric_fn=lambda metrics: metrics[best_metric],
          # BestN keeps the *last* n after sorting: ascending for 'max'.
          reverse=best_mode == 'min', n=int(keep_best),
          # Saves between evaluations carry no metrics; LatestN rules them.
          keep_checkpoints_without_metrics=False))
    options = ocp.CheckpointManagerOptions(
        save_decision_policy=_policies.AnySavePolicy([
            _policies.FixedIntervalPolicy(int(every_steps)),
            _policies.PreemptionCheckpointingPolicy(),
        ]),
        preservation_policy=_policies.AnyPreservationPolicy(preservation),
        enable_async_checkpointing=True,
        cleanup_tmp_directories=True,
    )
    self._manager = ocp.CheckpointManager(
        self.directory, options=options,
        # Handlers up front, so metadata can be read before a restore.
        item_handlers={'state': ocp.StandardCheckpointHandler(),
                       'data': ocp.JsonCheckpointHandler(),
                       'checksums': ocp.JsonCheckpointHandler()})

  def latest_step(self):
    """The step of the newest complete checkpoint, or None."""
    return self._manager.latest_step()

  def best_step(self):
    """The step of the best checkpoint by `best_metric`, or None."""
    return self._manager.best_step() if self.best_metric else None

  def save(self, step, state, position, metrics=None, force=False):
    """Starts an async save if the policy (or `force`) says so.

    Args:
      step: the state's step.
      state: the TrainState.
      position: JSON-able dict of the input stream's position.
      metrics: {name: float} of an evaluation at this step, for best-N.
      force: save whatever the interval.

    Returns:
      True if a save was started.
    """
    # Asked first: the checksums copy the state to the host, which only a
    # step that is saved should pay for.
    if not force and not self._manager.should_save(int(step)):
      return False
    if metrics is not None:
      metrics = {k: float(v) for k, v in metrics.items()}
    saved = self._manager.save(
        int(step), args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave(position),
            checksums=ocp.args.JsonSave(array_checksums(state))),
        metrics=metrics, force=True)
    if saved:
      logging.info('Saving checkpoint at step %d to %s', step, self.directory)
    return saved

  def _check_fits(self, step, saved, abstract_state):
    """ConfigError naming the first difference between checkpoint `step`'s
    saved tree (`saved`, its metadata) and `abstract_state`.

    The EMA fields are compared first (they are all there or all absent),
    then field by field in the TrainState's order, so a changed model is
    named by a parameter rather than by its optimizer or EMA copies.
    """
    def leaves(tree):
      return {_names(p): leaf for p, leaf in
              jax.tree_util.tree_flatten_with_path(tree)[0]}

    there, here = leaves(saved), leaves(abstract_state)
    where = f'checkpoint {step} in {self.directory}'
    advice = (' (it stays there: re-run with the config it was saved with, '
              'use a new workdir, or start from it with config.model_init).')
    ema_there = any(n[0] in _EMA_FIELDS for n in there)
    ema_here = any(n[0] in _EMA_FIELDS for n in here)
    if ema_there != ema_here:
      what = ('has EMA state; this config has ema_decay=0' if ema_there else
              'has no EMA state; this config has ema_decay > 0')
      raise ConfigError(f'{where} {what}{advice}')
    fields = list(dict.fromkeys(n[0] for n in [*here, *sorted(there)]))
    for field in fields:
      owner = _OWNERS.get(field, "this config's state")
      for name in sorted(n for n in here if n[0] == field):
        path = '/'.join(name)
        if name not in there:
          raise ConfigError(f'{where} has no {path}; {owner} has '
                            f'{_spec(here[name])}{advice}')
        if (tuple(there[name].shape) != tuple(here[name].shape) or
            np.dtype(there[name].dtype) != np.dtype(here[name].dtype)):
          raise ConfigError(f'{where} has {path} {_spec(there[name])}; '
                            f'{owner} has {_spec(here[name])}{advice}')
      for name in sorted(n for n in there if n[0] == field):
        if name not in here:
          raise ConfigError(f'{where} has {"/".join(name)} '
                            f'{_spec(there[name])}; {owner} has none'
                            f'{advice}')

  def restore_latest(self, abstract_state):
    """(step, state, position) of the newest usable checkpoint, or None.

    Checkpoints unreadable on their own terms are moved aside
    (`<step>.corrupt`) with a warning, and the one before is tried.

    Args:
      abstract_state: pytree of `jax.ShapeDtypeStruct`s with shardings.

    Raises:
      ConfigError: the newest checkpoint does not fit `abstract_state`.
      The storage error of a read that retries did not cure, or of a
      restore that failed although the checkpoint reads on its own.
    """
    while (step := self._manager.latest_step()) is not None:
      restored = problem = error = None
      try:
        restored, problem = self._read(step, abstract_state)
      except ConfigError:
        raise  # Every process reads the same metadata, so all raise it.
      except Exception as e:  # pylint: disable=broad-except
        error = e
      # 0: restored, 1: unreadable, 2: failed; a process that failed stops
      # them all, rather than leaving the others waiting for it.
      outcome = _all_processes(2 if error else 1 if problem else 0)
      if error is not None:
        raise error
      if outcome == 2:
        raise RuntimeError(f'Another process could not read checkpoint '
                           f'{step} in {self.directory}; see its log.')
      if outcome == 0:
        return step, restored['state'], dict(restored['data'])
      self._move_aside(step, problem or 'another process could not use it')
    return None

  def _read(self, step, abstract_state):
    """Reads checkpoint `step` into `abstract_state`'s shapes and shardings.

    Returns:
      (the restored Composite, None), or (None, why) when the checkpoint is
      unreadable on its own terms.

    Raises:
      ConfigError: it does not fit `abstract_state`.
      The error of a read that failed otherwise: a transient one that
      retries did not cure, or a restore into `abstract_state` that failed
      although the checkpoint reads on its own.
    """
    folder = self.directory / str(step)
    try:
      saved = _retrying(lambda: self._manager.item_metadata(step)['state'],
                        f'Reading the metadata of {folder}')
    except Exception as e:  # pylint: disable=broad-except
      if _not_the_files(e):
        raise
      return None, f'its metadata cannot be read ({_first_line(e)})'
    if saved is None:
      return None, 'its metadata cannot be read'
    self._check_fits(step, getattr(saved, 'tree', saved), abstract_state)
    verified = _retrying((folder / 'checksums').exists, f'Listing {folder}')
    items = {'state': ocp.args.StandardRestore(abstract_state),
             'data': ocp.args.JsonRestore()}
    if verified:
      items['checksums'] = ocp.args.JsonRestore()
    try:
      restored = _retrying(
          lambda: self._manager.restore(
              step, args=ocp.args.Composite(**items)), f'Restoring {folder}')
    except Exception as e:  # pylint: disable=broad-except
      if _not_the_files(e):
        raise
      why = self._unreadable(step, verified)
      if why is None:
        raise
      return None, why
    if not verified:
      logging.warning('Checkpoint %s has no checksums (written before '
                      'checkpoints carried them): restored unverified.',
                      folder)
      return restored, None
    why = _mismatch(restored['state'], restored['checksums'], folder)
    return (None, why) if why else (restored, None)

  def _unreadable(self, step, with_checksums):
    """Why checkpoint `step` does not read back on its own terms (every
    array as its metadata describes it, onto the host), or None."""
    folder = self.directory / str(step)

    def read():
      with ocp.PyTreeCheckpointer() as reader:
        item = str(folder / 'state')
        tree = reader.metadata(item).item_metadata.tree
        reader.restore(item, restore_args=jax.tree.map(
            lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree))
      items = {'data': ocp.args.JsonRestore()}
      if with_checksums:
        items['checksums'] = ocp.args.JsonRestore()
      self._manager.restore(step, args=ocp.args.Composite(**items))

    try:
      _retrying(read, f'Reading {folder} on its own')
    except Exception as e:  # pylint: disable=broad-except
      if _not_the_files(e):
        raise
      return _first_line(e)
    return None

  def _move_aside(self, step, why):
    """Process 0 renames checkpoint `step` to `<step>.corrupt[n]`; the
    others wait for it, then every process lists the checkpoints again."""
    source = self.directory / str(step)
    if jax.process_index() == 0:
      target = self.directory / f'{step}.corrupt'
      n = 1
      while target.exists():
        n += 1
        target = self.directory / f'{step}.corrupt{n}'
      source.rename(target)
      logging.warning('Checkpoint %s cannot be read (%s); moved it to %s and '
                      'trying the previous one.', source, why, target)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(
          f'segjax: checkpoint {step} moved aside')
    self._manager.reload()

  def reached_preemption(self, step):
    return self._manager.reached_preemption(int(step))

  def close(self):
    """Waits for pending saves, then releases the manager (idempotent)."""
    if self._manager is not None:
      self._manager.wait_until_finished()
      self._manager.close()
      self._manager = None


def _mismatch(state, checksums, folder):
  """The first array of `state` whose bytes differ from `checksums` (as
  `array_checksums` wrote them), described, or None."""
  checksums = dict(checksums)
  if checksums.get('algorithm') != 'sha256':
    logging.warning('Checkpoint %s has checksums of an unknown kind (%r): '
                    'restored unverified.', folder, checksums.get('algorithm'))
    return None
  read = array_checksums(state)['arrays']
  saved = checksums['arrays']
  for path, want in saved.items():
    got = read.get(path)  # None: split across processes here.
    if got is not None and got != want:
      return (f'{path} does not match its checksum: sha256 '
              f'{want["sha256"][:16]}... saved as {want["dtype"]}'
              f'{want["shape"]}, {got["sha256"][:16]}... read as '
              f'{got["dtype"]}{got["shape"]}')
  logging.info('Checkpoint %s: %d arrays match their checksums.', folder,
               sum(path in read for path in saved))
  return None
