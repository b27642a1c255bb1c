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

import math
from typing import Any, Optional, Tuple

import jax
import optax

OPTIMIZERS = ('adam', 'adamw', 'sgd')
SCHEDULES = ('linear', 'cosine', 'constant')


# Config fields that state the warmup, in order of precedence: the first one
# that is set (>= 0) wins, so `--config.warmup_steps=100` overrides a
# recipe's `warmup_percent` without unsetting it. Negative means unset.
WARMUP_FIELDS = ('warmup_steps', 'warmup_epochs', 'warmup_percent')


def _to_steps(x: float) -> int:
  """big_vision's rounding: nearest step, but at least 1 unless x is 0."""
  return max(1, int(round(x))) if x else 0


def _set(config, field: str) -> Optional[float]:
  value = config.get(field, -1)
  if value is None or value < 0:
    return None
  if not math.isfinite(value):
    raise ValueError(f'{field} must be a finite number, got {value}')
  return value


def resolve_warmup(config, total_steps: int,
                   steps_per_epoch: Optional[float] = None) -> Tuple[int, str]:
  """(warmup steps, how they were obtained) for a run of `total_steps`.

  The rule (also in configs/common.py and the README):

  * `warmup_percent` (a fraction of the run in [0, 1], big_vision's unit) is
    what the shipped recipes use: it follows any change of run length or
    batch size, so a shortened run warms up for the same share of itself.
    Below 1 it always leaves at least one step of decay; 1 means the whole
    run is warmup (vit_jax's 500-of-500-step fine-tuning of Pets/Flowers).
  * `warmup_epochs` and `warmup_steps` are exact amounts a user states; when
    they do not fit in the run (>= its steps) that is an error naming both
    numbers, not a silent change.

  Raises:
    ValueError: one line naming the field, the run's length and the fix.
  """
  total = int(total_steps)
  constant = config.get('lr_schedule') == 'constant'

  def check_fits(warmup: int, given: str) -> None:
    if warmup >= total > 1 and not constant:
      raise ValueError(
          f'{given} gives {warmup} warmup steps, but this run has only {total}'
          f' train steps: lower it below {total}, or set it to -1 to use '
          'warmup_percent, a share of the run that scales with its length')

  steps = _set(config, 'warmup_steps')
  if steps is not None:
    if steps != int(steps):
      raise ValueError(f'warmup_steps must be a whole number, got {steps}')
    check_fits(int(steps), f'warmup_steps={int(steps)}')
    return int(steps), f'warmup_steps={int(steps)}'
  epochs = _set(config, 'warmup_epochs')
  if epochs is not None:
    if not steps_per_epoch:
      raise ValueError('warmup_epochs needs the number of steps per epoch')
    warmup = _to_steps(epochs * steps_per_epoch)
    check_fits(warmup, f'warmup_epochs={epochs:g}')
    return warmup, f'warmup_epochs={epochs:g} at {steps_per_epoch:g} steps/epoch'
  percent = _set(config, 'warmup_percent')
  if percent is not None:
    if percent > 1:
      raise ValueError(f'warmup_percent is a fraction of the run in [0, 1] '
                       f'(0.05 = 5%), got {percent:g}')
    warmup = _to_steps(percent * total)
    if percent < 1:
      warmup = min(warmup, max(total - 1, 0))
    return warmup, f'warmup_percent={percent:g} of {total:,} steps'
  return 0, 'no warmup field set'


def learning_rate_schedule(config, total_steps: int,
                           steps_per_epoch: Optional[float] = None
                           ) -> optax.Schedule:
  """Linear warmup from 0 to `learning_rate`, then the decay to the end.

  `config.lr_schedule`: 'linear' (paper pre-training), 'cosine' (paper
  fine-tuning) or 'constant'. The warmup is `resolve_warmup`'s; the decay
  always ends exactly at the run's last step, `total_steps`, whatever the
  run's length: values at key steps are 0 at step 0, `learning_rate` at the
  end of the warmup and `lr_end * learning_rate` at `total_steps`
  (linear/cosine). `lr_end` is relative, a fraction of `learning_rate`
  (default 0), as big_vision's `linear_end`: its schedule is a multiplier of
  the base rate, so `linear_end=1e-5` at lr 1e-3 ends at 1e-8. Values equal
  big_vision's `create_learning_rate_schedule` times `learning_rate`.
  """
  base = float(config.learning_rate)
  if config.lr_schedule not in SCHEDULES:
    raise ValueError(f'lr_schedule must be one of {SCHEDULES}, '
                     f'got {config.lr_schedule!r}')
  if not base > 0 or not math.isfinite(base):
    raise ValueError(f'learning_rate must be a finite number > 0, got {base}')
  end_fraction = float(config.get('lr_end', 0.0) or 0.0)
  if not 0 <= end_fraction < 1:
    raise ValueError(f'lr_end is the end of the decay as a fraction of '
                     f'learning_rate (big_vision\'s linear_end), in [0, 1); '
                     f'got {end_fraction:g}')
  end = base * end_fraction
  warmup, _ = resolve_warmup(config, total_steps, steps_per_epoch)
  decay_steps = max(total_steps - warmup, 1)
  if config.lr_schedule == 'linear':
    decay = optax.linear_schedule(base, end, decay_steps)
  elif config.lr_schedule == 'cosine':
    decay = optax.cosine_decay_schedule(base, decay_steps,
                                        alpha=end_fraction)
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


def make_optimizer(config, total_steps: int,
                   steps_per_epoch: Optional[float] = None
                   ) -> optax.GradientTransformation:
  """The full optax chain: clip -> optimiser (with decoupled weight decay)."""
  schedule = learning_rate_schedule(config, total_steps, steps_per_epoch)
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
