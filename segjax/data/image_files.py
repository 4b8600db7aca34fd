"""Decoding a builder's source images completely, with errors naming the file.

PIL reads an image's header on `Image.open` and its pixels only when asked,
so a file cut short after its header opens fine; stored as it is, it fails
only when training decodes it, as a TensorFlow error naming no file. Builders
therefore decode every image and label map completely while preparing
(`decoded`), and a file whose bytes go into the prepared data unchanged is
also decoded by TensorFlow's own decoder (`check_stored`), the one that reads
the prepared data: PIL accepts a PNG that lacks its last few bytes (the end
chunk), TensorFlow does not.
"""

import contextlib
import io
import os

from PIL import Image

from segjax.data.tf_host import tf  # First: hides accelerators from TF.

from segjax.errors import DataError

# What PIL raises on a damaged file (SyntaxError: 'broken PNG file').
_PIL_ERRORS = (OSError, SyntaxError, ValueError, EOFError)


def _one_line(text):
  return ' '.join(str(text).split())


@contextlib.contextmanager
def decoded(path, data_set, kind):
  """Yields the image at `path`, opened by PIL and decoded completely.

  Args:
    path: an image file.
    data_set: the builder's name, e.g. 'camvid', for the message.
    kind: what the file is, e.g. 'image' or 'label map', for the message.

  Raises:
    DataError, one line naming the file: it is no image PIL reads, or its
    pixels do not decode (e.g. the file is truncated).
  """
  try:
    image = Image.open(path)
  except _PIL_ERRORS as e:
    raise DataError(f'{data_set}: cannot read {kind} {path}: '
                    f'{_one_line(e)}') from e
  with image:
    try:
      image.load()
    except _PIL_ERRORS as e:
      raise DataError(f'{data_set}: cannot decode {kind} {path} (truncated '
                      f'or corrupt?): {_one_line(e)}') from e
    yield image


def check_stored(path, data_set, kind):
  """Checks that TensorFlow decodes the file whose bytes are stored as is.

  Raises:
    DataError, one line naming the file.
  """
  with tf.io.gfile.GFile(os.fspath(path), 'rb') as f:
    data = f.read()
  try:
    tf.io.decode_image(data, expand_animations=False)
  except tf.errors.OpError as e:
    # Drop TF's '{{function_node ...}}' prefix and '[Op:...]' suffix.
    reason = _one_line(e.message).split('}} ')[-1].split(' [Op:')[0]
    raise DataError(
        f'{data_set}: TensorFlow cannot decode {kind} {path} (truncated or '
        f'corrupt?), so training could not read it: {reason}') from e


def encode_png(image):
  """[H, W, 3] uint8 -> PNG bytes, at a fast zlib level.

  TFDS would encode images in the main thread at zlib level 6, which took
  more than half of DSB2018's build; level 3, on the builders' own threads,
  is ~3x faster per image for files ~8% larger.
  """
  buffer = io.BytesIO()
  Image.fromarray(image, 'RGB').save(buffer, format='PNG', compress_level=3)
  return buffer.getvalue()
