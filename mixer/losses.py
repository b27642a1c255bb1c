"""The two training losses, per example: softmax and sigmoid cross-entropy.

`softmax` is the usual multi-class loss (vit_jax's fine-tuning, the paper's
fine-tuning). `sigmoid` is what big_vision pre-trains its Mixers with
(`sigmoid_xent` in big_vision/utils.py, `config.loss = 'sigmoid_xent'` in
configs/mlp_mixer_i1k.py): an independent binary cross-entropy per class,
summed over classes, so classes do not compete for probability mass. It
pairs with a negative initial head bias (`model.head_bias_init`, big_vision's
`init_head_bias`), which makes every class start "off" and the initial loss
small. Both work on soft labels (mixup, label smoothing), in float32.

Pure functions; no config, no model.
"""

import jax
import jax.numpy as jnp

LOSSES = ('softmax', 'sigmoid')


def softmax_xent(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
  """-sum(labels * log_softmax(logits)) per example."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32))
  return -jnp.sum(labels * logp, axis=-1)


def sigmoid_xent(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
  """Per example, the sum over classes of the binary cross-entropy of
  sigmoid(logit) against the (soft) label; numerically stable."""
  logits = logits.astype(jnp.float32)
  log_p = jax.nn.log_sigmoid(logits)
  log_not_p = jax.nn.log_sigmoid(-logits)
  return -jnp.sum(labels * log_p + (1.0 - labels) * log_not_p, axis=-1)


def per_example(name: str):
  """The per-example loss called `name` ('softmax' or 'sigmoid')."""
  if name == 'softmax':
    return softmax_xent
  if name == 'sigmoid':
    return sigmoid_xent
  raise ValueError(f'loss must be one of {", ".join(LOSSES)}, got {name!r}')
