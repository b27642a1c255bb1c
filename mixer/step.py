"""What one training step computes, for one device: the state, the loss, the update.

Per step, each device:

  uint8 images -> on-device augmentation (mixer.augment) -> the run's fixed
  input permutation (mixer.input_permutation; none by default) -> model (optionally
  bfloat16 activations, float32 params) -> (label-smoothed) softmax or
  sigmoid cross-entropy (`config.loss`, mixer.losses) ->
  gradients, accumulated over `grad_accum_steps` micro-batches with
  `lax.scan` -> pmean -> optax update (clipping, schedule, weight decay).

`make_multi_step` fuses K such steps into one dispatch with `lax.scan`, and
`make_indexed_step` gathers the examples of a device-resident dataset by
index first. With one micro-batch and one step per dispatch (the defaults)
there is no scan at all: on a CPU, XLA runs a step inside a loop about 20%
slower than the same step straight (docs/benchmarks.md). Every step reports
whether its loss, gradients and new parameters are finite (`step_finite`,
three scalars), so the loop can stop (or skip the update) before a
non-finite state is saved.

Owns the jitted/pmapped functions and the initial state; no loop, no I/O
(the initial parameters may come from `mixer.pretrained` for fine-tuning).
"""

from typing import Any, Callable, Dict

import flax
import jax
import jax.numpy as jnp
import optax

from mixer import augment
from mixer import input_permutation
from mixer import losses
from mixer import models
from mixer import pretrained


@flax.struct.dataclass
class TrainState:
  """What a step updates. `rng` is the run's base key (constant)."""
  step: jnp.ndarray
  params: Any
  opt_state: Any
  rng: jnp.ndarray



def all_finite(tree: Any) -> jnp.ndarray:
  """Scalar bool: every floating-point leaf of `tree` is finite."""
  flags = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)
           if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)]
  return jnp.stack(flags).all() if flags else jnp.array(True)


def step_finite(loss, grad_norm, params) -> jnp.ndarray:
  """Scalar bool: the step's loss, gradients and new parameters are finite.

  Three scalars say it: a NaN or Inf anywhere in the gradients makes their
  global norm (a metric the step computes anyway) NaN or Inf, and one in the
  parameters makes their sum so. Only a finite value can be misread, and only
  one way: a norm or sum that overflows float32 (gradient norm above ~1e19,
  parameters summing to ~3e38) also reads as non-finite -- a run that far
  gone is treated as diverged, never a non-finite state as finite. Cheaper
  than `all_finite` over every leaf (one fused reduction of the parameters).
  """
  total = sum(jnp.sum(p, dtype=jnp.float32)
              for p in jax.tree_util.tree_leaves(params))
  return jnp.isfinite(loss) & jnp.isfinite(grad_norm) & jnp.isfinite(total)


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
    params = pretrained.load_init_params(config, state.params)
    state = state.replace(params=params, opt_state=jax.jit(tx.init)(params))
  return state


def _smooth(soft_labels, label_smoothing: float):
  if not label_smoothing:
    return soft_labels
  num_classes = soft_labels.shape[-1]
  return soft_labels * (1.0 - label_smoothing) + label_smoothing / num_classes


def cross_entropy(logits, soft_labels, label_smoothing: float = 0.0):
  """Mean softmax cross-entropy with optional label smoothing (float32)."""
  return jnp.mean(losses.softmax_xent(logits,
                                      _smooth(soft_labels, label_smoothing)))


def sigmoid_cross_entropy(logits, soft_labels, label_smoothing: float = 0.0):
  """Mean sigmoid cross-entropy (big_vision's `sigmoid_xent`), optional label
  smoothing (float32)."""
  return jnp.mean(losses.sigmoid_xent(logits,
                                      _smooth(soft_labels, label_smoothing)))


def training_loss(name: str) -> Callable:
  """`config.loss`'s mean loss: 'softmax' (`cross_entropy`) or 'sigmoid'."""
  losses.per_example(name)  # Validates the name.
  return cross_entropy if name == 'softmax' else sigmoid_cross_entropy


def make_train_step(config, model: models.MlpMixer,
                    tx: optax.GradientTransformation,
                    schedule: optax.Schedule, num_classes: int) -> Callable:
  """Returns `step(state, images, labels) -> (state, metrics)` for one device.

  `images`: uint8 [accum, micro, H, W, C]; `labels`: int [accum, micro].
  Must run inside pmap/shard_map with axis name 'batch'.
  """
  train_augment = augment.make_train_augment(config.augment, num_classes)
  permute = input_permutation.from_config(config)  # Identity for 'none'.
  label_smoothing = float(config.label_smoothing)
  loss_of = training_loss(config.get('loss', 'softmax'))
  skip_nonfinite = bool(config.get('skip_nonfinite_steps', False))

  def loss_fn(params, images, labels, rng):
    rng_aug, rng_model = jax.random.split(rng)
    x, y = train_augment(rng_aug, images, labels)
    x = permute(x)
    logits = model.apply({'params': params}, x, train=True,
                         rngs={'dropout': rng_model})
    loss = loss_of(logits, y, label_smoothing)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == jnp.argmax(y, -1))
    return loss, accuracy

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def gradients(params, images, labels, rng):
    """Mean loss, accuracy and gradients over the `accum` micro-batches."""
    accum = images.shape[0]
    if accum == 1:  # The usual case: no scan, no zero-initialised sums.
      (loss, acc), grads = grad_fn(params, images[0], labels[0],
                                   jax.random.fold_in(rng, 0))
      return loss, acc, grads

    def micro(carry, xs):
      grads, loss, acc = carry
      im, lb, i = xs
      (l, a), g = grad_fn(params, im, lb, jax.random.fold_in(rng, i))
      grads = jax.tree_util.tree_map(jnp.add, grads, g)
      return (grads, loss + l, acc + a), None

    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    (grads, loss, acc), _ = jax.lax.scan(
        micro, (zeros, 0.0, 0.0), (images, labels, jnp.arange(accum)))
    grads = jax.tree_util.tree_map(lambda g: g / accum, grads)
    return loss / accum, acc / accum, grads

  def step(state: TrainState, images, labels):
    # A different stream per step and per device; resumes exactly.
    rng = jax.random.fold_in(state.rng, state.step)
    device = jax.lax.axis_index('batch')
    rng = jax.random.fold_in(rng, jax.process_index() * 4096 + device)
    loss, acc, grads = gradients(state.params, images, labels, rng)
    grads = jax.lax.pmean(grads, 'batch')
    loss = jax.lax.pmean(loss, 'batch')
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    grad_norm = optax.tree_utils.tree_norm(grads)
    # One scalar per step, identical on every device (pmin), so the host can
    # check a whole dispatch without fetching anything big (`step_finite`).
    finite = step_finite(loss, grad_norm, params)
    finite = jax.lax.pmin(finite.astype(jnp.int32), 'batch') > 0
    if skip_nonfinite:  # Drop the update: params and optimizer unchanged.
      keep = lambda new, old: jnp.where(finite, new, old)
      params = jax.tree_util.tree_map(keep, params, state.params)
      opt_state = jax.tree_util.tree_map(keep, opt_state, state.opt_state)
    metrics = {
        'train_loss': loss,
        'train_accuracy': jax.lax.pmean(acc, 'batch'),
        'learning_rate': schedule(state.step),
        'grad_norm': grad_norm,
        'finite': finite,
    }
    new_state = state.replace(step=state.step + 1, params=params,
                              opt_state=opt_state)
    return new_state, metrics

  return step


def make_multi_step(step_fn: Callable) -> Callable:
  """Runs `step_fn` over a leading axis of K steps with `lax.scan` (K = 1:
  one direct call, no loop; the metrics keep their leading axis)."""

  def multi(state, images, labels):
    if images.shape[0] == 1:
      state, metrics = step_fn(state, images[0], labels[0])
      return state, jax.tree_util.tree_map(lambda m: jnp.asarray(m)[None],
                                           metrics)
    return jax.lax.scan(lambda s, xs: step_fn(s, *xs), state, (images, labels))

  return multi


def make_indexed_step(multi: Callable) -> Callable:
  """Gathers examples from device-resident data, then trains on them."""

  def fn(state, indices, data_images, data_labels):
    return multi(state, data_images[indices], data_labels[indices])

  return fn


def state_dict(state: TrainState) -> Dict[str, Any]:
  """The state as the dict a run checkpoint holds (`mixer.checkpoints`)."""
  return {'step': state.step, 'params': state.params,
          'opt_state': state.opt_state, 'rng': state.rng}

