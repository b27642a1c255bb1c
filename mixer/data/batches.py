"""Deterministic host batches of in-memory data: training order and eval padding.

Owns the data order (a pure function of seed and step, `epoch_permutation`),
each process's slice of a global batch, and the padded, masked eval pass
that counts every example once. Reads data only through `load_split`.
"""

from typing import Dict, Iterator

import numpy as np

from mixer.data.base import DataError
from mixer.data.dataset import load_split


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
  """The order (int64 [n]) in which epoch `epoch` visits the training set."""
  if seed < 0 or epoch < 0:
    raise ValueError(f'seed and epoch must be >= 0, got {seed}, {epoch}')
  return np.random.default_rng([int(seed), int(epoch)]).permutation(n)


def local_batch_size(batch_size: int, field: str, process_index: int,
                     process_count: int) -> int:
  """This process's share of a global batch (`field` names it in errors)."""
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
  b_local = local_batch_size(config.batch_size, 'batch_size', process_index,
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
  b_local = local_batch_size(config.eval_batch_size, 'eval_batch_size',
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

