"""Local dataset folders: `.npz` shards, CIFAR pickles, IDX files, image folders.

Owns format detection, reading and validating each format, and the
per-process cache of whole splits (`load_full`). A new local format is one
reader here plus one line in `detect_format`. The formats:

* `train_*.npz` / `test.npz` shards (`images`, `labels` arrays);
* the CIFAR-10 / CIFAR-100 python pickles;
* MNIST-style IDX files (`train-images-idx3-ubyte.gz`, ...);
* image folders, as vit_jax reads them: `<split>/<class>/<image>` with
  `.jpg` / `.jpeg` / `.png` images (see `folders.read_split` and
  docs/data.md for the rules: class names, allowed files, sizes).

Never imports TensorFlow, with one exception: an image folder whose images
vary in size is resized to `config.image_size` with TensorFlow's
antialiased resize, exactly as variable-size tfds datasets are
(`mixer.data.tfds`); that import happens only on that path.
"""

import functools
import gzip
import math
import os
import pickle
import re
import struct
from typing import Any, Dict, List, Optional, Tuple

from absl import logging
import numpy as np

from mixer.data import folders
from mixer.data import splits
from mixer.data.base import DataError
from mixer.data.base import ENV_DATA_DIR
from mixer.data.base import KNOWN_CLASS_NAMES
from mixer.data.base import check_arrays
from mixer.data.base import concatenate
from mixer.data.base import dataset_name
from mixer.data.base import describe
from mixer.data.base import image_hw
from mixer.data.base import natural_key
from mixer.data.base import where_to_put_data

_NPZ = 'npz'
_CIFAR10_PICKLE = 'cifar10_pickle'
_CIFAR100_PICKLE = 'cifar100_pickle'
_IDX = 'idx'
_IMAGE_FOLDER = 'image_folder'


def detect_format(folder: str) -> Optional[Tuple[str, str]]:
  """(format, folder holding its files) for a local dataset folder, or None."""
  names = set(os.listdir(folder))
  if any(n.endswith('.npz') for n in names):
    return _NPZ, folder
  if 'data_batch_1' in names or 'test_batch' in names:
    return _CIFAR10_PICKLE, folder
  if 'meta' in names and ('train' in names or 'test' in names):
    return _CIFAR100_PICKLE, folder
  if any(re.search(r'idx[13]-ubyte', n) for n in names):
    return _IDX, folder
  for sub, fmt in (('cifar-10-batches-py', _CIFAR10_PICKLE),
                   ('cifar-100-python', _CIFAR100_PICKLE)):
    if os.path.isdir(os.path.join(folder, sub)):
      return fmt, os.path.join(folder, sub)
  if any(os.path.isdir(os.path.join(folder, s))
         for s in folders.REFERENCE_SPLITS):
    return _IMAGE_FOLDER, folder
  return None


def _load_npz(path: str, num_classes: Optional[int]):
  try:
    with np.load(path, allow_pickle=False) as archive:
      missing = sorted({'images', 'labels'} - set(archive.files))
      if missing:
        raise DataError(f'{path}: no array(s) {", ".join(missing)} (it has '
                        f'{", ".join(archive.files) or "none"})')
      images, labels = archive['images'], archive['labels']
  except DataError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise DataError(f'{path}: cannot read the .npz archive ({describe(e)}); '
                    'is it truncated or corrupt?') from e
  return check_arrays(path, images, labels, num_classes)


def _npz_files(folder: str, split: str) -> List[str]:
  pattern = re.compile(rf'{re.escape(split)}(_\d+)?\.npz')
  return [os.path.join(folder, n)
          for n in sorted(os.listdir(folder), key=natural_key)
          if pattern.fullmatch(n)]


class _NumpyUnpickler(pickle.Unpickler):
  """Unpickles dicts of numpy arrays and nothing else.

  The CIFAR python release is a set of pickles; refusing every global but
  numpy's array reconstructors keeps a tampered file from running code.
  """
  _ALLOWED = {
      ('numpy', 'ndarray'), ('numpy', 'dtype'), ('_codecs', 'encode'),
      ('numpy.core.multiarray', '_reconstruct'),
      ('numpy._core.multiarray', '_reconstruct'),
      ('numpy.core.multiarray', 'scalar'), ('numpy._core.multiarray', 'scalar'),
      ('numpy.core.numeric', '_frombuffer'),
      ('numpy._core.numeric', '_frombuffer'),
  }

  def find_class(self, module, name):
    if (module, name) in self._ALLOWED:
      return super().find_class(module, name)
    raise pickle.UnpicklingError(f'refusing to load global {module}.{name}')


def _read_pickle(path: str) -> Dict[str, Any]:
  try:
    with open(path, 'rb') as f:
      obj = _NumpyUnpickler(f, encoding='bytes').load()
  except FileNotFoundError as e:
    raise DataError(f'{path}: file not found') from e
  except Exception as e:  # pylint: disable=broad-except
    raise DataError(f'{path}: cannot unpickle ({describe(e)}); is it '
                    'truncated or corrupt?') from e
  if not isinstance(obj, dict):
    raise DataError(f'{path}: expected a pickled dict, got '
                    f'{type(obj).__name__}')
  return {k.decode('latin1') if isinstance(k, bytes) else k: v
          for k, v in obj.items()}


def _load_cifar_pickle(path: str, label_key: str,
                       num_classes: Optional[int]):
  batch = _read_pickle(path)
  for key in ('data', label_key):
    if key not in batch:
      raise DataError(f'{path}: no {key!r} entry (has '
                      f'{", ".join(sorted(map(str, batch)))})')
  data = np.asarray(batch['data'])
  if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
    raise DataError(f'{path}: data has shape {data.shape}, expected '
                    '[N, 3072] (CIFAR rows: 1024 R, 1024 G, 1024 B)')
  if data.dtype != np.uint8:
    raise DataError(f'{path}: data has dtype {data.dtype}, expected uint8')
  images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  return check_arrays(path, np.ascontiguousarray(images),
                      np.asarray(batch[label_key]), num_classes)


def _cifar_pickle_files(fmt: str, folder: str, split: str) -> List[str]:
  if fmt == _CIFAR10_PICKLE:
    if split == 'train':
      names = sorted((n for n in os.listdir(folder)
                      if re.fullmatch(r'data_batch_\d+', n)), key=natural_key)
      return [os.path.join(folder, n) for n in names]
    if split == 'test':
      return [os.path.join(folder, 'test_batch')]
  elif split in ('train', 'test'):
    return [os.path.join(folder, split)]
  return []


def _cifar_pickle_class_names(fmt: str, folder: str) -> Optional[Tuple[str]]:
  meta, key = (('batches.meta', 'label_names') if fmt == _CIFAR10_PICKLE
               else ('meta', 'fine_label_names'))
  path = os.path.join(folder, meta)
  if not os.path.exists(path):
    return None
  names = _read_pickle(path).get(key)
  if names is None:
    return None
  return tuple(n.decode('utf-8') if isinstance(n, bytes) else str(n)
               for n in names)


_IDX_PREFIXES = {'train': ('train',), 'test': ('t10k', 'test')}


def _idx_files(folder: str, split: str) -> Optional[Tuple[str, str]]:
  """(images file, labels file) of an IDX split, or None if absent."""
  names = set(os.listdir(folder))
  for prefix in _IDX_PREFIXES.get(split, (split,)):
    found = {}
    for kind, dims in (('images', 3), ('labels', 1)):
      for sep in ('-', '.'):  # 'train-images-idx3-ubyte' or '...images.idx3'.
        for ext in ('.gz', ''):
          name = f'{prefix}-{kind}{sep}idx{dims}-ubyte{ext}'
          if name in names and kind not in found:
            found[kind] = os.path.join(folder, name)
    if len(found) == 2:
      return found['images'], found['labels']
  return None


def _read_idx(path: str, ndim: int) -> np.ndarray:
  """Reads an unsigned-byte IDX file (gzipped or not), checking its header."""
  try:
    opener = gzip.open if path.endswith('.gz') else open
    with opener(path, 'rb') as f:
      data = f.read()
  except Exception as e:  # pylint: disable=broad-except
    raise DataError(f'{path}: cannot read ({describe(e)}); is it truncated '
                    'or corrupt?') from e
  expected_magic = 0x0800 + ndim  # 0x08 = unsigned byte, then the rank.
  if len(data) < 4 + 4 * ndim:
    raise DataError(f'{path}: only {len(data)} bytes, too short for an IDX '
                    'header')
  magic = struct.unpack('>I', data[:4])[0]
  if magic != expected_magic:
    raise DataError(f'{path}: IDX magic number is 0x{magic:08x}, expected '
                    f'0x{expected_magic:08x} (unsigned bytes, {ndim} '
                    'dimension(s))')
  dims = struct.unpack(f'>{ndim}I', data[4:4 + 4 * ndim])
  header = 4 + 4 * ndim
  size = header + math.prod(dims)
  if len(data) != size:
    raise DataError(f'{path}: {len(data)} bytes, but its header (dims '
                    f'{list(dims)}) implies {size}')
  return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


def _load_idx(images_path: str, labels_path: str,
              num_classes: Optional[int]):
  images = _read_idx(images_path, 3)
  labels = _read_idx(labels_path, 1)
  if len(images) != len(labels):
    raise DataError(f'{labels_path}: {len(labels)} labels but '
                    f'{images_path} has {len(images)} images')
  return check_arrays(images_path, images, labels, num_classes)


def _npz_split(root: str, split: str, num_classes: Optional[int]):
  files = _npz_files(root, split)
  if not files:
    found = sorted({re.sub(r'(_\d+)?\.npz$', '', n)
                    for n in os.listdir(root) if n.endswith('.npz')})
    raise DataError(f'{root}: no {split}.npz or {split}_*.npz for split '
                    f'{split!r} (splits found: {", ".join(found)})')
  return [(f,) + _load_npz(f, num_classes) for f in files], None


def _cifar_pickle_split(fmt: str, root: str, split: str,
                        num_classes: Optional[int]):
  files = _cifar_pickle_files(fmt, root, split)
  if not files:
    raise DataError(f'{root}: CIFAR pickles have only "train" and "test" '
                    f'splits, not {split!r}')
  label_key = 'labels' if fmt == _CIFAR10_PICKLE else 'fine_labels'
  parts = [(f,) + _load_cifar_pickle(f, label_key, num_classes)
           for f in files]
  return parts, _cifar_pickle_class_names(fmt, root)


def _idx_split(root: str, split: str, num_classes: Optional[int]):
  pair = _idx_files(root, split)
  if pair is None:
    prefix = _IDX_PREFIXES.get(split, (split,))[0]
    raise DataError(f'{root}: no {prefix}-images-idx3-ubyte(.gz) and '
                    f'{prefix}-labels-idx1-ubyte(.gz) for split {split!r}')
  return [(pair[0],) + _load_idx(pair[0], pair[1], num_classes)], None


def _config_split_names(config, first: Optional[str]) -> Tuple[str, ...]:
  names = []
  for spec in (first, config.get('train_split', 'train'),
               config.get('eval_split', 'test')):
    if spec:
      names.extend(sub.name for sub in splits.parse_split(spec))
  return tuple(names)


def image_options(config, folder: str, split: Optional[str] = None
                  ) -> Optional[folders.ImageOptions]:
  """Decoding options when `folder` is an image folder, else None.

  The folder counts as fixed-size when every image of its `train/` and
  `test/` splits and of the config's train, eval (and `split`'s) splits has
  one size; then all its splits load as stored, else all are resized to
  `config.image_size`.
  """
  detected = detect_format(folder)
  if detected is None or detected[0] != _IMAGE_FOLDER:
    return None
  channels = int(config.get('channels', 3) or 3)
  if channels not in (1, 3):
    raise DataError(f'config.channels={channels}: image folders load as 1 '
                    '(grayscale) or 3 (RGB) channels')
  fixed = folders.fixed_size(detected[1], _config_split_names(config, split))
  return folders.ImageOptions(channels, None if fixed else image_hw(config))


def fixed_size(config, folder: str) -> bool:
  """False when `folder` is an image folder whose images vary in size."""
  options = image_options(config, os.path.abspath(folder))
  return options is None or options.hw is None


def encoded_files(config, folder: str, split: str
                  ) -> Optional[Tuple[List[str], np.ndarray, bool]]:
  """(paths, labels, all JPEG) of `split` of a variable-size image folder.

  The same examples in the same order as `load(config, folder, split)`;
  None when `folder` is not an image folder or its images share one size
  (its arrays then hold the original pixels). The streaming path reads these
  files so that crops come from the original images, as for tfds.
  """
  folder = os.path.abspath(folder)
  options = image_options(config, folder, split)
  if options is None or options.hw is None:
    return None
  paths, labels, formats = [], [], set()
  for sub in splits.parse_split(split):
    index = folders.index_split(folder, sub.name)
    start, stop = sub.bounds(len(index.paths), split)
    paths.extend(index.paths[start:stop])
    labels.append(index.labels[start:stop])
    formats.update(index.formats[start:stop])
  return (paths, np.concatenate(labels).astype(np.int32),
          bool(formats) and formats <= set(folders.JPEG_FORMATS))


def stored_class_names(config, folder: str) -> Optional[Tuple[str, ...]]:
  """Class names stored with a local dataset (pickle metadata, image folder
  names), in label order, or None."""
  folder = os.path.abspath(folder)
  detected = detect_format(folder)
  if detected is not None and detected[0] == _IMAGE_FOLDER:
    root = detected[1]
    return folders.class_folders(
        os.path.join(root, folders.reference_split(root)))
  for sub in splits.parse_split(config.train_split)[:1]:
    return load_full(folder, sub.name, num_classes_hint(config), None)[2]
  return None


# Format -> reader(root, split, num_classes, image options) -> ([(file,
# images, labels)], class names or None). A new local format is one reader
# and one entry here (plus its detection in `detect_format`). Only image
# folders use the options (arrays are stored decoded).
_READERS = {
    _NPZ: lambda r, s, n, _: _npz_split(r, s, n),
    _CIFAR10_PICKLE: lambda r, s, n, _: _cifar_pickle_split(
        _CIFAR10_PICKLE, r, s, n),
    _CIFAR100_PICKLE: lambda r, s, n, _: _cifar_pickle_split(
        _CIFAR100_PICKLE, r, s, n),
    _IDX: lambda r, s, n, _: _idx_split(r, s, n),
    _IMAGE_FOLDER: folders.read_split,
}


@functools.lru_cache(maxsize=16)
def load_full(folder: str, split: str, num_classes: Optional[int],
              options: Optional[folders.ImageOptions] = None
              ) -> Tuple[np.ndarray, np.ndarray, Optional[Tuple[str]]]:
  """Whole unsliced split of a local folder, cached, read-only.

  `options` (from `image_options`) say how an image folder is decoded; the
  other formats ignore them.

  Returns:
    (images uint8 [N, H, W, C], labels int32 [N], class names from the
    folder's metadata or None).
  """
  if not os.path.isdir(folder):
    raise DataError(f'data folder {folder} does not exist')
  detected = detect_format(folder)
  if detected is None:
    raise DataError(f'{folder}: no dataset found (expected train_*.npz / '
                    'test.npz shards, a CIFAR python pickle folder, IDX '
                    'files such as train-images-idx3-ubyte.gz, or image '
                    f'folders {folders.LAYOUT})')
  fmt, root = detected
  parts, class_names = _READERS[fmt](root, split, num_classes, options)
  images, labels = concatenate(parts)
  images = np.ascontiguousarray(images)
  images.flags.writeable = False  # Cached and shared: nobody may modify it.
  labels.flags.writeable = False
  logging.info('Loaded %s split %r (%s): images %s uint8, %d labels.', root,
               split, fmt, images.shape, len(labels))
  return images, labels, class_names


def num_classes_hint(config) -> Optional[int]:
  """Known class count for validation: the dataset's, else the model's."""
  name = dataset_name(config)
  if name in KNOWN_CLASS_NAMES:
    return len(KNOWN_CLASS_NAMES[name])
  model = config.get('model')
  n = model.get('num_classes', 0) if model is not None else 0
  return int(n) if n and n > 0 else None


def load(config, folder: str, split: str) -> Tuple[np.ndarray, np.ndarray]:
  """`split` (tfds syntax, slices included) of the local dataset in `folder`."""
  if not os.path.isdir(folder):
    source = 'config.data_dir' if config.get('data_dir') else (
        f'${ENV_DATA_DIR}')
    raise DataError(f'data folder {folder} (from {source}) does not exist; '
                    f'{where_to_put_data(dataset_name(config))}')
  num_classes = num_classes_hint(config)
  folder = os.path.abspath(folder)
  options = image_options(config, folder, split)
  pieces = []
  for sub in splits.parse_split(split):
    images, labels, _ = load_full(folder, sub.name, num_classes, options)
    start, stop = sub.bounds(len(labels), split)
    if (start, stop) != (0, len(labels)):
      images, labels = images[start:stop], labels[start:stop]
    pieces.append((images, labels))
  if len(pieces) == 1:
    return pieces[0]
  return concatenate([(split, i, l) for i, l in pieces])


def clear_cache() -> None:
  """Forgets every cached split and image-folder listing."""
  load_full.cache_clear()
  folders.index_split.cache_clear()
