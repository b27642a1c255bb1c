"""Everything a run needs, built from its config: the `Trainer`.

Owns checking the config against the data and the devices, the run's length
and learning-rate schedule, the pmapped train steps and the evaluator, and
the per-dispatch inputs (host batches, or indices into a device-resident
dataset). No I/O beyond reading the dataset's facts; no loop.
"""

from typing import Any, Iterator, List, Tuple

import jax
import ml_collections
import numpy as np

from mixer import data
from mixer import input_permutation
from mixer.evaluators import classification
from mixer.evaluators import fewshot
from mixer import models
from mixer import optim
from mixer import step as step_lib
from mixer.metrics import amount
from mixer import workdir as workdir_lib


def _to_steps(x: float) -> int:
  """big_vision's `u.steps` rounding: nearest step, at least 1 unless 0."""
  return max(1, int(round(x))) if x else 0


class Trainer:
  """Builds everything a run needs from the config; no I/O in __init__."""

  def __init__(self, config: ml_collections.ConfigDict):
    workdir_lib.check_config_values(config)
    self.config = config
    self.num_devices = jax.local_device_count()
    self.process_index = jax.process_index()
    self.process_count = jax.process_count()
    # The config's own problems first, before any data is read.
    self.model = models.build_model(config.model)
    self.model.check(models.input_shape(config))
    input_permutation.from_config(config)  # Its one-line errors, early too.
    self.info = data.dataset_info(config)
    if config.model.num_classes != self.info.num_classes:
      raise ValueError(
          f'model.num_classes is {config.model.num_classes} but dataset '
          f'{config.dataset!r} has {self.info.num_classes} classes; pass '
          f'--config.model.num_classes={self.info.num_classes}')
    self.batch_size = int(config.batch_size)
    self.accum = int(config.grad_accum_steps)
    per = self.num_devices * self.process_count * self.accum
    if self.batch_size <= 0 or self.batch_size % per:
      raise ValueError(
          f'batch_size {self.batch_size} must be a positive multiple of '
          f'devices x processes x grad_accum_steps = {self.num_devices} x '
          f'{self.process_count} x {self.accum} = {per}')
    eval_per = self.num_devices * self.process_count
    if config.eval_batch_size <= 0 or config.eval_batch_size % eval_per:
      raise ValueError(f'eval_batch_size {config.eval_batch_size} must be a '
                       f'positive multiple of {eval_per} (devices x processes)')
    # Arrays in host memory at the model's resolution go straight to the
    # step; anything else (ImageNet-scale data, Inception crops, resizing
    # CIFAR to 224 for fine-tuning) streams through tf.data.
    shape = models.input_shape(config)
    if self.info.image_shape[2] != shape[2]:
      raise ValueError(
          f'config.channels is {shape[2]} but {config.dataset!r} images have '
          f'{self.info.image_shape[2]} channel(s)')
    same_size = tuple(self.info.image_shape[:2]) == shape[:2]
    self.stream_train = not (self.info.in_memory and same_size
                             and config.augment.crop != 'inception')
    self.stream_eval = not (self.info.in_memory and same_size) or (
        not self.info.fixed_size and config.augment.eval_crop == 'center')
    n = self.info.num_train
    if n // self.batch_size == 0:
      raise ValueError(f'batch_size {self.batch_size} is larger than the '
                       f'training set ({n} examples)')
    # The run's length from its epochs follows its data order. Streamed
    # (tf.data: ImageNet, Inception crops, resizing), batches run on across
    # epoch boundaries as big_vision's do, and the count is big_vision's,
    # round(epochs * N / B). In memory, each epoch is its own permutation
    # and its last partial batch is dropped: epochs * floor(N / B) steps.
    self.steps_per_epoch = (n / self.batch_size if self.stream_train
                            else n // self.batch_size)
    self.total_steps = (int(config.num_train_steps)
                        if config.num_train_steps > 0
                        else self.epoch_steps(config.num_epochs))
    if self.total_steps <= 0:
      raise ValueError('num_train_steps or num_epochs must be > 0')
    spe = self.steps_per_epoch
    self.warmup_steps, self.warmup_source = optim.resolve_warmup(
        config, self.total_steps, spe)
    self.schedule = optim.learning_rate_schedule(config, self.total_steps, spe)
    self.tx = optim.make_optimizer(config, self.total_steps, spe)
    step = step_lib.make_train_step(config, self.model, self.tx,
                                    self.schedule, self.info.num_classes)
    self.p_train = jax.pmap(step_lib.make_multi_step(step), axis_name='batch',
                            donate_argnums=(0,))
    self.p_train_indexed = jax.pmap(
        step_lib.make_indexed_step(step_lib.make_multi_step(step)),
        axis_name='batch', donate_argnums=(0,))
    self.eval_every = (max(1, round(self.steps_per_epoch))
                       if config.eval_every_steps < 0
                       else int(config.eval_every_steps))
    self.resized = not same_size
    if config.input_pipeline == 'device' and self.stream_train:
      raise ValueError(
          "input_pipeline='device' needs the training set in memory at the "
          f'model resolution {shape[:2]} without Inception crops; '
          f'{config.dataset!r} is stored at {self.info.image_shape[:2]}: use '
          "input_pipeline='host'")
    self.evaluator = classification.Evaluator(config, self.model,
                                              self.info.num_classes,
                                              stream=self.stream_eval,
                                              num_examples=self.info.num_eval)
    # minival and config.extra_evals, each checked to exist now.
    self.extra_evals = classification.extra_evaluators(
        config, self.model, self.info.num_classes, stream=self.stream_eval)
    fs = fewshot.fewshot_config(config)
    self.fewshot_every = int(fs.every_steps)
    self.fewshot = (fewshot.FewShotEvaluator(config, self.model)
                    if self.fewshot_every > 0 else None)

  def epoch_steps(self, epochs: float) -> int:
    """Steps of `epochs` epochs: round(epochs * N / B) streamed (big_vision's
    count), epochs * floor(N / B) in memory (whole batches per epoch)."""
    if self.stream_train:
      return _to_steps(epochs * self.steps_per_epoch)
    return int(epochs * self.steps_per_epoch)

  def _size(self) -> str:
    """The run-size phrase: how the step count was obtained."""
    c, n, b = self.config, self.info.num_train, self.batch_size
    total, name = self.total_steps, self.info.name
    images = f'{total * b:,} images'
    if c.num_train_steps > 0:
      return (f'{amount(total, "step")} = '
              f'{amount(total / self.steps_per_epoch, "epoch", ".4g")} '
              f'of {n:,} {name} training images ({images}) at global batch '
              f'{b:,}')
    if self.stream_train:
      return (f'{amount(total, "step")} = round('
              f'{amount(c.num_epochs, "epoch", "g")} x {n:,} '
              f'{name} training images / global batch {b:,}), big_vision\'s '
              f'count: streamed batches run on across epoch boundaries '
              f'({images})')
    return (f'{amount(total, "step")} = {amount(c.num_epochs, "epoch", "g")} x '
            f'{self.steps_per_epoch:,} full batches of {b:,} from {n:,} {name} '
            f'training images (in memory: each epoch a new order, its last '
            f'{n % b:,} left out; {images})')

  def describe(self) -> List[str]:
    """What the run will do, in a few log lines (its size first)."""
    c, info = self.config, self.info
    lines = [
        f'Run: {self._size()}; '
        + (f'evaluates {info.num_eval:,} images every {self.eval_every:,} '
           'steps and at the end' if self.eval_every else
           f'evaluates {info.num_eval:,} images at the end')
        + (f'; checkpoints every {c.checkpoint_every_steps:,} steps'
           if c.checkpoint_every_steps > 0 else '; checkpoints at the end')
        + (f' and every {c.checkpoint_every_minutes:g} minutes (the first '
           'after one minute of training)'
           if c.get('checkpoint_every_minutes', 0) > 1 else
           f' and every {c.checkpoint_every_minutes:g} minutes'
           if c.get('checkpoint_every_minutes', 0) > 0 else '')
        + (f'; beside {c.eval_split!r}: '
           + ', '.join(f'{name} {e.config.dataset}:{e.config.eval_split}'
                       for name, e in self.extra_evals)
           if self.extra_evals else '')
        + (f'; few-shot evaluation every {self.fewshot_every:,} steps'
           if self.fewshot else ''),
        f'Learning rate: {c.learning_rate:g}, linear warmup over '
        f'{amount(self.warmup_steps, "step")} ({self.warmup_source}), then '
        f'{c.lr_schedule} to {c.learning_rate * c.get("lr_end", 0.0):g} at '
        f'step {self.total_steps:,}']
    if c.num_train_steps > 0 and c.get('warmup_percent', -1) >= 0 and \
        c.get('warmup_steps', -1) < 0 and c.get('warmup_epochs', -1) < 0:
      # A recipe given in steps (num_epochs 0: fine-tuning) has no other
      # length to quote; its Learning rate line says the share.
      full = self.epoch_steps(c.num_epochs)
      if full > 0 and full != self.total_steps:
        was, _ = optim.resolve_warmup(c, full, self.steps_per_epoch)
        lines.append(
            f'Warmup follows the run: {was:,} -> '
            f'{amount(self.warmup_steps, "step")} (the config\'s '
            f'{amount(c.num_epochs, "epoch", "g")}, {amount(full, "step")}, '
            f'warm up for {was:,}; num_train_steps='
            f'{self.total_steps:,} keeps the same share)')
    evaluation = self.evaluation_cost()
    if evaluation:
      lines.append(evaluation)
    if self.resized:
      h, w = models.input_shape(c)[:2]
      lines.append(
          f'{info.name} images are stored at {info.image_shape[0]}x'
          f'{info.image_shape[1]} but the model takes {h}x{w}: they are '
          'resized on the host (tf.data) for training and evaluation')
    return lines

  def evaluations(self) -> int:
    """Evaluations the whole run makes (the final one included)."""
    if not self.eval_every:
      return 1
    return (self.total_steps // self.eval_every +
            (self.total_steps % self.eval_every != 0))

  def evaluation_cost(self) -> str:
    """A line when the run's evaluations cost more than its training (a
    shortened run of a recipe): what they evaluate, and the flag that
    evaluates fewer images; '' otherwise. Evaluating an image costs about a
    third of training on it (a forward pass without the backward)."""
    images = self.evaluations() * self.info.num_eval
    trained = self.total_steps * self.batch_size
    if images / 3 <= trained or self.info.num_eval <= 1000:
      return ''
    h, w = models.input_shape(self.config)[:2]
    split = str(self.config.eval_split).split('[')[0]
    count = self.evaluations()
    return (f'Evaluation: {count:,} evaluation{"s" * (count != 1)} of '
            f'{self.info.num_eval:,} images at {h}x{w} cost about '
            f'{images / 3 / trained:.0f}x the training of this run '
            f'({trained:,} images); --config.eval_split=\'{split}[:500]\' '
            'evaluates 500 of them')

  # -- batches -------------------------------------------------------------

  def _split(self, x: np.ndarray) -> np.ndarray:
    """[B_local, ...] -> [devices, accum, micro, ...]."""
    return x.reshape((self.num_devices, self.accum, -1) + x.shape[1:])

  def host_chunks(self, start_step: int) -> Iterator[Tuple[int, Any]]:
    """Yields (k, (images, labels)) with k steps stacked on axis 1."""
    source = (data.tfds_train_dataset if self.stream_train
              else data.train_batches)
    batches = source(self.config, start_step=start_step,
                     process_index=self.process_index,
                     process_count=self.process_count)
    step = start_step
    while step < self.total_steps:
      k = self.chunk_size(step)
      imgs, lbls = [], []
      for _ in range(k):
        b = next(batches)
        imgs.append(self._split(b['image']))
        lbls.append(self._split(b['label'].astype(np.int32)))
      yield k, (np.stack(imgs, 1), np.stack(lbls, 1))
      step += k

  def index_chunks(self, start_step: int) -> Iterator[Tuple[int, Any]]:
    """Like host_chunks, but only the example indices of each step."""
    b_local = self.batch_size // self.process_count
    lo = self.process_index * b_local
    step, epoch, perm = start_step, None, None
    while step < self.total_steps:
      k = self.chunk_size(step)
      idx = []
      for s in range(step, step + k):
        e, pos = divmod(s, self.steps_per_epoch)
        if e != epoch:
          epoch = e
          perm = data.epoch_permutation(
              self.config.seed, e, self.info.num_train)
        glob = perm[pos * self.batch_size:(pos + 1) * self.batch_size]
        idx.append(self._split(glob[lo:lo + b_local].astype(np.int32)))
      yield k, (np.stack(idx, 1),)
      step += k

  def chunk_size(self, step: int) -> int:
    """Steps in the next dispatch: never across a log/eval/save boundary."""
    k = max(int(self.config.steps_per_dispatch), 1)
    for every in (self.config.log_every_steps, self.eval_every,
                  self.config.checkpoint_every_steps, self.fewshot_every):
      if every and every > 0:
        k = min(k, every - step % every)
    return max(1, min(k, self.total_steps - step))
