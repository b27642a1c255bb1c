"""Image-folder datasets: `<split>/<class>/<image>.jpg|.jpeg|.png`, as vit_jax reads them.

Owns listing a split's class folders and images (`index_split`), decoding
them with PIL (`read_split`, the reader `mixer.data.local` dispatches to),
and whether a folder's images share one size (`fixed_size`). Knows nothing
of configs; `mixer.data.local` turns a config into `ImageOptions`. Never
imports TensorFlow, except to resize images of varying sizes exactly as
variable-size tfds datasets are resized (`mixer.data.tfds`).
"""

import concurrent.futures
import dataclasses
import functools
import os
from typing import FrozenSet, Optional, Sequence, Tuple

import numpy as np

from mixer.data.base import DataError
from mixer.data.base import describe
from mixer.data.base import natural_key

# The splits whose class folders define the labels: `train/`, else `test/`.
# An image folder is detected by (at least) one of them.
REFERENCE_SPLITS = ('train', 'test')
_IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png')  # Compared lower-cased.
# Files every OS or tool drops into folders; skipped like hidden (dot) files.
_IGNORED_FILES = ('thumbs.db', 'desktop.ini')
# PIL's names of what we read: JPEG (MPO: a camera JPEG with extra frames, of
# which the first is read, as TensorFlow's decoder does) and PNG.
JPEG_FORMATS = ('JPEG', 'MPO')
_IMAGE_FORMATS = JPEG_FORMATS + ('PNG',)
_CHUNK = 512  # Images decoded per thread-pool batch (bounds host memory).
LAYOUT = '<split>/<class>/<image>.jpg|.png'


def _ignored(name: str) -> bool:
  return name.startswith('.') or name.lower() in _IGNORED_FILES


def _threads() -> int:
  return max(1, min(8, os.cpu_count() or 1))


def _import_pil():
  try:
    from PIL import Image  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise DataError(f'image folders need pillow ({describe(e)}); '
                    '`pip install pillow`') from e
  return Image


def class_folders(split_dir: str) -> Tuple[str, ...]:
  """Sorted class folder names of a split folder; nothing else may be there."""
  try:
    entries = sorted(os.scandir(split_dir), key=lambda e: e.name)
  except OSError as e:
    raise DataError(f'{split_dir}: cannot list the split folder '
                    f'({describe(e)})') from e
  classes = []
  for entry in entries:
    if _ignored(entry.name):
      continue
    if not entry.is_dir():
      raise DataError(f'{entry.path}: a file directly in the split folder; an '
                      f'image folder holds {LAYOUT}, so move it into a class '
                      f'folder of {split_dir} or remove it')
    classes.append(entry.name)
  if not classes:
    raise DataError(f'{split_dir}: split folder with no class folders; put '
                    f'each class\'s images in {split_dir}/<class>/ (layout '
                    f'{LAYOUT}) or remove the folder')
  return tuple(classes)  # Sorted by name: Python's string order.


def reference_split(root: str) -> str:
  return next((s for s in REFERENCE_SPLITS
               if os.path.isdir(os.path.join(root, s))), REFERENCE_SPLITS[0])


@dataclasses.dataclass(frozen=True)
class _SplitIndex:
  """The files of one image-folder split, in load order, and their headers."""
  folder: str  # The split folder.
  paths: Tuple[str, ...]  # Class by class (sorted), files in natural order.
  labels: np.ndarray  # int32 [N], read-only: index into class_names.
  class_names: Tuple[str, ...]
  formats: Tuple[str, ...]  # PIL format per file ('JPEG', 'MPO', 'PNG').
  sizes: FrozenSet[Tuple[int, int]]  # Distinct (height, width).


def _probe(path: str) -> Tuple[str, Tuple[int, int]]:
  """(PIL format, (h, w)) from the file's header; DataError if unreadable."""
  image_lib = _import_pil()
  try:
    with image_lib.open(path) as image:
      fmt, (w, h) = image.format, image.size
  except Exception as e:  # pylint: disable=broad-except
    raise DataError(f'{path}: not a readable image ({describe(e)}); is it '
                    'truncated or corrupt? Replace it with a valid JPEG or '
                    'PNG, or delete it') from e
  if fmt not in _IMAGE_FORMATS:
    raise DataError(f'{path}: a {fmt} image; image folders read only JPEG and '
                    'PNG, so convert it (e.g. to PNG) or delete it')
  return fmt, (h, w)


@functools.lru_cache(maxsize=32)
def index_split(root: str, split: str) -> _SplitIndex:
  """Lists and checks `root/split/<class>/<image>`, reading only headers."""
  split_dir = os.path.join(root, split)
  if not os.path.isdir(split_dir):
    found = sorted(n for n in os.listdir(root)
                   if not _ignored(n) and os.path.isdir(os.path.join(root, n)))
    raise DataError(f'{root}: no folder {split}/ for split {split!r} (split '
                    f'folders found: {", ".join(found) or "none"})')
  names = class_folders(split_dir)
  reference = reference_split(root)
  if split != reference:
    ref_dir = os.path.join(root, reference)
    ref_names = class_folders(ref_dir)
    if names != ref_names:
      here = sorted(set(names) - set(ref_names))
      there = sorted(set(ref_names) - set(names))
      raise DataError(
          f'{split_dir} and {ref_dir} have different class folders (only in '
          f'{split}/: {", ".join(here) or "none"}; only in {reference}/: '
          f'{", ".join(there) or "none"}); every split needs the same class '
          f'folders, since their sorted names in {reference}/ define the '
          'labels')
  paths, labels = [], []
  for label, name in enumerate(names):
    class_dir = os.path.join(split_dir, name)
    files = []
    for entry in os.scandir(class_dir):
      if _ignored(entry.name):
        continue
      if entry.is_dir():
        raise DataError(f'{entry.path}: a folder inside a class folder; '
                        f'images must sit directly in {class_dir} (layout '
                        f'{LAYOUT}), so move them up or remove the folder')
      if os.path.splitext(entry.name)[1].lower() not in _IMAGE_EXTENSIONS:
        raise DataError(f'{entry.path}: not a .jpg, .jpeg or .png file; image '
                        'folders hold only JPEG and PNG images (hidden files '
                        'are skipped), so convert it or move it out')
      files.append(entry.name)
    if not files:
      raise DataError(f'{class_dir}: empty class folder (no .jpg, .jpeg or '
                      '.png images); add its images, or remove the class '
                      'folder from every split')
    files.sort(key=natural_key)
    paths.extend(os.path.join(class_dir, f) for f in files)
    labels.extend([label] * len(files))
  with concurrent.futures.ThreadPoolExecutor(_threads()) as pool:
    headers = list(pool.map(_probe, paths, chunksize=64))
  labels = np.asarray(labels, np.int32)
  labels.flags.writeable = False
  return _SplitIndex(split_dir, tuple(paths), labels, names,
                     tuple(h[0] for h in headers),
                     frozenset(h[1] for h in headers))


def _pixels(image, channels: int) -> np.ndarray:
  """uint8 [H, W, channels] of a PIL image: 'L' for 1 channel, else 'RGB'.

  Alpha is dropped, palettes expanded, grayscale replicated, colour turned
  to luma (PIL's ITU-R 601-2 weights); 16-bit grayscale keeps its high byte
  (as TensorFlow's decode_png to uint8) instead of PIL's clipping.
  """
  if image.mode.startswith('I;16'):
    gray = (np.asarray(image).astype(np.uint16) >> 8).astype(np.uint8)
    return np.repeat(gray[..., None], channels, axis=-1)
  pixels = np.asarray(image.convert('L' if channels == 1 else 'RGB'))
  return pixels[..., None] if channels == 1 else pixels


def _decode(path: str, channels: int) -> np.ndarray:
  image_lib = _import_pil()
  try:
    with image_lib.open(path) as image:
      image.load()  # Raises on truncated data (LOAD_TRUNCATED_IMAGES off).
      return _pixels(image, channels)
  except Exception as e:  # pylint: disable=broad-except
    raise DataError(f'{path}: cannot decode the image ({describe(e)}); is it '
                    'truncated or corrupt? Replace it or delete it') from e


def _decode_all(paths: Sequence[str], channels: int):
  """Yields (i, uint8 [H, W, C]) in order, decoding in a thread pool."""
  with concurrent.futures.ThreadPoolExecutor(_threads()) as pool:
    for start in range(0, len(paths), _CHUNK):
      chunk = paths[start:start + _CHUNK]
      for i, pixels in enumerate(pool.map(_decode, chunk,
                                          [channels] * len(chunk))):
        yield start + i, pixels


def _import_tf_for_resize(folder: str):
  try:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise DataError(f'{folder}: its images vary in size, and resizing them to '
                    'config.image_size (as for variable-size tfds datasets) '
                    f'needs TensorFlow ({describe(e)}); install '
                    'tensorflow-cpu, or store the images at one size') from e
  return tf


@dataclasses.dataclass(frozen=True)
class ImageOptions:
  """How an image folder is decoded: channels, and the size when it varies.

  `hw` is None when every image of the folder has one size (pixels kept as
  stored), else `config.image_size` as (h, w). Part of `load_full`'s cache
  key.
  """
  channels: int = 3
  hw: Optional[Tuple[int, int]] = None


def read_split(root: str, split: str, num_classes: Optional[int],
                        options: Optional[ImageOptions]):
  """Reads `root/<split>/<class>/<image>` (an image folder, as vit_jax's).

  Class names are the class folder names of `train/` (of `test/` when there
  is no `train/`), sorted in Python's string order, and labels index them;
  every other split must hold exactly the same class folders, or a
  DataError names both folders. Examples come class by class, files in
  natural order (`2.png` before `10.png`). Only `.jpg`, `.jpeg` and `.png`
  files (any case; JPEG or PNG content) may be in a class folder; hidden
  files, `Thumbs.db` and `desktop.ini` are skipped; any other file, a
  nested folder, an empty class folder, a split folder without class
  folders, or an unreadable or truncated image is a one-line DataError
  naming it. PIL decodes, converting to `options.channels` (1: 'L', 3:
  'RGB'; EXIF orientation is ignored, as TensorFlow's decoders ignore it).

  When every image of the folder's splits has one size (`options.hw` None)
  the pixels are kept as stored -- a PNG folder loads bit-identically to
  the arrays it was written from. Otherwise every image is resized to
  `options.hw` with tfds's variable-size resize (`mixer.data.tfds`).
  """
  options = options or ImageOptions()
  index = index_split(root, split)
  names, n = index.class_names, len(index.paths)
  if num_classes and len(names) > num_classes:
    raise DataError(f'{index.folder}: {len(names)} class folders, but the '
                    f'dataset has {num_classes} classes (config.model.'
                    'num_classes, or the known classes of config.dataset); '
                    f'for these folders pass --config.model.num_classes='
                    f'{len(names)} (and a --config.dataset name of your own '
                    'if it is a known one)')
  channels = options.channels
  if options.hw is None:
    if len(index.sizes) > 1:
      raise DataError(f'{index.folder}: images vary in size '
                      f'({_sizes_text(index.sizes)}); config.image_size is '
                      'needed to resize them')
    (h, w), = index.sizes
    images = np.empty((n, h, w, channels), np.uint8)
    for i, pixels in _decode_all(index.paths, channels):
      if pixels.shape != images.shape[1:]:  # The header lied.
        raise DataError(f'{index.paths[i]}: decoded to {pixels.shape}, '
                        f'expected {images.shape[1:]}')
      images[i] = pixels
  else:
    tf = _import_tf_for_resize(index.folder)
    hw = tuple(options.hw)

    @tf.function(input_signature=[
        tf.TensorSpec([None, None, channels], tf.uint8)])
    def resize(image):  # As mixer.data.tfds._load_cached resizes.
      return tf.cast(tf.clip_by_value(tf.round(tf.image.resize(
          image, hw, antialias=True)), 0, 255), tf.uint8)

    images = np.empty((n,) + hw + (channels,), np.uint8)
    for i, pixels in _decode_all(index.paths, channels):
      images[i] = resize(pixels).numpy()
  return [(index.folder, images, np.array(index.labels))], names


def _sizes_text(sizes) -> str:
  sizes = sorted(sizes)
  text = ', '.join(f'{h}x{w}' for h, w in sizes[:3])
  return text + (f', ... ({len(sizes)} sizes)' if len(sizes) > 3 else '')


def fixed_size(root: str, names: Sequence[str]) -> bool:
  """Whether the images of these splits and of train/, test/ share one size.

  Splits are listed in the order given (so the split being loaded reports
  its own problems first); a missing split folder is skipped here and
  reported when that split is loaded.
  """
  sizes = set()
  for name in dict.fromkeys(tuple(names) + REFERENCE_SPLITS):
    if os.path.isdir(os.path.join(root, name)):
      sizes |= index_split(root, name).sizes
  return len(sizes) <= 1
