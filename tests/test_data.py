"""Tests for mixer/data/ on the real CIFAR-10 / Fashion-MNIST files.

The real data live in $MIXER_DATA_DIR (default ../shared/data beside the
checkout); tests that need them skip when they are absent. The other local
formats (CIFAR python pickles, IDX .gz) are written to a temporary folder from
a few real images and must load identically to the .npz arrays. Nothing here
touches the network: the tfds failure is simulated.
"""

import gzip
import os
import pathlib
import pickle
import struct
import subprocess
import sys

import numpy as np
import pytest

from configs import common
from configs import models
from mixer import data as ip
from tests.conftest import tiny_config

REPO = pathlib.Path(__file__).resolve().parents[1]
DATA = pathlib.Path(os.environ.get(
    'MIXER_DATA_DIR', REPO.parent / 'shared' / 'data')).resolve()

CIFAR_TRAIN_LABELS = [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
CIFAR_TEST_LABELS = [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
FASHION_TRAIN_LABELS = [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
FASHION_TEST_LABELS = [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]

needs_cifar = pytest.mark.skipif(
    not (DATA / 'cifar10' / 'test.npz').exists(),
    reason=f'real CIFAR-10 not found in {DATA}')
needs_fashion = pytest.mark.skipif(
    not (DATA / 'fashion_mnist' / 'test.npz').exists(),
    reason=f'real Fashion-MNIST not found in {DATA}')


def make_config(dataset='cifar10', data_dir='', num_classes=10, **overrides):
  model = models.mixer(patch=4, hidden_dim=8, num_blocks=1, tokens_mlp_dim=8,
                       channels_mlp_dim=8, num_classes=num_classes)
  overrides.setdefault('image_size', 32)
  return common.base(model, dataset=dataset, data_dir=str(data_dir),
                     **overrides)


@pytest.fixture
def real_data(monkeypatch):
  monkeypatch.setenv('MIXER_DATA_DIR', str(DATA))
  return DATA


def _real(dataset, split):
  """Real arrays through the env-var route (cached by the module)."""
  return ip.load_split(
      make_config(dataset, data_dir=DATA / dataset), split)


# -- real data ---------------------------------------------------------------


@needs_cifar
def test_cifar10_real(real_data):
  config = make_config('cifar10')
  assert ip.local_dir(config) == str(real_data / 'cifar10')
  images, labels = ip.load_split(config, 'train')
  assert images.shape == (50_000, 32, 32, 3) and images.dtype == np.uint8
  assert labels.shape == (50_000,) and labels.dtype == np.int32
  assert labels[:10].tolist() == CIFAR_TRAIN_LABELS
  assert np.bincount(labels).tolist() == [5000] * 10
  images, labels = ip.load_split(config, 'test')
  assert images.shape == (10_000, 32, 32, 3)
  assert labels[:10].tolist() == CIFAR_TEST_LABELS
  info = ip.dataset_info(config)
  assert info == ip.DatasetInfo(
      name='cifar10', num_classes=10, num_train=50_000, num_eval=10_000,
      image_shape=(32, 32, 3), class_names=info.class_names)
  assert info.class_names[:2] == ('airplane', 'automobile')
  assert len(info.class_names) == 10


@needs_cifar
def test_cache_returns_same_read_only_arrays(real_data):
  config = make_config('cifar10')
  a, _ = ip.load_split(config, 'test')
  b, _ = ip.load_split(config, 'test')
  assert a is b
  assert not a.flags.writeable
  # Batches are the caller's own copies.
  batch = next(ip.eval_batches(config))
  assert batch['image'].flags.writeable


@needs_fashion
def test_fashion_mnist_real(real_data):
  config = make_config('fashion_mnist', image_size=28, channels=1)
  images, labels = ip.load_split(config, 'train')
  assert images.shape == (60_000, 28, 28, 1) and images.dtype == np.uint8
  assert labels[:10].tolist() == FASHION_TRAIN_LABELS
  images, labels = ip.load_split(config, 'test')
  assert images.shape == (10_000, 28, 28, 1)
  assert labels[:10].tolist() == FASHION_TEST_LABELS
  info = ip.dataset_info(config)
  assert (info.num_train, info.num_eval, info.image_shape) == (
      60_000, 10_000, (28, 28, 1))
  assert info.class_names[0] == 'T-shirt/top'
  assert info.class_names[-1] == 'Ankle boot'


@needs_fashion
def test_split_slicing(real_data):
  config = make_config('fashion_mnist')
  images, labels = ip.load_split(config, 'train')
  head, head_labels = ip.load_split(config, 'train[:90%]')
  tail, tail_labels = ip.load_split(config, 'train[90%:]')
  assert len(head) == 54_000 and len(tail) == 6_000
  np.testing.assert_array_equal(head, images[:54_000])
  np.testing.assert_array_equal(tail_labels, labels[54_000:])
  np.testing.assert_array_equal(ip.load_split(config, 'train[-1000:]')[1],
                                labels[-1000:])
  np.testing.assert_array_equal(ip.load_split(config, 'train[100:300]')[0],
                                images[100:300])
  both = ip.load_split(config, 'train[:10]+test[:5]')[1]
  assert both.tolist() == FASHION_TRAIN_LABELS + FASHION_TEST_LABELS[:5]
  # Percent boundaries round to the closest example, as tfds does.
  assert len(ip.load_split(config, 'train[:33.3%]')[1]) == 19_980
  info = ip.dataset_info(make_config(
      'fashion_mnist', train_split='train[:90%]', eval_split='train[90%:]'))
  assert (info.num_train, info.num_eval) == (54_000, 6_000)
  for bad in ('train[:70000]', 'train[::2]', 'train[1.5:]', 'train[', ''):
    with pytest.raises(ip.DataError, match='split'):
      ip.load_split(config, bad)
  with pytest.raises(ip.DataError, match=r"no validation\.npz.*test, train"):
    ip.load_split(config, 'validation')


# -- other local formats -----------------------------------------------------


def _write_cifar10_pickles(root, train_parts, test, label_names):
  """Writes the original `cifar-10-batches-py` layout (protocol 2, bytes)."""
  folder = root / 'cifar-10-batches-py'
  folder.mkdir(parents=True)

  def dump(name, obj):
    with open(folder / name, 'wb') as f:
      pickle.dump(obj, f, protocol=2)

  def batch(images, labels):
    data = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    return {b'batch_label': b'x', b'labels': [int(l) for l in labels],
            b'data': np.ascontiguousarray(data),
            b'filenames': [b'f.png'] * len(images)}

  for i, (images, labels) in enumerate(train_parts):
    dump(f'data_batch_{i + 1}', batch(images, labels))
  dump('test_batch', batch(*test))
  dump('batches.meta', {b'label_names': [n.encode() for n in label_names],
                        b'num_cases_per_batch': 10_000, b'num_vis': 3072})
  return folder


@needs_cifar
def test_cifar10_pickle_format(tmp_path, monkeypatch):
  monkeypatch.delenv('MIXER_DATA_DIR', raising=False)
  train_x, train_y = _real('cifar10', 'train[:20]')
  test_x, test_y = _real('cifar10', 'test[:7]')
  folder = _write_cifar10_pickles(
      tmp_path, [(train_x[:12], train_y[:12]), (train_x[12:], train_y[12:])],
      (test_x, test_y), ip.KNOWN_CLASS_NAMES['cifar10'])
  # Both the parent folder and the pickle folder itself work.
  for data_dir in (tmp_path, folder):
    config = make_config('cifar10', data_dir=data_dir)
    images, labels = ip.load_split(config, 'train')
    np.testing.assert_array_equal(images, train_x)
    np.testing.assert_array_equal(labels, train_y)
    assert labels.dtype == np.int32
    images, labels = ip.load_split(config, 'test')
    np.testing.assert_array_equal(images, test_x)
    np.testing.assert_array_equal(labels, test_y)
    assert ip.dataset_info(config).num_train == 20


@needs_cifar
def test_cifar100_pickle_format(tmp_path):
  images, _ = _real('cifar10', 'train[:10]')
  fine = np.arange(0, 100, 10)
  folder = tmp_path / 'cifar-100-python'
  folder.mkdir()
  names = list(ip.KNOWN_CLASS_NAMES['cifar100'])
  for split, sl in (('train', slice(0, 6)), ('test', slice(6, 10))):
    with open(folder / split, 'wb') as f:
      pickle.dump({b'data': images[sl].transpose(0, 3, 1, 2).reshape(-1, 3072),
                   b'fine_labels': fine[sl].tolist(),
                   b'coarse_labels': [0] * len(fine[sl])}, f, protocol=2)
  with open(folder / 'meta', 'wb') as f:
    pickle.dump({b'fine_label_names': [n.encode() for n in names]}, f)
  config = make_config('cifar100', data_dir=tmp_path, num_classes=100)
  x, y = ip.load_split(config, 'train')
  np.testing.assert_array_equal(x, images[:6])
  assert y.tolist() == [0, 10, 20, 30, 40, 50]
  assert ip.load_split(config, 'test')[1].tolist() == [60, 70, 80, 90]
  info = ip.dataset_info(config)
  assert info.num_classes == 100 and info.class_names[:2] == (
      'apple', 'aquarium_fish')


def _idx_bytes(array, magic=None):
  array = np.asarray(array, np.uint8)
  magic = 0x0800 + array.ndim if magic is None else magic
  header = struct.pack(f'>I{array.ndim}I', magic, *array.shape)
  return header + array.tobytes()


def _write_idx(folder, prefix, images, labels, compress=True, **kw):
  opener = gzip.open if compress else open
  ext = '.gz' if compress else ''
  with opener(folder / f'{prefix}-images-idx3-ubyte{ext}', 'wb') as f:
    f.write(_idx_bytes(images, kw.get('images_magic')))
  with opener(folder / f'{prefix}-labels-idx1-ubyte{ext}', 'wb') as f:
    f.write(_idx_bytes(labels, kw.get('labels_magic')))


@needs_fashion
@pytest.mark.parametrize('compress', [True, False])
def test_idx_format(tmp_path, compress):
  train_x, train_y = _real('fashion_mnist', 'train[:25]')
  test_x, test_y = _real('fashion_mnist', 'test[:15]')
  _write_idx(tmp_path, 'train', train_x[..., 0], train_y, compress)
  _write_idx(tmp_path, 't10k', test_x[..., 0], test_y, compress)
  config = make_config('fashion_mnist', data_dir=tmp_path)
  images, labels = ip.load_split(config, 'train')
  assert images.shape == (25, 28, 28, 1)
  np.testing.assert_array_equal(images, train_x)
  np.testing.assert_array_equal(labels, train_y)
  images, labels = ip.load_split(config, 'test')
  np.testing.assert_array_equal(images, test_x)
  np.testing.assert_array_equal(labels, test_y)
  assert ip.dataset_info(config).image_shape == (28, 28, 1)


def test_npz_shards_in_natural_order(tmp_path):
  for i in range(11):  # train_10 must come after train_9, not after train_1.
    np.savez(tmp_path / f'train_{i}.npz',
             images=np.full((1, 4, 4, 3), i, np.uint8), labels=[i])
  np.savez(tmp_path / 'test.npz', images=np.zeros((2, 4, 4, 3), np.uint8),
           labels=[0, 1])
  config = make_config('tiny', data_dir=tmp_path, num_classes=11)
  images, labels = ip.load_split(config, 'train')
  assert labels.tolist() == list(range(11))
  assert images[:, 0, 0, 0].tolist() == list(range(11))
  info = ip.dataset_info(config)
  assert (info.num_classes, info.num_train, info.num_eval) == (11, 11, 2)
  assert info.class_names == tuple(str(i) for i in range(11))


def test_data_dir_may_be_a_folder_of_datasets(tmp_path):
  folder = tmp_path / 'tiny'
  folder.mkdir()
  np.savez(folder / 'train.npz', images=np.zeros((3, 4, 4), np.uint8),
           labels=[0, 1, 2])
  config = make_config('tiny', data_dir=tmp_path, num_classes=3)
  assert ip.local_dir(config) == str(folder)
  assert ip.load_split(config, 'train')[0].shape == (3, 4, 4, 1)


# -- corrupt and missing data ------------------------------------------------


def _npz(folder, name='train.npz', **arrays):
  arrays.setdefault('images', np.zeros((4, 4, 4, 3), np.uint8))
  arrays.setdefault('labels', np.arange(4))
  np.savez_compressed(folder / name, **arrays)
  return folder / name


@pytest.mark.parametrize('arrays,match', [
    (dict(labels=np.arange(3)), r'4 images but 3 labels'),
    (dict(images=np.zeros((4, 4, 4, 3), np.float32)), r'dtype float32'),
    (dict(images=np.zeros((4, 4), np.uint8)), r'shape \(4, 4\)'),
    (dict(labels=np.array([0, 1, 2, 10])), r'labels span \[0, 10\]'),
    (dict(labels=np.array([0.0, 1, 2, 3])), r'labels have dtype float64'),
    (dict(pixels=np.zeros(2)), r'no array\(s\) images'),
])
def test_misshaped_npz(tmp_path, arrays, match):
  if 'pixels' in arrays:
    np.savez(tmp_path / 'train.npz', pixels=arrays['pixels'], labels=[0])
    path = tmp_path / 'train.npz'
  else:
    path = _npz(tmp_path, **arrays)
  with pytest.raises(ip.DataError, match=match) as e:
    ip.load_split(make_config('cifar10', data_dir=tmp_path), 'train')
  assert str(path) in str(e.value)


def test_truncated_npz(tmp_path):
  path = _npz(tmp_path, images=np.random.default_rng(0).integers(
      0, 255, (64, 8, 8, 3), dtype=np.uint8), labels=np.zeros(64, np.int64))
  data = path.read_bytes()
  path.write_bytes(data[:len(data) // 2])
  with pytest.raises(ip.DataError, match='truncated or corrupt') as e:
    ip.load_split(make_config('cifar10', data_dir=tmp_path), 'train')
  assert str(path) in str(e.value)
  assert '\n' not in str(e.value)


def test_shards_with_different_shapes(tmp_path):
  _npz(tmp_path, 'train_0.npz')
  path = _npz(tmp_path, 'train_1.npz', images=np.zeros((4, 5, 5, 3), np.uint8))
  with pytest.raises(ip.DataError, match=r'\(5, 5, 3\)') as e:
    ip.load_split(make_config('cifar10', data_dir=tmp_path), 'train')
  assert str(path) in str(e.value)


@pytest.mark.parametrize('kind', ['magic', 'size', 'length', 'gzip'])
def test_corrupt_idx(tmp_path, kind):
  images = np.zeros((5, 28, 28), np.uint8)
  labels = np.arange(5)
  config = make_config('fashion_mnist', data_dir=tmp_path)
  if kind == 'magic':
    _write_idx(tmp_path, 'train', images, labels, images_magic=0x0801)
    bad, match = 'train-images-idx3-ubyte.gz', r'magic number is 0x00000801'
  elif kind == 'size':
    _write_idx(tmp_path, 'train', images, labels)
    with gzip.open(tmp_path / 'train-images-idx3-ubyte.gz', 'wb') as f:
      f.write(_idx_bytes(images)[:-1])
    bad, match = 'train-images-idx3-ubyte.gz', r'header .* implies'
  elif kind == 'length':
    _write_idx(tmp_path, 'train', images, labels[:4])
    bad, match = 'train-labels-idx1-ubyte.gz', r'4 labels but .* 5 images'
  else:
    _write_idx(tmp_path, 'train', images, labels)
    path = tmp_path / 'train-images-idx3-ubyte.gz'
    path.write_bytes(path.read_bytes()[:30])
    bad, match = 'train-images-idx3-ubyte.gz', r'truncated or corrupt'
  with pytest.raises(ip.DataError, match=match) as e:
    ip.load_split(config, 'train')
  assert str(tmp_path / bad) in str(e.value)


def test_pickle_with_foreign_globals_is_refused(tmp_path):
  import datetime  # pylint: disable=g-import-not-at-top
  folder = tmp_path / 'cifar-10-batches-py'
  folder.mkdir()
  with open(folder / 'data_batch_1', 'wb') as f:
    pickle.dump({b'data': datetime.date(2020, 1, 1), b'labels': []}, f)
  with pytest.raises(ip.DataError, match='refusing to load global datetime'):
    ip.load_split(make_config('cifar10', data_dir=tmp_path), 'train')


def test_missing_folder_and_files(tmp_path, monkeypatch):
  missing = tmp_path / 'nowhere'
  with pytest.raises(ip.DataError) as e:
    ip.load_split(make_config('cifar10', data_dir=missing), 'train')
  message = str(e.value)
  assert str(missing) in message
  assert 'config.data_dir' in message and 'MIXER_DATA_DIR' in message
  assert 'tfds' in message
  # A folder with no recognisable files.
  (tmp_path / 'notes.txt').write_text('hi')
  with pytest.raises(ip.DataError, match='no dataset found'):
    ip.load_split(make_config('cifar10', data_dir=tmp_path), 'train')
  # Only the train split present.
  _npz(tmp_path)
  with pytest.raises(ip.DataError, match=r'no test\.npz'):
    ip.load_split(make_config('cifar10', data_dir=tmp_path), 'test')
  # MIXER_DATA_DIR is used or is an error naming it, never a silent tfds
  # download: without a folder for the dataset, missing, or a file.
  monkeypatch.setenv('MIXER_DATA_DIR', str(tmp_path))
  with pytest.raises(ip.DataError, match=r'\$MIXER_DATA_DIR=.* has no '
                     r'cifar10/ folder .*unset MIXER_DATA_DIR'):
    ip.local_dir(make_config('cifar10'))
  monkeypatch.setenv('MIXER_DATA_DIR', str(missing))
  with pytest.raises(ip.DataError, match='does not exist'):
    ip.dataset_info(make_config('cifar10'))
  monkeypatch.setenv('MIXER_DATA_DIR', str(tmp_path / 'notes.txt'))
  with pytest.raises(ip.DataError, match='is a file, not a folder'):
    ip.load_split(make_config('cifar10'), 'train')
  monkeypatch.delenv('MIXER_DATA_DIR')
  with pytest.raises(ip.DataError, match=r'config.data_dir=.* is a file'):
    ip.load_split(make_config('cifar10', data_dir=tmp_path / 'notes.txt'),
                  'train')


# -- tfds failures (simulated; never reaches the network) --------------------


def test_tfds_download_failure_is_one_line(tmp_path, monkeypatch):
  tfds = pytest.importorskip('tensorflow_datasets')
  requests = pytest.importorskip('requests')
  monkeypatch.delenv('MIXER_DATA_DIR', raising=False)  # tfds by name.

  def failed_download(*args, **kwargs):
    del args, kwargs
    raise requests.exceptions.ConnectionError(
        "HTTPSConnectionPool(host='www.cs.toronto.edu', port=443): Max "
        'retries exceeded with url: /~kriz/cifar-10-binary.tar.gz (Caused by '
        'NameResolutionError("<urllib3.connection.HTTPSConnection object>: '
        "Failed to resolve 'www.cs.toronto.edu' ([Errno -2] Name or service "
        'not known)"))\nFailed to construct dataset "cifar10"')

  monkeypatch.setattr(tfds, 'load', failed_download)
  monkeypatch.setattr(tfds, 'builder', failed_download)
  ip.clear_cache()
  config = make_config('cifar10')
  assert ip.local_dir(config) is None
  for call in (lambda: ip.load_split(config, 'train'),
               lambda: ip.dataset_info(config)):
    with pytest.raises(ip.DataError) as e:
      call()
    message = str(e.value)
    assert '\n' not in message
    assert 'could not download' in message and 'ConnectionError' in message
    assert 'MIXER_DATA_DIR' in message and 'config.data_dir' in message

  def unknown(*args, **kwargs):
    del args, kwargs
    raise tfds.core.registered.DatasetNotFoundError('Dataset nope not found.')

  monkeypatch.setattr(tfds, 'load', unknown)
  monkeypatch.setattr(tfds, 'builder', unknown)
  with pytest.raises(ip.DataError, match="unknown dataset 'nope'"):
    ip.load_split(make_config('nope'), 'train')


def test_tfds_not_installed(tmp_path, monkeypatch):
  del tmp_path
  monkeypatch.delenv('MIXER_DATA_DIR', raising=False)  # tfds by name.
  monkeypatch.setitem(sys.modules, 'tensorflow_datasets', None)
  with pytest.raises(ip.DataError, match='tensorflow_datasets is not '
                     'installed.*MIXER_DATA_DIR'):
    ip.load_split(make_config('cifar10'), 'train')


def test_local_data_needs_no_tensorflow(tmp_path):
  _npz(tmp_path)
  _npz(tmp_path, 'test.npz')
  code = (
      'import sys\n'
      "sys.modules['tensorflow'] = None\n"
      "sys.modules['tensorflow_datasets'] = None\n"
      'import ml_collections\n'
      'from mixer import data as ip\n'
      "c = ml_collections.ConfigDict(dict(dataset='tiny', data_dir=sys.argv[1],"
      " train_split='train', eval_split='test', batch_size=2,"
      ' eval_batch_size=3, seed=0, image_size=4))\n'
      'assert ip.dataset_info(c).num_train == 4\n'
      "assert next(ip.train_batches(c))['image'].shape == (2, 4, 4, 3)\n"
      'assert len(list(ip.eval_batches(c))) == 2\n')
  subprocess.run([sys.executable, '-c', code, str(tmp_path)], check=True,
                 cwd=REPO, timeout=60)


# -- batching ----------------------------------------------------------------


@needs_cifar
def test_train_batches_deterministic_and_resumable(real_data):
  config = make_config('cifar10', train_split='train[:1000]', batch_size=96,
                       seed=3)
  assert ip.steps_per_epoch(config) == 10  # 1000 // 96; 40 dropped per epoch.
  images, labels = ip.load_split(config, 'train[:1000]')
  it = ip.train_batches(config)
  fresh = [next(it) for _ in range(25)]
  for s, batch in enumerate(fresh):
    assert batch['image'].shape == (96, 32, 32, 3)
    assert batch['image'].dtype == np.uint8
    assert batch['label'].dtype == np.int32
    e, i = divmod(s, 10)
    idx = ip.epoch_permutation(3, e, 1000)[i * 96:(i + 1) * 96]
    np.testing.assert_array_equal(batch['image'], images[idx])
    np.testing.assert_array_equal(batch['label'], labels[idx])
  # Within an epoch no example repeats; epochs are ordered differently.
  epoch0 = np.concatenate([ip.epoch_permutation(3, 0, 1000)[:960]])
  assert len(np.unique(epoch0)) == 960
  assert not np.array_equal(fresh[0]['label'], fresh[10]['label'])
  # Resuming at step k gives what a fresh iterator gives from step k.
  for k in (1, 9, 10, 11, 21):
    resumed = ip.train_batches(config, start_step=k)
    for s in range(k, min(k + 3, 25)):
      batch = next(resumed)
      np.testing.assert_array_equal(batch['image'], fresh[s]['image'])
      np.testing.assert_array_equal(batch['label'], fresh[s]['label'])
  # Same seed, same data; another seed, another order.
  again = next(ip.train_batches(config))
  np.testing.assert_array_equal(again['image'], fresh[0]['image'])
  other = next(ip.train_batches(make_config(
      'cifar10', train_split='train[:1000]', batch_size=96, seed=4)))
  assert not np.array_equal(other['label'], fresh[0]['label'])


@needs_cifar
def test_train_batches_split_over_processes(real_data):
  config = make_config('cifar10', train_split='train[:1000]', batch_size=96)
  single = ip.train_batches(config, start_step=8)
  procs = [ip.train_batches(config, start_step=8, process_index=p,
                            process_count=2) for p in range(2)]
  for _ in range(4):  # Crosses the epoch boundary at step 10.
    whole = next(single)
    parts = [next(it) for it in procs]
    assert parts[0]['image'].shape == (48, 32, 32, 3)
    for key in ('image', 'label'):
      np.testing.assert_array_equal(
          np.concatenate([p[key] for p in parts]), whole[key])
  with pytest.raises(ip.DataError, match='multiple of the number of'):
    ip.train_batches(config, process_count=5)
  with pytest.raises(ip.DataError, match='larger than'):
    ip.train_batches(make_config('cifar10', train_split='train[:50]',
                                 batch_size=96))


@needs_cifar
@pytest.mark.parametrize('process_count', [1, 2])
def test_eval_batches_cover_every_example_once(real_data, process_count):
  config = make_config('cifar10', eval_batch_size=768)  # 10000 = 13 * 768 + 16
  images, labels = ip.load_split(config, 'test')
  streams = [list(ip.eval_batches(config, process_index=p,
                                  process_count=process_count))
             for p in range(process_count)]
  assert [len(s) for s in streams] == [14] * process_count
  b_local = 768 // process_count
  got_images, got_labels, masks = [], [], []
  for step in range(14):
    for p in range(process_count):
      batch = streams[p][step]
      assert batch['image'].shape == (b_local, 32, 32, 3)
      assert batch['image'].dtype == np.uint8
      assert batch['label'].dtype == np.int32
      assert batch['mask'].dtype == np.float32
      got_images.append(batch['image'])
      got_labels.append(batch['label'])
      masks.append(batch['mask'])
  mask = np.concatenate(masks)
  assert mask.sum() == 10_000
  assert mask[:10_000].all() and not mask[10_000:].any()
  np.testing.assert_array_equal(np.concatenate(got_labels)[mask > 0], labels)
  np.testing.assert_array_equal(np.concatenate(got_images)[mask > 0], images)
  assert not np.concatenate(got_images)[mask == 0].any()  # Zero padding.
  with pytest.raises(ip.DataError, match='eval_batch_size=768 must be'):
    ip.eval_batches(config, process_count=5)


# -- tf.data paths (need TensorFlow; tfds data are mocked, never downloaded) --


@pytest.fixture
def tf():
  return pytest.importorskip('tensorflow')


@needs_cifar
def test_streaming_path_from_local_arrays(tmp_path, tf):
  x, y = _real('cifar10', 'test[:100]')
  np.savez(tmp_path / 'train.npz', images=x[:90], labels=y[:90])
  np.savez(tmp_path / 'test.npz', images=x[90:], labels=y[90:])
  config = make_config('cifar10', data_dir=tmp_path, image_size=16,
                       batch_size=8, eval_batch_size=4, shuffle_buffer=50)
  config.augment.crop = 'inception'
  it = ip.tfds_train_dataset(config)
  first = [next(it) for _ in range(12)]  # More than one 90-example epoch.
  for batch in first:
    assert batch['image'].shape == (8, 16, 16, 3)
    assert batch['image'].dtype == np.uint8
    assert batch['label'].dtype == np.int32
  again = next(ip.tfds_train_dataset(config))
  np.testing.assert_array_equal(again['image'], first[0]['image'])
  half = next(ip.tfds_train_dataset(config, process_index=1, process_count=2))
  assert half['image'].shape == (4, 16, 16, 3)
  for process_count in (1, 2):
    streams = [list(ip.tfds_eval_dataset(config, process_index=p,
                                         process_count=process_count))
               for p in range(process_count)]
    assert len({len(s) for s in streams}) == 1  # Same count everywhere.
    batches = [b for s in streams for b in s]
    mask = np.concatenate([b['mask'] for b in batches])
    got = np.concatenate([b['label'] for b in batches])[mask > 0]
    assert mask.sum() == 10 and got.tolist() == y[90:].tolist()
  config.augment.eval_crop = 'resize'
  batch = next(ip.tfds_eval_dataset(config))
  expected = tf.image.resize(x[90:94], (16, 16)).numpy()
  assert np.abs(batch['image'] - np.round(expected)).max() <= 1


def test_tfds_paths_with_mocked_data(tmp_path, monkeypatch, tf):
  tfds = pytest.importorskip('tensorflow_datasets')
  del tmp_path
  monkeypatch.delenv('MIXER_DATA_DIR', raising=False)  # No local copies.
  # Mocked tfds downloads nothing: the network probe before a download is
  # told the network is up (it is tested in tests/test_download.py).
  from mixer.data import download  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(download, 'unreachable', lambda urls: None)
  ip.clear_cache()
  try:
    with tfds.testing.mock_data(num_examples=12,
                                policy=tfds.testing.MockPolicy.USE_CODE):
      config = make_config('cifar10', batch_size=4, eval_batch_size=5)
      images, labels = ip.load_split(config, 'train')
      assert images.shape == (12, 32, 32, 3) and images.dtype == np.uint8
      assert labels.dtype == np.int32
      info = ip.dataset_info(config)
      assert (info.num_train, info.num_classes) == (12, 10)
      assert info.class_names[0] == 'airplane'
      assert next(ip.train_batches(config))['image'].shape == (4, 32, 32, 3)
      # ImageNet streams: JPEGs decode only the Inception crop window.
      inet = make_config('imagenet2012', num_classes=1000, image_size=24,
                         batch_size=4, eval_batch_size=4, shuffle_buffer=8)
      inet.augment.crop = 'inception'
      batch = next(ip.tfds_train_dataset(inet))
      assert batch['image'].shape == (4, 24, 24, 3)
      evals = list(ip.tfds_eval_dataset(inet))
      assert len(evals) == 3 and sum(b['mask'].sum() for b in evals) == 12
      assert evals[0]['image'].shape == (4, 24, 24, 3)
  finally:
    ip.clear_cache()  # Mocked arrays must not reach other tests.


# -- image folders: <split>/<class>/<image>.{jpg,jpeg,png} -------------------


def _write_image_folder(root, split, images, labels, names, ext='.png',
                        start=0, **save_kw):
  """`root/split/<names[label]>/<start + i><ext>`, one file per image."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  for name in names:
    (root / split / name).mkdir(parents=True, exist_ok=True)
  for i, (image, label) in enumerate(zip(images, labels)):
    image = image[..., 0] if image.shape[-1] == 1 else image
    Image.fromarray(image).save(
        root / split / names[label] / f'{start + i}{ext}', **save_kw)


def _folder_order(labels, names):
  """Labels and load order of an image folder written by the helper above:
  labels index the sorted class names; examples come class by class, files
  (numbered by position) in natural order."""
  rank = {n: k for k, n in enumerate(sorted(names))}
  new = np.array([rank[names[l]] for l in labels], np.int32)
  return new, np.array(sorted(range(len(labels)), key=lambda i: (new[i], i)))


def _cifar_folder(root, data_dir, ext='.png', n_test=300, n_train=100,
                  **save_kw):
  test = np.load(data_dir / 'cifar10' / 'test.npz')
  train = np.load(data_dir / 'cifar10' / 'train_0.npz')
  names = ip.KNOWN_CLASS_NAMES['cifar10']
  x, y = test['images'][:n_test], test['labels'][:n_test]
  _write_image_folder(root, 'test', x, y, names, ext, **save_kw)
  _write_image_folder(root, 'train', train['images'][:n_train],
                      train['labels'][:n_train], names, ext, **save_kw)
  return x, y.astype(np.int32), names


def test_image_folder_png_loads_bit_identically(data_dir, tmp_path):
  x, y, names = _cifar_folder(tmp_path, data_dir)
  # CIFAR-10's class names happen to be in alphabetical order, so the sorted
  # folder names give back the original labels; the mapping below holds
  # for any names.
  assert tuple(sorted(names)) == names
  labels, order = _folder_order(y, names)
  np.testing.assert_array_equal(labels, y)
  config = make_config('cifar10', data_dir=tmp_path, image_size=16,
                       batch_size=20)
  images, got = ip.load_split(config, 'test')
  assert images.dtype == np.uint8 and images.shape == (300, 32, 32, 3)
  np.testing.assert_array_equal(images, x[order])  # Stored size kept.
  np.testing.assert_array_equal(got, labels[order])
  assert not images.flags.writeable
  sliced, sliced_labels = ip.load_split(config, 'test[10:20]+train[:5]')
  np.testing.assert_array_equal(sliced[:10], x[order][10:20])
  assert len(sliced_labels) == 15
  info = ip.dataset_info(config)
  assert info == ip.DatasetInfo(
      name='cifar10', num_classes=10, num_train=100, num_eval=300,
      image_shape=(32, 32, 3), class_names=names, in_memory=True,
      fixed_size=True)
  assert ip.local_dir(config) == str(tmp_path)
  assert next(ip.train_batches(config))['image'].shape == (20, 32, 32, 3)
  # Grayscale: PIL's 'L' conversion, one channel.
  gray, _ = ip.load_split(make_config('cifar10', data_dir=tmp_path,
                                      channels=1), 'test[:20]')
  from PIL import Image  # pylint: disable=g-import-not-at-top
  expected = np.stack([np.asarray(Image.fromarray(im).convert('L'))
                       for im in x[order][:20]])
  np.testing.assert_array_equal(gray, expected[..., None])


def test_image_folder_converts_modes_to_config_channels(tmp_path):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  rgb = rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
  folder = tmp_path / 'train' / 'a'
  folder.mkdir(parents=True)
  modes = ['L', 'RGBA', 'P', 'RGB']
  for i, mode in enumerate(modes):
    Image.fromarray(rgb[i]).convert(mode).save(folder / f'{i}.PNG')
  wide = np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000  # 16-bit.
  Image.fromarray(wide).save(folder / '4.png')
  images, labels = ip.load_split(make_config('x', data_dir=tmp_path), 'train')
  assert images.shape == (5, 8, 8, 3) and labels.tolist() == [0] * 5
  for i, mode in enumerate(modes):
    expected = np.asarray(Image.fromarray(rgb[i]).convert(mode).convert('RGB'))
    np.testing.assert_array_equal(images[i], expected)
  # 16-bit keeps its high byte (as TensorFlow's decode_png), not PIL's clip.
  np.testing.assert_array_equal(images[4], np.repeat(
      (wide >> 8).astype(np.uint8)[..., None], 3, -1))
  info = ip.dataset_info(make_config('x', data_dir=tmp_path,
                                     eval_split='train'))
  assert info.class_names == ('a',) and info.num_classes == 1


def test_image_folder_jpeg_within_tolerance(data_dir, tmp_path):
  # Quality 95 with PIL's default 4:2:0 chroma subsampling, a usual export.
  x, y, names = _cifar_folder(tmp_path, data_dir, '.jpg', quality=95)
  # Extensions are case-insensitive and .jpeg counts too.
  for i, path in enumerate(sorted((tmp_path / 'test' / 'cat').iterdir())[:4]):
    path.rename(path.with_suffix(['.JPG', '.jpeg', '.JPEG', '.Jpg'][i]))
  labels, order = _folder_order(y, names)
  images, got = ip.load_split(make_config('cifar10', data_dir=tmp_path),
                              'test')
  np.testing.assert_array_equal(got, labels[order])
  error = np.abs(images.astype(np.int32) - x[order])
  # Measured: mean 2.96, 99th percentile 17 (of 255).
  assert error.mean() < 3.5 and np.percentile(error, 99) <= 20
  assert ip.dataset_info(make_config('cifar10', data_dir=tmp_path)).fixed_size


def test_image_folder_same_accuracy_as_npz(data_dir, tmp_path):
  import jax  # pylint: disable=g-import-not-at-top
  from mixer import augment  # pylint: disable=g-import-not-at-top
  from mixer import devices  # pylint: disable=g-import-not-at-top
  from mixer.evaluators import classification as evaluate  # pylint: disable=g-import-not-at-top
  from mixer import models as mixer_models  # pylint: disable=g-import-not-at-top
  from tests.conftest import tiny_config  # pylint: disable=g-import-not-at-top
  x, y, names = _cifar_folder(tmp_path / 'png', data_dir)
  _cifar_folder(tmp_path / 'jpg', data_dir, '.jpg', quality=95)
  # The same 300 test images (and 100 train images) as .npz shards.
  np.savez(tmp_path / 'npz.npz')  # Unused: keeps tmp_path itself no dataset.
  (tmp_path / 'npz').mkdir()
  np.savez(tmp_path / 'npz' / 'test.npz', images=x, labels=y)
  train = np.load(data_dir / 'cifar10' / 'train_0.npz')
  np.savez(tmp_path / 'npz' / 'train.npz', images=train['images'][:100],
           labels=train['labels'][:100])

  def config_for(fmt):
    return tiny_config(data_dir=str(tmp_path / fmt), eval_split='test',
                       eval_batch_size=100)

  config = config_for('npz')
  model = mixer_models.build_model(config.model)
  params = model.init(jax.random.PRNGKey(0), np.zeros((1, 32, 32, 3)),
                      train=False)['params']
  # Weights that classify: the random-init Mixer as a feature extractor and
  # its (zero-initialised) head fitted by ridge regression on 2000 other
  # training images, so that predictions depend on the pixels.
  features = mixer_models.build_model(config.model, num_classes=0).apply(
      {'params': {k: v for k, v in params.items() if k != 'head'}},
      augment.normalize(train['images'][1000:3000]), train=False)
  features = np.concatenate([np.asarray(features), np.ones((2000, 1))], 1)
  targets = np.eye(10)[train['labels'][1000:3000]]
  head = np.linalg.solve(features.T @ features + np.eye(features.shape[1]),
                         features.T @ targets).astype(np.float32)
  params = dict(params, head={'kernel': head[:-1], 'bias': head[-1]})
  params = devices.replicate(params)  # As the training loop holds them.
  results = {fmt: evaluate.Evaluator(config_for(fmt), model, 10,
                                     stream=False).evaluate(params)
             for fmt in ('npz', 'png', 'jpg')}
  assert results['npz']['eval_examples'] == 300
  assert results['png'] == results['npz']  # Same accuracy, same loss.
  assert results['npz']['eval_accuracy'] > 0.2  # Measured 0.28 (84 / 300).
  # JPEG (quality 95, 4:2:0) is close, not equal: measured 0.2967 (89 / 300),
  # i.e. +0.0167 accuracy (33 of the 300 predictions differ from the PNG/npz
  # ones), and eval loss 2.23078 vs 2.23083.
  assert abs(results['jpg']['eval_accuracy'] -
             results['npz']['eval_accuracy']) <= 0.03
  assert abs(results['jpg']['eval_loss'] - results['npz']['eval_loss']) < 0.01


def test_image_folder_variable_size(data_dir, tmp_path, monkeypatch):
  tf = pytest.importorskip('tensorflow')
  from PIL import Image  # pylint: disable=g-import-not-at-top
  x = np.load(data_dir / 'cifar10' / 'test.npz')['images'][:12]
  sizes = [(40, 48), (32, 32), (50, 36), (64, 64)]  # (h, w)
  originals = []
  for i, image in enumerate(x):
    h, w = sizes[i % 4]
    big = Image.fromarray(image).resize((w, h), Image.BICUBIC)
    originals.append(np.asarray(big))
    split, name = ('train', 'ab'[i % 2]) if i < 8 else ('test', 'ab'[i % 2])
    (tmp_path / split / name).mkdir(parents=True, exist_ok=True)
    ext = '.png' if i < 8 else '.jpg'  # The test split is all JPEG.
    big.save(tmp_path / split / name / f'{i}{ext}', quality=95)
  config = make_config('pets', data_dir=tmp_path, num_classes=2,
                       image_size=24, batch_size=4, eval_batch_size=4,
                       shuffle_buffer=4)
  info = ip.dataset_info(config)
  assert not info.fixed_size
  assert info.image_shape == (24, 24, 3) and info.class_names == ('a', 'b')
  images, labels = ip.load_split(config, 'train')
  order = [0, 2, 4, 6, 1, 3, 5, 7]  # Class a, then class b.
  assert labels.tolist() == [0] * 4 + [1] * 4
  expected = [tf.cast(tf.clip_by_value(tf.round(tf.image.resize(
      originals[i], (24, 24), antialias=True)), 0, 255), tf.uint8).numpy()
              for i in order]
  np.testing.assert_array_equal(images, np.stack(expected))  # As tfds does.
  # The streaming path reads the files: crops of the original images.
  config.augment.crop = 'inception'
  batch = next(ip.tfds_train_dataset(config))
  assert batch['image'].shape == (4, 24, 24, 3)
  evals = list(ip.tfds_eval_dataset(config))  # 'center' crop, JPEG files.
  assert sum(b['mask'].sum() for b in evals) == 4
  assert np.concatenate([b['label'] for b in evals]).tolist() == [0, 0, 1, 1]
  first = evals[0]['image'][0]
  decoded = tf.io.decode_jpeg(
      (tmp_path / 'test' / 'a' / '8.jpg').read_bytes(), channels=3)
  from mixer.data import stream  # pylint: disable=g-import-not-at-top
  np.testing.assert_array_equal(
      first, stream._resize_center_crop(decoded, (24, 24)).numpy())
  # Without TensorFlow, that resize is a one-line error.
  ip.clear_cache()
  monkeypatch.setitem(sys.modules, 'tensorflow', None)
  with pytest.raises(ip.DataError, match='vary in size.*needs TensorFlow'
                     ) as e:
    ip.load_split(config, 'train')
  assert str(tmp_path / 'train') in str(e.value)
  assert '\n' not in str(e.value)
  ip.clear_cache()


def _small_folder(root, n=2):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  image = np.zeros((4, 4, 3), np.uint8)
  for split in ('train', 'test'):
    for name in ('a', 'b'):
      (root / split / name).mkdir(parents=True)
      for i in range(n):
        Image.fromarray(image + i).save(root / split / name / f'{i}.png')


@pytest.mark.parametrize('case', [
    'truncated_jpeg', 'text_as_png', 'empty_class', 'no_class_folders',
    'other_extension', 'gif_as_png', 'loose_file', 'nested_folder',
    'class_mismatch', 'missing_split'])
def test_image_folder_bad_files(tmp_path, case):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  _small_folder(tmp_path)
  train, split = tmp_path / 'train', 'train'
  if case == 'truncated_jpeg':
    bad, match = train / 'a' / '9.jpg', 'cannot decode.*truncated or corrupt'
    noise = np.random.default_rng(0).integers(0, 255, (32, 32, 3), np.uint8)
    Image.fromarray(noise).save(bad)
    bad.write_bytes(bad.read_bytes()[:-200])  # Header intact, data cut.
  elif case == 'text_as_png':
    bad, match = train / 'b' / 'x.png', 'not a readable image'
    bad.write_text('not an image')
  elif case == 'empty_class':
    bad, match = train / 'c', 'empty class folder'
    bad.mkdir()
    (bad / '.DS_Store').write_text('')  # Hidden files are skipped.
  elif case == 'no_class_folders':
    split = 'validation'
    bad, match = tmp_path / 'validation', 'no class folders'
    bad.mkdir()
  elif case == 'other_extension':
    bad, match = train / 'a' / 'notes.txt', r'not a \.jpg, \.jpeg or \.png'
    bad.write_text('hello')
  elif case == 'gif_as_png':
    bad, match = train / 'a' / 'anim.png', 'a GIF image'
    Image.new('RGB', (4, 4)).save(bad, format='GIF')
  elif case == 'loose_file':
    bad, match = train / 'loose.png', 'directly in the split folder'
    bad.write_bytes((train / 'a' / '0.png').read_bytes())
  elif case == 'nested_folder':
    bad, match = train / 'a' / 'more', 'folder inside a class folder'
    bad.mkdir()
  elif case == 'class_mismatch':
    split = 'test'
    (tmp_path / 'test' / 'b').rename(tmp_path / 'test' / 'c')
    bad, match = tmp_path / 'test', r'only in test/: c; only in train/: b'
  else:
    split = 'validation'
    bad, match = tmp_path, r'no folder validation/.*found: test, train'
  with pytest.raises(ip.DataError, match=match) as e:
    ip.load_split(make_config('x', data_dir=tmp_path, num_classes=0), split)
  message = str(e.value)
  assert str(bad) in message and '\n' not in message
  if case == 'class_mismatch':
    assert str(train) in message  # Names both folders.


def test_image_folder_needs_no_tensorflow(tmp_path):
  _small_folder(tmp_path, n=3)
  code = (
      'import sys\n'
      "sys.modules['tensorflow'] = None\n"
      "sys.modules['tensorflow_datasets'] = None\n"
      'import ml_collections\n'
      'from mixer import data as ip\n'
      "c = ml_collections.ConfigDict(dict(dataset='tiny', data_dir=sys.argv[1],"
      " train_split='train', eval_split='test', batch_size=2,"
      ' eval_batch_size=4, seed=0, image_size=8, channels=3))\n'
      'info = ip.dataset_info(c)\n'
      "assert (info.num_train, info.class_names) == (6, ('a', 'b'))\n"
      'assert info.fixed_size\n'
      "assert next(ip.train_batches(c))['image'].shape == (2, 4, 4, 3)\n"
      'assert len(list(ip.eval_batches(c))) == 2\n')
  subprocess.run([sys.executable, '-c', code, str(tmp_path)], check=True,
                 cwd=REPO, timeout=60)


@pytest.mark.parametrize('folders', [3, 12])
def test_image_folder_class_count_names_the_flag(tmp_path, folders):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from mixer import trainer  # pylint: disable=g-import-not-at-top
  for split in ('train', 'test'):
    for c in range(folders):
      folder = tmp_path / split / f'class{c:02d}'
      folder.mkdir(parents=True)
      Image.fromarray(np.full((32, 32, 3), c, np.uint8)).save(folder / '0.png')
  config = tiny_config(dataset='my_images', data_dir=str(tmp_path),
                       eval_split='test', batch_size=2, eval_batch_size=2)
  assert config.model.num_classes == 10
  with pytest.raises(ValueError,
                     match=f'--config.model.num_classes={folders}'):
    trainer.Trainer(config)
  with config.unlocked():
    config.model.num_classes = folders
  assert trainer.Trainer(config).info.num_classes == folders
