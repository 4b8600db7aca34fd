"""Reading users' images and writing prediction files (NumPy + Pillow only).

The file side of `python -m segjax.predict`:

Paths may be local or URIs that `etils.epath` opens (gs://...); see
`segjax.files`.

* `find_images(inputs)`: a list of files and/or folders -> list of Paths.
  Files named explicitly are kept as given (in order, duplicates dropped);
  folders are listed non-recursively for names ending in .png .jpg .jpeg
  .bmp .tif .tiff .webp (any case), sorted by name, skipping hidden names
  (".*", e.g. macOS "._x.jpg" litter). A missing path, or nothing found,
  raises `DataError`. `find_images_by_root(inputs)`: the same files grouped
  by input root (a folder given is its own root; a file given belongs to
  its parent folder), for laying outputs out per root.
* `read_image(path, max_pixels)`: [H, W, 3] uint8 RGB, EXIF orientation
  applied, first frame of multi-frame files. L / 1 -> (g, g, g); 16-bit gray
  (I;16*, and I, as older Pillows open 16-bit PNGs) clipped to [0, 65535],
  then round(v / 257), so 257 g -> g and 65535 -> 255; F clipped to
  [0, 255] and rounded; P, CMYK, YCbCr via Pillow's convert('RGB'); LAB,
  HSV refused. Alpha (LA, PA, RGBA, a PNG tRNS colour) is composited on
  black, round(rgb * a / 255): transparent pixels are black, not whatever
  the encoder left under them. The pixel count is checked from the header
  before decoding: over `max_pixels` (CLI --max_pixels) is an error. Pillow's
  own bomb limit (the global Image.MAX_IMAGE_PIXELS, default ~89e6) is
  swapped for max_pixels during the read, under a lock, and its warning is
  silenced. Every failure (missing, not an image, truncated, too big) is an
  `ImageReadError` whose message starts with the file's path.
* `write_semantic(...)`: <stem>_labels.png (class ids: 8-bit gray, or 16-bit
  gray when ids, ignore_index or the class count need it), <stem>_color.png
  (`visualize.colorize`), <stem>_overlay.png ((1 - alpha) * image + alpha *
  colour; ignored pixels keep the image). Returns {'labels', 'color',
  'overlay'} -> Path.
* `write_panoptic(...)`: <stem>_panoptic.png in the COCO panoptic format
  (RGB, segment id = R + 256 G + 256^2 B, 0 = void; Kirillov et al. 2019 /
  the COCO panoptic annotation format), <stem>_panoptic.json with
  segments_info (ids 1..N in sorted panoptic-id order, area, bbox [x, y, w,
  h], isthing, optional category_name / score), <stem>_panoptic_color.png
  (`visualize.colorize_panoptic`).
  Returns {'panoptic', 'panoptic_json', 'panoptic_color'} -> Path.

category_id in the JSON is segjax's class id (0-based, contiguous), not the
data set's own id: COCO's evaluation needs them mapped, e.g. through
`segjax.data.coco_panoptic.CATEGORIES[c].id`.

Every file is encoded in memory and written whole or not at all
(`segjax.files.write_bytes`): an error or a kill mid-write never leaves a
partial file under the final name.
"""

import io
import json
import os
import pathlib
import threading
import warnings

import numpy as np
from PIL import Image
from PIL import ImageOps

from segjax import files
from segjax.errors import DataError
from segjax.imaging import visualize

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')

# Pillow's bomb limit is the module global Image.MAX_IMAGE_PIXELS; read_image
# swaps it for its own limit, so reads are serialised to keep the swap
# consistent between threads.
_PILLOW_LIMIT_LOCK = threading.Lock()


# Modes whose convert('RGB') is a real colour conversion (others are refused).
_CONVERTIBLE = ('1', 'L', 'P', 'RGB', 'RGBX', 'CMYK', 'YCbCr')


class ImageReadError(DataError):
  """One image file cannot be used; the message starts with its path."""


def find_images(inputs):
  """Files and/or folders -> the image files to predict on (see module doc)."""
  return [path for path, _ in _find(inputs)]


def find_images_by_root(inputs):
  """[(root folder, [image files])] of `inputs`, roots in first-seen order.

  A folder given is its own root; a file given belongs to its parent
  folder. Roots are absolute paths (`os.path.abspath`: symbolic links are
  kept as typed); files are as `find_images` returns them.
  """
  groups = {}
  for path, root in _find(inputs):
    groups.setdefault(root, []).append(path)
  return list(groups.items())


def _find(inputs):
  """[(image file, its root folder)] for `inputs` (see module doc)."""
  if isinstance(inputs, (str, os.PathLike)):
    inputs = [inputs]
  found, seen = [], set()
  for item in inputs:
    path = files.as_path(item)
    uri = files.is_uri(path)
    if path.is_dir():
      root = path if uri else pathlib.Path(os.path.abspath(path))
      candidates = sorted(
          (p for p in path.iterdir()
           if p.suffix.lower() in IMAGE_EXTENSIONS
           and not p.name.startswith('.') and p.is_file()),
          key=lambda p: p.name)
    elif path.exists():
      root = (path if uri else pathlib.Path(os.path.abspath(path))).parent
      candidates = [path]  # named explicitly: read_image judges the content
    else:
      raise DataError(f'{path}: no such file or folder')
    for p in candidates:
      key = str(p) if uri else os.path.realpath(p)
      if key not in seen:
        seen.add(key)
        found.append((p, root))
  if not found:
    raise DataError(
        f'no image files ({" ".join(IMAGE_EXTENSIONS)}, any case) in: '
        + ', '.join(str(p) for p in inputs))
  return found


def read_image(path, max_pixels=64_000_000):
  """An image file -> [H, W, 3] uint8 RGB (see the module doc for rules)."""
  path = files.as_path(path)
  with _PILLOW_LIMIT_LOCK, warnings.catch_warnings():
    warnings.simplefilter('ignore', Image.DecompressionBombWarning)
    saved_limit = Image.MAX_IMAGE_PIXELS
    try:
      # Off while parsing the header: Pillow would raise before we could
      # report the size, and its default would cap a user's --max_pixels.
      Image.MAX_IMAGE_PIXELS = None
      # An object is fetched whole (Pillow seeks); a local file is streamed.
      source = io.BytesIO(path.read_bytes()) if files.is_uri(path) else path
      with Image.open(source) as im:
        width, height = im.size
        if width * height > max_pixels:
          raise ImageReadError(
              f'{path}: {width} x {height} = {width * height} pixels is '
              f'more than the limit of {int(max_pixels)} pixels; raise it '
              'with --max_pixels (or max_pixels=) if the file is trusted')
        # Back on (at the user's limit) while decoding: some plugins (GIF,
        # ICO, WebP) only learn their frame sizes then.
        Image.MAX_IMAGE_PIXELS = max(int(max_pixels), 1)
        im.load()
        im = ImageOps.exif_transpose(im)
        return _to_rgb(im)
    except ImageReadError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      # Decoders raise OSError, SyntaxError, ValueError, EOFError,
      # struct.error, zlib.error, DecompressionBombError, ... for bad files.
      reason = str(e) or type(e).__name__
      if isinstance(e, Image.DecompressionBombError):
        reason = f'a frame is larger than the limit ({reason})'
      raise ImageReadError(f'{path}: cannot read image: {reason}') from e
    finally:
      Image.MAX_IMAGE_PIXELS = saved_limit


def _to_rgb(im):
  """A loaded PIL image of any mode -> [H, W, 3] uint8 array."""
  mode = im.mode
  if mode.startswith('I;16') or mode == 'I':
    v = np.clip(np.asarray(im).astype(np.int64), 0, 65535)
    gray = ((2 * v + 257) // 514).astype(np.uint8)  # round(v / 257)
    return np.repeat(gray[..., None], 3, axis=-1)
  if mode == 'F':
    gray = np.clip(np.round(np.asarray(im, np.float64)), 0, 255)
    return np.repeat(gray.astype(np.uint8)[..., None], 3, axis=-1)
  # Not "'A' in mode": LAB has an A band that is not alpha. 'transparency'
  # is a tRNS colour / palette entry (P, L, RGB), applied by convert('RGBA').
  has_alpha = (mode in ('LA', 'La', 'PA', 'RGBA', 'RGBa')
               or 'transparency' in im.info)
  if mode not in _CONVERTIBLE and not has_alpha:
    # e.g. LAB, whose convert('RGB') relabels bands instead of converting.
    raise ValueError(f'unsupported colour mode {mode!r}')
  if not has_alpha:
    return np.array(im.convert('RGB'), np.uint8)
  rgba = np.asarray(im.convert('RGBA')).astype(np.uint32)
  rgb = (rgba[..., :3] * rgba[..., 3:] + 127) // 255  # composite on black
  return rgb.astype(np.uint8)


def _save_png(array, final):
  # uint8 [H, W] -> L, [H, W, 3] -> RGB, uint16 [H, W] -> I;16 (16-bit gray).
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format='PNG')
  files.write_bytes(final, buffer.getvalue())
  return final


def _out_path(out_dir, stem, suffix):
  stem = str(stem)
  if not stem or '/' in stem or os.sep in stem:
    raise ValueError(f'stem must be a plain file name, got {stem!r}')
  out_dir = files.as_path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  return out_dir / f'{stem}{suffix}'


def write_semantic(out_dir, stem, image, labels, *, class_names=None,
                   ignore_index=255, alpha=0.5):
  """Writes the labels / colour / overlay PNGs (see module doc)."""
  labels = np.asarray(labels)
  image = np.asarray(image)
  if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f'labels must be [H, W] integers, got {labels.dtype} '
                     f'{labels.shape}')
  if image.shape != labels.shape + (3,):
    raise ValueError(f'image {image.shape} does not match labels '
                     f'{labels.shape} (want [H, W, 3])')
  valid = labels[labels != ignore_index]
  if labels.size and labels.min() < 0:
    raise ValueError(f'negative class id {labels.min()} in labels')
  if class_names is not None and valid.size and valid.max() >= len(class_names):
    raise ValueError(f'class id {valid.max()} but only {len(class_names)} '
                     'class names')
  # One bit depth for the whole run where possible: decided by the class
  # count and ignore_index too, not only by this image's ids.
  top = max(int(labels.max()) if labels.size else 0, int(ignore_index),
            len(class_names) - 1 if class_names is not None else 0)
  if top > 65535:
    raise ValueError(f'class id {top} does not fit a 16-bit PNG')
  paths = {kind: _out_path(out_dir, stem, f'_{kind}.png')
           for kind in ('labels', 'color', 'overlay')}
  _save_png(labels.astype(np.uint8 if top < 256 else np.uint16),
            paths['labels'])
  color = visualize.colorize(labels, ignore_index)
  _save_png(color, paths['color'])
  blend = (1.0 - alpha) * image.astype(np.float32) + alpha * color
  blend = np.clip(np.round(blend), 0, 255).astype(np.uint8)
  # Nothing was predicted at ignored pixels: show the image there.
  overlay = np.where((labels == ignore_index)[..., None],
                     image.astype(np.uint8), blend)
  _save_png(overlay, paths['overlay'])
  return paths


def write_panoptic(out_dir, stem, panoptic, *, label_divisor, thing_classes,
                   class_names=None, ignore_index=255, scores=None,
                   image_id=None):
  """Writes the COCO-format panoptic PNG + JSON and a colour PNG."""
  panoptic = np.asarray(panoptic)
  if panoptic.ndim != 2 or not np.issubdtype(panoptic.dtype, np.integer):
    raise ValueError(f'panoptic must be [H, W] integers, got '
                     f'{panoptic.dtype} {panoptic.shape}')
  panoptic = panoptic.astype(np.int64)
  if panoptic.size and panoptic.min() < 0:
    raise ValueError(f'negative panoptic id {panoptic.min()}')
  void = panoptic // label_divisor == ignore_index
  # Sorted unique panoptic ids; segment id k + 1 for the k-th one.
  pids, inverse = np.unique(np.where(void, -1, panoptic), return_inverse=True)
  inverse = inverse.reshape(panoptic.shape)
  if void.any():
    pids, segment = pids[1:], inverse  # -1 sorted first: void -> segment 0
  else:
    segment = inverse + 1
  if len(pids) >= 256 ** 3:
    raise ValueError(f'{len(pids)} segments do not fit a COCO panoptic PNG')
  rows, cols = np.indices(panoptic.shape)
  n = len(pids) + 1
  area = np.bincount(segment.ravel(), minlength=n)
  y0, x0 = np.full((2, n), np.iinfo(np.int64).max)
  y1, x1 = np.full((2, n), -1)
  np.minimum.at(y0, segment.ravel(), rows.ravel())
  np.minimum.at(x0, segment.ravel(), cols.ravel())
  np.maximum.at(y1, segment.ravel(), rows.ravel())
  np.maximum.at(x1, segment.ravel(), cols.ravel())
  things = {int(c) for c in thing_classes}
  scores = scores or {}
  segments_info = []
  for k, pid in enumerate(pids.tolist(), start=1):
    category = pid // label_divisor
    info = {
        'id': k, 'category_id': category, 'iscrowd': 0,
        'area': int(area[k]),
        # COCO bbox: [x, y, width, height] of the mask, inclusive extent.
        'bbox': [int(x0[k]), int(y0[k]), int(x1[k] - x0[k] + 1),
                 int(y1[k] - y0[k] + 1)],
        'isthing': int(category in things),
    }
    if class_names is not None and 0 <= category < len(class_names):
      info['category_name'] = str(class_names[category])
    if pid in scores:
      info['score'] = float(scores[pid])
    segments_info.append(info)
  rgb = np.stack([segment % 256, segment // 256 % 256, segment // 65536],
                 axis=-1).astype(np.uint8)
  paths = {'panoptic': _out_path(out_dir, stem, '_panoptic.png'),
           'panoptic_json': _out_path(out_dir, stem, '_panoptic.json'),
           'panoptic_color': _out_path(out_dir, stem, '_panoptic_color.png')}
  _save_png(rgb, paths['panoptic'])
  _save_png(visualize.colorize_panoptic(panoptic, label_divisor, ignore_index),
            paths['panoptic_color'])
  record = {
      'image_id': stem if image_id is None else image_id,
      'file_name': paths['panoptic'].name,
      'segments_info': segments_info,
  }
  # The JSON goes last: when it exists, the PNG it names is complete.
  files.write_bytes(paths['panoptic_json'],
                    json.dumps(record, indent=1).encode())
  return paths
