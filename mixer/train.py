"""The training loop: `train_and_evaluate(config, workdir)`.

Data-parallel with `jax.pmap` over all local devices (gradients `pmean`'d over
the 'batch' axis; several processes each feed their own slice of the global
batch). What one step computes is `mixer.step`; this module owns the loop
around it: building everything a run needs from the config (`Trainer`),
feeding the steps (`steps_per_dispatch` > 1 fuses several into one dispatch;
with `input_pipeline='device'` the uint8 dataset lives on device and each
dispatch only receives the example indices, the same permutation the host
path uses, so both see identical data), and deciding when to log, evaluate
(`mixer.evaluate`) and checkpoint (`mixer.checkpoints`).

The run is resumable: the RNG for step s is `fold_in(seed key, s)` and the
data for step s is a function of (seed, s), so restoring the state of step s
from `workdir/checkpoints` continues exactly where the run stopped (on CPU
bit for bit, metrics.jsonl included except wall-clock fields; see
docs/guarantees.md).

Hardening: every step reports whether its loss, gradients and new
parameters are finite; the flags are checked on the host before every log,
eval and checkpoint, so a non-finite state is never saved (`NonFiniteError`
names the step), or with `config.skip_nonfinite_steps` such updates are
dropped and counted. A workdir that holds a run with another config is
refused (`mixer.workdir.WorkdirError`) unless `overwrite=True`.
"""

import collections
import os
import time
from typing import Any, Dict, Iterator, Tuple

from absl import logging
import jax
import ml_collections
import numpy as np

from mixer import checkpoints
from mixer import data
from mixer import devices
from mixer import evaluate
from mixer import metrics as metrics_lib
from mixer import models
from mixer import optim
from mixer import step as step_lib
from mixer import workdir as workdir_lib


class NonFiniteError(FloatingPointError):
  """The loss, gradients or parameters became NaN/Inf at some step.

  Raised before anything of that step (or later) is logged or saved: the
  last checkpoint stays the last good state.
  """


class Trainer:
  """Builds everything a run needs from the config; no I/O in __init__."""

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.num_devices = jax.local_device_count()
    self.process_index = jax.process_index()
    self.process_count = jax.process_count()
    self.info = data.dataset_info(config)
    self.model = models.build_model(config.model)
    self.model.check(models.input_shape(config))
    if config.model.num_classes != self.info.num_classes:
      raise ValueError(
          f'model.num_classes is {config.model.num_classes} but dataset '
          f'{config.dataset!r} has {self.info.num_classes} classes')
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
    self.steps_per_epoch = self.info.num_train // self.batch_size
    if self.steps_per_epoch == 0:
      raise ValueError(f'batch_size {self.batch_size} is larger than the '
                       f'training set ({self.info.num_train} examples)')
    if config.num_train_steps > 0:
      self.total_steps = int(config.num_train_steps)
    else:
      self.total_steps = int(config.num_epochs * self.steps_per_epoch)
    if self.total_steps <= 0:
      raise ValueError('num_train_steps or num_epochs must be > 0')
    self.schedule = optim.learning_rate_schedule(config, self.total_steps)
    self.tx = optim.make_optimizer(config, self.total_steps)
    step = step_lib.make_train_step(config, self.model, self.tx, self.schedule,
                           self.info.num_classes)
    self.p_train = jax.pmap(step_lib.make_multi_step(step), axis_name='batch',
                            donate_argnums=(0,))
    self.p_train_indexed = jax.pmap(
        step_lib.make_indexed_step(step_lib.make_multi_step(step)),
        axis_name='batch', donate_argnums=(0,))
    self.eval_every = (self.steps_per_epoch if config.eval_every_steps < 0
                       else int(config.eval_every_steps))
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
    if config.input_pipeline == 'device' and self.stream_train:
      raise ValueError(
          "input_pipeline='device' needs the training set in memory at the "
          f'model resolution {shape[:2]} without Inception crops; '
          f'{config.dataset!r} is stored at {self.info.image_shape[:2]}: use '
          "input_pipeline='host'")
    self.evaluator = evaluate.Evaluator(config, self.model,
                                        self.info.num_classes,
                                        stream=self.stream_eval)

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
                  self.config.checkpoint_every_steps):
      if every and every > 0:
        k = min(k, every - step % every)
    return max(1, min(k, self.total_steps - step))

  # -- evaluation ----------------------------------------------------------


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       overwrite: bool = False) -> Dict[str, Any]:
  """Trains `config` in `workdir` (resuming if it holds a checkpoint).

  Writes `workdir/checkpoints/`, `metrics.jsonl`, TensorBoard events (when
  TensorFlow is installed), `config.json` and, at the end, `results.json`,
  whose content is also returned. Only process 0 writes files other than
  checkpoints (which every process takes part in).

  Args:
    config: the experiment config (see configs/common.py).
    workdir: where the run lives. A workdir holding a run with another
      config (fields outside `RESUMABLE_FIELDS`) is refused.
    overwrite: delete that run's outputs and start over instead.

  Raises:
    ValueError (DataError, WorkdirError, ...): a bad config, data or
      workdir; one line, raised before anything is written.
    NonFiniteError: a step produced NaN/Inf (without
      `config.skip_nonfinite_steps`); nothing of it was logged or saved.
    checkpoints.CheckpointWriteError: a checkpoint could not be written; the
      previous one stays restorable.
  """
  t_start = time.time()
  trainer = Trainer(config)
  is_chief = trainer.process_index == 0
  workdir_lib.prepare_workdir(config, workdir, overwrite=overwrite)
  resuming = bool(checkpoints.complete_steps(
      checkpoints.checkpoint_dir(workdir)))
  rng = jax.random.PRNGKey(config.seed)
  state = step_lib.create_train_state(config, trainer.model, trainer.tx, rng,
                             load_init_checkpoint=not resuming)
  num_params = sum(int(np.prod(p.shape))
                   for p in jax.tree_util.tree_leaves(state.params))

  mgr = checkpoints.manager(workdir, keep=config.keep_checkpoints)
  try:
    restored = checkpoints.restore(mgr, step_lib.state_dict(state))
  except BaseException:
    mgr.close()
    raise
  meta = {}
  if restored is not None:
    _, saved, meta = restored
    state = step_lib.TrainState(**saved)
  start_step = int(state.step)
  if start_step:
    logging.info('Resuming from step %d', start_step)
  config_json = workdir_lib.config_json(config)
  if is_chief:
    workdir_lib.write_json_atomic(os.path.join(workdir, 'config.json'), config_json)

  writer = metrics_lib.MetricsWriter(workdir, is_chief=is_chief,
                                     resume_step=start_step)
  progress = metrics_lib.Progress(total_steps=trainer.total_steps,
                                  start_step=start_step,
                                  batch_size=trainer.batch_size, writer=writer)
  logging.info('%s: %d params, %d devices x %d processes, %d steps '
               '(%d per epoch), global batch %d', config.model.model_name,
               num_params, trainer.num_devices, trainer.process_count,
               trainer.total_steps, trainer.steps_per_epoch,
               trainer.batch_size)
  b_local = trainer.batch_size // trainer.process_count
  logging.info('Process %d of %d feeds examples [%d, %d) of every global '
               'batch', trainer.process_index, trainer.process_count,
               trainer.process_index * b_local,
               (trainer.process_index + 1) * b_local)
  try:
    step, last_eval, best_acc, train_time, timed_steps = _train_loop(
        trainer, config, workdir, mgr, writer, progress, state, start_step,
        meta, config_json)
  except BaseException:
    # Let a checkpoint already on its way finish (it holds a good state), but
    # never hide the original error behind a second one.
    try:
      mgr.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      logging.warning('while stopping: a pending checkpoint failed: %s', e)
    writer.close()
    try:
      mgr.close()
    except Exception:  # pylint: disable=broad-except
      pass
    raise
  writer.flush()

  skip_nonfinite = bool(config.get('skip_nonfinite_steps', False))
  # The whole log, steps before a resume included.
  logged = (metrics_lib.read_records(workdir) if os.path.exists(
      os.path.join(workdir, 'metrics.jsonl')) else [])
  results = {
      'status': 'done',
      'final_eval_accuracy': last_eval['eval_accuracy'],
      'final_eval_loss': last_eval['eval_loss'],
      'best_eval_accuracy': max(
          [best_acc] + [r.get('eval_accuracy', 0.0) for r in logged]),
      'eval_examples': last_eval['eval_examples'],
      'steps': step,
      'epochs': step / trainer.steps_per_epoch,
      'resumed_from_step': start_step,
      'wall_seconds': time.time() - t_start,
      'train_seconds': train_time,
      'images_per_second': (timed_steps * trainer.batch_size / train_time
                            if train_time > 0 else None),
      'num_params': num_params,
      'num_devices': trainer.num_devices * trainer.process_count,
      'device_kind': jax.devices()[0].device_kind,
      'config': config_json,
  }
  if skip_nonfinite:
    results['skipped_steps'] = int(
        sum(r.get('skipped_steps', 0) for r in logged))
  if is_chief:
    workdir_lib.write_json_atomic(os.path.join(workdir, 'results.json'), results)
  writer.close()
  mgr.close()
  return results


def _train_loop(trainer: Trainer, config, workdir: str, mgr, writer,
                progress, state: step_lib.TrainState, start_step: int,
                meta: Dict[str, Any], config_json: Dict[str, Any]):
  """Steps from `start_step` to the end; returns (step, last eval, best eval
  accuracy, timed seconds, timed steps)."""
  if config.input_pipeline == 'device':
    images, labels = data.load_split(config, config.train_split)
    resident = (devices.replicate(images), devices.replicate(labels.astype(np.int32)))
    chunks = trainer.index_chunks(start_step)
    run = lambda st, xs: trainer.p_train_indexed(st, *xs, *resident)
  elif config.input_pipeline == 'host':
    chunks = _prefetch(trainer.host_chunks(start_step), size=2)
    run = lambda st, xs: trainer.p_train(st, *xs)
  else:
    raise ValueError("input_pipeline must be 'host' or 'device', got "
                     f'{config.input_pipeline!r}')

  skip_nonfinite = bool(config.get('skip_nonfinite_steps', False))
  ckpt_dir = checkpoints.checkpoint_dir(workdir)
  pstate = devices.replicate(state)
  del state
  step = start_step
  last_saved = start_step if start_step else None
  pending = []  # (first step, per-dispatch device metrics), not yet fetched.
  unlogged = metrics_lib.UnloggedSteps(meta.get('unlogged'))
  best_acc, last_eval = 0.0, None
  train_time, timed_steps, t_timed, timed_from = 0.0, 0, None, step

  def collect():
    """Fetches pending metrics; stops at the first non-finite step."""
    nonlocal pending
    if not pending:
      return
    fetched = jax.device_get([m for _, m in pending])
    for (first, _), f in zip(pending, fetched):
      per_step = {k: np.asarray(v[0]).reshape(-1) for k, v in f.items()}
      bad = np.flatnonzero(~per_step['finite'].astype(bool))
      if bad.size and not skip_nonfinite:
        i = int(bad[0])
        saved = (f'the last checkpoint, step {last_saved}, in {ckpt_dir} is '
                 'intact' if last_saved else 'no checkpoint was written')
        raise NonFiniteError(
            f'non-finite loss, gradients or parameters at step {first + i + 1}'
            f' (train_loss {per_step["train_loss"][i]:.4g}, grad_norm '
            f'{per_step["grad_norm"][i]:.4g}); stopped before saving it: '
            f'{saved}; lower the learning rate, or set '
            'config.skip_nonfinite_steps=True to skip such updates')
      for i in bad:
        logging.warning('step %d: non-finite loss, gradients or parameters; '
                        'update skipped (skip_nonfinite_steps)',
                        first + int(i) + 1)
      unlogged.add(first, per_step)
    pending = []

  for k, xs in chunks:
    pstate, m = run(pstate, xs)
    pending.append((step, m))
    step += k
    if t_timed is None:  # First dispatch compiles: time from its end.
      jax.block_until_ready(m)
      t_timed = time.time()
      timed_from = step
      progress.start(step)
    record = {}
    if step % config.log_every_steps == 0 or step == trainer.total_steps:
      collect()
      record.update(unlogged.record(skip_nonfinite))
      rates = progress.update(step)
      record['epoch'] = step / trainer.steps_per_epoch
      record['images_per_sec'] = rates['images_per_sec']
      logging.info(progress.line(
          step, rates, f'loss {record.get("train_loss", float("nan")):.4f}, '
          f'acc {record.get("train_accuracy", float("nan")):.4f}, '))
    if (trainer.eval_every and step % trainer.eval_every == 0) or \
        step == trainer.total_steps:
      collect()
      last_eval = trainer.evaluator.evaluate(pstate.params)
      best_acc = max(best_acc, last_eval['eval_accuracy'])
      record.update(last_eval)
      record['epoch'] = step / trainer.steps_per_epoch
      logging.info('step %d: eval loss %.4f, accuracy %.4f (%d examples)',
                   step, last_eval['eval_loss'], last_eval['eval_accuracy'],
                   last_eval['eval_examples'])
    if record:
      writer.write(step, record)
    if (config.checkpoint_every_steps > 0 and
        step % config.checkpoint_every_steps == 0) or \
        step == trainer.total_steps:
      collect()  # Never save a non-finite state.
      host_state = jax.device_get(devices.unreplicate(pstate))
      checkpoints.save(mgr, step, step_lib.state_dict(host_state),
                       {'step': step, 'config': config_json,
                        'unlogged': unlogged.to_json()})
      last_saved = step
  collect()
  if t_timed is not None:
    jax.block_until_ready(pstate.step)
    train_time = time.time() - t_timed
    timed_steps = step - timed_from
  checkpoints.wait_until_finished(mgr)

  if last_eval is None:  # Nothing left to train: evaluate what was restored.
    last_eval = trainer.evaluator.evaluate(pstate.params)
    best_acc = max(best_acc, last_eval['eval_accuracy'])
  return step, last_eval, best_acc, train_time, timed_steps


def _prefetch(chunks: Iterator[Tuple[int, Any]], size: int = 2
              ) -> Iterator[Tuple[int, Any]]:
  """Keeps `size` chunks in flight to the local devices (split on axis 0)."""
  queue = collections.deque()

  def put(chunk):
    k, arrays = chunk
    return k, tuple(devices.shard(a) for a in arrays)

  for chunk in chunks:
    queue.append(put(chunk))
    if len(queue) >= size:
      yield queue.popleft()
  while queue:
    yield queue.popleft()
