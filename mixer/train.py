"""Training and evaluation loop: `train_and_evaluate(config, workdir)`.

Data-parallel with `jax.pmap` over all local devices (gradients `pmean`'d over
the 'batch' axis; several processes each feed their own slice of the global
batch). Per step, each device:

  uint8 images -> on-device augmentation (mixer.augment) -> model (optionally
  bfloat16 activations, float32 params) -> (label-smoothed) cross-entropy ->
  gradients, accumulated over `grad_accum_steps` micro-batches with
  `lax.scan` -> pmean -> optax update (clipping, schedule, weight decay).

`steps_per_dispatch` > 1 fuses several such steps into one dispatch with
`lax.scan`. With `input_pipeline='device'` the uint8 dataset lives on device
and each dispatch only receives the example indices (the same permutation
the host path uses, so both see identical data).

The run is resumable: the RNG for step s is `fold_in(seed key, s)` and the
data for step s is a function of (seed, s), so restoring the state of step s
from `workdir/checkpoints` continues exactly where the run stopped.
"""

import collections
import json
import os
import time
from typing import Any, Callable, Dict, Iterator, Tuple

from absl import logging
import flax
from flax import jax_utils
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from mixer import augment
from mixer import checkpoints
from mixer import input_pipeline
from mixer import metrics as metrics_lib
from mixer import models
from mixer import optim


@flax.struct.dataclass
class TrainState:
  """What a step updates. `rng` is the run's base key (constant)."""
  step: jnp.ndarray
  params: Any
  opt_state: Any
  rng: jnp.ndarray


def image_shape(config) -> Tuple[int, int, int]:
  size = config.image_size
  h, w = (size, size) if isinstance(size, int) else tuple(size)
  return (int(h), int(w), int(config.channels))


def create_train_state(config, model, tx, rng) -> TrainState:
  """Initial state (the paper's initialisers), built in one jitted call.

  With `config.init_checkpoint` the parameters are then replaced by the
  checkpoint's (fine-tuning) and the optimizer state re-initialised.
  """
  x = jnp.zeros((1,) + image_shape(config), jnp.float32)

  @jax.jit
  def init(rng):
    rng_init, rng_run = jax.random.split(rng)
    params = model.init({'params': rng_init}, x, train=False)['params']
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=tx.init(params), rng=rng_run)

  state = init(rng)
  if config.get('init_checkpoint'):
    params = checkpoints.load_init_params(config, state.params)
    state = state.replace(params=params, opt_state=jax.jit(tx.init)(params))
  return state


def cross_entropy(logits, soft_labels, label_smoothing: float = 0.0):
  """Mean softmax cross-entropy with optional label smoothing (float32)."""
  num_classes = logits.shape[-1]
  if label_smoothing:
    soft_labels = (soft_labels * (1.0 - label_smoothing)
                   + label_smoothing / num_classes)
  logp = jax.nn.log_softmax(logits.astype(jnp.float32))
  return -jnp.mean(jnp.sum(soft_labels * logp, axis=-1))


def make_train_step(config, model: models.MlpMixer,
                    tx: optax.GradientTransformation,
                    schedule: optax.Schedule, num_classes: int) -> Callable:
  """Returns `step(state, images, labels) -> (state, metrics)` for one device.

  `images`: uint8 [accum, micro, H, W, C]; `labels`: int [accum, micro].
  Must run inside pmap/shard_map with axis name 'batch'.
  """
  train_augment = augment.make_train_augment(config.augment, num_classes)
  label_smoothing = float(config.label_smoothing)

  def loss_fn(params, images, labels, rng):
    rng_aug, rng_model = jax.random.split(rng)
    x, y = train_augment(rng_aug, images, labels)
    logits = model.apply({'params': params}, x, train=True,
                         rngs={'dropout': rng_model})
    loss = cross_entropy(logits, y, label_smoothing)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == jnp.argmax(y, -1))
    return loss, accuracy

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def step(state: TrainState, images, labels):
    # A different stream per step and per device; resumes exactly.
    rng = jax.random.fold_in(state.rng, state.step)
    device = jax.lax.axis_index('batch')
    rng = jax.random.fold_in(rng, jax.process_index() * 4096 + device)
    accum = images.shape[0]

    def micro(carry, xs):
      grads, loss, acc = carry
      im, lb, i = xs
      (l, a), g = grad_fn(state.params, im, lb, jax.random.fold_in(rng, i))
      grads = jax.tree_util.tree_map(jnp.add, grads, g)
      return (grads, loss + l, acc + a), None

    zeros = jax.tree_util.tree_map(jnp.zeros_like, state.params)
    (grads, loss, acc), _ = jax.lax.scan(
        micro, (zeros, 0.0, 0.0), (images, labels, jnp.arange(accum)))
    grads = jax.tree_util.tree_map(lambda g: g / accum, grads)
    grads = jax.lax.pmean(grads, 'batch')
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {
        'train_loss': jax.lax.pmean(loss / accum, 'batch'),
        'train_accuracy': jax.lax.pmean(acc / accum, 'batch'),
        'learning_rate': schedule(state.step),
        'grad_norm': optax.tree_utils.tree_norm(grads),
    }
    new_state = state.replace(step=state.step + 1, params=params,
                              opt_state=opt_state)
    return new_state, metrics

  return step


def make_multi_step(step_fn: Callable) -> Callable:
  """Runs `step_fn` over a leading axis of K steps with `lax.scan`."""

  def multi(state, images, labels):
    return jax.lax.scan(lambda s, xs: step_fn(s, *xs), state, (images, labels))

  return multi


def make_eval_step(model: models.MlpMixer, num_classes: int) -> Callable:
  """`eval(params, batch) -> sums` of loss, correct and count over 'batch'."""

  def eval_step(params, images, labels, mask):
    logits = model.apply({'params': params}, augment.normalize(images),
                         train=False)
    onehot = jax.nn.one_hot(labels, num_classes)
    logp = jax.nn.log_softmax(logits.astype(jnp.float32))
    loss = -jnp.sum(onehot * logp, axis=-1)
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    return jax.lax.psum({'loss': jnp.sum(loss * mask),
                         'correct': jnp.sum(correct * mask),
                         'count': jnp.sum(mask)}, 'batch')

  return eval_step


class Trainer:
  """Builds everything a run needs from the config; no I/O in __init__."""

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.num_devices = jax.local_device_count()
    self.process_index = jax.process_index()
    self.process_count = jax.process_count()
    self.info = input_pipeline.dataset_info(config)
    self.model = models.build_model(config.model)
    self.model.check(image_shape(config))
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
    step = make_train_step(config, self.model, self.tx, self.schedule,
                           self.info.num_classes)
    self.p_train = jax.pmap(make_multi_step(step), axis_name='batch',
                            donate_argnums=(0,))
    self.p_train_indexed = jax.pmap(
        self._indexed(make_multi_step(step)), axis_name='batch',
        donate_argnums=(0,))
    self.p_eval = jax.pmap(make_eval_step(self.model, self.info.num_classes),
                           axis_name='batch')
    self.eval_every = (self.steps_per_epoch if config.eval_every_steps < 0
                       else int(config.eval_every_steps))
    # Arrays in host memory at the model's resolution go straight to the
    # step; anything else (ImageNet-scale data, Inception crops, resizing
    # CIFAR to 224 for fine-tuning) streams through tf.data.
    shape = image_shape(config)
    if self.info.image_shape[2] != shape[2]:
      raise ValueError(
          f'config.channels is {shape[2]} but {config.dataset!r} images have '
          f'{self.info.image_shape[2]} channel(s)')
    same_size = tuple(self.info.image_shape[:2]) == shape[:2]
    self.stream_train = not (self.info.in_memory and same_size
                             and config.augment.crop != 'inception')
    self.stream_eval = not (self.info.in_memory and same_size)
    if config.input_pipeline == 'device' and self.stream_train:
      raise ValueError(
          "input_pipeline='device' needs the training set in memory at the "
          f'model resolution {shape[:2]} without Inception crops; '
          f'{config.dataset!r} is stored at {self.info.image_shape[:2]}: use '
          "input_pipeline='host'")

  @staticmethod
  def _indexed(multi: Callable) -> Callable:
    """Gathers examples from device-resident data, then trains on them."""

    def fn(state, indices, data_images, data_labels):
      return multi(state, data_images[indices], data_labels[indices])

    return fn

  # -- batches -------------------------------------------------------------

  def _split(self, x: np.ndarray) -> np.ndarray:
    """[B_local, ...] -> [devices, accum, micro, ...]."""
    return x.reshape((self.num_devices, self.accum, -1) + x.shape[1:])

  def host_chunks(self, start_step: int) -> Iterator[Tuple[int, Any]]:
    """Yields (k, (images, labels)) with k steps stacked on axis 1."""
    source = (input_pipeline.tfds_train_dataset if self.stream_train
              else input_pipeline.train_batches)
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
          perm = input_pipeline.epoch_permutation(
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

  def evaluate(self, params) -> Dict[str, float]:
    """Loss and accuracy over every eval example (padding masked out)."""
    totals = None
    source = (input_pipeline.tfds_eval_dataset if self.stream_eval
              else input_pipeline.eval_batches)
    for b in source(self.config, process_index=self.process_index,
                    process_count=self.process_count):
      shard = lambda x: x.reshape((self.num_devices, -1) + x.shape[1:])
      out = self.p_eval(params, shard(b['image']),
                        shard(b['label'].astype(np.int32)), shard(b['mask']))
      out = jax.tree_util.tree_map(lambda x: x[0], out)
      totals = out if totals is None else jax.tree_util.tree_map(
          jnp.add, totals, out)
    totals = jax.device_get(totals)
    count = float(totals['count'])
    return {'eval_loss': float(totals['loss']) / count,
            'eval_accuracy': float(totals['correct']) / count,
            'eval_examples': int(count)}


def shard(x: np.ndarray) -> jax.Array:
  """Puts [devices, ...] host data on the local devices, one row each."""
  mesh = jax.sharding.Mesh(np.array(jax.local_devices()), ('batch',))
  return jax.device_put(x, jax.sharding.NamedSharding(
      mesh, jax.sharding.PartitionSpec('batch')))


def replicate(tree: Any) -> Any:
  """Copies `tree` to every local device with the sharding pmap outputs
  (mesh axis 'batch'), so the second step does not compile again."""
  return jax_utils.replicate(tree, axis_name='batch')


def _state_for_saving(state: TrainState) -> Dict[str, Any]:
  return {'step': state.step, 'params': state.params,
          'opt_state': state.opt_state, 'rng': state.rng}


def _config_json(config) -> Dict[str, Any]:
  return json.loads(config.to_json_best_effort())


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> Dict[str, Any]:
  """Trains `config` in `workdir` (resuming if it holds a checkpoint).

  Writes `workdir/checkpoints/`, `metrics.jsonl`, TensorBoard events (when
  TensorFlow is installed), `config.json` and, at the end, `results.json`,
  whose content is also returned.
  """
  t_start = time.time()
  trainer = Trainer(config)
  is_chief = trainer.process_index == 0
  os.makedirs(workdir, exist_ok=True)
  rng = jax.random.PRNGKey(config.seed)
  state = create_train_state(config, trainer.model, trainer.tx, rng)
  num_params = sum(int(np.prod(p.shape))
                   for p in jax.tree_util.tree_leaves(state.params))

  mgr = checkpoints.manager(workdir, keep=config.keep_checkpoints)
  restored = checkpoints.restore(mgr, _state_for_saving(state))
  if restored is not None:
    _, saved, _ = restored
    state = TrainState(**saved)
  start_step = int(state.step)
  if start_step:
    logging.info('Resuming from step %d', start_step)
  if is_chief:
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      json.dump(_config_json(config), f, indent=2)

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

  if config.input_pipeline == 'device':
    images, labels = input_pipeline.load_split(config, config.train_split)
    data = (replicate(images), replicate(labels.astype(np.int32)))
    chunks = trainer.index_chunks(start_step)
    run = lambda st, xs: trainer.p_train_indexed(st, *xs, *data)
  elif config.input_pipeline == 'host':
    chunks = _prefetch(trainer.host_chunks(start_step), size=2)
    run = lambda st, xs: trainer.p_train(st, *xs)
  else:
    raise ValueError("input_pipeline must be 'host' or 'device', got "
                     f'{config.input_pipeline!r}')

  pstate = replicate(state)
  del state
  step = start_step
  pending = []  # Per-dispatch metrics, fetched only at log steps.
  best_acc, last_eval = 0.0, None
  train_time, timed_steps, t_timed = 0.0, 0, None

  def save(step):
    host_state = jax.device_get(jax_utils.unreplicate(pstate))
    checkpoints.save(mgr, step, _state_for_saving(host_state),
                     {'step': step, 'config': _config_json(config)})

  for k, xs in chunks:
    pstate, m = run(pstate, xs)
    pending.append(m)
    step += k
    if t_timed is None:  # First dispatch compiles: time from its end.
      jax.block_until_ready(m)
      t_timed = time.time()
      timed_from = step
      progress.start(step)
    record = {}
    if step % config.log_every_steps == 0 or step == trainer.total_steps:
      fetched = jax.device_get(pending)
      pending = []
      for key in ('train_loss', 'train_accuracy', 'learning_rate',
                  'grad_norm'):
        vals = np.concatenate([np.asarray(f[key][0]).reshape(-1)
                               for f in fetched])
        record[key] = float(np.mean(vals)) if key != 'learning_rate' else \
            float(vals[-1])
      if not np.isfinite(record['train_loss']):
        raise FloatingPointError(
            f'non-finite train loss at step {step}; the last checkpoint in '
            f'{checkpoints.checkpoint_dir(workdir)} is intact')
      rates = progress.update(step)
      record['epoch'] = step / trainer.steps_per_epoch
      record['images_per_sec'] = rates['images_per_sec']
      logging.info(progress.line(step, rates, f'loss {record["train_loss"]:.4f}'
                                 f', acc {record["train_accuracy"]:.4f}, '))
    if (trainer.eval_every and step % trainer.eval_every == 0) or \
        step == trainer.total_steps:
      last_eval = trainer.evaluate(pstate.params)
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
      save(step)
  if t_timed is not None:
    jax.block_until_ready(pstate.step)
    train_time = time.time() - t_timed
    timed_steps = step - timed_from
  mgr.wait_until_finished()
  writer.flush()

  if last_eval is None:  # Nothing left to train: evaluate what was restored.
    last_eval = trainer.evaluate(pstate.params)
    best_acc = max(best_acc, last_eval['eval_accuracy'])
  results = {
      'status': 'done',
      'final_eval_accuracy': last_eval['eval_accuracy'],
      'final_eval_loss': last_eval['eval_loss'],
      'best_eval_accuracy': max(best_acc, _best_in_log(workdir)),
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
      'config': _config_json(config),
  }
  if is_chief:
    path = os.path.join(workdir, 'results.json')
    with open(path + '.tmp', 'w') as f:
      json.dump(results, f, indent=2)
    os.replace(path + '.tmp', path)
  writer.close()
  mgr.close()
  return results


def _prefetch(chunks: Iterator[Tuple[int, Any]], size: int = 2
              ) -> Iterator[Tuple[int, Any]]:
  """Keeps `size` chunks in flight to the local devices (split on axis 0)."""
  queue = collections.deque()

  def put(chunk):
    k, arrays = chunk
    return k, tuple(shard(a) for a in arrays)

  for chunk in chunks:
    queue.append(put(chunk))
    if len(queue) >= size:
      yield queue.popleft()
  while queue:
    yield queue.popleft()


def _best_in_log(workdir: str) -> float:
  """Best eval accuracy in metrics.jsonl (covers steps before a resume)."""
  best = 0.0
  path = os.path.join(workdir, 'metrics.jsonl')
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        try:
          best = max(best, json.loads(line).get('eval_accuracy', 0.0))
        except ValueError:
          continue
  return best
