r"""Host input-pipeline throughput on CPU, and the stand-in ImageNet it reads.

ImageNet cannot be downloaded here, so this module also builds the stand-in
the tests use: a tiny `imagenet2012` made by tfds's own ImageNet builder from
fake ILSVRC2012 tars (CIFAR-10 images upscaled to ImageNet-like sizes and
JPEG-encoded; synthetic images where CIFAR-10 is absent), and a tiny
`imagenet21k` in big_vision's layout (one 'full' split, 21843 classes),
written with `tfds.dataset_builders.store_as_tfds_dataset`. Both land in a
TFDS data dir that `config.data_dir` points at, and are read by the very
code that reads the real datasets (`mixer.data`). Nothing is ever
downloaded.

The benchmark times the host side alone -- `tfds_train_dataset` /
`tfds_eval_dataset` producing uint8 batches at 224 (tfds reading, JPEG
decoding of the Inception crop window, resizing, batching) -- with no model
and no accelerator, and prints one JSON line per measurement:

* `imagenet_train`: the Table 4 training path on the stand-in (Inception crop
  decoded from JPEGs of ImageNet's typical sizes, resized to 224);
* `imagenet_eval`: big_vision's resize_small(256)|central_crop(224);
* `cifar_upscaled_train`: CIFAR-10 from local arrays, Inception crop resized
  to 224 (the fine-tuning path);
* `device_augment_cpu` (with --augment): flip + RandAugment(2, 15) with
  big_vision's ops + mixup, `mixer.augment`'s on-device code jitted on CPU.
  On an accelerator this runs inside the train step; the CPU number only
  bounds its cost from above.

    python benchmarks/input_pipeline.py --num_images=512 --batches=20

Flip, RandAugment and mixup are not host work: they run on device inside
the train step (`mixer.augment`, one implementation per op for both input
paths), so the host rate is what must keep up with the accelerators.
"""

import argparse
import glob
import io
import json
import os
import sys
import tarfile
import tempfile
import time
from typing import Optional, Sequence, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top
import numpy as np

# ImageNet's typical JPEG sizes (the most common are 500x375 and 375x500).
IMAGENET_SIZES = ((375, 500), (500, 375), (333, 500), (400, 400))
# Small sizes for fast tests: short side >= 224, some non-square.
SMALL_SIZES = ((224, 224), (256, 320), (320, 256), (240, 300))
IMAGENET21K_CLASSES = 21843


def source_images(num: int, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
  """`num` uint8 32x32x3 images and int labels in [0, 10).

  CIFAR-10's test split from $MIXER_DATA_DIR/cifar10 or ../shared/data/cifar10
  when present, else smooth synthetic images (so tests run anywhere).
  """
  roots = [os.environ.get('MIXER_DATA_DIR', ''),
           os.path.join(os.path.dirname(os.path.dirname(
               os.path.abspath(__file__))), '..', 'shared', 'data')]
  for root in roots:
    path = os.path.join(root, 'cifar10', 'test.npz') if root else ''
    if path and os.path.exists(path):
      with np.load(path) as data:
        images, labels = data['images'], data['labels']
      reps = -(-num // len(labels))
      return (np.tile(images, (reps, 1, 1, 1))[:num],
              np.tile(labels, reps)[:num].astype(np.int64))
  rng = np.random.default_rng(seed)
  coarse = rng.integers(0, 256, (num, 4, 4, 3)).astype(np.float32)
  images = np.kron(coarse, np.ones((1, 8, 8, 1), np.float32))
  return images.astype(np.uint8), rng.integers(0, 10, num)


def _jpegs(images: np.ndarray, sizes: Sequence[Tuple[int, int]],
           grain: float = 0.0):
  """Upscales image i to sizes[i % len(sizes)] (bicubic), as JPEG bytes.

  `grain` > 0 adds Gaussian pixel noise of that standard deviation: upscaled
  CIFAR is smooth and compresses far better than photographs, and JPEG
  decoding time grows with the compressed size, so the benchmark adds grain
  until its files are about ImageNet's size (~110 KB on average; the
  default 30 gives ~108 KB at ImageNet's typical sizes).
  """
  import tensorflow as tf
  rng = np.random.default_rng(0)
  out = []
  for i, image in enumerate(images):
    big = tf.image.resize(image, sizes[i % len(sizes)], method='bicubic')
    if grain:
      big += rng.normal(0.0, grain, big.shape).astype(np.float32)
    big = tf.cast(tf.clip_by_value(tf.round(big), 0, 255), tf.uint8)
    out.append(tf.io.encode_jpeg(big, quality=90).numpy())
  return out


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
  info = tarfile.TarInfo(name)
  info.size = len(data)
  tar.addfile(info, io.BytesIO(data))


def write_imagenet2012_standin(data_dir: str, *, num_train: int = 200,
                               num_val: int = 50,
                               sizes: Sequence[Tuple[int, int]] = SMALL_SIZES,
                               grain: float = 0.0) -> str:
  """Prepares a tiny `imagenet2012` in the TFDS data dir `data_dir`.

  Writes fake `ILSVRC2012_img_train.tar` (one inner tar of JPEGs per synset,
  as image-net.org ships it) and `ILSVRC2012_img_val.tar` into
  `<data_dir>/downloads/manual/`, then runs tfds's own `imagenet2012` builder
  on them: the records, features (JPEG image, 1000-class label, file name)
  and metadata are exactly those of a real prepared ImageNet. Train labels
  spread over the 1000 classes; validation labels are tfds's real ones for
  the first `num_val` validation file names. `sizes`, `grain`: see `_jpegs`.
  Returns `data_dir`.
  """
  import tensorflow_datasets as tfds
  images, labels = source_images(num_train + num_val)
  jpegs = _jpegs(images, sizes, grain)
  manual = os.path.join(data_dir, 'downloads', 'manual')
  os.makedirs(manual, exist_ok=True)
  synsets = tfds.builder('imagenet2012').info.features['label'].names
  by_synset = {}
  for i in range(num_train):
    synset = synsets[(int(labels[i]) * 100 + i) % len(synsets)]
    by_synset.setdefault(synset, []).append(i)
  with tarfile.open(os.path.join(manual, 'ILSVRC2012_img_train.tar'),
                    'w') as outer:
    for synset, indices in sorted(by_synset.items()):
      buf = io.BytesIO()
      with tarfile.open(fileobj=buf, mode='w') as inner:
        for i in indices:
          _add(inner, f'{synset}_{i}.JPEG', jpegs[i])
      _add(outer, f'{synset}.tar', buf.getvalue())
  with tarfile.open(os.path.join(manual, 'ILSVRC2012_img_val.tar'),
                    'w') as tar:
    for k in range(num_val):
      _add(tar, f'ILSVRC2012_val_{k + 1:08d}.JPEG', jpegs[num_train + k])
  builder = tfds.builder('imagenet2012', data_dir=data_dir)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=manual, try_download_gcs=False))
  return data_dir


def imagenet21k_features():
  """big_vision's `imagenet21k` features: JPEG image, 21843-class label."""
  import tensorflow_datasets as tfds
  return tfds.features.FeaturesDict({
      'image': tfds.features.Image(encoding_format='jpeg'),
      'label': tfds.features.ClassLabel(num_classes=IMAGENET21K_CLASSES),
      'file_name': tfds.features.Text(),
  })


def write_imagenet21k_standin(data_dir: str, *, num: int = 96,
                              sizes: Sequence[Tuple[int, int]] = SMALL_SIZES
                             ) -> str:
  """Prepares a tiny `imagenet21k` (one 'full' split) in `data_dir`.

  ImageNet-21k is not in tfds's catalogue; this writes it the way
  docs/imagenet.md prepares the real one (`store_as_tfds_dataset` with
  `imagenet21k_features()`), so reading it goes through tfds's read-only
  builder for datasets without code, as for the real one. Returns data_dir.
  """
  import tensorflow_datasets as tfds
  images, labels = source_images(num, seed=1)
  jpegs = _jpegs(images, sizes)
  examples = [(f'{i:06d}', {
      'image': io.BytesIO(jpegs[i]),
      'label': (int(labels[i]) * 2000 + i) % IMAGENET21K_CLASSES,
      'file_name': f'n{i:08d}_{i}.JPEG'}) for i in range(num)]
  tfds.dataset_builders.store_as_tfds_dataset(
      name='imagenet21k', version='1.0.0', features=imagenet21k_features(),
      split_datasets={'full': examples}, data_dir=data_dir,
      download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  return data_dir


def write_imagenet_eval_standins(data_dir: str, *, num: int = 12,
                                 sizes: Sequence[Tuple[int, int]] = SMALL_SIZES
                                ) -> str:
  """Prepares tiny `imagenet_v2` (a 'test' split) and `imagenet2012_real` (a
  'validation' split, a set of real labels per image, some empty) in
  `data_dir`, with tfds's own features for both, so tfds reads them through
  its builders as it reads the real ones (which need downloads: ImageNet-V2
  from the web, ReaL the ImageNet validation tar). Returns data_dir."""
  import tensorflow_datasets as tfds
  images, labels = source_images(num, seed=2)
  jpegs = _jpegs(images, sizes)
  for name, split in (('imagenet_v2', 'test'),
                      ('imagenet2012_real', 'validation')):
    builder = tfds.builder(name, data_dir=data_dir)
    examples = []
    for i in range(num):
      ex = {'image': io.BytesIO(jpegs[i]), 'file_name': f'{name}_{i}.jpeg'}
      label = int(labels[i]) * 100 + i
      if name == 'imagenet_v2':
        ex['label'] = label
      else:  # 0, 1 or 2 real labels: the first is the original one.
        ex['original_label'] = label
        ex['real_label'] = [label, (label + 1) % 1000][:i % 3]
      examples.append((f'{i:06d}', ex))
    tfds.dataset_builders.store_as_tfds_dataset(
        name=name, version=str(builder.version),
        config=builder.builder_config.name if builder.builder_config else None,
        features=builder.info.features, split_datasets={split: examples},
        data_dir=data_dir,
        download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  return data_dir


# ----------------------------------------------------------------------------
# Benchmark.
# ----------------------------------------------------------------------------


def _rate(batches, num_batches: int, warmup: int) -> Tuple[float, int]:
  """Images per second over `num_batches` batches after `warmup`."""
  for _ in range(warmup):
    next(batches)
  count, start = 0, time.perf_counter()
  for _ in range(num_batches):
    count += len(next(batches)['label'])
  return count / (time.perf_counter() - start), count


def _table4_config(data_dir: str, batch_size: int, image_size: int = 224):
  from configs import common
  config = common.paper_table4('B/16', 'imagenet2012')
  config.data_dir = data_dir
  config.batch_size = batch_size
  config.eval_batch_size = batch_size
  config.shuffle_buffer = 1024
  config.image_size = image_size
  return config


def run(num_images: int, batch_size: int, batches: int, warmup: int,
        augment: bool, workdir: Optional[str] = None, grain: float = 30.0):
  """Prints one JSON line per measurement; returns them as dicts."""
  from mixer import data as ip
  results = []
  cores = os.cpu_count()

  def report(name, rate, count, **extra):
    line = {'bench': name, 'images_per_s': round(rate, 1), 'images': count,
            'batch_size': batch_size, 'cpu_cores': cores,
            'images_per_s_per_core': round(rate / cores, 1), **extra}
    print(json.dumps(line), flush=True)
    results.append(line)

  with tempfile.TemporaryDirectory() as tmp:
    root = workdir or tmp
    t0 = time.perf_counter()
    write_imagenet2012_standin(root, num_train=num_images,
                               num_val=num_images, sizes=IMAGENET_SIZES,
                               grain=grain)
    build_s = time.perf_counter() - t0
    files = glob.glob(os.path.join(root, 'imagenet2012', '*', '*-train.*'))
    kb = sum(os.path.getsize(f) for f in files) / num_images / 1000
    config = _table4_config(root, batch_size)
    rate, count = _rate(ip.tfds_train_dataset(config), batches, warmup)
    report('imagenet_train', rate, count, jpeg_sizes=IMAGENET_SIZES,
           mean_record_kb=round(kb, 1), standin_build_s=round(build_s, 1))
    n_eval = -(-num_images // batch_size)
    if n_eval > 1:  # One pass; the first batch (start-up) is not timed.
      rate, count = _rate(ip.tfds_eval_dataset(config), n_eval - 1, 1)
      report('imagenet_eval', rate, count, mean_record_kb=round(kb, 1))

    cifar, cifar_labels = source_images(10_000)
    local = os.path.join(tmp, 'cifar_upscaled')
    os.makedirs(local)
    np.savez(os.path.join(local, 'train.npz'), images=cifar,
             labels=cifar_labels)
    np.savez(os.path.join(local, 'test.npz'), images=cifar[:100],
             labels=cifar_labels[:100])
    cfg = _table4_config(local, batch_size)
    cfg.dataset = 'cifar_upscaled'
    cfg.model.num_classes = 10
    cfg.train_split, cfg.eval_split = 'train', 'test'
    rate, count = _rate(ip.tfds_train_dataset(cfg), batches, warmup)
    report('cifar_upscaled_train', rate, count)

  if augment:
    import jax
    from mixer import augment as augment_lib
    aug = jax.jit(augment_lib.make_train_augment(config.augment, 1000))
    images = np.zeros((batch_size, 224, 224, 3), np.uint8)
    labels = np.zeros((batch_size,), np.int32)
    jax.block_until_ready(aug(jax.random.PRNGKey(0), images, labels))
    start = time.perf_counter()
    steps = max(batches // 4, 2)
    for i in range(steps):
      out = aug(jax.random.PRNGKey(i), images, labels)
    jax.block_until_ready(out)
    rate = steps * batch_size / (time.perf_counter() - start)
    report('device_augment_cpu', rate, steps * batch_size,
           randaugment=(2, config.augment.randaugment_magnitude),
           mixup=config.augment.mixup_alpha)
  return results


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--num_images', type=int, default=512,
                      help='stand-in ImageNet train images (val: a quarter)')
  parser.add_argument('--batch_size', type=int, default=128)
  parser.add_argument('--batches', type=int, default=20,
                      help='timed batches per measurement')
  parser.add_argument('--warmup', type=int, default=3)
  parser.add_argument('--augment', action='store_true',
                      help='also time the on-device augmentation on CPU')
  parser.add_argument('--workdir', default=None,
                      help='where to build the stand-in (default: a tmp dir)')
  parser.add_argument('--grain', type=float, default=30.0,
                      help='pixel noise std making JPEGs ImageNet-sized')
  args = parser.parse_args(argv)
  run(args.num_images, args.batch_size, args.batches, args.warmup,
      args.augment, args.workdir, args.grain)


if __name__ == '__main__':
  main()
