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
from `workdir/checkpoints` continues exactly where the run stopped (on CPU
bit for bit, metrics.jsonl included except wall-clock fields; see
docs/guarantees.md).

Hardening: every step reports whether its loss, gradients and new
parameters are finite; the flags are checked on the host before every log,
eval and checkpoint, so a non-finite state is never saved (`NonFiniteError`
names the step), or with `config.skip_nonfinite_steps` such updates are
dropped and counted. A workdir that holds a run with another config is
refused (`WorkdirError`) unless `overwrite=True`.
"""

import collections
import glob
import json
import os
import shutil
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

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
from mixer import data
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


class NonFiniteError(FloatingPointError):
  """The loss, gradients or parameters became NaN/Inf at some step.

  Raised before anything of that step (or later) is logged or saved: the
  last checkpoint stays the last good state.
  """


class WorkdirError(ValueError):
  """The workdir cannot be used: not writable, or it holds another run."""


# Config fields a resumed run may change: they do not change what the
# checkpointed state means (run length, cadences, data location, how the
# same computation is split). Any other difference between a workdir's run
# and the new config makes `train_and_evaluate` refuse the workdir.
RESUMABLE_FIELDS = (
    'num_train_steps', 'num_epochs', 'log_every_steps', 'eval_every_steps',
    'checkpoint_every_steps', 'keep_checkpoints', 'steps_per_dispatch',
    'grad_accum_steps', 'input_pipeline', 'data_dir', 'eval_split',
    'eval_batch_size', 'skip_nonfinite_steps',
)


def all_finite(tree: Any) -> jnp.ndarray:
  """Scalar bool: every floating-point leaf of `tree` is finite."""
  flags = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)
           if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)]
  return jnp.stack(flags).all() if flags else jnp.array(True)


def create_train_state(config, model, tx, rng, *,
                       load_init_checkpoint: bool = True) -> TrainState:
  """Initial state (the paper's initialisers), built in one jitted call.

  With `config.init_checkpoint` (and `load_init_checkpoint`, False when a
  checkpoint of the run itself will replace the state anyway) the parameters
  are then replaced by the checkpoint's (fine-tuning) and the optimizer state
  re-initialised.
  """
  x = jnp.zeros((1,) + models.input_shape(config), jnp.float32)

  @jax.jit
  def init(rng):
    rng_init, rng_run = jax.random.split(rng)
    params = model.init({'params': rng_init}, x, train=False)['params']
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=tx.init(params), rng=rng_run)

  state = init(rng)
  if load_init_checkpoint and config.get('init_checkpoint'):
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
  skip_nonfinite = bool(config.get('skip_nonfinite_steps', False))

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
    loss = jax.lax.pmean(loss / accum, 'batch')
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    # One scalar per step, identical on every device (pmin), so the host can
    # check a whole dispatch without fetching anything big.
    finite = all_finite((loss, grads, params))
    finite = jax.lax.pmin(finite.astype(jnp.int32), 'batch') > 0
    if skip_nonfinite:  # Drop the update: params and optimizer unchanged.
      keep = lambda new, old: jnp.where(finite, new, old)
      params = jax.tree_util.tree_map(keep, params, state.params)
      opt_state = jax.tree_util.tree_map(keep, opt_state, state.opt_state)
    metrics = {
        'train_loss': loss,
        'train_accuracy': jax.lax.pmean(acc / accum, 'batch'),
        'learning_rate': schedule(state.step),
        'grad_norm': optax.tree_utils.tree_norm(grads),
        'finite': finite,
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

  def evaluate(self, params) -> Dict[str, float]:
    """Loss and accuracy over every eval example (padding masked out)."""
    totals = None
    source = (data.tfds_eval_dataset if self.stream_eval
              else data.eval_batches)
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


def _sync(name: str) -> None:
  """A barrier across processes (no-op with one process)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)


# -- the workdir -------------------------------------------------------------


def _flat(tree: Any, prefix: str = '') -> Dict[str, Any]:
  """{'model.hidden_dim': 32, ...} from a nested JSON config."""
  out = {}
  for key, value in tree.items():
    name = f'{prefix}{key}'
    if isinstance(value, dict) and value:
      out.update(_flat(value, name + '.'))
    else:
      out[name] = value
  return out


def config_differences(old: Dict[str, Any], new: Dict[str, Any]) -> List[str]:
  """'field (old -> new)' for every field that matters and differs.

  Both are JSON configs (`config.json`). Fields in `RESUMABLE_FIELDS` and
  fields present on one side only (added or removed by a code change) are
  not compared.
  """
  old, new = _flat(old), _flat(new)
  diffs = []
  for key in sorted(set(old) & set(new)):
    if key in RESUMABLE_FIELDS or key.split('.')[0] in RESUMABLE_FIELDS:
      continue
    if old[key] != new[key]:
      diffs.append(f'{key} ({json.dumps(old[key])} -> {json.dumps(new[key])})')
  return diffs


def _previous_config(workdir: str) -> Tuple[Optional[Dict[str, Any]], str]:
  """(config, where it came from) of the run already in `workdir`, if any.

  The latest complete checkpoint's (what a resume would continue), else
  `config.json` (a run that stopped before its first checkpoint).
  """
  ckpt_dir = checkpoints.checkpoint_dir(workdir)
  for step in reversed(checkpoints.complete_steps(ckpt_dir)):
    path = os.path.join(ckpt_dir, str(step), 'meta', 'metadata')
    try:
      with open(path) as f:
        config = json.load(f).get('config')
      if isinstance(config, dict):
        return config, f'checkpoint step {step}'
    except (OSError, ValueError, AttributeError):
      continue
  path = os.path.join(workdir, 'config.json')
  if os.path.exists(path):
    try:
      with open(path) as f:
        return json.load(f), 'config.json'
    except (OSError, ValueError) as e:
      logging.warning('Ignoring unreadable %s: %s', path, e)
  return None, ''


# What `overwrite` deletes: everything a run writes into its workdir.
_RUN_OUTPUTS = (checkpoints.CHECKPOINT_SUBDIR, checkpoints.INCOMPLETE_SUBDIR,
                'metrics.jsonl', 'results.json', 'config.json',
                'events.out.tfevents.*')


def _clear_run_outputs(workdir: str) -> None:
  removed = []
  for pattern in _RUN_OUTPUTS:
    for path in glob.glob(os.path.join(glob.escape(workdir), pattern)):
      if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
      else:
        os.remove(path)
      removed.append(os.path.basename(path))
  if removed:
    logging.warning('overwrite: deleted %s from %s', ', '.join(sorted(
        removed)), workdir)


def _os_text(e: OSError) -> str:
  return e.strerror or str(e) or type(e).__name__


def prepare_workdir(config: ml_collections.ConfigDict, workdir: str, *,
                    overwrite: bool = False) -> None:
  """Checks `workdir` before anything is written to it.

  Creates it, checks that it is writable, and refuses it when it holds a run
  whose config differs in a field that matters (see `RESUMABLE_FIELDS`);
  with `overwrite`, that run's outputs (checkpoints, metrics, results,
  config.json, TensorBoard events) are deleted instead.

  Raises:
    WorkdirError: one line naming the workdir and, for another run, every
      differing field.
  """
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise WorkdirError(f'cannot create workdir {workdir}: {_os_text(e)}'
                       ) from e
  probe = os.path.join(workdir, f'.write-test-{jax.process_index()}-'
                       f'{os.getpid()}')
  try:
    with open(probe, 'w') as f:
      f.write('ok')
    os.remove(probe)
  except OSError as e:
    raise WorkdirError(f'workdir {workdir} is not writable: {_os_text(e)}'
                       ) from e
  if overwrite:
    if jax.process_index() == 0:
      _clear_run_outputs(workdir)
    _sync('mixer_overwrite')
    return
  previous, source = _previous_config(workdir)
  if previous is None:
    return
  diffs = config_differences(previous, _config_json(config))
  if diffs:
    shown = '; '.join(diffs[:10]) + (
        f'; and {len(diffs) - 10} more' if len(diffs) > 10 else '')
    raise WorkdirError(
        f'workdir {workdir} holds a run with another config ({source}): '
        f'{shown}; use another workdir, or pass --overwrite (overwrite=True) '
        'to delete its checkpoints and metrics and start over')


def _write_json_atomic(path: str, obj: Any) -> None:
  tmp = f'{path}.tmp-{os.getpid()}'
  with open(tmp, 'w') as f:
    json.dump(obj, f, indent=2)
  os.replace(tmp, path)


# -- per-step metrics on the host -------------------------------------------

_STEP_KEYS = ('train_loss', 'train_accuracy', 'learning_rate', 'grad_norm')


class _Unlogged:
  """Per-step train metrics since the last log step, on the host.

  Saved in every checkpoint's `meta` (exact float32 values survive JSON), so
  a run resumed between two log steps logs the same averages as one that was
  never interrupted.
  """

  def __init__(self, saved: Optional[Dict[str, Any]] = None):
    self.clear()
    if saved:
      self.steps = [int(s) for s in saved['step']]
      self.finite = [bool(f) for f in saved['finite']]
      for k in _STEP_KEYS:
        self.values[k] = [np.float32(v) for v in saved[k]]

  def clear(self) -> None:
    self.steps: List[int] = []
    self.values = {k: [] for k in _STEP_KEYS}
    self.finite: List[bool] = []

  def add(self, first_step: int, fetched: Dict[str, np.ndarray]) -> None:
    n = len(fetched['finite'])
    self.steps.extend(range(first_step + 1, first_step + 1 + n))
    self.finite.extend(bool(f) for f in fetched['finite'])
    for k in _STEP_KEYS:
      self.values[k].extend(np.asarray(fetched[k], np.float32).tolist())

  def to_json(self) -> Dict[str, Any]:
    return {'step': list(self.steps), 'finite': list(self.finite),
            **{k: [float(v) for v in vals] for k, vals in self.values.items()}}

  def record(self, skip_nonfinite: bool) -> Dict[str, Any]:
    """Means over this interval's finite steps; clears the interval."""
    ok = np.asarray(self.finite, bool)
    record = {}
    for k in ('train_loss', 'train_accuracy', 'grad_norm'):
      vals = np.asarray(self.values[k], np.float32)[ok]
      if vals.size:
        record[k] = float(np.mean(vals, dtype=np.float64))
    if self.values['learning_rate']:
      record['learning_rate'] = float(self.values['learning_rate'][-1])
    if skip_nonfinite:
      record['skipped_steps'] = int((~ok).sum())
    self.clear()
    return record


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
  prepare_workdir(config, workdir, overwrite=overwrite)
  resuming = bool(checkpoints.complete_steps(
      checkpoints.checkpoint_dir(workdir)))
  rng = jax.random.PRNGKey(config.seed)
  state = create_train_state(config, trainer.model, trainer.tx, rng,
                             load_init_checkpoint=not resuming)
  num_params = sum(int(np.prod(p.shape))
                   for p in jax.tree_util.tree_leaves(state.params))

  mgr = checkpoints.manager(workdir, keep=config.keep_checkpoints)
  try:
    restored = checkpoints.restore(mgr, _state_for_saving(state))
  except BaseException:
    mgr.close()
    raise
  meta = {}
  if restored is not None:
    _, saved, meta = restored
    state = TrainState(**saved)
  start_step = int(state.step)
  if start_step:
    logging.info('Resuming from step %d', start_step)
  config_json = _config_json(config)
  if is_chief:
    _write_json_atomic(os.path.join(workdir, 'config.json'), config_json)

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
    _write_json_atomic(os.path.join(workdir, 'results.json'), results)
  writer.close()
  mgr.close()
  return results


def _train_loop(trainer: Trainer, config, workdir: str, mgr, writer,
                progress, state: TrainState, start_step: int,
                meta: Dict[str, Any], config_json: Dict[str, Any]):
  """Steps from `start_step` to the end; returns (step, last eval, best eval
  accuracy, timed seconds, timed steps)."""
  if config.input_pipeline == 'device':
    images, labels = data.load_split(config, config.train_split)
    resident = (replicate(images), replicate(labels.astype(np.int32)))
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
  pstate = replicate(state)
  del state
  step = start_step
  last_saved = start_step if start_step else None
  pending = []  # (first step, per-dispatch device metrics), not yet fetched.
  unlogged = _Unlogged(meta.get('unlogged'))
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
      collect()  # Never save a non-finite state.
      host_state = jax.device_get(jax_utils.unreplicate(pstate))
      checkpoints.save(mgr, step, _state_for_saving(host_state),
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
    last_eval = trainer.evaluate(pstate.params)
    best_acc = max(best_acc, last_eval['eval_accuracy'])
  return step, last_eval, best_acc, train_time, timed_steps


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
