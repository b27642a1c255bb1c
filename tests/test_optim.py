"""Schedules at key steps, weight decay on kernels only, clipping, SGD."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import common
from configs import models as model_specs
from mixer import optim


def _config(**kw):
  c = common.base(model_specs.seed000('baseline'), dataset='cifar10',
                  image_size=32)
  for k, v in kw.items():
    c[k] = v
  return c


@pytest.mark.parametrize('kind', ['linear', 'cosine'])
def test_warmup_then_decay_key_steps(kind):
  c = _config(learning_rate=1e-3, warmup_steps=100, lr_schedule=kind)
  sched = optim.learning_rate_schedule(c, total_steps=1100)
  assert float(sched(0)) == 0.0
  assert float(sched(50)) == pytest.approx(5e-4)
  assert float(sched(100)) == pytest.approx(1e-3)
  # Halfway through the decay: linear 0.5, cosine 0.5 too (by symmetry).
  assert float(sched(600)) == pytest.approx(5e-4, rel=1e-5)
  assert float(sched(1100)) == pytest.approx(0.0, abs=1e-9)
  q = float(sched(350))  # a quarter into the decay
  expected = 0.75e-3 if kind == 'linear' else 1e-3 * 0.5 * (
      1 + np.cos(np.pi * 0.25))
  assert q == pytest.approx(expected, rel=1e-5)


def test_paper_pretraining_schedule_10k_warmup():
  c = _config(learning_rate=1e-3, warmup_steps=10_000, lr_schedule='linear')
  sched = optim.learning_rate_schedule(c, total_steps=100_000)
  assert float(sched(10_000)) == pytest.approx(1e-3)
  assert float(sched(55_000)) == pytest.approx(5e-4)


def test_constant_and_bad_values():
  c = _config(lr_schedule='constant', warmup_steps=0, learning_rate=0.01)
  assert float(optim.learning_rate_schedule(c, 10)(7)) == pytest.approx(0.01)
  with pytest.raises(ValueError, match='lr_schedule'):
    optim.learning_rate_schedule(_config(lr_schedule='step'), 10)
  with pytest.raises(ValueError, match='warmup_steps'):
    optim.learning_rate_schedule(_config(warmup_steps=20), 10)
  with pytest.raises(ValueError, match='optimizer'):
    optim.make_optimizer(_config(optimizer='lamb'), 1000)


def _params():
  return {'Dense_0': {'kernel': jnp.ones((2, 3)), 'bias': jnp.ones(3)},
          'LayerNorm_0': {'scale': jnp.ones(3), 'bias': jnp.ones(3)}}


def test_kernel_mask():
  mask = optim.kernel_mask(_params())
  assert mask == {'Dense_0': {'kernel': True, 'bias': False},
                  'LayerNorm_0': {'scale': False, 'bias': False}}


@pytest.mark.parametrize('name', ['adamw', 'sgd'])
def test_decoupled_weight_decay_kernels_only_scaled_by_schedule(name):
  c = _config(optimizer=name, learning_rate=0.5, weight_decay=0.1,
              warmup_steps=0, lr_schedule='constant', grad_clip_norm=0.0)
  tx = optim.make_optimizer(c, 10)
  params = _params()
  zero = jax.tree_util.tree_map(jnp.zeros_like, params)
  updates, _ = tx.update(zero, tx.init(params), params)
  # Zero gradient: only decay moves params, by lr * wd * p, kernels only.
  np.testing.assert_allclose(updates['Dense_0']['kernel'], -0.5 * 0.1)
  for leaf in (updates['Dense_0']['bias'], updates['LayerNorm_0']['scale'],
               updates['LayerNorm_0']['bias']):
    np.testing.assert_array_equal(leaf, 0.0)


def test_global_norm_clipping():
  c = _config(optimizer='sgd', momentum=0.0, learning_rate=1.0,
              warmup_steps=0, lr_schedule='constant', weight_decay=0.0,
              grad_clip_norm=1.0)
  tx = optim.make_optimizer(c, 10)
  params = {'w': jnp.zeros(4)}
  grads = {'w': jnp.full(4, 10.0)}  # norm 20 -> clipped to 1
  updates, _ = tx.update(grads, tx.init(params), params)
  assert float(optax.tree_utils.tree_norm(updates)) == pytest.approx(1.0, rel=1e-5)


def test_sgd_momentum():
  c = _config(optimizer='sgd', momentum=0.9, learning_rate=1.0,
              warmup_steps=0, lr_schedule='constant', weight_decay=0.0,
              grad_clip_norm=0.0)
  tx = optim.make_optimizer(c, 10)
  params = {'w': jnp.zeros(1)}
  state = tx.init(params)
  g = {'w': jnp.ones(1)}
  u1, state = tx.update(g, state, params)
  u2, state = tx.update(g, state, params)
  assert float(u1['w'][0]) == pytest.approx(-1.0)
  assert float(u2['w'][0]) == pytest.approx(-1.9)
