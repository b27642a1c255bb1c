"""The two training losses against numpy, and the run using the one it names."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mixer import losses
from mixer import step as step_lib
from mixer.evaluators import classification
from mixer import models
from tests.conftest import tiny_config


def _np_sigmoid_xent(logits, labels):
  p = 1 / (1 + np.exp(-logits.astype(np.float64)))
  return -np.sum(labels * np.log(p) + (1 - labels) * np.log(1 - p), -1)


def _np_softmax_xent(logits, labels):
  z = logits.astype(np.float64)
  logp = z - z.max(-1, keepdims=True)
  logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
  return -np.sum(labels * logp, -1)


def test_losses_match_numpy_on_soft_labels():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(5, 7)).astype(np.float32) * 3
  labels = rng.dirichlet(np.ones(7), size=5).astype(np.float32)  # Mixup-like.
  np.testing.assert_allclose(losses.sigmoid_xent(logits, labels),
                             _np_sigmoid_xent(logits, labels), rtol=1e-5)
  np.testing.assert_allclose(losses.softmax_xent(logits, labels),
                             _np_softmax_xent(logits, labels), rtol=1e-5)
  # Stable far from zero (no inf/nan where a naive log(sigmoid) overflows).
  big = np.array([[80.0, -80.0]], np.float32)
  assert np.isfinite(losses.sigmoid_xent(big, np.array([[0.0, 1.0]]))).all()
  with pytest.raises(ValueError, match="loss must be one of softmax, sigmoid"):
    losses.per_example('hinge')


def test_sigmoid_loss_with_the_initial_head_bias():
  # big_vision's reason for init_head_bias: with bias b = -6.9 on 1000
  # classes every class starts "off" and the loss is small (~7.9, not the
  # ~693 of a zero bias).
  k, b = 1000, -6.9
  logits = np.full((1, k), b, np.float32)
  onehot = np.eye(k, dtype=np.float32)[:1]
  at_b = float(losses.sigmoid_xent(logits, onehot)[0])
  assert at_b == pytest.approx(-np.log(1 / (1 + np.exp(-b))) - (k - 1) * np.log(
      1 - 1 / (1 + np.exp(-b))), rel=1e-5)
  assert at_b < 8 and float(losses.sigmoid_xent(logits * 0, onehot)[0]) > 690


def test_train_and_eval_use_the_configured_loss():
  config = tiny_config(loss='sigmoid', **{'model.head_bias_init': -2.0})
  assert step_lib.training_loss('sigmoid') is step_lib.sigmoid_cross_entropy
  assert step_lib.training_loss('softmax') is step_lib.cross_entropy
  model = models.build_model(config.model)
  x = jnp.zeros((4, 16, 16, 3), jnp.uint8)
  params = model.init(jax.random.PRNGKey(0), x.astype(jnp.float32),
                      train=False)['params']
  labels = jnp.arange(4, dtype=jnp.int32)
  mask = jnp.ones(4)
  eval_step = jax.vmap(classification.make_eval_step(model, 10, 'sigmoid'),
                       axis_name='batch')
  out = jax.tree_util.tree_map(lambda a: a[0], eval_step(
      jax.tree_util.tree_map(lambda a: a[None], params), x[None],
      labels[None], mask[None]))
  # Zero head kernel: every logit is the bias -2.
  per_example = _np_sigmoid_xent(np.full((1, 10), -2.0),
                                 np.eye(10)[:1])[0]
  assert float(out['loss']) == pytest.approx(4 * per_example, rel=1e-5)
