"""The files of a `folder` data set: pairing, splits, and reading them.

`segjax.data.folder` prepares a user's folder of images and a folder of
masks as a TFDS data set; this module finds and reads the files. Pure NumPy
and Pillow; tifffile reads the TIFFs Pillow cannot read or would cut to 8
bits (16-bit colour), TensorFlow's PNG decoder the 16-bit colour PNGs
(Pillow keeps the high byte of their samples).

Pairing: every image file under `images_dir` (recursively; names starting
with '.' skipped) whose name ends in `image_suffix` + an image extension
(.png .jpg .jpeg .tif .tiff .bmp, any case) has the key
`<folder relative to images_dir>/<name without image_suffix and extension>`;
its mask is the file `<same relative folder>/<key name><mask_suffix><ext>`
under `masks_dir`, for a mask extension (.png .tif .tiff .bmp). When both
folders are one, files ending in `mask_suffix` + an extension are the masks
(mask_suffix must then be set). An image without a mask, a mask without an
image, or a key with two masks is an error that names the first few files.

Images -> [H, W, 3] uint8: 8-bit gray, palette, RGB and CMYK through
Pillow's convert('RGB'); alpha (LA, PA, RGBA) dropped, not composited
(photographs and microscopy store opaque alpha); 16-bit samples (gray or
colour, PNG or TIFF) scaled by one rule, round(v / 257) (so 65535 -> 255 and
257 g -> g); 32-bit integer gray clipped to [0, 65535] first. Float images
are refused.
"""

import hashlib
import io
import os
import struct

from etils import epath
from absl import logging
import numpy as np
from PIL import Image

from segjax.errors import DataError

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.tif', '.tiff', '.bmp')
MASK_EXTENSIONS = ('.png', '.tif', '.tiff', '.bmp')
SPLIT_FOLDERS = {'train': 'train', 'val': 'validation',
                 'validation': 'validation', 'test': 'test'}
# Names listed in an error (the count is given too).
_SHOWN = 5


def _files(root):
  """Sorted '/'-separated paths of the files under `root`, hidden skipped."""
  base = str(root).rstrip('/')
  scheme = base.split('://')[0] + '://' if '://' in base else ''
  out = []
  for folder, dirs, names in epath.Path(root).walk():
    dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
    folder = str(folder)
    if scheme and not folder.startswith(scheme):
      folder = scheme + folder  # fsspec's walk drops the scheme.
    rel = folder[len(base):].replace(os.sep, '/').strip('/')
    if any(part.startswith('.') for part in rel.split('/')):
      continue  # A hidden folder (not every file system prunes `dirs`).
    prefix = rel + '/' if rel else ''
    out += [prefix + n for n in names if not n.startswith('.')]
  return sorted(out)


def _inside(child, parent):
  """`child`'s path relative to `parent` ('/'-separated) if it lies
  strictly inside it, else None."""
  child, parent = (str(p).rstrip('/') for p in (child, parent))
  if child.startswith(parent + '/'):
    return child[len(parent) + 1:]
  return None


def _split_name(rel, suffix, extensions):
  """The key of the file `rel` if it is <key><suffix><extension>, else None."""
  base, ext = os.path.splitext(rel)
  if ext.lower() not in extensions or len(base) <= len(suffix):
    return None
  if not base.endswith(suffix):
    return None
  return base[:len(base) - len(suffix)]


def _listed(names):
  shown = ', '.join(names[:_SHOWN])
  return shown + (f', ... ({len(names)} in all)' if len(names) > _SHOWN
                  else '')


def _collect(root, suffix, extensions, skip=(), skip_files=()):
  """{key: relative path} of the files under `root` named <key><suffix><ext>,
  leaving out the folders `skip` and the files `skip_files` (relative)."""
  found = {}
  for rel in _files(root):
    if rel in skip_files or any(rel.startswith(f + '/') for f in skip):
      continue
    key = _split_name(rel, suffix, extensions)
    if key is None:
      continue
    if key in found:
      raise DataError(f'{root}: two files for {key!r}: {found[key]} and '
                      f'{rel}; keep one.')
    found[key] = rel
  return found


def pair_files(images_dir, masks_dir, image_suffix='', mask_suffix='',
               other_dirs=()):
  """{key: (image path, mask path)} of the data set, sorted by key.

  `other_dirs` (e.g. classes_dir) are left out of the image search when they
  lie inside `images_dir`, as `masks_dir` is.

  Raises:
    DataError naming the folder and the first unpaired or doubled files.
  """
  for name, folder in (('images_dir', images_dir), ('masks_dir', masks_dir)):
    if not folder or not epath.Path(folder).is_dir():
      raise DataError(f'config.data.{name}={folder!r}: no such folder.')
  same = str(images_dir).rstrip('/') == str(masks_dir).rstrip('/')
  if same and not mask_suffix:
    raise DataError(
        f'config.data.images_dir and masks_dir are both {images_dir!r}: set '
        'config.data.mask_suffix (e.g. "_mask") to tell masks from images.')
  masks = _collect(masks_dir, mask_suffix, MASK_EXTENSIONS)
  nested = [_inside(d, images_dir) for d in (masks_dir, *other_dirs) if d]
  images = _collect(images_dir, image_suffix, IMAGE_EXTENSIONS,
                    skip=[n for n in nested if n],
                    skip_files=set(masks.values()) if same else ())
  lonely_images = sorted(images[k] for k in set(images) - set(masks))
  lonely_masks = sorted(masks[k] for k in set(masks) - set(images))
  if lonely_images or lonely_masks:
    parts = []
    if lonely_images:
      parts.append(f'{len(lonely_images)} images in {images_dir} without a '
                   f'mask <name>{mask_suffix}.png (or .tif/.bmp) in '
                   f'{masks_dir}: {_listed(lonely_images)}')
    if lonely_masks:
      parts.append(f'{len(lonely_masks)} masks in {masks_dir} without an '
                   f'image <name>{image_suffix}.png/.jpg/.tif in '
                   f'{images_dir}: {_listed(lonely_masks)}')
    raise DataError('folder data set: ' + '; '.join(parts) +
                    ' (config.data.image_suffix / mask_suffix set how names '
                    'pair).')
  if not images:
    raise DataError(f'config.data.images_dir={str(images_dir)!r}: no image '
                    f'files ({" ".join(IMAGE_EXTENSIONS)}) found.')
  return {k: (epath.Path(images_dir) / images[k], epath.Path(masks_dir) /
              masks[k]) for k in sorted(images)}


def hash_fraction(key):
  """A number in [0, 1) from `key` alone (SHA-256): the same everywhere."""
  digest = hashlib.sha256(key.encode('utf-8')).digest()
  return int.from_bytes(digest[:8], 'big') / 2.0 ** 64


def split_keys(keys, source, fractions=(0.8, 0.1, 0.1), lists=None,
               images_dir=None):
  """{split: [keys]} by `source`: 'folders', 'lists', 'hash' or 'auto'.

  'folders': the first folder of each key (train/, val/ or validation/,
  test/; others are an error). 'lists': `lists` maps a split to a text
  file of keys, one per line (a line may carry the image's extension).
  'hash': `hash_fraction(key)` against the cumulative (train, validation,
  test) fractions. 'auto': 'folders' when any key is under a split folder
  (then every key must be), else 'lists' when lists are given, else 'hash'.
  `source` and `fractions` are checked by the caller (`folder.settings_of`).

  Raises:
    DataError naming the split, file or key at fault, or an empty split.
  """
  if source == 'auto':
    in_folders = any(_split_folder(k) for k in keys)
    source = ('folders' if in_folders else 'lists' if lists else 'hash')
  if source == 'folders':
    splits = {}
    for key in keys:
      split = _split_folder(key)
      if split is None:
        raise DataError(f'{images_dir}/{key}: not under a split folder '
                        f'({", ".join(SPLIT_FOLDERS)}/), as the other '
                        'images are.')
      splits.setdefault(split, []).append(key)
  elif source == 'lists':
    splits = _from_lists(keys, lists)
  else:
    splits = _by_hash(keys, fractions)
  if 'train' not in splits:
    raise DataError(f'folder data set: the train split is empty '
                    f'(splits by {source}).')
  return splits


def _split_folder(key):
  """The split of a key under a split folder ('train/x'), else None."""
  top, sep, _ = key.partition('/')
  return SPLIT_FOLDERS.get(top) if sep else None


def _from_lists(keys, lists):
  """{split: sorted keys} from list files (see `split_keys`)."""
  known = set(keys)
  splits, seen = {}, {}
  for split, path in dict(lists).items():
    try:
      lines = epath.Path(path).read_text().splitlines()
    except OSError as e:
      raise DataError(f'config.data.split_lists.{split}={path!r}: cannot '
                      f'read it ({e.strerror or e}).') from e
    names = set()
    for n, line in enumerate(lines, 1):
      name = line.strip()
      if not name or name.startswith('#'):
        continue
      # A line may name the image file: its key plus the extension.
      key = name if name in known else os.path.splitext(name)[0]
      if key not in known:
        raise DataError(f'{path}, line {n}: {name!r} is no image of the '
                        'folder (keys are paths under images_dir without '
                        'image_suffix and extension).')
      if seen.setdefault(key, split) != split:
        raise DataError(f'{path}, line {n}: {name!r} is also in the '
                        f'{seen[key]} list; an image belongs to one split.')
      names.add(key)
    if not names:
      raise DataError(f'{path}: the {split} list names no image.')
    splits[split] = sorted(names)
  unlisted = len(known) - len(seen)
  if unlisted:
    logging.info('folder data set: %d images are in no split list and are '
                 'left out.', unlisted)
  return splits


def _by_hash(keys, fractions):
  """{split: keys} by `hash_fraction` against the cumulative fractions."""
  fractions = np.asarray(fractions, np.float64)
  edges = np.cumsum(fractions) / fractions.sum()
  edges[-1] = 1.0  # Rounding never sends a key past the last split.
  names = ('train', 'validation', 'test')
  splits = {name: [] for name in names}
  for key in keys:
    index = int(np.searchsorted(edges, hash_fraction(key), side='right'))
    splits[names[index]].append(key)
  for name, fraction in zip(names, fractions):
    if fraction > 0 and not splits[name]:
      raise DataError(
          f'folder data set: the {name} split got none of the {len(keys)} '
          f'images by hash (config.data.split_fractions='
          f'{tuple(fractions.tolist())}); add images or set its fraction '
          'to 0.')
  return {s: ks for s, ks in splits.items() if ks}


def _png_is_16_bit_colour(data):
  # IHDR: bit depth at byte 24, colour type at 25 (2 RGB, 4 gray + alpha,
  # 6 RGBA): Pillow keeps only the high byte of these.
  return (data[:8] == b'\x89PNG\r\n\x1a\n' and len(data) > 25
          and data[24] == 16 and data[25] in (2, 4, 6))


def _to_8_bit(values):
  """16-bit samples -> uint8 by round(v / 257)."""
  v = np.clip(np.asarray(values).astype(np.int64), 0, 65535)
  return ((2 * v + 257) // 514).astype(np.uint8)


def _rgb_of_array(array, path):
  """A decoded sample array (tifffile / TF) -> [H, W, 3] uint8."""
  if array.dtype == np.uint8:
    pass
  elif array.dtype in (np.uint16, np.int32, np.uint32, np.int64):
    array = _to_8_bit(array)
  else:
    raise DataError(f'{path}: image samples are {array.dtype}; expected 8 '
                    'or 16-bit integers.')
  if array.ndim == 2:
    array = array[..., None]
  if array.ndim != 3 or array.shape[-1] not in (1, 2, 3, 4):
    raise DataError(f'{path}: image of shape {array.shape}; expected gray, '
                    'RGB or RGBA.')
  if array.shape[-1] <= 2:  # gray (+ alpha)
    return np.repeat(array[..., :1], 3, axis=-1)
  return np.ascontiguousarray(array[..., :3])


# What Pillow raises on a damaged or oversized file ('broken PNG file' is a
# SyntaxError; a decompression bomb has its own class).
_PIL_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error,
               Image.DecompressionBombError)


def _tiff_over_8_bits_in_colour(im):
  """A TIFF whose colour samples Pillow would cut to 8 bits (high byte)."""
  if im.format != 'TIFF' or im.mode.startswith('I') or im.mode == 'F':
    return False
  bits = im.tag_v2.get(258, (8,))  # BitsPerSample
  return max(bits if isinstance(bits, tuple) else (bits,)) > 8


def _decode(data, path, kind):
  """File bytes -> (Pillow mode, array); tifffile's ('tifffile', array) for
  a TIFF Pillow cannot read. DataError naming the file otherwise."""
  try:
    with Image.open(io.BytesIO(data)) as im:
      if _tiff_over_8_bits_in_colour(im):
        raise OSError(f'{im.mode} TIFF of more than 8 bits per sample')
      im.load()
      if im.mode in ('1', 'L', 'P', 'I', 'F', 'RGB', 'RGBA', 'LA', 'PA') or (
          im.mode.startswith('I;16')):
        return im.mode, np.asarray(im)
      if im.mode in ('La', 'RGBa', 'RGBX', 'CMYK', 'YCbCr'):
        return 'RGB', np.asarray(im.convert('RGB'))
      raise DataError(f'{path}: {kind} mode {im.mode!r} is not supported; '
                      'save it as gray, RGB or RGBA.')
  except _PIL_ERRORS as e:
    if not str(path).lower().endswith(('.tif', '.tiff')):
      raise DataError(f'{path}: cannot read {kind} ({e}).') from e
    pil_error = e
  try:
    import tifffile  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise DataError(f'{path}: Pillow cannot read this TIFF ({pil_error}); '
                    'install tifffile (the data extra) to read it.') from e
  try:
    return 'tifffile', tifffile.imread(io.BytesIO(data))
  except Exception as e:  # pylint: disable=broad-except
    raise DataError(f'{path}: cannot read {kind} TIFF ({e}).') from e


def read_image(path):
  """An image file -> [H, W, 3] uint8 (rules in the module docstring).

  Raises:
    DataError naming the file: unreadable, truncated or an unsupported mode.
  """
  data = epath.Path(path).read_bytes()
  if _png_is_16_bit_colour(data):
    from segjax.data.tf_host import tf  # pylint: disable=g-import-not-at-top
    try:
      array = tf.io.decode_png(data, dtype=tf.uint16).numpy()
    except tf.errors.OpError as e:
      raise DataError(f'{path}: cannot decode PNG ({e.message}).') from e
    return _rgb_of_array(array, path)
  mode, array = _decode(data, path, 'image')
  if mode == 'P':  # Palette indices -> colours, through Pillow.
    with Image.open(io.BytesIO(data)) as im:
      return np.asarray(im.convert('RGB'), np.uint8)
  if mode == '1':
    array = array.astype(np.uint8) * 255
  return _rgb_of_array(array, path)


def read_mask(path):
  """A mask file -> [H, W] or [H, W, C] (C = 3 or 4: RGB masks) integers.

  Palette PNGs give their indices (class ids), 1-bit ones 0 / 1; the alpha
  of LA / PA masks is dropped.

  Raises:
    DataError naming the file: unreadable, truncated or float samples.
  """
  mode, array = _decode(epath.Path(path).read_bytes(), path, 'mask')
  if not np.issubdtype(array.dtype, np.integer) and array.dtype != bool:
    raise DataError(f'{path}: mask samples are {array.dtype}; expected '
                    'integers.')
  if mode in ('LA', 'PA'):
    array = array[..., 0]
  return array.astype(np.uint8) if array.dtype == bool else array
