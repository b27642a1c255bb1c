"""What every data module shares: the error type, `DatasetInfo`, class names.

Owns the vocabulary of the data package (`DataError`, `DatasetInfo`, the
known class-name tables, `ENV_DATA_DIR`) and the array validation every
source applies (`check_arrays`). Imports nothing from the rest of the
project; must not read files or import TensorFlow.
"""

import dataclasses
import re
from typing import Any, Optional, Sequence, Tuple

import numpy as np

# Environment variable naming a folder of datasets (`cifar10/`, ...).
ENV_DATA_DIR = 'MIXER_DATA_DIR'


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


class DatasetUnavailable(DataError):
  """The dataset cannot be had at all here: no local copy and tfds cannot
  download it (no network, an unknown name, a manual download not done).
  Every run asking for it would fail the same way (a sweep fails it once)."""


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
    fixed_size: False when the stored images vary in size (tfds's Pets,
      Flowers; a local image folder of differently sized images):
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


def dataset_name(config) -> str:
  """`config.dataset` without a tfds version suffix ('cifar10:3.0.2')."""
  return str(config.dataset).split(':')[0].split('/')[0]


def describe(e: BaseException) -> str:
  """'Type: first line of the message', at most ~300 characters."""
  lines = str(e).strip().splitlines()
  text = lines[0].strip() if lines else ''
  if len(text) > 300:
    text = text[:297] + '...'
  return f'{type(e).__name__}: {text}' if text else type(e).__name__


def image_hw(config) -> Tuple[int, int]:
  size = config.image_size
  h, w = (size, size) if isinstance(size, int) else tuple(size)
  return int(h), int(w)


def check_arrays(source: str, images: Any, labels: Any,
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


def concatenate(parts: Sequence[Tuple[str, np.ndarray, np.ndarray]]
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


def where_to_put_data(name: str) -> str:
  return (f'set config.data_dir to a local copy of {name!r}, put one in '
          f'${ENV_DATA_DIR}/{name}/, or let tfds download it')


def natural_key(name: str):
  """Sort key putting 'train_2' before 'train_10'."""
  return [int(t) if t.isdigit() else t for t in re.split(r'(\d+)', name)]
