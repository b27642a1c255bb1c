"""Where a dataset is: a local folder, a prepared TFDS data dir, or tfds by name.

Owns the lookup order (`config.data_dir`, `$MIXER_DATA_DIR/<dataset>`, tfds)
and the table of datasets tfds cannot download (`MANUAL_DATASETS`). Reads
folder listings only; never loads arrays or imports TensorFlow.
"""

import glob
import os
from typing import Optional

from mixer.data import local
from mixer.data.base import DataError
from mixer.data.base import ENV_DATA_DIR
from mixer.data.base import dataset_name

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
    'imagenet2012_real': (
        'ImageNet ReaL is the ImageNet validation set with the ReaL labels: '
        'put ILSVRC2012_img_val.tar in {data_dir}/downloads/manual/ and '
        'prepare it once (it fetches the labels from GitHub) with `python -c '
        '"import tensorflow_datasets as tfds; tfds.builder('
        '\'imagenet2012_real\', data_dir=\'{data_dir}\').download_and_prepare()"`'
        ' (docs/imagenet.md)'),
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
  name = dataset_name(config)
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
  `$MIXER_DATA_DIR/<dataset>`; else None (tfds). None too when that folder
  is a TFDS data dir (`tfds_data_dir`). A location the user set is used or
  is an error, never silently replaced by a tfds download.

  Raises:
    DataError: `config.data_dir` is a file, or `$MIXER_DATA_DIR` is missing,
      a file, or has no `<dataset>/` folder.
  """
  name = dataset_name(config)
  data_dir = str(config.get('data_dir', '') or '')
  if data_dir and os.path.isfile(os.path.expanduser(data_dir)):
    raise DataError(f'config.data_dir={data_dir} is a file, not a folder; '
                    f'point it at the folder holding {name!r} (or at a '
                    'folder of datasets holding a '
                    f'{name}/ folder)')
  if tfds_data_dir(config) is not None:
    return None
  if data_dir:
    data_dir = os.path.expanduser(data_dir)
    sub = os.path.join(data_dir, name)
    if os.path.isdir(sub) and not _has_local_data(data_dir):
      return sub
    return data_dir
  root = os.environ.get(ENV_DATA_DIR, '')
  if not root:
    return None
  expanded = os.path.expanduser(root)
  unset = (f'or unset {ENV_DATA_DIR} to let tfds download {name!r}')
  if not os.path.exists(expanded):
    raise DataError(f'${ENV_DATA_DIR}={root} does not exist; point it at the '
                    f'folder holding {name}/, {unset}')
  if not os.path.isdir(expanded):
    raise DataError(f'${ENV_DATA_DIR}={root} is a file, not a folder; point '
                    f'it at the folder holding {name}/, {unset}')
  path = os.path.join(expanded, name)
  if os.path.isdir(path):
    return path
  try:
    present = sorted(n + '/' for n in os.listdir(expanded)
                     if os.path.isdir(os.path.join(expanded, n)))
  except OSError:
    present = []
  has = f' (it has {", ".join(present[:8])})' if present else ' (it is empty)'
  raise DataError(f'${ENV_DATA_DIR}={root} has no {name}/ folder{has}; put '
                  f'{name!r} there, set config.data_dir to a copy of it, '
                  f'{unset}')


def _has_local_data(folder: str) -> bool:
  try:
    return os.path.isdir(folder) and local.detect_format(folder) is not None
  except OSError:
    return False

