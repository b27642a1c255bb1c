"""Input pipeline: whole datasets in host memory, batched deterministically.

Where the data comes from, in order:

1. `config.data_dir`, a local dataset folder (or a folder of datasets holding
   a `<config.dataset>/` subfolder) -- or a TFDS data dir holding the dataset
   prepared by tfds (`<data_dir>/<dataset>/<version>/dataset_info.json`),
   which is then read with tfds from there;
2. `$MIXER_DATA_DIR/<config.dataset>/`, if that folder exists (a TFDS
   prepared dataset there is read with tfds, as in 1.);
3. TensorFlow Datasets by name (`cifar10`, `cifar100`, `fashion_mnist`,
   `mnist`, `oxford_iiit_pet`, ...), downloading into tfds's data dir
   (`$TFDS_DATA_DIR`, default `~/tensorflow_datasets`) if not prepared there.
   Datasets that need a manual download (`imagenet2012`, `imagenet21k`) are
   never downloaded: tfds builds them only from archives already in its
   manual dir, and when they are missing a one-line error says how to
   prepare them once (docs/imagenet.md). `imagenet21k` is not in tfds's
   catalogue; it is read from its prepared files (big_vision's layout: a
   `full` split).

A local folder may hold any of these formats, detected automatically:

* `train_*.npz` / `test.npz` shards (also `<split>.npz` / `<split>_*.npz`),
  each with arrays `images` (uint8 [N, H, W, C] or [N, H, W]) and `labels`
  ([N]); shards are concatenated in natural sort order (`train_2` before
  `train_10`);
* the original CIFAR python pickles: `cifar-10-batches-py/` (data_batch_1..5,
  test_batch, batches.meta) or `cifar-100-python/` (train, test, meta; fine
  labels), either as that folder itself or as a subfolder of it;
* MNIST-style IDX files (`train-images-idx3-ubyte.gz`,
  `train-labels-idx1-ubyte.gz`, `t10k-...` for the test split; gzipped or
  not), as Fashion-MNIST and MNIST are distributed.

Everything is validated on load (uint8 pixels, ranks, equal lengths, labels
in [0, num_classes), IDX magic numbers and sizes) and any problem raises
`DataError` with a one-line message naming the file. Local data never needs
TensorFlow: tensorflow / tensorflow_datasets are imported only when a dataset
has to come from tfds.

Batches carry the raw stored uint8 pixels: no normalisation and no
augmentation happen here. Cropping, flipping, RandAugment and mixup run on
device inside the jitted train step (`mixer.augment`), so the same code
augments host batches and a device-resident copy of the dataset.

Data order is a pure function of (config.seed, step): epoch e visits the
training set in the order `epoch_permutation(seed, e, num_train)`, the
remainder of each epoch that does not fill a global batch is dropped, and
process p of P takes the p-th contiguous slice of every global batch. Hence a
run resumed at step k sees exactly what an uninterrupted run sees from step k,
a P-process run sees the same global batches as a 1-process run, and the
device-resident pipeline in `mixer.train` (which gathers by the same
permutation) matches the host one example for example.

Evaluation covers every example of the eval split exactly once: the last
global batch is padded with zeros and `mask` marks real examples (vit_jax's
input pipeline drops that partial batch and so silently skips examples).

Datasets too large for host memory (ImageNet), and recipes that need the
Inception crop or a resize to a larger resolution (the paper's pre-training
and fine-tuning), use the streaming tf.data path instead:
`tfds_train_dataset` / `tfds_eval_dataset` yield the same batch dicts with
images already cropped or resized to `config.image_size` on the host (flip,
RandAugment and mixup still run on device). That path imports TensorFlow.
"""

import dataclasses
import functools
import glob
import gzip
import math
import os
import pickle
import re
import struct
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from absl import logging
import numpy as np

# Environment variable naming a folder of datasets (`cifar10/`, ...).
ENV_DATA_DIR = 'MIXER_DATA_DIR'

# A tfds dataset larger than this (uint8 train images) is not loaded into
# host memory: `dataset_info(...).in_memory` is False for it.
MAX_IN_MEMORY_BYTES = 32 * 2**30

_CIFAR10_NAMES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog',
                  'frog', 'horse', 'ship', 'truck')
_CIFAR100_NAMES = tuple("""
    apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy
    bridge bus butterfly camel can castle caterpillar cattle chair chimpanzee
    clock cloud cockroach couch crab crocodile cup dinosaur dolphin elephant
    flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower
    leopard lion lizard lobster man maple_tree motorcycle mountain mouse
    mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree
    plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea
    seal shark shrew skunk skyscraper snail snake spider squirrel streetcar
    sunflower sweet_pepper table tank telephone television tiger tractor train
    trout tulip turtle wardrobe whale willow_tree wolf woman worm""".split())
_FASHION_MNIST_NAMES = ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat',
                        'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot')
_MNIST_NAMES = tuple(str(i) for i in range(10))

# Datasets whose classes are known without reading any metadata.
KNOWN_CLASS_NAMES = {
    'cifar10': _CIFAR10_NAMES,
    'cifar100': _CIFAR100_NAMES,
    'fashion_mnist': _FASHION_MNIST_NAMES,
    'mnist': _MNIST_NAMES,
}


class DataError(ValueError):
  """Missing, corrupt or misshaped data; the message is one user-facing line."""

  def __init__(self, message: str):
    super().__init__(' '.join(str(message).split()))


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What the training loop needs to know about a dataset.

  Attributes:
    name: `config.dataset`.
    num_classes: number of classes (labels are in [0, num_classes)).
    num_train: examples in `config.train_split` (after any slicing).
    num_eval: examples in `config.eval_split`.
    image_shape: (h, w, c) of the images as batches carry them (the stored
      images for in-memory data; grayscale gets c = 1).
    class_names: one name per class, in label order.
    in_memory: whether `load_split`/`train_batches` can hold the data in host
      memory (False only for very large tfds datasets such as ImageNet).
    fixed_size: False when the stored images vary in size (Pets, Flowers):
      `load_split` then resizes whole images to `config.image_size`, so a
      'center' eval crop must stream through `tfds_eval_dataset` instead.
  """
  name: str
  num_classes: int
  num_train: int
  num_eval: int
  image_shape: Tuple[int, int, int]
  class_names: Tuple[str, ...]
  in_memory: bool = True
  fixed_size: bool = True


# ----------------------------------------------------------------------------
# Where the data is.
# ----------------------------------------------------------------------------


def _dataset_name(config) -> str:
  """`config.dataset` without a tfds version suffix ('cifar10:3.0.2')."""
  return str(config.dataset).split(':')[0].split('/')[0]


# Datasets tfds cannot download: their builders need files the user fetches
# by hand (or, for ImageNet-21k, a builder of one's own). Name -> how to
# prepare it, for the error when it is missing.
MANUAL_DATASETS = {
    'imagenet2012': (
        'ImageNet needs a manual download: put ILSVRC2012_img_train.tar and '
        'ILSVRC2012_img_val.tar (image-net.org) in {data_dir}/downloads/manual/'
        ', prepare it once with `python -c "import tensorflow_datasets as tfds;'
        ' tfds.builder(\'imagenet2012\', data_dir=\'{data_dir}\')'
        '.download_and_prepare()"`, then set config.data_dir={data_dir} '
        '(docs/imagenet.md)'),
    'imagenet21k': (
        'ImageNet-21k is not in the public TFDS catalogue: download it from '
        'image-net.org, prepare it as a TFDS dataset named imagenet21k (image, '
        'label features; a "full" split, as big_vision) in a TFDS data dir '
        'such as {data_dir}, then set config.data_dir to that folder '
        '(docs/imagenet.md)'),
}


def _is_tfds_prepared(root: str, name: str) -> bool:
  """Whether `root` is a TFDS data dir holding `name` prepared by tfds.

  tfds writes `<root>/<name>/<version>/dataset_info.json`, or
  `<root>/<name>/<config>/<version>/dataset_info.json` for builder configs.
  """
  base = os.path.join(root, name)
  if not os.path.isdir(base):
    return False
  for pattern in ('*', os.path.join('*', '*')):
    if glob.glob(os.path.join(base, pattern, 'dataset_info.json')):
      return True
  return False


def tfds_data_dir(config) -> Optional[str]:
  """The TFDS data dir to read `config.dataset` from; None: tfds's default.

  `config.data_dir` (or `$MIXER_DATA_DIR` when data_dir is unset) is used as a
  TFDS data dir when it holds the dataset prepared by tfds. For the
  manual-download datasets (`MANUAL_DATASETS`) a `data_dir` without local
  arrays is taken as a TFDS data dir too, so that a missing dataset is
  reported with the way to prepare it there.
  """
  name = _dataset_name(config)
  data_dir = str(config.get('data_dir', '') or '')
  if data_dir:
    data_dir = os.path.expanduser(data_dir)
    if _is_tfds_prepared(data_dir, name):
      return data_dir
    if name in MANUAL_DATASETS and not (
        _has_local_data(data_dir) or
        _has_local_data(os.path.join(data_dir, name))):
      return data_dir
    return None
  root = os.path.expanduser(os.environ.get(ENV_DATA_DIR, ''))
  if root and _is_tfds_prepared(root, name):
    return root
  return None


def local_dir(config) -> Optional[str]:
  """The local folder to read `config.dataset` from, or None for tfds.

  `config.data_dir` wins when set (its `<dataset>/` subfolder is used when
  `data_dir` is a folder of datasets rather than a dataset folder); else
  `$MIXER_DATA_DIR/<dataset>` if that folder exists; else None. None too when
  that folder is a TFDS data dir (`tfds_data_dir`).
  """
  name = _dataset_name(config)
  if tfds_data_dir(config) is not None:
    return None
  data_dir = str(config.get('data_dir', '') or '')
  if data_dir:
    data_dir = os.path.expanduser(data_dir)
    sub = os.path.join(data_dir, name)
    if os.path.isdir(sub) and not _has_local_data(data_dir):
      return sub
    return data_dir
  root = os.environ.get(ENV_DATA_DIR, '')
  if root:
    path = os.path.join(os.path.expanduser(root), name)
    if os.path.isdir(path):
      return path
    logging.info('$%s=%s has no %s/ folder; using tfds.', ENV_DATA_DIR, root,
                 name)
  return None


def _has_local_data(folder: str) -> bool:
  try:
    return os.path.isdir(folder) and _detect_format(folder) is not None
  except OSError:
    return False


def _where_to_put_data(name: str) -> str:
  return (f'set config.data_dir to a local copy of {name!r}, put one in '
          f'${ENV_DATA_DIR}/{name}/, or let tfds download it')


# ----------------------------------------------------------------------------
# Split strings: 'train', 'train[:90%]', 'train[-5000:]', 'train+test'.
# ----------------------------------------------------------------------------

_SUB_SPLIT_RE = re.compile(r'^(?P<name>[\w-]+)(\[(?P<sel>[^\]]*)\])?$')
_BOUND_RE = re.compile(r'^(?P<val>-?\d+(\.\d*)?)?(?P<unit>%)?$')


@dataclasses.dataclass(frozen=True)
class _SubSplit:
  name: str
  start: Optional[float] = None
  stop: Optional[float] = None
  percent: bool = False

  def bounds(self, n: int, spec: str) -> Tuple[int, int]:
    """Absolute [start, stop) for a split of n examples, as tfds computes it.

    Percent boundaries round to the closest example (tfds' default
    `rounding='closest'`), so 'train[:90%]' holds the same examples whether
    the data come from tfds or from a local copy.
    """
    def absolute(value, default):
      if value is None:
        return default
      if self.percent:
        value = int(round(value * n / 100.0))
      if abs(value) > n:
        raise DataError(f'split {spec!r}: boundary {value} is outside the '
                        f'{n} examples of {self.name!r}')
      return n + value if value < 0 else value

    start, stop = absolute(self.start, 0), absolute(self.stop, n)
    return start, max(start, stop)


def _parse_split(spec: str) -> List[_SubSplit]:
  """Parses tfds-style split strings (no 'shard' units, no 'all')."""
  parts = []
  for sub in re.split(r'\s*\+\s*', str(spec).strip()):
    m = _SUB_SPLIT_RE.match(sub)
    if not m:
      raise DataError(f'unrecognised split {spec!r}; expected e.g. "train", '
                      '"train[:90%]", "train[45000:]" or "train+test"')
    sel = m.group('sel')
    if sel is None:
      parts.append(_SubSplit(m.group('name')))
      continue
    bounds = sel.split(':')
    matches = [_BOUND_RE.match(b.strip()) for b in bounds]
    if len(bounds) != 2 or not all(matches):
      raise DataError(f'unrecognised split {spec!r}: only slices like '
                      '[a:b] of example counts or percents are supported')
    percent = any(mm.group('unit') for mm in matches)
    values = []
    for mm in matches:
      val = mm.group('val')
      if val is None:
        values.append(None)
      elif percent:
        values.append(float(val))
      elif '.' in val:
        raise DataError(f'split {spec!r}: fractional example counts need %')
      else:
        values.append(int(val))
    parts.append(_SubSplit(m.group('name'), values[0], values[1], percent))
  return parts


# ----------------------------------------------------------------------------
# Local formats.
# ----------------------------------------------------------------------------

_NPZ = 'npz'
_CIFAR10_PICKLE = 'cifar10_pickle'
_CIFAR100_PICKLE = 'cifar100_pickle'
_IDX = 'idx'


def _natural_key(name: str):
  return [int(t) if t.isdigit() else t for t in re.split(r'(\d+)', name)]


def _detect_format(folder: str) -> Optional[Tuple[str, str]]:
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
  return None


def _check_arrays(source: str, images: Any, labels: Any,
                  num_classes: Optional[int]) -> Tuple[np.ndarray, np.ndarray]:
  """Validates one file's arrays; returns (uint8 NHWC images, int32 labels)."""
  images = np.asarray(images)
  labels = np.asarray(labels)
  if images.dtype != np.uint8:
    raise DataError(f'{source}: images have dtype {images.dtype}, expected '
                    'uint8 pixels in 0..255')
  if images.ndim == 3:  # Grayscale [N, H, W]: add the channel axis.
    images = images[..., None]
  if images.ndim != 4:
    raise DataError(f'{source}: images have shape {images.shape}, expected '
                    '[N, H, W, C] or [N, H, W]')
  if labels.ndim == 2 and labels.shape[1] == 1:  # Keras-style [N, 1].
    labels = labels[:, 0]
  if labels.ndim != 1:
    raise DataError(f'{source}: labels have shape {labels.shape}, expected '
                    '[N]')
  if not np.issubdtype(labels.dtype, np.integer):
    raise DataError(f'{source}: labels have dtype {labels.dtype}, expected '
                    'integers')
  if len(images) != len(labels):
    raise DataError(f'{source}: {len(images)} images but {len(labels)} '
                    'labels')
  if len(labels) and num_classes:
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= num_classes:
      raise DataError(f'{source}: labels span [{lo}, {hi}], outside [0, '
                      f'{num_classes}) for {num_classes} classes')
  return images, labels.astype(np.int32)


def _concatenate(parts: Sequence[Tuple[str, np.ndarray, np.ndarray]]
                ) -> Tuple[np.ndarray, np.ndarray]:
  """Concatenates per-file arrays, checking they share one image shape."""
  shape = parts[0][1].shape[1:]
  for source, images, _ in parts[1:]:
    if images.shape[1:] != shape:
      raise DataError(f'{source}: images are {images.shape[1:]}, but '
                      f'{parts[0][0]} has {shape}')
  if len(parts) == 1:
    return parts[0][1], parts[0][2]
  return (np.concatenate([p[1] for p in parts]),
          np.concatenate([p[2] for p in parts]))


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
    raise DataError(f'{path}: cannot read the .npz archive ({_describe(e)}); '
                    'is it truncated or corrupt?') from e
  return _check_arrays(path, images, labels, num_classes)


def _npz_files(folder: str, split: str) -> List[str]:
  pattern = re.compile(rf'{re.escape(split)}(_\d+)?\.npz')
  return [os.path.join(folder, n)
          for n in sorted(os.listdir(folder), key=_natural_key)
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
    raise DataError(f'{path}: cannot unpickle ({_describe(e)}); is it '
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
  return _check_arrays(path, np.ascontiguousarray(images),
                       np.asarray(batch[label_key]), num_classes)


def _cifar_pickle_files(fmt: str, folder: str, split: str) -> List[str]:
  if fmt == _CIFAR10_PICKLE:
    if split == 'train':
      names = sorted((n for n in os.listdir(folder)
                      if re.fullmatch(r'data_batch_\d+', n)), key=_natural_key)
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
    raise DataError(f'{path}: cannot read ({_describe(e)}); is it truncated '
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
  return _check_arrays(images_path, images, labels, num_classes)


@functools.lru_cache(maxsize=16)
def _load_local_full(folder: str, split: str, num_classes: Optional[int]
                    ) -> Tuple[np.ndarray, np.ndarray, Optional[Tuple[str]]]:
  """Whole unsliced split of a local folder, cached, read-only.

  Returns:
    (images uint8 [N, H, W, C], labels int32 [N], class names from the
    folder's metadata or None).
  """
  if not os.path.isdir(folder):
    raise DataError(f'data folder {folder} does not exist')
  detected = _detect_format(folder)
  if detected is None:
    raise DataError(f'{folder}: no dataset found (expected train_*.npz / '
                    'test.npz shards, a CIFAR python pickle folder, or IDX '
                    'files such as train-images-idx3-ubyte.gz)')
  fmt, root = detected
  class_names = None
  if fmt == _NPZ:
    files = _npz_files(root, split)
    if not files:
      found = sorted({re.sub(r'(_\d+)?\.npz$', '', n)
                      for n in os.listdir(root) if n.endswith('.npz')})
      raise DataError(f'{root}: no {split}.npz or {split}_*.npz for split '
                      f'{split!r} (splits found: {", ".join(found)})')
    parts = [(f,) + _load_npz(f, num_classes) for f in files]
  elif fmt in (_CIFAR10_PICKLE, _CIFAR100_PICKLE):
    files = _cifar_pickle_files(fmt, root, split)
    if not files:
      raise DataError(f'{root}: CIFAR pickles have only "train" and "test" '
                      f'splits, not {split!r}')
    label_key = 'labels' if fmt == _CIFAR10_PICKLE else 'fine_labels'
    parts = [(f,) + _load_cifar_pickle(f, label_key, num_classes)
             for f in files]
    class_names = _cifar_pickle_class_names(fmt, root)
  else:
    pair = _idx_files(root, split)
    if pair is None:
      prefix = _IDX_PREFIXES.get(split, (split,))[0]
      raise DataError(f'{root}: no {prefix}-images-idx3-ubyte(.gz) and '
                      f'{prefix}-labels-idx1-ubyte(.gz) for split {split!r}')
    parts = [(pair[0],) + _load_idx(pair[0], pair[1], num_classes)]
  images, labels = _concatenate(parts)
  images = np.ascontiguousarray(images)
  images.flags.writeable = False  # Cached and shared: nobody may modify it.
  labels.flags.writeable = False
  logging.info('Loaded %s split %r (%s): images %s uint8, %d labels.', root,
               split, fmt, images.shape, len(labels))
  return images, labels, class_names


def _num_classes_hint(config) -> Optional[int]:
  """Known class count for validation: the dataset's, else the model's."""
  name = _dataset_name(config)
  if name in KNOWN_CLASS_NAMES:
    return len(KNOWN_CLASS_NAMES[name])
  model = config.get('model')
  n = model.get('num_classes', 0) if model is not None else 0
  return int(n) if n and n > 0 else None


def _load_local(config, folder: str, split: str):
  if not os.path.isdir(folder):
    source = 'config.data_dir' if config.get('data_dir') else (
        f'${ENV_DATA_DIR}')
    raise DataError(f'data folder {folder} (from {source}) does not exist; '
                    f'{_where_to_put_data(_dataset_name(config))}')
  num_classes = _num_classes_hint(config)
  folder = os.path.abspath(folder)
  pieces = []
  for sub in _parse_split(split):
    images, labels, _ = _load_local_full(folder, sub.name, num_classes)
    start, stop = sub.bounds(len(labels), split)
    if (start, stop) != (0, len(labels)):
      images, labels = images[start:stop], labels[start:stop]
    pieces.append((images, labels))
  if len(pieces) == 1:
    return pieces[0]
  return _concatenate([(split, i, l) for i, l in pieces])


# ----------------------------------------------------------------------------
# tfds (imported lazily).
# ----------------------------------------------------------------------------


def _describe(e: BaseException) -> str:
  """'Type: first line of the message', at most ~300 characters."""
  lines = str(e).strip().splitlines()
  text = lines[0].strip() if lines else ''
  if len(text) > 300:
    text = text[:297] + '...'
  return f'{type(e).__name__}: {text}' if text else type(e).__name__


_NETWORK_HINTS = ('download', 'connection', 'max retries', 'resolve',
                  'network', 'timed out', 'timeout', 'urlopen', 'urlerror',
                  'sslerror', 'unreachable')


def _is_network_error(e: BaseException) -> bool:
  """Whether `e` (or what caused it) looks like a failed download."""
  seen = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    text = f'{type(e).__name__} {e}'.lower()
    if any(h in text for h in _NETWORK_HINTS):
      return True
    e = e.__cause__ or e.__context__
  return False


def _manual_error(name: str, data_dir: Optional[str]) -> DataError:
  """Says how to prepare a manual-download dataset (`MANUAL_DATASETS`)."""
  base = name.split(':')[0].split('/')[0]
  where = data_dir or _default_tfds_data_dir()
  return DataError(f'{name!r} is not prepared in the TFDS data dir {where}. '
                   + MANUAL_DATASETS[base].format(data_dir=where))


def _default_tfds_data_dir() -> str:
  return os.environ.get('TFDS_DATA_DIR', '') or os.path.join(
      '~', 'tensorflow_datasets')


def _tfds_error(name: str, split: Optional[str], e: BaseException,
                data_dir: Optional[str] = None) -> DataError:
  """One-line DataError for a failed tfds call."""
  what = f'{name!r}' + (f' split {split!r}' if split else '')
  base = name.split(':')[0].split('/')[0]
  if base in MANUAL_DATASETS and type(e).__name__ in (
      'DatasetNotFoundError', 'AssertionError'):
    return _manual_error(name, data_dir)
  if type(e).__name__ == 'DatasetNotFoundError':
    return DataError(f'unknown dataset {name!r}: no local copy (config.'
                     f'data_dir, ${ENV_DATA_DIR}/{name}/) and tfds does not '
                     'know that name')
  if _is_network_error(e):
    return DataError(f'tfds could not download {what} ({_describe(e)}); '
                     'without network access, point config.data_dir or '
                     f'${ENV_DATA_DIR} (a folder holding {name}/) at a local '
                     'copy')
  return DataError(f'tfds could not load {what} ({_describe(e)}); a local '
                   f'copy can be used instead via config.data_dir or '
                   f'${ENV_DATA_DIR}/{name}/')


def _import_tfds():
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise DataError(f'tensorflow_datasets is not installed ({_describe(e)}); '
                    'install it, or point config.data_dir or '
                    f'${ENV_DATA_DIR} at a local copy of the dataset') from e
  return tfds


def _image_hw(config) -> Tuple[int, int]:
  size = config.image_size
  h, w = (size, size) if isinstance(size, int) else tuple(size)
  return int(h), int(w)


def _tfds_num_examples(info, split: str) -> Optional[int]:
  """Examples in a (sliced) split, or None while tfds does not know."""
  try:
    return int(info.splits[split].num_examples)
  except (KeyError, ValueError):
    return None


def _tfds_builder(config, split: Optional[str] = None):
  """`config.dataset`'s tfds builder, prepared (downloading it if tfds can).

  Reads from `tfds_data_dir(config)` (tfds's default data dir if None).
  Manual-download datasets are only built from files already in the manual
  dir; without them, a one-line DataError says how to prepare them.
  """
  tfds = _import_tfds()
  name = str(config.dataset)
  data_dir = tfds_data_dir(config)
  try:
    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.info.splits:
      if _dataset_name(config) in MANUAL_DATASETS:
        # Builds only from files already in the manual dir and never fetches
        # anything (nor asks GCS): without them tfds raises, and the error
        # below says how to get them. Better prepared once, before training.
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(
                try_download_gcs=False))
      else:
        builder.download_and_prepare()
  except Exception as e:  # pylint: disable=broad-except
    raise _tfds_error(name, split, e, data_dir) from e
  return builder


@functools.lru_cache(maxsize=8)
def _load_tfds_cached(name: str, split: str, hw: Tuple[int, int],
                      data_dir: Optional[str] = None):
  tfds = _import_tfds()
  logging.info('Loading %s split %r with tfds (downloads and prepares it '
               'first if needed).', name, split)
  base = name.split(':')[0].split('/')[0]
  try:
    download_config = None
    if base in MANUAL_DATASETS:  # As in _tfds_builder.
      download_config = tfds.download.DownloadConfig(try_download_gcs=False)
    ds, info = tfds.load(
        name, split=split, with_info=True, shuffle_files=False,
        data_dir=data_dir,
        download_and_prepare_kwargs={'download_config': download_config})
  except Exception as e:  # pylint: disable=broad-except
    raise _tfds_error(name, split, e, data_dir) from e
  features = info.features
  if 'image' not in features or 'label' not in features:
    raise DataError(f'tfds dataset {name!r} has no image/label features '
                    f'(it has {", ".join(features.keys())})')
  shape = tuple(features['image'].shape)
  fixed = all(d is not None for d in shape)
  out_shape = shape if fixed else hw + (shape[-1] or 3,)
  nbytes = (_tfds_num_examples(info, split) or 0) * math.prod(out_shape)
  if nbytes > MAX_IN_MEMORY_BYTES:
    raise DataError(f'{name!r} split {split!r} needs {nbytes / 2**30:.0f} GiB '
                    'in memory; stream it with tfds_train_dataset instead')
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  def pick(ex):
    image = ex['image']
    if not fixed:  # Variable-size images: resize to the model resolution.
      image = tf.cast(tf.clip_by_value(tf.round(tf.image.resize(
          image, hw, antialias=True)), 0, 255), tf.uint8)
    return image, ex['label']

  ds = ds.map(pick, num_parallel_calls=tf.data.AUTOTUNE).batch(4096)
  try:
    batches = list(tfds.as_numpy(ds))
  except Exception as e:  # pylint: disable=broad-except
    raise _tfds_error(name, split, e) from e
  images = np.concatenate([b[0] for b in batches])
  labels = np.concatenate([b[1] for b in batches])
  images, labels = _check_arrays(f'tfds {name!r} {split!r}', images, labels,
                                 features['label'].num_classes)
  images.flags.writeable = False
  labels.flags.writeable = False
  return images, labels


# ----------------------------------------------------------------------------
# Public API.
# ----------------------------------------------------------------------------


def load_split(config, split: str) -> Tuple[np.ndarray, np.ndarray]:
  """A whole split in host memory: (images uint8 [N,H,W,C], labels int32 [N]).

  `split` follows tfds syntax ('train', 'test', 'train[:90%]',
  'train[45000:]', 'train+test'); percent slices round as tfds does. Loaded
  arrays are cached per (folder, split) in this process and returned
  read-only (slices are views), so train and eval never read a file twice.
  Variable-size tfds images (Pets, Flowers) are resized to
  `config.image_size`; everything else keeps its stored pixels.

  Raises:
    DataError: missing, corrupt or misshaped data, or tfds failing (e.g. no
      network to download); the message is one line naming the file.
  """
  folder = local_dir(config)
  if folder is not None:
    return _load_local(config, folder, split)
  return _load_tfds_cached(str(config.dataset), str(split), _image_hw(config),
                           tfds_data_dir(config))


def clear_cache() -> None:
  """Forgets every cached split (tests; or after replacing files on disk)."""
  _load_local_full.cache_clear()
  _load_tfds_cached.cache_clear()


def dataset_info(config) -> DatasetInfo:
  """Sizes, classes and image shape of `config.dataset`'s two splits."""
  name = _dataset_name(config)
  folder = local_dir(config)
  if folder is None:
    return _tfds_dataset_info(config)
  train_images, train_labels = load_split(config, config.train_split)
  eval_images, eval_labels = load_split(config, config.eval_split)
  if train_images.shape[1:] != eval_images.shape[1:]:
    raise DataError(f'{folder}: train images are {train_images.shape[1:]} but '
                    f'eval images are {eval_images.shape[1:]}')
  num_classes = _num_classes_hint(config)
  stored_names = None
  for sub in _parse_split(config.train_split)[:1]:
    stored_names = _load_local_full(os.path.abspath(folder), sub.name,
                                    num_classes)[2]
  if name in KNOWN_CLASS_NAMES:
    class_names = KNOWN_CLASS_NAMES[name]
  elif stored_names:
    class_names = stored_names
  else:
    if num_classes is None:
      num_classes = int(max(train_labels.max(initial=-1),
                            eval_labels.max(initial=-1))) + 1
    class_names = tuple(str(i) for i in range(num_classes))
  return DatasetInfo(
      name=str(config.dataset), num_classes=len(class_names),
      num_train=len(train_labels), num_eval=len(eval_labels),
      image_shape=tuple(int(d) for d in train_images.shape[1:]),
      class_names=tuple(class_names), in_memory=True)


def _tfds_dataset_info(config) -> DatasetInfo:
  """DatasetInfo from tfds metadata, preparing the dataset if needed."""
  name = str(config.dataset)
  builder = _tfds_builder(config)
  info = builder.info
  features = info.features
  if 'image' not in features or 'label' not in features:
    raise DataError(f'tfds dataset {name!r} has no image/label features '
                    f'(it has {", ".join(features.keys())})')
  shape = tuple(features['image'].shape)
  fixed_size = not any(d is None for d in shape)
  if not fixed_size:
    shape = _image_hw(config) + (shape[-1] or int(config.channels),)
  num_train = _tfds_num_examples(info, config.train_split)
  num_eval = _tfds_num_examples(info, config.eval_split)
  if num_train is None or num_eval is None:  # Split sizes unknown: count.
    train_images, train_labels = load_split(config, config.train_split)
    num_train, num_eval = len(train_labels), len(
        load_split(config, config.eval_split)[1])
    shape = train_images.shape[1:]
  label = features['label']
  class_names = (KNOWN_CLASS_NAMES.get(_dataset_name(config)) or
                 tuple(label.names))
  return DatasetInfo(
      name=name, num_classes=int(label.num_classes), num_train=int(num_train),
      num_eval=int(num_eval), image_shape=tuple(int(d) for d in shape),
      class_names=tuple(class_names),
      in_memory=num_train * math.prod(shape) <= MAX_IN_MEMORY_BYTES,
      fixed_size=fixed_size)


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
  """The order (int64 [n]) in which epoch `epoch` visits the training set."""
  if seed < 0 or epoch < 0:
    raise ValueError(f'seed and epoch must be >= 0, got {seed}, {epoch}')
  return np.random.default_rng([int(seed), int(epoch)]).permutation(n)


def steps_per_epoch(config) -> int:
  """Full global batches per epoch (the remainder of each epoch is dropped)."""
  return dataset_info(config).num_train // int(config.batch_size)


def _local_batch_size(batch_size: int, field: str, process_index: int,
                      process_count: int) -> int:
  batch_size = int(batch_size)
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ValueError(f'process_index {process_index} is not in [0, '
                     f'{process_count})')
  if batch_size <= 0 or batch_size % process_count:
    raise DataError(f'config.{field}={batch_size} must be a positive multiple '
                    f'of the number of processes ({process_count})')
  return batch_size // process_count


def train_batches(config, *, start_step: int = 0, process_index: int = 0,
                  process_count: int = 1) -> Iterator[Dict[str, np.ndarray]]:
  """Infinite iterator of this process's training batches, from `start_step`.

  Yields {'image': uint8 [B_local, H, W, C], 'label': int32 [B_local]} with
  B_local = config.batch_size // process_count: the process's contiguous
  slice of global batch s = perm_e[(s % spe) * B:(s % spe + 1) * B], where
  e = s // spe, spe = num_train // B and perm_e = epoch_permutation(seed, e).
  Raw pixels: augmentation happens on device.
  """
  b_local = _local_batch_size(config.batch_size, 'batch_size', process_index,
                              process_count)
  if start_step < 0:
    raise ValueError(f'start_step must be >= 0, got {start_step}')
  images, labels = load_split(config, config.train_split)
  n, batch = len(labels), int(config.batch_size)
  spe = n // batch
  if spe == 0:
    raise DataError(f'config.batch_size={batch} is larger than the '
                    f'{n} examples of split {config.train_split!r}')
  seed, offset = int(config.seed), process_index * b_local
  epoch_permutation(seed, 0, 0)  # Validates the seed now, not at next().

  def generate():
    epoch, perm = None, None
    step = start_step
    while True:
      e, i = divmod(step, spe)
      if e != epoch:
        epoch, perm = e, epoch_permutation(seed, e, n)
      idx = perm[i * batch + offset:i * batch + offset + b_local]
      yield {'image': images[idx], 'label': labels[idx]}
      step += 1

  return generate()


def eval_batches(config, *, process_index: int = 0, process_count: int = 1
                ) -> Iterator[Dict[str, np.ndarray]]:
  """One pass over every eval example, in order, padded to full batches.

  Yields {'image': uint8 [B_local, H, W, C], 'label': int32 [B_local],
  'mask': float32 [B_local]} where B_local = config.eval_batch_size //
  process_count and mask is 1 for real examples, 0 for zero padding. Global
  batch b holds examples [b * B, (b + 1) * B); process p takes its p-th
  contiguous slice. Every process yields ceil(num_eval / B) batches.
  """
  b_local = _local_batch_size(config.eval_batch_size, 'eval_batch_size',
                              process_index, process_count)
  images, labels = load_split(config, config.eval_split)
  n, batch = len(labels), int(config.eval_batch_size)
  if n == 0:
    raise DataError(f'eval split {config.eval_split!r} is empty')
  num_batches = -(-n // batch)

  def generate():
    for b in range(num_batches):
      start = b * batch + process_index * b_local
      k = min(max(n - start, 0), b_local)
      if k == b_local:
        yield {'image': np.array(images[start:start + k]),
               'label': np.array(labels[start:start + k]),
               'mask': np.ones((b_local,), np.float32)}
        continue
      image = np.zeros((b_local,) + images.shape[1:], np.uint8)
      label = np.zeros((b_local,), np.int32)
      mask = np.zeros((b_local,), np.float32)
      if k:
        image[:k] = images[start:start + k]
        label[:k] = labels[start:start + k]
        mask[:k] = 1
      yield {'image': image, 'label': label, 'mask': mask}

  return generate()


# ----------------------------------------------------------------------------
# Streaming tf.data path (datasets that do not fit in host memory).
# ----------------------------------------------------------------------------


def _import_tf():
  try:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise DataError(f'the streaming input pipeline needs TensorFlow '
                    f'({_describe(e)}); install tensorflow-cpu') from e
  return tf


def _process_range(n: int, process_index: int, process_count: int
                  ) -> Tuple[int, int]:
  """[start, stop) of process p's share of n examples, as tfds.even_splits.

  The first n % process_count processes get one example more.
  """
  base, extra = divmod(n, process_count)
  start = process_index * base + min(process_index, extra)
  return start, start + base + (process_index < extra)


@dataclasses.dataclass
class _Source:
  """One process's share of a split as a tf.data dataset of raw examples."""
  ds: Any  # tf.data.Dataset of {'image', 'label'}.
  num_examples: int  # Examples in the whole split (0: unknown, train only).
  encoded: bool  # 'image' holds encoded bytes (decode it) or uint8 pixels.
  jpeg: bool  # Encoded as JPEG: crops can be decoded directly.
  channels: int


def _streaming_source(config, split: str, *, process_index: int,
                      process_count: int, shuffle_seed: Optional[int]
                     ) -> _Source:
  """Local arrays (sliced per process) or tfds files (split per process)."""
  tf = _import_tf()
  if local_dir(config) is not None:
    images, labels = load_split(config, split)
    start, stop = _process_range(len(labels), process_index, process_count)
    ds = tf.data.Dataset.from_tensor_slices(
        {'image': images[start:stop], 'label': labels[start:stop]})
    return _Source(ds, len(labels), encoded=False, jpeg=False,
                   channels=images.shape[-1])
  tfds = _import_tfds()
  name = str(config.dataset)
  builder = _tfds_builder(config, split)
  try:
    num_examples = _tfds_num_examples(builder.info, split)
    if num_examples is None and shuffle_seed is None:
      # Split sizes unknown (mocked builders): count, for eval padding.
      num_examples = int(builder.as_dataset(
          split=split, decoders={'image': tfds.decode.SkipDecoding()}).reduce(
              0, lambda count, _: count + 1))
    sub = tfds.split_for_jax_process(split, process_index=process_index,
                                     process_count=process_count)
    read_config = tfds.ReadConfig(
        shuffle_seed=shuffle_seed, skip_prefetch=True,
        interleave_cycle_length=16 if shuffle_seed is not None else 1)
    ds = builder.as_dataset(
        split=sub, shuffle_files=shuffle_seed is not None,
        read_config=read_config,
        decoders={'image': tfds.decode.SkipDecoding()})
  except Exception as e:  # pylint: disable=broad-except
    raise _tfds_error(name, split, e, tfds_data_dir(config)) from e
  feature = builder.info.features['image']
  return _Source(
      ds, int(num_examples or 0), encoded=True,
      jpeg=getattr(feature, 'encoding_format', None) == 'jpeg',
      channels=int(feature.shape[-1] or config.channels))


def _to_uint8(image):
  tf = _import_tf()
  return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


def _inception_crop(source: _Source, image, seed, hw: Tuple[int, int],
                    area_min: float):
  """Random-resized crop (GoogLeNet / vit_jax / big_vision style) to `hw`.

  A box covering a fraction [area_min, 1] of the image with aspect ratio in
  [3/4, 4/3] is drawn with stateless randomness from `seed` (so the crop of
  an example depends only on the seed and its position in the stream), with
  tf's default 100 attempts before falling back to the whole image, as
  big_vision's `decode_jpeg_and_inception_crop` and vit_jax; then resized
  bilinearly (no antialiasing) and rounded to uint8. JPEGs decode only the
  cropped window.
  """
  tf = _import_tf()
  if source.encoded and source.jpeg:
    shape = tf.image.extract_jpeg_shape(image)
  else:
    if source.encoded:
      image = tf.io.decode_image(image, channels=source.channels,
                                 expand_animations=False)
    shape = tf.shape(image)
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      shape, tf.zeros([0, 0, 4], tf.float32), seed=seed,
      area_range=(area_min, 1.0), aspect_ratio_range=(3 / 4, 4 / 3),
      min_object_covered=0.0, max_attempts=100,
      use_image_if_no_bounding_boxes=True)
  if source.encoded and source.jpeg:
    window = tf.stack([begin[0], begin[1], size[0], size[1]])
    image = tf.image.decode_and_crop_jpeg(image, window,
                                          channels=source.channels)
  else:
    image = tf.slice(image, begin, size)
  return _to_uint8(tf.image.resize(image, hw))


def _decode(source: _Source, image):
  tf = _import_tf()
  if source.encoded:
    image = tf.io.decode_image(image, channels=source.channels,
                               expand_animations=False)
  return image


def _resize(image, hw: Tuple[int, int]):
  tf = _import_tf()
  return _to_uint8(tf.image.resize(image, hw))


CENTER_CROP_FRACTION = 0.875  # 224 / 256: the usual ImageNet eval crop.


def _resize_center_crop(image, hw: Tuple[int, int],
                        crop_fraction: float = CENTER_CROP_FRACTION):
  """big_vision's `resize_small(S)|central_crop(hw)`, S = max(hw) / 0.875.

  The short side goes to S (256 for 224) keeping the aspect ratio (each side
  rounded), with tf's 'area' resize and truncation to uint8 as big_vision's
  `resize_small` does; then the central hw window is taken (offsets rounded
  down). big_vision evaluates its ImageNet models (Mixer's included) so.
  """
  tf = _import_tf()
  shape = tf.cast(tf.shape(image)[:2], tf.float32)
  target = float(int(round(max(hw) / crop_fraction)))
  scale = target / tf.reduce_min(shape)
  new = tf.maximum(tf.cast(tf.round(shape * scale), tf.int32),
                   tf.constant(hw, tf.int32))
  image = tf.image.resize(image, new, method='area')
  image = tf.cast(tf.clip_by_value(image, 0, 255), tf.uint8)
  top = (new[0] - hw[0]) // 2
  left = (new[1] - hw[1]) // 2
  return tf.slice(image, [top, left, 0], [hw[0], hw[1], -1])


def tfds_train_dataset(config, *, start_step: int = 0, process_index: int = 0,
                       process_count: int = 1
                      ) -> Iterator[Dict[str, np.ndarray]]:
  """Infinite tf.data iterator of training batches for large datasets.

  For data that cannot sit in host memory (ImageNet-1k, -21k), and for
  recipes that resize (fine-tuning CIFAR at 224). Yields the same dicts as
  `train_batches` ({'image': uint8 [B_local, h, w, C], 'label': int32
  [B_local]}), but the images are already at `config.image_size`:

  * `augment.crop == 'inception'`: a random-resized crop (area fraction in
    [augment.inception_area_min (default 0.05, vit_jax's value), 1], aspect
    ratio in [3/4, 4/3]) resized to image_size -- the paper's pre-training
    and fine-tuning crop;
  * otherwise: the whole image resized to image_size ('pad' crop then runs on
    device as usual).

  Flips, RandAugment and mixup still run on device (`mixer.augment`), as for
  in-memory data. Each process reads its own part of the split
  (`tfds.split_for_jax_process`; for local arrays the same even split), with
  files and a `config.shuffle_buffer` shuffle seeded by (config.seed,
  process_index, start_step); crops use stateless randomness keyed by the
  example's position in the stream, so the stream is reproducible for a given
  seed and start step. Unlike `train_batches`, resuming at step k does not
  replay the uninterrupted stream exactly: re-reading the skipped part of an
  ImageNet epoch would cost minutes, so a resumed run reshuffles instead
  (harmless for SGD). The data come from local arrays when `local_dir` finds
  them, else from tfds (prepared files, decoded here, JPEGs decoding only the
  crop window).
  """
  tf = _import_tf()
  b_local = _local_batch_size(config.batch_size, 'batch_size', process_index,
                              process_count)
  if start_step < 0:
    raise ValueError(f'start_step must be >= 0, got {start_step}')
  seeds = np.random.SeedSequence(
      [int(config.seed), process_index, int(start_step)]).generate_state(3)
  source = _streaming_source(config, config.train_split,
                             process_index=process_index,
                             process_count=process_count,
                             shuffle_seed=int(seeds[0]))
  hw = _image_hw(config)
  augment = config.get('augment') or {}
  crop = augment.get('crop', 'pad')
  area_min = float(augment.get('inception_area_min', 0.05))
  crop_seed = tf.constant(int(seeds[2]) & 0x7FFFFFFF, tf.int64)

  def preprocess(index, ex):
    if crop == 'inception':
      image = _inception_crop(source, ex['image'], tf.stack([crop_seed, index]),
                              hw, area_min)
    else:
      image = _resize(_decode(source, ex['image']), hw)
    return {'image': image, 'label': tf.cast(ex['label'], tf.int32)}

  ds = source.ds.repeat()
  if config.get('shuffle_buffer', 0) and config.shuffle_buffer > 1:
    ds = ds.shuffle(int(config.shuffle_buffer), seed=int(seeds[1]))
  ds = ds.enumerate().map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(b_local, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
  options = tf.data.Options()
  options.deterministic = True
  return _numpy_batches(ds.with_options(options))


def tfds_eval_dataset(config, *, process_index: int = 0,
                      process_count: int = 1
                     ) -> Iterator[Dict[str, np.ndarray]]:
  """One tf.data pass over every eval example, padded like `eval_batches`.

  Yields {'image': uint8 [B_local, h, w, C] at config.image_size, 'label',
  'mask'}. `augment.eval_crop == 'resize'` resizes the whole image (vit_jax's
  fine-tuning eval); 'center' resizes the short side to image_size / 0.875
  and crops the centre (the usual ImageNet eval, big_vision's
  `resize_small(256)|central_crop(224)`). Each process reads its own
  even share of the split and pads it to the same number of batches, so
  every process yields ceil(ceil(N / P) / B_local) batches and each example
  is seen exactly once over all processes.
  """
  tf = _import_tf()
  b_local = _local_batch_size(config.eval_batch_size, 'eval_batch_size',
                              process_index, process_count)
  source = _streaming_source(config, config.eval_split,
                             process_index=process_index,
                             process_count=process_count, shuffle_seed=None)
  hw = _image_hw(config)
  augment = config.get('augment') or {}
  eval_crop = augment.get('eval_crop', 'center')
  n_max = -(-source.num_examples // process_count)
  num_batches = -(-n_max // b_local)

  def preprocess(ex):
    image = _decode(source, ex['image'])
    image = (_resize(image, hw) if eval_crop == 'resize'
             else _resize_center_crop(image, hw))
    return {'image': image, 'label': tf.cast(ex['label'], tf.int32),
            'mask': tf.constant(1.0, tf.float32)}

  pad = tf.data.Dataset.from_tensors({
      'image': tf.zeros(hw + (source.channels,), tf.uint8),
      'label': tf.constant(0, tf.int32),
      'mask': tf.constant(0.0, tf.float32)}).repeat()
  ds = source.ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.concatenate(pad).batch(b_local).take(num_batches)
  return _numpy_batches(ds.prefetch(tf.data.AUTOTUNE))


def _numpy_batches(ds) -> Iterator[Dict[str, np.ndarray]]:
  for batch in ds.as_numpy_iterator():
    yield batch
