"""What a prepared data set was prepared from: a cheap fingerprint of files.

Data sets prepared from files users download by hand (TFDS's `manual_dir`)
are prepared once and read by every later run. So that no run reads data
prepared from other files than the ones it names, each prepared set keeps a
record of its source: the relative name, size and modification time of every
source file, and the builder and version that prepared it. A later run scans
its source folder the same way and compares.

The scan reads no file contents: it costs one `stat` per file (about half a
second for the 24k files of DSB2018 stage 1), so it runs on every start. Like
rsync's quick check, it cannot see a file rewritten with the same size and
modification time; an edited, replaced or copied (without its times) file, an
added and a removed one all differ.

Names starting with '.' (`.DS_Store`, editor and sync folders) are skipped:
no builder reads them, and they change without the data changing.

Pure Python (no TensorFlow), so every kind of prepared data can use it.
"""

import hashlib
import json
import os
import time
from typing import Dict, Iterable, Mapping, Optional, Tuple

from etils import epath

# Kept in the prepared set's folder (next to TFDS's dataset_info.json): the
# summary, read on every start, and the full listing, read only to say what
# changed.
RECORD = 'segjax_source.json'
# Sets prepared again from changed sources (and folder data sets) live in
# TFDS data_dirs of their own under <data_dir>/by_source/.
BY_SOURCE = 'by_source'
LISTING = 'segjax_source_files.json'

# {relative name ('/'-separated): (size in bytes, modification time in ns)}.
Files = Dict[str, Tuple[int, int]]


def _is_local(path):
  return '://' not in os.fspath(path)


def _scan_local_dir(path, name, files):
  # scandir's entries know their type and cache their stat: one system call
  # per file.
  with os.scandir(path) as entries:
    for entry in entries:
      if entry.name.startswith('.'):
        continue
      child = f'{name}/{entry.name}' if name else entry.name
      if entry.is_dir():
        _scan_local_dir(entry.path, child, files)
      else:
        stat = entry.stat()
        files[child] = (stat.st_size, stat.st_mtime_ns)


def _scan_local(path, name, files):
  if os.path.isdir(path):
    _scan_local_dir(path, name, files)
  elif os.path.exists(path):
    stat = os.stat(path)
    files[name] = (stat.st_size, stat.st_mtime_ns)


def _scan_remote(path, name, files):
  if path.is_dir():
    for child in path.iterdir():
      if not child.name.startswith('.'):
        _scan_remote(child, f'{name}/{child.name}' if name else child.name,
                     files)
  elif path.exists():
    stat = path.stat()
    files[name] = (int(stat.length), int(stat.mtime) * 10**9)


def scan(root, names: Iterable[str] = ('',)) -> Files:
  """Sizes and modification times of the files under `root`.

  Args:
    root: the source folder (local, or any path `etils.epath` reads).
    names: files or folders under `root` to list (folders recursively);
      '' is `root` itself. Missing ones are skipped.

  Returns:
    {name relative to `root`: (size, mtime in ns)}, without hidden names.
  """
  files = {}
  for name in names:
    name = name.strip('/')
    if _is_local(root):
      _scan_local(os.path.join(os.fspath(root), name) if name else
                  os.fspath(root), name, files)
    else:
      path = epath.Path(root)
      _scan_remote(path / name if name else path, name, files)
  return dict(sorted(files.items()))


def digest(files: Mapping[str, Tuple[int, int]], identity: str) -> str:
  """The fingerprint (hex SHA-256) of a listing and what prepares it.

  Args:
    files: a `scan`.
    identity: the builder and version that prepare the data, e.g.
      'camvid/1.0.0' (TFDS's full name): a new version prepares anew.
  """
  sha = hashlib.sha256(identity.encode('utf-8') + b'\n')
  for name, (size, mtime) in sorted(files.items()):
    sha.update(f'{name}\0{size}\0{mtime}\n'.encode('utf-8'))
  return sha.hexdigest()


def differences(old: Mapping[str, Tuple[int, int]],
                new: Mapping[str, Tuple[int, int]]):
  """(added, removed, changed): sorted names that differ between two scans."""
  added = sorted(set(new) - set(old))
  removed = sorted(set(old) - set(new))
  changed = sorted(n for n in set(old) & set(new)
                   if tuple(old[n]) != tuple(new[n]))
  return added, removed, changed


def newer_than(files: Mapping[str, Tuple[int, int]], mtime_ns: int):
  """Sorted names of the files modified after `mtime_ns`."""
  return sorted(n for n, (_, t) in files.items() if t > mtime_ns)


def mtime_ns(path) -> int:
  """The modification time of `path` in ns (whole seconds if not local)."""
  if _is_local(path):
    return os.stat(os.fspath(path)).st_mtime_ns
  return int(epath.Path(path).stat().mtime) * 10**9


def _write_atomically(path, text):
  # A reader never sees half a record: write aside, then rename.
  tmp = path.parent / f'.{path.name}.tmp{os.getpid()}'
  tmp.write_text(text)
  tmp.rename(path)


def write_record(folder, *, fingerprint: str, identity: str, source,
                 files: Mapping[str, Tuple[int, int]]):
  """Records in `folder` that it was prepared from `files` under `source`."""
  folder = epath.Path(folder)
  summary = {
      'fingerprint': fingerprint,
      'builder': identity,
      'source': os.fspath(source),
      'num_files': len(files),
      'num_bytes': sum(size for size, _ in files.values()),
      'prepared': time.strftime('%Y-%m-%d %H:%M:%S %Z'),
  }
  _write_atomically(folder / LISTING, json.dumps(
      [[name, size, mtime] for name, (size, mtime) in sorted(files.items())]))
  _write_atomically(folder / RECORD, json.dumps(summary, indent=1) + '\n')


def read_record(folder) -> Optional[dict]:
  """The summary `write_record` left in `folder`, or None if there is none."""
  path = epath.Path(folder) / RECORD
  if not path.exists():
    return None
  return json.loads(path.read_text())


def read_listing(folder) -> Files:
  """The files `write_record` recorded in `folder` ({} if it has none)."""
  path = epath.Path(folder) / LISTING
  if not path.exists():
    return {}
  return {name: (size, mtime)
          for name, size, mtime in json.loads(path.read_text())}
