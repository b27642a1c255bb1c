"""Evaluation: loss and accuracy over every example of an eval split.

`Evaluator` is what the training loop calls at eval steps. It owns the
pmapped eval step and the choice of eval batches (in-memory, padded and
masked, or the tf.data stream for data that is not in memory at the model's
resolution); the loop never sees eval batches. Besides the run's own
`eval_split` it evaluates `config.minival_split` and the named evaluations
of `config.extra_evals` (`extra_evaluators`: other splits or other datasets,
e.g. big_vision's train[:2%], ImageNet-V2 and ImageNet ReaL), each checked
to exist when the run starts. No training, no I/O.
"""

import time
from typing import Callable, Dict, List, Optional, Tuple

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from mixer import augment
from mixer import data
from mixer import input_permutation
from mixer import losses
from mixer import models
from mixer.evaluators import EvaluationStopped


def make_eval_step(model: models.MlpMixer, num_classes: int,
                   loss: str = 'softmax',
                   permute: Callable = lambda x: x) -> Callable:
  """`eval(params, batch) -> sums` of loss, correct and count over 'batch'.

  The loss is the run's training loss (`config.loss`) on one-hot labels,
  as big_vision's classification evaluator computes it. Labels may also be
  multi-hot [B, classes] (ImageNet ReaL's sets of real labels): a top-1
  prediction then counts as correct when it is one of the image's labels,
  and images with no label are left out, as big_vision does (`mask *=
  labels.max(axis=1)`). `permute` is the run's input permutation
  (`mixer.input_permutation`), applied to the normalised images before the
  model.
  """
  loss_fn = losses.per_example(loss)

  def eval_step(params, images, labels, mask):
    logits = model.apply({'params': params},
                         permute(augment.normalize(images)), train=False)
    top1 = jnp.argmax(logits, -1)
    if labels.ndim == 2:  # Multi-hot.
      mask = mask * jnp.max(labels, axis=1)
      per_example = loss_fn(logits, labels)
      correct = jnp.take_along_axis(labels, top1[:, None], axis=1)[:, 0]
    else:
      per_example = loss_fn(logits, jax.nn.one_hot(labels, num_classes))
      correct = (top1 == labels).astype(jnp.float32)
    return jax.lax.psum({'loss': jnp.sum(per_example * mask),
                         'correct': jnp.sum(correct * mask),
                         'count': jnp.sum(mask)}, 'batch')

  return eval_step


# An evaluation longer than this logs its progress, every this often.
PROGRESS_AFTER_SECONDS = 5.0
PROGRESS_EVERY_SECONDS = 10.0


def fit_eval_batch(config, num_examples: Optional[int], multiple: int):
  """`config`, or a copy whose eval_batch_size is cut down to the eval
  split rounded up to `multiple` (devices x processes) when the split is
  smaller than one batch: a 500-image split is evaluated in one batch of
  500, not padded to 1,000."""
  batch = int(config.eval_batch_size)
  if not num_examples or batch <= 0 or multiple <= 0:
    return config
  fitted = -(-int(num_examples) // multiple) * multiple
  if fitted >= batch:
    return config
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.eval_batch_size = fitted
  return config


class Evaluator:
  """Classification eval of `config.eval_split` on this process's devices.

  Args:
    config: the experiment config.
    model: the model to evaluate.
    num_classes: classes of the dataset.
    stream: read the eval split through `data.tfds_eval_dataset` (data not
      in memory at the model's resolution) instead of `data.eval_batches`.
    num_examples: examples in the eval split (for progress lines).
    label_key: the tfds feature holding the labels (streamed only); a
      sequence feature such as ImageNet ReaL's 'real_label' gives multi-hot
      labels.
  """

  def __init__(self, config, model: models.MlpMixer, num_classes: int, *,
               stream: bool, num_examples: Optional[int] = None,
               label_key: str = 'label'):
    self.stream = stream
    self.label_key = label_key
    self.num_classes = num_classes
    self.num_examples = num_examples
    self.num_devices = jax.local_device_count()
    self.process_index = jax.process_index()
    self.process_count = jax.process_count()
    self.config = fit_eval_batch(config, num_examples,
                                 self.num_devices * self.process_count)
    self.p_eval = jax.pmap(
        make_eval_step(model, num_classes, config.get('loss', 'softmax'),
                       input_permutation.from_config(config)),
        axis_name='batch')
    # Seconds of the last eval batch (None before the first): how long a
    # stop request waits at most.
    self.batch_seconds: Optional[float] = None

  def evaluate(self, params, stop: Optional[Callable[[], bool]] = None
               ) -> Dict[str, float]:
    """Loss and accuracy over every eval example (padding masked out).

    An evaluation that takes longer than PROGRESS_AFTER_SECONDS logs its
    progress every PROGRESS_EVERY_SECONDS. `stop()` is checked before every
    batch; when it is True, `EvaluationStopped` is raised.
    """
    totals = None
    where = dict(process_index=self.process_index,
                 process_count=self.process_count)
    if self.stream:
      batches = data.tfds_eval_dataset(
          self.config, label_key=self.label_key,
          num_classes=self.num_classes, **where)
    else:
      batches = data.eval_batches(self.config, **where)
    t0 = last = time.time()
    total = self.num_examples
    done = 0
    for b in batches:
      if stop is not None and stop():
        raise EvaluationStopped()
      t_batch = time.time()
      shard = lambda x: x.reshape((self.num_devices, -1) + x.shape[1:])
      labels = b['label']
      labels = labels.astype(np.int32 if labels.ndim == 1 else np.float32)
      out = self.p_eval(params, shard(b['image']), shard(labels),
                        shard(b['mask']))
      out = jax.tree_util.tree_map(lambda x: x[0], out)
      if totals is not None:  # One batch in flight: the clock sees work done.
        jax.block_until_ready(totals)
      totals = out if totals is None else jax.tree_util.tree_map(
          jnp.add, totals, out)
      now = time.time()
      self.batch_seconds = now - t_batch
      if now - t0 >= PROGRESS_AFTER_SECONDS and \
          now - last >= PROGRESS_EVERY_SECONDS:
        done = int(jax.device_get(totals['count']))
        now = last = time.time()
        rate = done / max(now - t0, 1e-9)
        eta = (f', ETA {(total - done) / rate:.0f} s' if total and rate
               else '')
        logging.info('eval: %s%s images (%.0f img/s%s)', f'{done:,}',
                     f'/{total:,}' if total else '', rate, eta)
    totals = jax.device_get(totals)
    count = float(totals['count'])
    return {'eval_loss': float(totals['loss']) / count,
            'eval_accuracy': float(totals['correct']) / count,
            'eval_examples': int(count)}



def extra_evaluators(config, model: models.MlpMixer, num_classes: int, *,
                     stream: bool) -> List[Tuple[str, Evaluator]]:
  """(name, Evaluator) for `config.minival_split` ('minival') and each entry
  of `config.extra_evals`, name -> (dataset, split[, label feature]); a
  dataset of '' is the run's own. The loop logs them as `<name>_loss`,
  `<name>_accuracy` and `<name>_examples` at every evaluation.

  Each split is checked now, before any training: a dataset that is not
  prepared, or a split or label feature it lacks, is one DataError naming
  it (never a silently skipped evaluation).
  """
  out = []
  specs = {}
  if config.get('minival_split'):
    specs['minival'] = ('', config.minival_split, 'label')
  for name, spec in dict(config.get('extra_evals') or {}).items():
    spec = tuple(spec)
    if len(spec) not in (2, 3) or name in RESERVED_EVAL_NAMES or \
        name in specs:
      raise ValueError(
          f'config.extra_evals[{name!r}] must be (dataset, split) or '
          f'(dataset, split, label feature) under a name other than '
          f'{", ".join(RESERVED_EVAL_NAMES)}, got {spec}')
    specs[name] = spec + ('label',) * (3 - len(spec))
  for name, (dataset, split, label_key) in specs.items():
    cfg = config.copy_and_resolve_references()
    own = not dataset or dataset == config.dataset
    # Another dataset is read from the TFDS data dir the run's is in.
    tfds_dir = None if own else data.tfds_data_dir(config)
    with cfg.unlocked():
      cfg.eval_split = split
      if not own:
        cfg.dataset = dataset
        cfg.data_dir = tfds_dir or ''
    size = data.check_eval_split(cfg, split, label_key, num_classes,
                                 purpose=f'evaluation {name!r}',
                                 tfds_dir=tfds_dir)
    out.append((name, Evaluator(
        cfg, model, num_classes, stream=stream or not own,
        num_examples=size, label_key=label_key)))
  return out


# Metric prefixes already taken: the run's eval, the training metrics.
RESERVED_EVAL_NAMES = ('eval', 'train', 'minival')
