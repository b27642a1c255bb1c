"""Evaluation: loss and accuracy over every example of the eval split.

`Evaluator` is what the training loop calls at eval steps. It owns the
pmapped eval step and the choice of eval batches (in-memory, padded and
masked, or the tf.data stream for data that is not in memory at the model's
resolution); the loop never sees eval batches. No training, no I/O.
"""

import time
from typing import Callable, Dict, Optional

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from mixer import augment
from mixer import data
from mixer import input_permutation
from mixer import losses
from mixer import models


def make_eval_step(model: models.MlpMixer, num_classes: int,
                   loss: str = 'softmax',
                   permute: Callable = lambda x: x) -> Callable:
  """`eval(params, batch) -> sums` of loss, correct and count over 'batch'.

  The loss is the run's training loss (`config.loss`) on one-hot labels,
  as big_vision's classification evaluator computes it. `permute` is the
  run's input permutation (`mixer.input_permutation`), applied to the
  normalised images before the model.
  """
  loss_fn = losses.per_example(loss)

  def eval_step(params, images, labels, mask):
    logits = model.apply({'params': params},
                         permute(augment.normalize(images)), train=False)
    per_example = loss_fn(logits, jax.nn.one_hot(labels, num_classes))
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    return jax.lax.psum({'loss': jnp.sum(per_example * mask),
                         'correct': jnp.sum(correct * mask),
                         'count': jnp.sum(mask)}, 'batch')

  return eval_step


# An evaluation longer than this logs its progress, every this often.
PROGRESS_AFTER_SECONDS = 5.0
PROGRESS_EVERY_SECONDS = 10.0


class Evaluator:
  """Classification eval of `config.eval_split` on this process's devices.

  Args:
    config: the experiment config.
    model: the model to evaluate.
    num_classes: classes of the dataset.
    stream: read the eval split through `data.tfds_eval_dataset` (data not
      in memory at the model's resolution) instead of `data.eval_batches`.
    num_examples: examples in the eval split (for progress lines).
  """

  def __init__(self, config, model: models.MlpMixer, num_classes: int, *,
               stream: bool, num_examples: Optional[int] = None):
    self.config = config
    self.stream = stream
    self.num_examples = num_examples
    self.num_devices = jax.local_device_count()
    self.process_index = jax.process_index()
    self.process_count = jax.process_count()
    self.p_eval = jax.pmap(
        make_eval_step(model, num_classes, config.get('loss', 'softmax'),
                       input_permutation.from_config(config)),
        axis_name='batch')

  def evaluate(self, params) -> Dict[str, float]:
    """Loss and accuracy over every eval example (padding masked out).

    An evaluation that takes longer than PROGRESS_AFTER_SECONDS logs its
    progress every PROGRESS_EVERY_SECONDS.
    """
    totals = None
    source = (data.tfds_eval_dataset if self.stream
              else data.eval_batches)
    t0 = last = time.time()
    total = self.num_examples
    done = 0
    for b in source(self.config, process_index=self.process_index,
                    process_count=self.process_count):
      shard = lambda x: x.reshape((self.num_devices, -1) + x.shape[1:])
      out = self.p_eval(params, shard(b['image']),
                        shard(b['label'].astype(np.int32)), shard(b['mask']))
      out = jax.tree_util.tree_map(lambda x: x[0], out)
      if totals is not None:  # One batch in flight: the clock sees work done.
        jax.block_until_ready(totals)
      totals = out if totals is None else jax.tree_util.tree_map(
          jnp.add, totals, out)
      now = time.time()
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

