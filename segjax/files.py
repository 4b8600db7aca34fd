"""Local paths and object-store URIs, and writes that are whole or absent.

segjax reads and writes through `etils.epath`, so a workdir, an input
folder or an output may be local or on an object store (gs://...). A few
things differ between the two, and are decided here:

* `as_path(path)`: a local path -> pathlib.Path (os functions apply), a
  URI -> epath.Path (its file system's client).
* `write_bytes(path, data)`: the file is complete or not there. Locally the
  data goes to a hidden temp name in the final folder, then os.replace():
  an error or a kill mid-write never leaves a partial file under the final
  name, and never damages the file it replaces (a kill may leave a hidden
  .*.tmp; no fsync). An object store's upload is all-or-nothing already:
  the object appears only once complete, so it is written directly.
"""

import contextlib
import os
import pathlib
import threading

from etils import epath


def is_uri(path):
  """Whether `path` names an object-store location (gs://...), not a file."""
  return '://' in str(path)


def as_path(path):
  """A local path -> pathlib.Path; a URI -> epath.Path."""
  return epath.Path(path) if is_uri(path) else pathlib.Path(path)


def write_bytes(path, data):
  """Writes `data` (bytes) to `path` whole or not at all (module doc)."""
  if is_uri(path):
    as_path(path).write_bytes(data)
    return
  final = pathlib.Path(path)
  # Not mkstemp: its 0600 mode would stick to the outputs. Pid + thread id
  # keep concurrent writers of one folder apart; the umask applies as usual.
  tmp = final.with_name(
      f'.{final.name}.{os.getpid()}.{threading.get_ident()}.tmp')
  try:
    tmp.write_bytes(data)
    os.replace(tmp, final)
  except BaseException:
    with contextlib.suppress(OSError):
      os.unlink(tmp)
    raise
