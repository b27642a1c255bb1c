"""Datasets read through TensorFlow Datasets (imported lazily).

Owns the tfds builder (preparing or downloading a dataset once), whole
splits loaded into host memory (`load_cached`), `DatasetInfo` from tfds
metadata, and turning tfds's failures (no network, unknown name, a
manual-download dataset not prepared) into one-line `DataError`s
(`DatasetUnavailable` when the dataset cannot be had here at all). Before a
download the network is probed (`mixer.data.download`), so that without it
the error comes in seconds, and a failed download's leftovers are removed.
"""

import functools
import math
import os
from typing import Optional, Tuple

from absl import logging
import numpy as np

from mixer.data import download
from mixer.data import locate
from mixer.data.base import DataError
from mixer.data.base import DatasetUnavailable
from mixer.data.base import DatasetInfo
from mixer.data.base import ENV_DATA_DIR
from mixer.data.base import KNOWN_CLASS_NAMES
from mixer.data.base import check_arrays
from mixer.data.base import dataset_name
from mixer.data.base import describe
from mixer.data.base import image_hw

# A tfds dataset larger than this (uint8 train images) is not loaded into
# host memory: `dataset_info(...).in_memory` is False for it.
MAX_IN_MEMORY_BYTES = 32 * 2**30


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
  return DatasetUnavailable(f'{name!r} is not prepared in the TFDS data dir {where}. '
                   + locate.MANUAL_DATASETS[base].format(data_dir=where))


def _default_tfds_data_dir() -> str:
  return os.environ.get('TFDS_DATA_DIR', '') or os.path.join(
      '~', 'tensorflow_datasets')


def tfds_error(name: str, split: Optional[str], e: BaseException,
                data_dir: Optional[str] = None) -> DataError:
  """One-line DataError for a failed tfds call."""
  what = f'{name!r}' + (f' split {split!r}' if split else '')
  base = name.split(':')[0].split('/')[0]
  if base in locate.MANUAL_DATASETS and type(e).__name__ in (
      'DatasetNotFoundError', 'AssertionError'):
    return _manual_error(name, data_dir)
  if type(e).__name__ == 'DatasetNotFoundError':
    return DatasetUnavailable(f'unknown dataset {name!r}: no local copy (config.'
                     f'data_dir, ${ENV_DATA_DIR}/{name}/) and tfds does not '
                     'know that name')
  if _is_network_error(e):
    return DatasetUnavailable(f'tfds could not download {what} ({describe(e)}); '
                     'without network access, point config.data_dir or '
                     f'${ENV_DATA_DIR} (a folder holding {name}/) at a local '
                     'copy')
  return DataError(f'tfds could not load {what} ({describe(e)}); a local '
                   f'copy can be used instead via config.data_dir or '
                   f'${ENV_DATA_DIR}/{name}/')


def import_tfds():
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise DataError(f'tensorflow_datasets is not installed ({describe(e)}); '
                    'install it, or point config.data_dir or '
                    f'${ENV_DATA_DIR} at a local copy of the dataset') from e
  return tfds


def split_size(info, split: str) -> Optional[int]:
  """Examples in a (sliced) split, or None while tfds does not know."""
  try:
    return int(info.splits[split].num_examples)
  except (KeyError, ValueError):
    return None


def prepared_builder(config, split: Optional[str] = None):
  """`config.dataset`'s tfds builder, prepared (downloading it if tfds can).

  Reads from `locate.tfds_data_dir(config)` (tfds's default dir if None).
  Manual-download datasets are only built from files already in the manual
  dir; without them, a one-line DataError says how to prepare them.
  """
  return _prepare(str(config.dataset), split, locate.tfds_data_dir(config))


def _prepare(name: str, split: Optional[str], data_dir: Optional[str]):
  """The tfds builder of `name` in `data_dir`, prepared.

  A dataset not prepared there is downloaded, after checking within
  seconds that its servers (or the proxy) can be reached at all; a
  download that fails leaves nothing behind (`download.Leftovers`).
  """
  tfds = import_tfds()
  base = name.split(':')[0].split('/')[0]
  try:
    builder = tfds.builder(name, data_dir=data_dir)
    if builder.info.splits:
      return builder
    if base in locate.MANUAL_DATASETS:
      # Builds only from files already in the manual dir and never fetches
      # anything (nor asks GCS): without them tfds raises, and the error
      # below says how to get them. Better prepared once, before training.
      builder.download_and_prepare(
          download_config=tfds.download.DownloadConfig(
              try_download_gcs=False))
      return builder
    _check_network(builder, name, split, data_dir)
    leftovers = download.Leftovers(str(builder.data_dir_root),
                                   builder.name)
    try:
      builder.download_and_prepare()
    except BaseException:
      removed = leftovers.remove()
      if removed:
        logging.info('Removed what the failed download created: %s',
                     ', '.join(removed))
      raise
  except DataError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise tfds_error(name, split, e, data_dir) from e
  return builder


def _check_network(builder, name: str, split: Optional[str],
                   data_dir: Optional[str]) -> None:
  """DatasetUnavailable, within seconds, when none of the servers the
  dataset downloads from (or the proxy) can be reached."""
  urls = list(getattr(builder, 'url_infos', None) or ())
  why = download.unreachable(urls)
  if why is None:
    return
  what = f'{name!r}' + (f' split {split!r}' if split else '')
  where = data_dir or str(builder.data_dir_root)
  raise DatasetUnavailable(
      f'{what} is not prepared in the TFDS data dir {where} and cannot be '
      f'downloaded: no network ({why}); point config.data_dir or '
      f'${ENV_DATA_DIR} (a folder holding {name}/) at a local copy, or '
      'run once where the network is reachable')


def load(config, split: str, resize: str = 'antialias'
         ) -> Tuple[np.ndarray, np.ndarray]:
  """`split` of `config.dataset` through tfds, whole, in host memory.

  Images of varying sizes are resized to `config.image_size`: 'antialias'
  (rounded to uint8), or 'bilinear', big_vision's `resize` (no antialiasing,
  truncated), which its few-shot evaluator applies.
  """
  return _load_cached(str(config.dataset), str(split), image_hw(config),
                      locate.tfds_data_dir(config), resize)


def clear_cache() -> None:
  _load_cached.cache_clear()


@functools.lru_cache(maxsize=8)
def _load_cached(name: str, split: str, hw: Tuple[int, int],
                 data_dir: Optional[str] = None, resize: str = 'antialias'):
  tfds = import_tfds()
  logging.info('Loading %s split %r with tfds (downloads and prepares it '
               'first if needed).', name, split)
  builder = _prepare(name, split, data_dir)
  info = builder.info
  try:
    ds = builder.as_dataset(split=split, shuffle_files=False)
  except Exception as e:  # pylint: disable=broad-except
    raise tfds_error(name, split, e, data_dir) from e
  features = info.features
  if 'image' not in features or 'label' not in features:
    raise DataError(f'tfds dataset {name!r} has no image/label features '
                    f'(it has {", ".join(features.keys())})')
  shape = tuple(features['image'].shape)
  fixed = all(d is not None for d in shape)
  out_shape = shape if fixed else hw + (shape[-1] or 3,)
  nbytes = (split_size(info, split) or 0) * math.prod(out_shape)
  if nbytes > MAX_IN_MEMORY_BYTES:
    raise DataError(f'{name!r} split {split!r} needs {nbytes / 2**30:.0f} GiB '
                    'in memory; stream it with tfds_train_dataset instead')
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  def pick(ex):
    image = ex['image']
    if not fixed and resize == 'bilinear':  # big_vision's `resize`.
      image = tf.cast(tf.clip_by_value(tf.image.resize(
          image, hw, method='bilinear', antialias=False), 0, 255), tf.uint8)
    elif not fixed:  # Variable-size images: resize to the model resolution.
      image = tf.cast(tf.clip_by_value(tf.round(tf.image.resize(
          image, hw, antialias=True)), 0, 255), tf.uint8)
    return image, ex['label']

  ds = ds.map(pick, num_parallel_calls=tf.data.AUTOTUNE).batch(4096)
  try:
    batches = list(tfds.as_numpy(ds))
  except Exception as e:  # pylint: disable=broad-except
    raise tfds_error(name, split, e) from e
  images = np.concatenate([b[0] for b in batches])
  labels = np.concatenate([b[1] for b in batches])
  images, labels = check_arrays(f'tfds {name!r} {split!r}', images, labels,
                                features['label'].num_classes)
  images.flags.writeable = False
  labels.flags.writeable = False
  return images, labels


def dataset_info(config) -> DatasetInfo:
  """DatasetInfo from tfds metadata, preparing the dataset if needed."""
  name = str(config.dataset)
  builder = prepared_builder(config)
  info = builder.info
  features = info.features
  if 'image' not in features or 'label' not in features:
    raise DataError(f'tfds dataset {name!r} has no image/label features '
                    f'(it has {", ".join(features.keys())})')
  shape = tuple(features['image'].shape)
  fixed_size = not any(d is None for d in shape)
  if not fixed_size:
    shape = image_hw(config) + (shape[-1] or int(config.channels),)
  num_train = split_size(info, config.train_split)
  num_eval = split_size(info, config.eval_split)
  if num_train is None or num_eval is None:  # Split sizes unknown: count.
    train_images, train_labels = load(config, config.train_split)
    num_train, num_eval = len(train_labels), len(
        load(config, config.eval_split)[1])
    shape = train_images.shape[1:]
  label = features['label']
  class_names = (KNOWN_CLASS_NAMES.get(dataset_name(config)) or
                 tuple(label.names))
  return DatasetInfo(
      name=name, num_classes=int(label.num_classes), num_train=int(num_train),
      num_eval=int(num_eval), image_shape=tuple(int(d) for d in shape),
      class_names=tuple(class_names),
      in_memory=num_train * math.prod(shape) <= MAX_IN_MEMORY_BYTES,
      fixed_size=fixed_size)

