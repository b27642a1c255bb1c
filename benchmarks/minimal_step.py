"""The minimal jit'd Flax train step: the yardstick for this project's own step.

The same model (`mixer.models.build_model(config.model)`) and the same optax
chain (`mixer.optim.make_optimizer`: clipping, AdamW or SGD, schedule, weight
decay on kernels) as a run, in the plainest step a Flax user writes:

  uint8 -> float32 in [-1, 1] -> forward -> label-smoothed softmax
  cross-entropy -> value_and_grad -> tx.update -> apply_updates

under one `jax.jit`. No pmap, no augmentation, no gradient accumulation, no
finite checks, no metrics beyond the loss, no buffer donation. Whatever
`mixer.step` costs beyond this is the project's own overhead;
`benchmarks/side_by_side.py` times the two (and timm) side by side, and
tests/test_side_by_side.py checks that with augmentation off both compute
the same update.
"""

from typing import Any, Callable, Tuple

import jax
import jax.numpy as jnp
import optax


def make_minimal_step(config, model, tx: optax.GradientTransformation
                      ) -> Callable:
  """Returns jit'd `step(params, opt_state, images, labels) -> (params,
  opt_state, loss)` for uint8 images [B, H, W, C] and int labels [B]."""
  num_classes = int(config.model.num_classes)
  smoothing = float(config.label_smoothing)

  def loss_fn(params, images, labels):
    x = images.astype(jnp.float32) / 127.5 - 1.0
    logits = model.apply({'params': params}, x, train=True)
    targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes),
                                  smoothing)
    return optax.softmax_cross_entropy(logits, targets).mean()

  @jax.jit
  def step(params, opt_state, images, labels):
    loss, grads = jax.value_and_grad(loss_fn)(params, images, labels)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return step


def init(model, tx: optax.GradientTransformation, image_shape, rng
         ) -> Tuple[Any, Any]:
  """(params, opt_state) for inputs of `image_shape` (h, w, c): the same
  parameters `mixer.step.create_train_state` draws from `rng`, so both
  steps start from one point (and reach the same loss)."""
  x = jnp.zeros((1,) + tuple(image_shape), jnp.float32)
  rng_init, _ = jax.random.split(rng)
  params = jax.jit(lambda r: model.init({'params': r}, x, train=False))(
      rng_init)
  params = params['params']
  return params, jax.jit(tx.init)(params)
