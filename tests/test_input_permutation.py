"""Fixed input permutations (paper §3.4): what they are, where they apply, and
the Mixer's exact invariance to patch_pixel."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import models as model_configs
from mixer import input_permutation as ip
from mixer import models
from mixer import step as step_lib
from mixer import train
from mixer.evaluators import classification
from mixer.evaluators import fewshot
from tests.conftest import tiny_config


def _config(kind='patch_pixel', seed=0, **overrides):
  config = tiny_config(**{'input_permutation.kind': kind,
                          'input_permutation.seed': seed, **overrides})
  return config


@pytest.mark.parametrize('kind', ['patch_pixel', 'global'])
def test_a_permutation_of_the_pixels_drawn_from_its_seed(kind):
  p = ip.make(kind, 3, (32, 32), (4, 4))
  assert sorted(p.indices.tolist()) == list(range(32 * 32))
  assert not np.array_equal(p.indices, np.arange(32 * 32))
  again, other = ip.make(kind, 3, (32, 32), (4, 4)), ip.make(kind, 4, (32, 32),
                                                            (4, 4))
  np.testing.assert_array_equal(p.indices, again.indices)
  assert not np.array_equal(p.indices, other.indices)
  # Channels move with their pixel.
  x = np.random.default_rng(0).integers(0, 255, (2, 32, 32, 3))
  y = np.asarray(p(jnp.asarray(x)))
  flat_x, flat_y = x.reshape(2, -1, 3), y.reshape(2, -1, 3)
  np.testing.assert_array_equal(flat_y, flat_x[:, p.indices])


def test_patch_pixel_moves_whole_patches_with_one_inner_order():
  p = ip.make('patch_pixel', 0, (8, 12), (2, 3))  # A 4 x 4 grid of 2x3.
  grid = np.arange(8 * 12).reshape(8, 12)  # Pixel -> its original position.
  out = np.asarray(p(jnp.asarray(grid[None, :, :, None])))[0, :, :, 0]
  patches = lambda a: a.reshape(4, 2, 4, 3).transpose(0, 2, 1, 3).reshape(
      16, 6)
  src, dst = patches(grid), patches(out)
  for q in range(16):
    # Output patch q is input patch sigma[q], its pixels in the order tau.
    np.testing.assert_array_equal(dst[q], src[p.patch_order[q]][p.pixel_order])
  assert sorted(p.patch_order.tolist()) == list(range(16))
  assert sorted(p.pixel_order.tolist()) == list(range(6))
  # 'global' does not keep patches together.
  g = np.asarray(ip.make('global', 0, (8, 12))(
      jnp.asarray(grid[None, :, :, None])))[0, :, :, 0]
  src_sets = {frozenset(s) for s in src.tolist()}
  assert any(frozenset(s) not in src_sets for s in patches(g).tolist())


def test_none_is_the_identity_and_config_errors_are_one_line():
  config = tiny_config()
  p = ip.from_config(config)
  x = jnp.ones((1, 32, 32, 3))
  assert p.kind == 'none' and p(x) is x
  assert ip.from_config(_config()).patch_hw == (4, 4)  # The Mixer's patch.
  bad = [({'input_permutation.kind': 'shuffle'}, 'must be one of'),
         ({'input_permutation.patch_size': (5, 5)}, 'must divide'),
         ({'input_permutation.kind': 'global',
           'input_permutation.align_init': True}, 'align_init needs'),
         ({'input_permutation.patch_size': (8, 8),
           'input_permutation.align_init': True}, 'align_init needs')]
  for overrides, message in bad:
    with pytest.raises(ValueError, match=message):
      ip.from_config(_config(**overrides))
  resnet = _config()
  resnet.model = model_configs.cifar_resnet()
  with pytest.raises(ValueError, match='has no patch grid'):
    ip.from_config(resnet)
  resnet.input_permutation.patch_size = (4, 4)
  assert ip.from_config(resnet).patch_hw == (4, 4)


def _mixer_and_params(config, key=0):
  model = models.build_model(config.model)
  params = model.init(jax.random.PRNGKey(key), jnp.zeros((1, 32, 32, 3)),
                      train=False)['params']
  # A random head (the paper's is zero at init) so logits depend on inputs.
  params['head']['kernel'] = jax.random.normal(
      jax.random.PRNGKey(key + 1), params['head']['kernel'].shape)
  return model, params


@pytest.mark.parametrize('patch', [(4, 4), (4, 8)])
def test_mixer_is_exactly_invariant_to_patch_pixel(patch):
  config = _config(seed=7, **{'model.patches.size': patch,
                              'model.num_blocks': 2})
  perm = ip.from_config(config)
  model, params = _mixer_and_params(config)
  x = jax.random.normal(jax.random.PRNGKey(2), (4, 32, 32, 3))
  apply = jax.jit(lambda p, x: model.apply({'params': p}, x, train=False))
  original = apply(params, x)
  mapped = apply(ip.map_mixer_params(params, perm), perm(x))
  np.testing.assert_allclose(mapped, original, rtol=0, atol=2e-5)
  # Without the weight map the permuted images give other logits.
  assert float(jnp.abs(apply(params, perm(x)) - original).max()) > 0.1


def test_train_step_evaluator_and_fewshot_see_the_permuted_images():
  """Each applies the run's permutation: the same as the unpermuted run on
  images permuted beforehand (augmentation off, so nothing comes between)."""
  config = _config(kind='global', seed=1, **{'augment.crop': 'none',
                                              'augment.flip': False})
  plain = tiny_config(**{'augment.crop': 'none', 'augment.flip': False})
  perm = ip.from_config(config)
  model, params = _mixer_and_params(plain)
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (8, 32, 32, 3)).astype(np.uint8)
  labels = rng.integers(0, 10, 8).astype(np.int32)
  permuted = np.asarray(perm(jnp.asarray(images)))

  tx = optax.sgd(0.1)
  state = step_lib.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                              opt_state=tx.init(params),
                              rng=jax.random.PRNGKey(0))
  sched = lambda s: 0.1

  def run_step(cfg, x):
    fn = jax.vmap(step_lib.make_train_step(cfg, model, tx, sched, 10),
                  axis_name='batch')
    batched = jax.tree_util.tree_map(lambda a: a[None], state)
    return fn(batched, jnp.asarray(x)[None, None], labels[None, None])

  (s1, m1), (s2, m2) = run_step(config, images), run_step(plain, permuted)
  assert float(m1['train_loss'][0]) == pytest.approx(
      float(m2['train_loss'][0]), abs=1e-6)
  np.testing.assert_allclose(s1.params['stem']['kernel'],
                             s2.params['stem']['kernel'], atol=1e-6)

  def evaluate(cfg, x):
    fn = jax.vmap(classification.make_eval_step(
        model, 10, permute=ip.from_config(cfg)), axis_name='batch')
    return fn(jax.tree_util.tree_map(lambda a: a[None], params),
              jnp.asarray(x)[None], labels[None], jnp.ones((1, 8)))

  e1, e2 = evaluate(config, images), evaluate(plain, permuted)
  assert float(e1['loss'][0]) == pytest.approx(float(e2['loss'][0]), abs=1e-5)
  assert float(evaluate(plain, images)['loss'][0]) != pytest.approx(
      float(e2['loss'][0]), abs=1e-5)

  body = fewshot.strip_head(params)
  f1 = fewshot.extract_features(model, body, images, 8, (32, 32), perm)
  # Few-shot permutes after its host preprocessing (resize|central_crop),
  # i.e. the model-sized images, as training permutes after augmentation.
  sized = fewshot.preprocess(images, (32, 32))
  f2 = fewshot.extract_features(model, body,
                                np.asarray(perm(jnp.asarray(sized))), 8)
  np.testing.assert_allclose(f1, f2, atol=1e-5)
  assert fewshot.FewShotEvaluator(config, model).permute == perm


def test_aligned_start_follows_the_unpermuted_trajectory():
  """align_init: the patch_pixel run starts from the none run's initial
  weights mapped, so after several steps of the real train step (crop,
  flip, AdamW, clipping) it has the same losses and computes the same
  function on permuted images as the none run on the originals.

  (Not the same weights in every coordinate: the token-mixing output bias
  adds a constant per token, which every LayerNorm after it removes, so its
  gradient is zero up to rounding and Adam's normalisation turns that
  rounding into steps of +-lr; the function never sees them.)"""
  none = tiny_config(**{'input_permutation.patch_size': (4, 4)})
  aligned = _config(seed=5, **{'input_permutation.align_init': True})
  perm = ip.from_config(aligned)
  rng = np.random.default_rng(1)
  images = rng.integers(0, 256, (3, 1, 16, 32, 32, 3)).astype(np.uint8)
  labels = rng.integers(0, 10, (3, 1, 16)).astype(np.int32)
  x = jax.random.normal(jax.random.PRNGKey(9), (8, 32, 32, 3))
  losses, logits, starts = {}, {}, {}
  for name, config in (('none', none), ('aligned', aligned)):
    model = models.build_model(config.model)
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-2))
    state = step_lib.create_train_state(config, model, tx,
                                        jax.random.PRNGKey(0))
    state = ip.align_initial_state(config, state, tx)
    starts[name] = state.params
    step = jax.vmap(step_lib.make_train_step(config, model, tx,
                                             lambda s: 1e-2, 10),
                    axis_name='batch')
    state = jax.tree_util.tree_map(lambda a: a[None], state)
    losses[name] = []
    for i in range(3):
      state, metrics = step(state, jnp.asarray(images[i])[None],
                            jnp.asarray(labels[i])[None])
      losses[name].append(float(metrics['train_loss'][0]))
    params = jax.tree_util.tree_map(lambda a: a[0], state.params)
    inputs = perm(x) if name == 'aligned' else x
    logits[name] = model.apply({'params': params}, inputs, train=False)
  for a, b in zip(jax.tree_util.tree_leaves(
      ip.map_mixer_params(starts['none'], perm)),
                  jax.tree_util.tree_leaves(starts['aligned'])):
    np.testing.assert_array_equal(a, b)  # The start: exactly mapped.
  np.testing.assert_allclose(losses['aligned'], losses['none'], atol=1e-6)
  assert len(set(losses['none'])) == 3  # It trains.
  np.testing.assert_allclose(logits['aligned'], logits['none'], atol=1e-5)
  assert float(jnp.abs(logits['none']).max()) > 0.01
  # Not aligned, the same seed starts elsewhere: the check can fail.
  start = starts['none']
  assert float(jnp.abs(ip.map_mixer_params(start, perm)['stem']['kernel'] -
                       start['stem']['kernel']).max()) > 0.1


def test_runs_with_and_without_aligned_permutation_end_alike(tmp_path,
                                                             data_dir):
  """The whole loop (train.py's aligned start, evaluation): the same test
  loss and accuracy for Mixer none and patch_pixel + align_init."""
  del data_dir
  out = {}
  for kind in ('none', 'patch_pixel'):
    config = _config(kind=kind, num_train_steps=4, log_every_steps=2,
                     checkpoint_every_steps=0, eval_split='test[:250]',
                     **{'input_permutation.align_init': kind != 'none'})
    out[kind] = train.train_and_evaluate(config, str(tmp_path / kind))
  assert out['none']['final_eval_accuracy'] == pytest.approx(
      out['patch_pixel']['final_eval_accuracy'], abs=1e-9)
  assert out['none']['final_eval_loss'] == pytest.approx(
      out['patch_pixel']['final_eval_loss'], abs=1e-5)
