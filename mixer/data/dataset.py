"""A split in host memory and a dataset's facts, from whichever source has it.

Owns the choice between a local folder (`mixer.data.local`) and tfds
(`mixer.data.tfds`) for `load_split` and `dataset_info`. Never imports
TensorFlow itself.
"""

from typing import Optional, Tuple

import numpy as np

from mixer.data import local
from mixer.data import locate
from mixer.data import tfds as tfds_source
from mixer.data.base import DataError
from mixer.data.base import DatasetInfo
from mixer.data.base import KNOWN_CLASS_NAMES
from mixer.data.base import dataset_name
from mixer.data.base import describe


def load_split(config, split: str, resize: str = 'antialias'
               ) -> Tuple[np.ndarray, np.ndarray]:
  """A whole split in host memory: (images uint8 [N,H,W,C], labels int32 [N]).

  `split` follows tfds syntax ('train', 'test', 'train[:90%]',
  'train[45000:]', 'train+test'); percent slices round as tfds does. Loaded
  arrays are cached per (folder, split) in this process and returned
  read-only (slices are views), so train and eval never read a file twice.
  Variable-size images -- tfds datasets such as Pets and Flowers, and image
  folders whose images differ in size -- are resized to `config.image_size`;
  everything else keeps its stored pixels. `resize`: how tfds's are resized,
  'antialias' or big_vision's 'bilinear' (`mixer.data.tfds.load`).

  Raises:
    DataError: missing, corrupt or misshaped data, or tfds failing (e.g. no
      network to download); the message is one line naming the file.
  """
  folder = locate.local_dir(config)
  if folder is not None:
    return local.load(config, folder, split)
  return tfds_source.load(config, split, resize)


def clear_cache() -> None:
  """Forgets every cached split (tests; or after replacing files on disk)."""
  local.clear_cache()
  tfds_source.clear_cache()


def dataset_info(config) -> DatasetInfo:
  """Sizes, classes and image shape of `config.dataset`'s two splits.

  For a local folder the splits are loaded (validating every file);
  `fixed_size` is False for an image folder whose images vary in size.
  """
  name = dataset_name(config)
  folder = locate.local_dir(config)
  if folder is None:
    return tfds_source.dataset_info(config)
  train_images, train_labels = load_split(config, config.train_split)
  eval_images, eval_labels = load_split(config, config.eval_split)
  if train_images.shape[1:] != eval_images.shape[1:]:
    raise DataError(f'{folder}: train images are {train_images.shape[1:]} but '
                    f'eval images are {eval_images.shape[1:]}')
  num_classes = local.num_classes_hint(config)
  # Names stored with the data (pickle metadata, image-folder names) define
  # its labels, so they win over the table of known datasets.
  stored_names = local.stored_class_names(config, folder)
  if stored_names:
    class_names = stored_names
  elif name in KNOWN_CLASS_NAMES:
    class_names = KNOWN_CLASS_NAMES[name]
  else:
    if num_classes is None:
      num_classes = int(max(train_labels.max(initial=-1),
                            eval_labels.max(initial=-1))) + 1
    class_names = tuple(str(i) for i in range(num_classes))
  return DatasetInfo(
      name=str(config.dataset), num_classes=len(class_names),
      num_train=len(train_labels), num_eval=len(eval_labels),
      image_shape=tuple(int(d) for d in train_images.shape[1:]),
      class_names=tuple(class_names), in_memory=True,
      fixed_size=local.fixed_size(config, folder))


def steps_per_epoch(config) -> int:
  """Full global batches per epoch (the remainder of each epoch is dropped)."""
  return dataset_info(config).num_train // int(config.batch_size)



def check_eval_split(config, split: str, label_key: str = 'label',
                     num_classes: Optional[int] = None, *,
                     purpose: str = 'evaluation',
                     tfds_dir: Optional[str] = None) -> int:
  """Examples in `split` of `config.dataset`, checked before a run trains.

  For an evaluation on another split or dataset than the run's (big_vision's
  train[:2%], ImageNet-V2, ImageNet ReaL): the dataset must be there (a
  local folder, or tfds files already prepared -- an evaluation never
  downloads), hold `split` and the feature `label_key`, with `num_classes`
  classes. `tfds_dir`: read it with tfds from that TFDS data dir (the one
  the run's own dataset is in) rather than where `config` points. Returns
  the split's size.

  Raises:
    DataError: one line naming `purpose`, the dataset and what to do.
  """
  name = str(config.dataset)
  folder = None if tfds_dir else locate.local_dir(config)
  if folder is not None:
    if label_key != 'label':
      raise DataError(f'{purpose} needs the feature {label_key!r} of '
                      f'{name!r}, but {folder} holds local arrays with one '
                      'label per image; point it at the tfds dataset')
    return len(load_split(config, split)[1])
  tfds = tfds_source.import_tfds()
  data_dir = tfds_dir or locate.tfds_data_dir(config)
  where = data_dir or tfds_source._default_tfds_data_dir()  # pylint: disable=protected-access
  try:
    info = tfds.builder(name, data_dir=data_dir).info
    prepared = bool(info.splits)
  except Exception as e:  # pylint: disable=broad-except
    raise tfds_source.tfds_error(name, split, e, data_dir) from e
  base = dataset_name(config)
  if not prepared:
    how = (locate.MANUAL_DATASETS[base].format(data_dir=where)
           if base in locate.MANUAL_DATASETS else
           'prepare it once with `python -c "import tensorflow_datasets as '
           f"tfds; tfds.builder('{name}', data_dir='{where}')"
           '.download_and_prepare()"` (docs/imagenet.md)')
    raise DataError(f'{purpose} reads {name!r} split {split!r}, which is not '
                    f'prepared in the TFDS data dir {where}: {how}')
  try:
    size = int(info.splits[split].num_examples)
  except (KeyError, ValueError) as e:
    raise DataError(f'{purpose}: {name!r} has no split {split!r} '
                    f'({describe(e)})') from e
  if size == 0:
    raise DataError(f'{purpose}: {name!r} split {split!r} is empty')
  if label_key not in info.features:
    raise DataError(f'{purpose}: {name!r} has no feature {label_key!r} (it '
                    f'has {", ".join(info.features.keys())})')
  feature = info.features[label_key]
  classes = getattr(getattr(feature, 'feature', feature), 'num_classes', None)
  if num_classes and classes and classes != num_classes:
    raise DataError(f'{purpose}: {name!r} {label_key!r} has {classes} '
                    f'classes, the model {num_classes}')
  return size
