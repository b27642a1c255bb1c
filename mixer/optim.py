"""Optimisers and learning-rate schedules built from the config (optax).

Paper pre-training: Adam (b1 0.9, b2 0.999), global-norm clipping at 1, linear
warmup then linear decay, weight decay. Paper fine-tuning: SGD with momentum
0.9, clipping at 1, cosine schedule with linear warmup.

Weight decay follows big_vision: decoupled from the gradient, applied to
kernels only (not biases, not LayerNorm scales), and multiplied by the
learning-rate schedule, i.e. `optax.adamw(schedule, weight_decay=wd, mask=...)`
where the paper's wd 0.1 is relative to the learning rate. For SGD the same
decoupled, scheduled decay is added with `optax.add_decayed_weights` before
the scaling by the learning rate.
"""

from typing import Any

import jax
import optax

OPTIMIZERS = ('adam', 'adamw', 'sgd')
SCHEDULES = ('linear', 'cosine', 'constant')


def learning_rate_schedule(config, total_steps: int) -> optax.Schedule:
  """Linear warmup from 0 to `learning_rate`, then the decay to 0.

  `config.lr_schedule`: 'linear' (paper pre-training), 'cosine' (paper
  fine-tuning) or 'constant'. Values at key steps: 0 at step 0,
  `learning_rate` at `warmup_steps`, 0 at `total_steps` (linear/cosine).
  """
  base = float(config.learning_rate)
  warmup = int(config.warmup_steps)
  if config.lr_schedule not in SCHEDULES:
    raise ValueError(f'lr_schedule must be one of {SCHEDULES}, '
                     f'got {config.lr_schedule!r}')
  if warmup < 0 or (total_steps > 0 and warmup >= total_steps
                    and config.lr_schedule != 'constant'):
    raise ValueError(f'warmup_steps ({warmup}) must be >= 0 and smaller than '
                     f'the number of train steps ({total_steps})')
  if base <= 0:
    raise ValueError(f'learning_rate must be > 0, got {base}')
  decay_steps = max(total_steps - warmup, 1)
  if config.lr_schedule == 'linear':
    decay = optax.linear_schedule(base, 0.0, decay_steps)
  elif config.lr_schedule == 'cosine':
    decay = optax.cosine_decay_schedule(base, decay_steps)
  else:
    decay = optax.constant_schedule(base)
  if warmup == 0:
    return decay
  return optax.join_schedules(
      [optax.linear_schedule(0.0, base, warmup), decay], [warmup])


def kernel_mask(params: Any) -> Any:
  """True for Dense/Conv kernels (weight decay applies), False elsewhere."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: getattr(path[-1], 'key', None) == 'kernel', params)


def make_optimizer(config, total_steps: int) -> optax.GradientTransformation:
  """The full optax chain: clip -> optimiser (with decoupled weight decay)."""
  schedule = learning_rate_schedule(config, total_steps)
  wd = float(config.weight_decay)
  if wd < 0:
    raise ValueError(f'weight_decay must be >= 0, got {wd}')
  name = config.optimizer
  if name == 'adam' and wd:
    name = 'adamw'  # Adam "with weight decay" as the paper: decoupled.
  if name == 'adamw':
    opt = optax.adamw(schedule, b1=config.b1, b2=config.b2, eps=1e-8,
                      weight_decay=wd, mask=kernel_mask)
  elif name == 'adam':
    opt = optax.adam(schedule, b1=config.b1, b2=config.b2, eps=1e-8)
  elif name == 'sgd':
    opt = optax.chain(
        optax.trace(decay=config.momentum, nesterov=False),
        optax.add_decayed_weights(wd, mask=kernel_mask) if wd
        else optax.identity(),
        optax.scale_by_learning_rate(schedule))
  else:
    raise ValueError(f'optimizer must be one of {OPTIMIZERS}, got {name!r}')
  clip = float(config.grad_clip_norm)
  if clip < 0:
    raise ValueError(f'grad_clip_norm must be >= 0, got {clip}')
  if clip:
    opt = optax.chain(optax.clip_by_global_norm(clip), opt)
  return opt
