"""Official `.npz` checkpoints, fine-tuning initialisation, Appendix C
resolution change, orbax round trip and the fine-tuning configs.

Everything runs on a tiny model (hidden 32, 2 blocks, 16x16 images, patch 4:
a 4x4 token grid) with random parameters; nothing touches the network.
"""

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import common
from configs import finetune
from configs import models as model_configs
from mixer import checkpoints
from mixer import models
from mixer import optim
from mixer import params as params_lib
from mixer import pretrained

PATCH = 4
HIDDEN = 32
TOKENS_MLP = 16


def tiny_model_config(num_classes=10, **kw):
  kw.setdefault('tokens_mlp_dim', TOKENS_MLP)
  kw.setdefault('channels_mlp_dim', 64)
  return model_configs.mixer(patch=PATCH, hidden_dim=HIDDEN, num_blocks=2,
                             num_classes=num_classes, **kw)


def tiny_config(image_size=16, init_checkpoint='', **model_kw):
  c = common.base(tiny_model_config(**model_kw), dataset='cifar10',
                  image_size=image_size)
  c.init_checkpoint = init_checkpoint
  return c


def param_shapes(module, x, **kw):
  """The params tree of `module` as ShapeDtypeStructs: traced, not compiled
  (compiling every tiny model would dominate the test time on a busy CPU)."""
  return jax.eval_shape(
      lambda: module.init(jax.random.PRNGKey(0), x, **kw))['params']


def random_params(model, image_size=16, seed=0):
  """Params of `model` with every leaf random (the head too, which the
  paper's initialiser would set to zeros)."""
  x = jnp.zeros((1, image_size, image_size, 3))
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map(
      lambda l: (0.3 * rng.standard_normal(l.shape)).astype(np.float32),
      param_shapes(model, x, train=False))


def fresh_params(config):
  """Stand-in for the training loop's fresh init: random, zero head."""
  params = random_params(models.build_model(config.model), config.image_size,
                         seed=42)
  if 'head' in params:
    params['head'] = jax.tree_util.tree_map(np.zeros_like, params['head'])
  return params


def write_official_npz(params, path):
  """An official-format file written independently of `save_npz`."""
  flat = {}

  def walk(tree, prefix):
    for k, v in tree.items():
      if isinstance(v, dict):
        walk(v, prefix + k + '/')
      else:
        flat[prefix + k] = np.asarray(v)

  walk(params, '')
  np.savez(path, **flat)
  return flat


def logits(model, params, x):
  apply = jax.jit(lambda p, x: model.apply({'params': p}, x, train=False))
  return np.asarray(apply(params, x))


def flat(tree):
  return params_lib.flatten_params(tree)


def assert_trees_equal(a, b):
  fa, fb = flat(a), flat(b)
  assert sorted(fa) == sorted(fb)
  for k in fa:
    assert fa[k].dtype == fb[k].dtype, k
    np.testing.assert_array_equal(fa[k], fb[k], err_msg=k)


# -- .npz ------------------------------------------------------------------


def test_load_npz_gives_same_logits_as_params_in_memory(tmp_path):
  model = models.build_model(tiny_model_config())
  params = random_params(model)
  path = str(tmp_path / 'Mixer-T_4.npz')
  keys = write_official_npz(params, path)
  # The official layout: flat '/'-joined paths, this project's names.
  for key in ('stem/kernel', 'MixerBlock_0/token_mixing/Dense_0/kernel',
              'MixerBlock_1/channel_mixing/Dense_1/bias',
              'MixerBlock_0/LayerNorm_1/scale', 'pre_head_layer_norm/scale',
              'head/bias'):
    assert key in keys
  loaded = pretrained.load_npz(path)
  x = np.random.default_rng(3).standard_normal((2, 16, 16, 3), np.float32)
  np.testing.assert_array_equal(logits(model, loaded, x),
                                logits(model, params, x))


def test_load_npz_renumbers_pre_linen_names(tmp_path):
  # Pre-Linen flax numbered submodules with one counter for all classes.
  path = str(tmp_path / 'old.npz')
  np.savez(path, **{'MixerBlock_0/LayerNorm_0/scale': np.ones(2),
                    'MixerBlock_0/LayerNorm_2/scale': np.zeros(2),
                    'MixerBlock_0/token_mixing/Dense_0/kernel': np.ones(1)})
  block = pretrained.load_npz(path)['MixerBlock_0']
  assert sorted(block) == ['LayerNorm_0', 'LayerNorm_1', 'token_mixing']
  np.testing.assert_array_equal(block['LayerNorm_1']['scale'], np.zeros(2))


def test_save_npz_round_trip_is_bitwise(tmp_path):
  model = models.build_model(tiny_model_config())
  params = random_params(model)
  path = str(tmp_path / 'exported')  # No '.npz': the name is kept as given.
  pretrained.save_npz(params, path)
  assert os.path.exists(path) and not os.path.exists(path + '.npz')
  with np.load(path) as data:
    assert sorted(data.files) == sorted(flat(params))
  loaded = pretrained.load_npz(path)
  fa, fb = flat(params), flat(loaded)
  for k in fa:
    assert fa[k].dtype == fb[k].dtype
    assert fa[k].tobytes() == fb[k].tobytes(), k


def test_load_npz_unreadable_file_is_a_clear_error(tmp_path):
  bad = tmp_path / 'bad.npz'
  bad.write_bytes(b'not a zip archive')
  with pytest.raises(ValueError, match='bad.npz'):
    pretrained.load_npz(str(bad))
  with pytest.raises(ValueError, match='missing.npz'):
    pretrained.load_npz(str(tmp_path / 'missing.npz'))
  with pytest.raises(ValueError, match='does not exist'):
    pretrained.load_params(str(tmp_path / 'no_such_workdir'))


# -- load_init_params --------------------------------------------------------


def test_load_init_params_same_model_is_exact(tmp_path):
  model = models.build_model(tiny_model_config())
  params = random_params(model)
  path = str(tmp_path / 'ckpt.npz')
  pretrained.save_npz(params, path)
  config = tiny_config(init_checkpoint=path)
  merged = pretrained.load_init_params(config, fresh_params(config))
  assert_trees_equal(jax.device_get(merged), params)


def test_head_reinitialised_when_classes_differ(tmp_path):
  pre = models.build_model(tiny_model_config(num_classes=7))
  params = random_params(pre)
  path = str(tmp_path / 'ckpt.npz')
  pretrained.save_npz(params, path)
  config = tiny_config(init_checkpoint=path, num_classes=10)
  merged = jax.device_get(
      pretrained.load_init_params(config, fresh_params(config)))
  assert merged['head']['kernel'].shape == (HIDDEN, 10)
  assert not np.any(merged['head']['kernel'])
  assert not np.any(merged['head']['bias'])
  body = lambda t: {k: v for k, v in t.items() if k != 'head'}
  assert_trees_equal(body(merged), body(params))


def test_checkpoint_without_head_gets_zero_head(tmp_path):
  headless = models.build_model(tiny_model_config(num_classes=0))
  params = random_params(headless)
  assert 'head' not in params
  path = str(tmp_path / 'headless.npz')
  pretrained.save_npz(params, path)
  config = tiny_config(init_checkpoint=path)
  merged = jax.device_get(
      pretrained.load_init_params(config, fresh_params(config)))
  assert not np.any(merged['head']['kernel'])
  np.testing.assert_array_equal(merged['stem']['kernel'],
                                params['stem']['kernel'])


def test_shape_mismatch_names_the_parameter(tmp_path):
  other = models.build_model(tiny_model_config(channels_mlp_dim=48))
  path = str(tmp_path / 'ckpt.npz')
  pretrained.save_npz(random_params(other), path)
  config = tiny_config(init_checkpoint=path)
  with pytest.raises(ValueError) as e:
    pretrained.load_init_params(config, fresh_params(config))
  msg = str(e.value)
  assert msg.startswith('checkpoint ckpt.npz parameter MixerBlock_0/'
                        'channel_mixing/Dense_0/kernel has shape (32, 48) but '
                        'the model expects (32, 64)'), msg


def test_missing_block_is_an_error(tmp_path):
  shallow = models.build_model(
      model_configs.mixer(patch=PATCH, hidden_dim=HIDDEN, num_blocks=1,
                          tokens_mlp_dim=TOKENS_MLP, channels_mlp_dim=64,
                          num_classes=10))
  path = str(tmp_path / 'ckpt.npz')
  pretrained.save_npz(random_params(shallow), path)
  config = tiny_config(init_checkpoint=path)
  with pytest.raises(ValueError, match='MixerBlock_1/.* is missing'):
    pretrained.load_init_params(config, fresh_params(config))


@pytest.mark.parametrize('ckpt_norm', [True, False])
def test_pre_head_layer_norm_mismatch_is_an_error(tmp_path, ckpt_norm):
  src = models.build_model(tiny_model_config(use_pre_head_norm=ckpt_norm))
  path = str(tmp_path / 'ckpt.npz')
  pretrained.save_npz(random_params(src), path)
  config = tiny_config(init_checkpoint=path, use_pre_head_norm=not ckpt_norm)
  with pytest.raises(ValueError, match='pre_head_layer_norm'):
    pretrained.load_init_params(config, fresh_params(config))


# -- Resolution change (Appendix C) ---------------------------------------


def test_token_groups_partition_the_grid():
  for grouping in pretrained.TOKEN_GROUPINGS:
    groups = pretrained.token_groups((2, 3), (4, 6), grouping)
    assert groups.shape == (4, 6)
    assert sorted(groups.reshape(-1).tolist()) == list(range(24))
  strided = pretrained.token_groups((2, 2), (4, 4), 'strided')
  # Group (0, 0) = even rows and columns of the 4x4 grid, row-major.
  np.testing.assert_array_equal(strided[0], [0, 2, 8, 10])
  np.testing.assert_array_equal(strided[3], [5, 7, 13, 15])
  tiles = pretrained.token_groups((2, 2), (4, 4), 'tiles')
  np.testing.assert_array_equal(tiles[0], [0, 1, 4, 5])  # Top-left tile.
  np.testing.assert_array_equal(tiles[1], [2, 3, 6, 7])  # Top-right tile.
  with pytest.raises(ValueError, match='integer multiple'):
    pretrained.token_groups((4, 4), (6, 6))


def test_change_resolution_shapes_and_identity():
  model = models.build_model(tiny_model_config())
  params = random_params(model)
  assert pretrained.change_resolution(params, (4, 4), (4, 4)) is params
  new = pretrained.change_resolution(params, (4, 4), (8, 8))
  tm = new['MixerBlock_1']['token_mixing']
  assert tm['Dense_0']['kernel'].shape == (64, 4 * TOKENS_MLP)
  assert tm['Dense_0']['bias'].shape == (4 * TOKENS_MLP,)
  assert tm['Dense_1']['kernel'].shape == (4 * TOKENS_MLP, 64)
  assert tm['Dense_1']['bias'].shape == (64,)
  np.testing.assert_array_equal(tm['Dense_0']['bias'],
                                np.tile(params['MixerBlock_1']['token_mixing']
                                        ['Dense_0']['bias'], 4))
  # Everything else is untouched.
  f_old, f_new = flat(params), flat(new)
  for k in f_old:
    if '/token_mixing/' not in k:
      np.testing.assert_array_equal(f_old[k], f_new[k])
  # Each kernel holds exactly k^2 copies of the pretrained one and zeros.
  k0_old = params['MixerBlock_1']['token_mixing']['Dense_0']['kernel']
  assert np.count_nonzero(tm['Dense_0']['kernel']) == 4 * np.count_nonzero(
      k0_old)


@pytest.mark.parametrize('grouping', pretrained.TOKEN_GROUPINGS)
def test_block_diagonal_mlp_block_acts_per_group(grouping):
  old_grid, new_grid = (2, 3), (4, 6)
  s, s_new, channels = 6, 24, 5
  mlp = models.MlpBlock(mlp_dim=7)
  x_old = jnp.zeros((2, channels, s))
  p = random_params_of(mlp, x_old)
  new_p = pretrained._block_diagonal_token_mlp(
      p, pretrained.token_groups(old_grid, new_grid, grouping))
  x = np.random.default_rng(5).standard_normal((2, channels, s_new),
                                                np.float32)
  y = jax.jit(models.MlpBlock(mlp_dim=4 * 7).apply)({'params': new_p}, x)
  for tokens in pretrained.token_groups(old_grid, new_grid, grouping):
    y_group = jax.jit(mlp.apply)({'params': p}, x[..., tokens])
    np.testing.assert_allclose(y[..., tokens], y_group, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('grouping', pretrained.TOKEN_GROUPINGS)
def test_block_diagonal_mixer_block_acts_per_group(grouping):
  old_grid, new_grid = (2, 2), (4, 4)
  block = models.MixerBlock(tokens_mlp_dim=6, channels_mlp_dim=12)
  x_old = jnp.zeros((2, 4, 8))
  p = random_params_of(block, x_old)
  new = pretrained.change_resolution({'MixerBlock_0': p}, old_grid, new_grid,
                                      grouping)['MixerBlock_0']
  x = np.random.default_rng(6).standard_normal((2, 16, 8), np.float32)
  y = jax.jit(models.MixerBlock(tokens_mlp_dim=4 * 6,
                                channels_mlp_dim=12).apply)({'params': new}, x)
  for tokens in pretrained.token_groups(old_grid, new_grid, grouping):
    y_group = jax.jit(block.apply)({'params': p}, x[:, tokens])
    np.testing.assert_allclose(y[:, tokens], y_group, rtol=1e-5, atol=1e-5)


def random_params_of(module, x, seed=0):
  params = param_shapes(module, x)
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map(
      lambda l: (0.5 * rng.standard_normal(l.shape)).astype(np.float32), params)


def _patches(image, p):
  """[H, W, C] -> [H/p * W/p, p, p, C], row-major over the patch grid."""
  h, w, c = image.shape
  return image.reshape(h // p, p, w // p, p, c).transpose(0, 2, 1, 3, 4
                                                          ).reshape(-1, p, p, c)


def _image(patches, grid):
  gh, gw = grid
  _, p, _, c = patches.shape
  return patches.reshape(gh, gw, p, p, c).transpose(0, 2, 1, 3, 4).reshape(
      gh * p, gw * p, c)


@pytest.mark.parametrize('grouping', pretrained.TOKEN_GROUPINGS)
def test_resized_model_is_pretrained_model_per_group(grouping):
  """The 32x32 model = mean over groups of the 16x16 model's logits on the
  image made of that group's patches; on an image whose every group is the
  same 16x16 image, it reproduces the 16x16 model's logits."""
  small = models.build_model(tiny_model_config())
  big = models.build_model(tiny_model_config(tokens_mlp_dim=4 * TOKENS_MLP))
  params = random_params(small)
  new = pretrained.change_resolution(params, (4, 4), (8, 8), grouping)
  groups = pretrained.token_groups((4, 4), (8, 8), grouping)

  img = np.random.default_rng(7).standard_normal((32, 32, 3), np.float32)
  patches = _patches(img, PATCH)
  subs = np.stack([_image(patches[g], (4, 4)) for g in groups])
  expected = logits(small, params, subs).mean(0)
  got = logits(big, new, img[None])[0]
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)

  # One 16x16 image spread over the groups: same logits as at 16x16.
  img16 = np.random.default_rng(8).standard_normal((16, 16, 3), np.float32)
  big_patches = np.empty((64, PATCH, PATCH, 3), np.float32)
  for g in groups:
    big_patches[g] = _patches(img16, PATCH)
  img32 = _image(big_patches, (8, 8))
  if grouping == 'tiles':
    np.testing.assert_array_equal(img32, np.tile(img16, (2, 2, 1)))
  np.testing.assert_allclose(logits(big, new, img32[None]),
                             logits(small, params, img16[None]),
                             rtol=1e-4, atol=1e-4)


def test_load_init_params_changes_resolution(tmp_path):
  small = models.build_model(tiny_model_config())
  params = random_params(small)
  path = str(tmp_path / 'ckpt.npz')
  pretrained.save_npz(params, path)
  model = model_configs.finetune_model_config(tiny_model_config(), 16, 32)
  assert model.tokens_mlp_dim == 4 * TOKENS_MLP
  config = common.base(model, dataset='cifar10', image_size=32,
                       init_checkpoint=path)
  merged = jax.device_get(
      pretrained.load_init_params(config, fresh_params(config)))
  assert_trees_equal(merged, pretrained.change_resolution(
      params, (4, 4), (8, 8), 'strided'))
  config.init_token_grouping = 'tiles'
  merged = jax.device_get(
      pretrained.load_init_params(config, fresh_params(config)))
  assert_trees_equal(merged, pretrained.change_resolution(
      params, (4, 4), (8, 8), 'tiles'))


def test_load_init_params_wrong_tokens_mlp_dim_is_an_error(tmp_path):
  small = models.build_model(tiny_model_config())
  path = str(tmp_path / 'ckpt.npz')
  pretrained.save_npz(random_params(small), path)
  config = tiny_config(image_size=32, init_checkpoint=path)  # D_S unchanged.
  with pytest.raises(ValueError, match='tokens_mlp_dim is 16 .* needs '
                     r'k\^2 \* 16 = 64'):
    pretrained.load_init_params(config, fresh_params(config))
  config = tiny_config(image_size=24, init_checkpoint=path)  # 36 tokens.
  with pytest.raises(ValueError, match='integer factor'):
    pretrained.load_init_params(config, fresh_params(config))


# -- orbax -----------------------------------------------------------------


def test_orbax_round_trip_and_init_from_workdir(tmp_path):
  import optax  # pylint: disable=g-import-not-at-top
  model = models.build_model(tiny_model_config())
  params = jax.tree_util.tree_map(jnp.asarray, random_params(model))
  tx = optax.sgd(0.1, momentum=0.9)
  state = {'step': jnp.asarray(7, jnp.int32), 'params': params,
           'opt_state': tx.init(params), 'rng': jax.random.PRNGKey(1)}
  workdir = str(tmp_path / 'workdir')
  mgr = checkpoints.manager(workdir, async_save=False)
  checkpoints.save(mgr, 7, state, {'step': 7})
  mgr.wait_until_finished()
  target = jax.tree_util.tree_map(jnp.zeros_like, state)
  step, restored, meta = checkpoints.restore(mgr, target)
  mgr.close()
  assert step == 7 and meta == {'step': 7}
  for a, b in zip(jax.tree_util.tree_leaves(state),
                  jax.tree_util.tree_leaves(restored)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # Any of the three path forms initialises a fine-tuning run.
  for path in (workdir, os.path.join(workdir, 'checkpoints'),
               os.path.join(workdir, 'checkpoints', '7')):
    config = tiny_config(init_checkpoint=path)
    merged = pretrained.load_init_params(config, fresh_params(config))
    assert_trees_equal(jax.device_get(merged), jax.device_get(params))


# -- configs ---------------------------------------------------------------


@pytest.mark.parametrize('dataset,classes,steps,warmup',
                         [('cifar10', 10, 10_000, 500),
                          ('cifar100', 100, 10_000, 500),
                          ('oxford_iiit_pet', 37, 500, 25),
                          ('oxford_flowers102', 102, 500, 25),
                          ('imagenet2012', 1000, 20_000, 500)])
def test_finetune_configs(dataset, classes, steps, warmup):
  c = finetune.get_config(f'B_16,{dataset}')
  assert c.model.model_name == 'Mixer-B/16'
  assert c.model.num_classes == classes and c.num_train_steps == steps
  assert (c.optimizer, c.momentum, c.batch_size, c.grad_clip_norm,
          c.lr_schedule, c.weight_decay) == ('sgd', 0.9, 512, 1.0, 'cosine',
                                             0.0)
  # 500 warmup steps (5% of the 500-step Pets and Flowers runs).
  assert optim.resolve_warmup(c, steps)[0] == warmup
  assert c.image_size == 224 and c.model.tokens_mlp_dim == 384
  assert c.init_checkpoint == ''
  hi = finetune.get_config(f'Mixer-B_16,{dataset},448')
  assert hi.image_size == 448 and hi.model.tokens_mlp_dim == 4 * 384
  models.build_model(hi.model).check((448, 448, 3))


def test_finetune_config_bad_arguments():
  with pytest.raises(ValueError, match='MODEL,DATASET'):
    finetune.get_config('B_16')
  with pytest.raises(ValueError, match='unknown fine-tuning dataset'):
    finetune.get_config('B_16,mnist')
  with pytest.raises(ValueError, match='integer'):
    finetune.get_config('B_16,cifar10,384')
  assert isinstance(finetune.get_config(), ml_collections.ConfigDict)
