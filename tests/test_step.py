"""The train step costs what the model costs: what it computes, checks and keeps.

The project's step (augmentation off) computes the same update as the
minimal jit'd step of benchmarks/minimal_step.py; its finite check reads
three scalars; recomputing the activation changes memory, not values.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import minimal_step
from benchmarks import side_by_side
from mixer import devices
from mixer import models
from mixer import optim
from mixer import step as step_lib
from tests.conftest import tiny_config


def _batch(n=16, seed=0):
  rng = np.random.default_rng(seed)
  return (rng.integers(0, 256, (n, 32, 32, 3), np.uint8),
          rng.integers(0, 10, (n,)).astype(np.int32))


def test_project_step_is_the_minimal_step_without_augmentation():
  config = side_by_side.without_augmentation(
      tiny_config(warmup_steps=0, label_smoothing=0.1))
  model = models.build_model(config.model)
  tx = optim.make_optimizer(config, 8)
  schedule = optim.learning_rate_schedule(config, 8)
  state = step_lib.create_train_state(config, model, tx, jax.random.PRNGKey(0))
  init = jax.tree_util.tree_map(np.asarray, state.params)
  same, _ = minimal_step.init(model, tx, (32, 32, 3), jax.random.PRNGKey(0))
  for a, b in zip(jax.tree_util.tree_leaves(same),
                  jax.tree_util.tree_leaves(init)):
    np.testing.assert_array_equal(a, b)  # One starting point.
  p_step = jax.pmap(step_lib.make_multi_step(step_lib.make_train_step(
      config, model, tx, schedule, 10)), axis_name='batch')
  pstate = devices.replicate(state)
  step = minimal_step.make_minimal_step(config, model, tx)
  params, opt_state = state.params, state.opt_state
  for seed in range(2):
    images, labels = _batch(seed=seed)
    pstate, metrics = p_step(pstate, images[None, None, None],
                             labels[None, None, None])
    params, opt_state, loss = step(params, opt_state, images, labels)
    np.testing.assert_allclose(metrics['train_loss'][0, 0], loss, rtol=1e-6)
  project = devices.unreplicate(pstate).params
  for a, b, c in zip(jax.tree_util.tree_leaves(project),
                     jax.tree_util.tree_leaves(params),
                     jax.tree_util.tree_leaves(init)):
    np.testing.assert_allclose(a, b, rtol=0, atol=2e-6)
  moved = max(float(np.max(np.abs(a - c))) for a, c in zip(
      jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(init)))
  assert moved > 1e-4  # Two real updates happened.


def test_step_finite_reads_three_scalars():
  params = {'a': jnp.ones(3), 'b': {'c': jnp.full((2, 2), -2.0)}}
  grads = jax.tree_util.tree_map(lambda p: 0.1 * p, params)
  norm = optax.tree_utils.tree_norm
  ok = lambda loss, g, p: bool(step_lib.step_finite(loss, norm(g), p))
  assert ok(1.0, grads, params)
  assert not ok(jnp.nan, grads, params)
  assert not ok(jnp.inf, grads, params)
  for bad in (jnp.nan, jnp.inf, -jnp.inf):
    g = {'a': grads['a'].at[1].set(bad), 'b': grads['b']}
    p = {'a': params['a'], 'b': {'c': params['b']['c'].at[0, 1].set(bad)}}
    assert not ok(1.0, g, params), bad
    assert not ok(1.0, grads, p), bad
  # +Inf and -Inf in different leaves do not cancel.
  p = {'a': params['a'].at[0].set(jnp.inf),
       'b': {'c': params['b']['c'].at[0, 0].set(-jnp.inf)}}
  assert not ok(1.0, grads, p)
  # The one misreading is towards non-finite: an overflowing sum.
  big = {'a': jnp.full(3, 3e38), 'b': {'c': jnp.zeros((2, 2))}}
  assert bool(jnp.all(jnp.isfinite(big['a']))) and not ok(1.0, grads, big)


def _grad_fn(remat):
  config = tiny_config()
  model = models.build_model(config.model, remat_activation=remat)
  images, labels = _batch()
  x = images.astype(np.float32) / 127.5 - 1
  params = model.init(jax.random.PRNGKey(0), x[:1], train=False)['params']

  def loss(p):
    logits = model.apply({'params': p}, x, train=True)
    return optax.softmax_cross_entropy_with_integer_labels(
        logits, labels).mean() + jnp.mean(logits ** 2)

  compiled = jax.jit(jax.grad(loss)).lower(params).compile()
  return compiled(params), compiled.memory_analysis().temp_size_in_bytes


def test_remat_activation_keeps_values_and_saves_memory():
  assert models.build_model(tiny_config().model).remat_activation
  grads_on, temp_on = _grad_fn(True)
  grads_off, temp_off = _grad_fn(False)
  for a, b in zip(jax.tree_util.tree_leaves(grads_on),
                  jax.tree_util.tree_leaves(grads_off)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)
  assert temp_on < temp_off
