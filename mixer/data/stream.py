"""The streaming tf.data path: ImageNet-scale data, Inception crops, resizing.

Owns the training and eval streams that yield the same batch dicts as
`mixer.data.batches`, with images already cropped or resized to
`config.image_size` on the host. The only data module that needs TensorFlow
for local arrays (tfds data needs it anyway), besides `local`'s resize of
variable-size image folders. Local data stream from their
in-memory arrays, except image folders whose images vary in size: those
stream their encoded files, decoded (JPEGs only in the crop window) as tfds
images are.
"""

import dataclasses
from typing import Any, Dict, Iterator, Optional, Tuple

import numpy as np

from mixer.data import local
from mixer.data import locate
from mixer.data import tfds as tfds_source
from mixer.data.base import DataError
from mixer.data.base import describe
from mixer.data.base import image_hw
from mixer.data.batches import local_batch_size
from mixer.data.dataset import load_split


def _import_tf():
  try:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise DataError(f'the streaming input pipeline needs TensorFlow '
                    f'({describe(e)}); install tensorflow-cpu') from e
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
  """Local arrays (sliced per process) or tfds files (split per process).

  An image folder whose images vary in size streams its encoded files
  instead (its arrays are resized copies), so crops are taken from the
  original images as for tfds; its split is still loaded once first, which
  checks every file and gives one-line DataErrors naming a bad one.
  """
  tf = _import_tf()
  folder = locate.local_dir(config)
  if folder is not None:
    images, labels = load_split(config, split)
    start, stop = _process_range(len(labels), process_index, process_count)
    files = local.encoded_files(config, folder, split)
    if files is not None:
      paths, file_labels, jpeg = files
      ds = tf.data.Dataset.from_tensor_slices(
          {'image': paths[start:stop], 'label': file_labels[start:stop]})
      ds = ds.map(lambda ex: {'image': tf.io.read_file(ex['image']),
                              'label': ex['label']},
                  num_parallel_calls=tf.data.AUTOTUNE)
      return _Source(ds, len(file_labels), encoded=True, jpeg=jpeg,
                     channels=images.shape[-1])
    ds = tf.data.Dataset.from_tensor_slices(
        {'image': images[start:stop], 'label': labels[start:stop]})
    return _Source(ds, len(labels), encoded=False, jpeg=False,
                   channels=images.shape[-1])
  tfds = tfds_source.import_tfds()
  name = str(config.dataset)
  builder = tfds_source.prepared_builder(config, split)
  try:
    num_examples = tfds_source.split_size(builder.info, split)
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
    raise tfds_source.tfds_error(name, split, e,
                                 locate.tfds_data_dir(config)) from e
  feature = builder.info.features['image']
  return _Source(
      ds, int(num_examples or 0), encoded=True,
      jpeg=getattr(feature, 'encoding_format', None) == 'jpeg',
      channels=int(feature.shape[-1] or config.channels))


def _to_uint8(image):
  tf = _import_tf()
  return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


# big_vision's decode_jpeg_and_inception_crop defaults: area 5-100 %
# (config.augment.inception_area_min), aspect ratio 0.75-1.33 (not 4/3).
INCEPTION_RATIO_RANGE = (0.75, 1.33)


def _inception_crop(source: _Source, image, seed, hw: Tuple[int, int],
                    area_min: float):
  """big_vision's `decode_jpeg_and_inception_crop(size)`, pixel for pixel.

  A box covering a fraction [area_min, 1] of the image with aspect ratio in
  [0.75, 1.33] is drawn by tf's sampler (100 attempts, then the whole image)
  with stateless randomness from `seed`, so that the crop of an example
  depends only on the seed and its position in the stream (big_vision's
  stateful sampler draws from the same distribution); JPEGs decode only the
  box; the crop is resized bilinearly (no antialiasing) and truncated to
  uint8 as big_vision's `resize` does. tests/test_big_vision.py checks the
  output against big_vision's op given the same box.
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
      area_range=(area_min, 1.0), aspect_ratio_range=INCEPTION_RATIO_RANGE,
      min_object_covered=0, max_attempts=100,
      use_image_if_no_bounding_boxes=True)
  if source.encoded and source.jpeg:
    window = tf.stack([begin[0], begin[1], size[0], size[1]])
    image = tf.image.decode_and_crop_jpeg(image, window,
                                          channels=source.channels)
  else:
    image = tf.slice(image, begin, size)
  image = tf.image.resize(image, hw, method='bilinear', antialias=False)
  return tf.cast(tf.clip_by_value(image, 0, 255), tf.uint8)


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
    ratio in [0.75, 1.33]) resized to image_size -- the paper's pre-training
    and fine-tuning crop, as big_vision's `decode_jpeg_and_inception_crop`;
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
  them (a variable-size image folder from its files), else from tfds
  (prepared files, decoded here, JPEGs decoding only the crop window).
  """
  tf = _import_tf()
  b_local = local_batch_size(config.batch_size, 'batch_size', process_index,
                              process_count)
  if start_step < 0:
    raise ValueError(f'start_step must be >= 0, got {start_step}')
  seeds = np.random.SeedSequence(
      [int(config.seed), process_index, int(start_step)]).generate_state(3)
  source = _streaming_source(config, config.train_split,
                             process_index=process_index,
                             process_count=process_count,
                             shuffle_seed=int(seeds[0]))
  hw = image_hw(config)
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
                      process_count: int = 1, label_key: str = 'label',
                      num_classes: Optional[int] = None
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

  'label' is the tfds feature `label_key`: int32 [B_local], or, for a
  sequence of labels (ImageNet ReaL's 'real_label'), multi-hot float32
  [B_local, num_classes] (all zeros for an image with no label).
  """
  tf = _import_tf()
  b_local = local_batch_size(config.eval_batch_size, 'eval_batch_size',
                              process_index, process_count)
  source = _streaming_source(config, config.eval_split,
                             process_index=process_index,
                             process_count=process_count, shuffle_seed=None)
  hw = image_hw(config)
  augment = config.get('augment') or {}
  eval_crop = augment.get('eval_crop', 'center')
  n_max = -(-source.num_examples // process_count)
  num_batches = -(-n_max // b_local)
  multi = source.ds.element_spec[label_key].shape.rank == 1
  if multi and not num_classes:
    raise ValueError(f'{label_key!r} holds several labels per image: pass '
                     'num_classes for its multi-hot encoding')

  def label(ex):
    if multi:
      # Summed, not maxed: the max of no labels would be -inf.
      return tf.minimum(tf.reduce_sum(
          tf.one_hot(ex[label_key], num_classes), axis=0), 1.0)
    return tf.cast(ex[label_key], tf.int32)

  def preprocess(ex):
    image = _decode(source, ex['image'])
    image = (_resize(image, hw) if eval_crop == 'resize'
             else _resize_center_crop(image, hw))
    return {'image': image, 'label': label(ex),
            'mask': tf.constant(1.0, tf.float32)}

  pad = tf.data.Dataset.from_tensors({
      'image': tf.zeros(hw + (source.channels,), tf.uint8),
      'label': (tf.zeros([num_classes], tf.float32) if multi
                else tf.constant(0, tf.int32)),
      'mask': tf.constant(0.0, tf.float32)}).repeat()
  ds = source.ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.concatenate(pad).batch(b_local).take(num_batches)
  return _numpy_batches(ds.prefetch(tf.data.AUTOTUNE))


def _numpy_batches(ds) -> Iterator[Dict[str, np.ndarray]]:
  for batch in ds.as_numpy_iterator():
    yield batch
