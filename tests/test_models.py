"""The model is the paper's reference code; extensions are opt-in."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import models as model_specs
from mixer import models


# The paper's reference listing (Appendix E / vit_jax models_mixer.py), kept
# verbatim in spirit as an independent oracle for names, shapes and logits.
class ref:  # pylint: disable=invalid-name
  """Namespace: same class names as the reference, so same auto-names."""

  class MlpBlock(nn.Module):
    mlp_dim: int

    @nn.compact
    def __call__(self, x):
      y = nn.Dense(self.mlp_dim)(x)
      y = nn.gelu(y)
      return nn.Dense(x.shape[-1])(y)

  class MixerBlock(nn.Module):
    tokens_mlp_dim: int
    channels_mlp_dim: int

    @nn.compact
    def __call__(self, x):
      y = nn.LayerNorm()(x)
      y = jnp.swapaxes(y, 1, 2)
      y = ref.MlpBlock(self.tokens_mlp_dim, name='token_mixing')(y)
      y = jnp.swapaxes(y, 1, 2)
      x = x + y
      y = nn.LayerNorm()(x)
      return x + ref.MlpBlock(self.channels_mlp_dim, name='channel_mixing')(y)

  class MlpMixer(nn.Module):
    patches: Any
    num_classes: int
    num_blocks: int
    hidden_dim: int
    tokens_mlp_dim: int
    channels_mlp_dim: int

    @nn.compact
    def __call__(self, inputs, *, train):
      del train
      x = nn.Conv(self.hidden_dim, self.patches, strides=self.patches,
                  name='stem')(inputs)
      n, h, w, c = x.shape
      x = jnp.reshape(x, (n, h * w, c))
      for _ in range(self.num_blocks):
        x = ref.MixerBlock(self.tokens_mlp_dim, self.channels_mlp_dim)(x)
      x = nn.LayerNorm(name='pre_head_layer_norm')(x)
      x = jnp.mean(x, axis=1)
      return nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros,
                      name='head')(x)


TINY = dict(patches=(4, 4), num_classes=7, num_blocks=2, hidden_dim=24,
            tokens_mlp_dim=12, channels_mlp_dim=40)


def _flat_shapes(params):
  return {'/'.join(str(getattr(k, 'key', k)) for k in path): v.shape
          for path, v in jax.tree_util.tree_leaves_with_path(params)}


def _image(n=3, h=16, w=16, c=3, seed=0):
  return jax.random.normal(jax.random.PRNGKey(seed), (n, h, w, c))


def _randomize(params, seed=1):
  """Non-zero values everywhere (the head starts at zero)."""
  leaves, tree = jax.tree_util.tree_flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
  return jax.tree_util.tree_unflatten(
      tree, [0.2 * jax.random.normal(k, l.shape) for k, l in zip(keys, leaves)])


def test_same_tree_and_logits_as_reference():
  x = _image()
  reference = ref.MlpMixer(**TINY)
  ours = models.MlpMixer(**TINY)
  ref_params = reference.init(jax.random.PRNGKey(0), x, train=False)['params']
  our_params = ours.init(jax.random.PRNGKey(0), x, train=False)['params']
  assert _flat_shapes(ref_params) == _flat_shapes(our_params)
  # Same key -> same initial values (same initialisers, same order).
  jax.tree_util.tree_map(np.testing.assert_array_equal, ref_params, our_params)
  params = _randomize(ref_params)
  np.testing.assert_allclose(
      ours.apply({'params': params}, x, train=False),
      reference.apply({'params': params}, x, train=False), rtol=1e-6, atol=1e-6)


def test_reference_parameter_names():
  params = models.MlpMixer(**TINY).init(
      jax.random.PRNGKey(0), _image(), train=False)['params']
  shapes = _flat_shapes(params)
  s, c, ds, dc = 16, 24, 12, 40  # 16x16 image, 4x4 patches -> 16 tokens.
  expected = {'stem/kernel': (4, 4, 3, c), 'stem/bias': (c,),
              'pre_head_layer_norm/scale': (c,),
              'pre_head_layer_norm/bias': (c,),
              'head/kernel': (c, 7), 'head/bias': (7,)}
  for i in range(2):
    b = f'MixerBlock_{i}'
    expected.update({
        f'{b}/LayerNorm_0/scale': (c,), f'{b}/LayerNorm_0/bias': (c,),
        f'{b}/LayerNorm_1/scale': (c,), f'{b}/LayerNorm_1/bias': (c,),
        # D_S acts on the token axis, D_C on channels.
        f'{b}/token_mixing/Dense_0/kernel': (s, ds),
        f'{b}/token_mixing/Dense_0/bias': (ds,),
        f'{b}/token_mixing/Dense_1/kernel': (ds, s),
        f'{b}/token_mixing/Dense_1/bias': (s,),
        f'{b}/channel_mixing/Dense_0/kernel': (c, dc),
        f'{b}/channel_mixing/Dense_0/bias': (dc,),
        f'{b}/channel_mixing/Dense_1/kernel': (dc, c),
        f'{b}/channel_mixing/Dense_1/bias': (c,),
    })
  assert shapes == expected


def test_default_initialisers():
  params = models.MlpMixer(**TINY).init(
      jax.random.PRNGKey(0), _image(), train=False)['params']
  assert not np.any(params['head']['kernel'])
  assert not np.any(params['head']['bias'])
  assert not np.any(params['MixerBlock_0']['token_mixing']['Dense_0']['bias'])
  np.testing.assert_array_equal(
      params['MixerBlock_0']['LayerNorm_0']['scale'], np.ones(24))
  # lecun_normal: std = 1/sqrt(fan_in) (truncated normal).
  k = params['MixerBlock_0']['channel_mixing']['Dense_0']['kernel']
  assert abs(float(np.std(k)) * np.sqrt(24) - 1.0) < 0.15


def test_flax_defaults_gelu_tanh_and_layernorm_eps():
  assert models.ACTIVATIONS['gelu'] is nn.gelu
  x = jnp.array([1.0])
  assert float(models.ACTIVATIONS['gelu'](x)[0]) != float(
      models.ACTIVATIONS['gelu_exact'](x)[0])
  assert nn.LayerNorm().epsilon == 1e-6


def test_output_shape_and_dtype():
  x = _image(n=5)
  m = models.MlpMixer(**TINY)
  params = m.init(jax.random.PRNGKey(0), x, train=False)
  out = m.apply(params, x, train=False)
  assert out.shape == (5, 7) and out.dtype == jnp.float32
  bf = models.MlpMixer(**TINY, dtype=jnp.bfloat16)
  pbf = bf.init(jax.random.PRNGKey(0), x, train=False)
  assert jax.tree_util.tree_leaves(pbf)[0].dtype == jnp.float32
  assert bf.apply(pbf, x, train=False).dtype == jnp.bfloat16
  headless = models.MlpMixer(**{**TINY, 'num_classes': 0})
  ph = headless.init(jax.random.PRNGKey(0), x, train=False)
  assert 'head' not in ph['params']
  assert headless.apply(ph, x, train=False).shape == (5, 24)


def test_eval_is_deterministic_and_extensions_off_change_nothing():
  x = _image()
  paper = models.MlpMixer(**TINY)
  params = _randomize(paper.init(jax.random.PRNGKey(0), x, train=False))
  out = paper.apply(params, x, train=False)
  np.testing.assert_array_equal(out, paper.apply(params, x, train=False))
  # Training mode with every extension off is the same function.
  np.testing.assert_array_equal(
      out, paper.apply(params, x, train=True,
                       rngs={'dropout': jax.random.PRNGKey(3)}))
  # Dropout / stochastic depth configured but train=False: unchanged.
  ext = models.MlpMixer(**TINY, dropout_rate=0.3, stoch_depth=0.5)
  np.testing.assert_array_equal(out, ext.apply(params, x, train=False))
  # ... and active in training.
  y = ext.apply(params, x, train=True, rngs={'dropout': jax.random.PRNGKey(3)})
  assert not np.allclose(out, y)


def test_stochastic_depth_ramps_linearly_over_blocks():
  rates = {}

  def record(next_fun, args, kwargs, context):
    if isinstance(context.module, models.MixerBlock):
      rates[context.module.name] = context.module.stoch_depth_rate
    return next_fun(*args, **kwargs)

  m = models.MlpMixer(**{**TINY, 'num_blocks': 5}, stoch_depth=0.2)
  with nn.intercept_methods(record):
    m.init(jax.random.PRNGKey(0), _image(), train=False)
  assert [rates[f'MixerBlock_{i}'] for i in range(5)] == pytest.approx(
      [0.0, 0.05, 0.1, 0.15, 0.2])


def test_drop_path_per_example_and_unbiased():
  x = jnp.ones((20000, 3, 2))
  y = models.drop_path(x, 0.25, False, jax.random.PRNGKey(0))
  per_example = np.asarray(y[:, 0, 0])
  np.testing.assert_allclose(
      np.unique(per_example), [0.0, 1.0 / 0.75], rtol=1e-6)
  assert np.all(y == y[:, :1, :1])  # whole example kept or dropped
  assert abs(per_example.mean() - 1.0) < 0.03


def test_relu_rectangular_patches_and_no_pre_head_norm():
  x = _image(h=16, w=32)
  m = models.MlpMixer(**{**TINY, 'patches': (4, 8)}, activation='relu',
                      use_pre_head_norm=False)
  params = m.init(jax.random.PRNGKey(0), x, train=False)['params']
  assert 'pre_head_layer_norm' not in params
  assert params['stem']['kernel'].shape == (4, 8, 3, 24)
  assert params['MixerBlock_0']['token_mixing']['Dense_0']['kernel'].shape == (
      16, 12)  # (16/4) * (32/8) = 16 tokens
  assert m.apply({'params': params}, x, train=False).shape == (3, 7)


@pytest.mark.parametrize('field,value,match', [
    ('patches', (5, 5), r'model\.patches\.size .* does not divide'),
    ('hidden_dim', 0, r'model\.hidden_dim must be a positive'),
    ('tokens_mlp_dim', -3, r'model\.tokens_mlp_dim must be a positive'),
    ('channels_mlp_dim', 0, r'model\.channels_mlp_dim must be a positive'),
    ('num_blocks', 0, r'model\.num_blocks must be a positive'),
    ('activation', 'swish', r'model\.activation must be one of'),
    ('dropout_rate', 1.5, r'model\.dropout_rate must be in'),
])
def test_bad_model_config_raises_one_clear_error(field, value, match):
  m = models.MlpMixer(**{**TINY, field: value})
  with pytest.raises(ValueError, match=match):
    m.init(jax.random.PRNGKey(0), _image(), train=False)


def test_build_model_from_config():
  cfg = model_specs.seed001()
  m = models.build_model(cfg)
  assert m.patches == (4, 8) and not m.use_pre_head_norm
  m = models.build_model(model_specs.seed002(dtype='bfloat16'))
  assert m.dtype == jnp.bfloat16 and m.activation == 'relu'
  cfg = model_specs.seed000('baseline')
  cfg.unlock() if hasattr(cfg, 'unlock') else None
  bad = cfg.to_dict()
  bad['hidden_size'] = 3
  with pytest.raises(ValueError, match='model.hidden_size'):
    models.build_model(bad)


@pytest.mark.parametrize('scale', [True, False], ids=['timm', 'big_vision'])
def test_stochastic_depth_against_a_hand_computation(scale, monkeypatch):
  # One MixerBlock in training mode at rate 0.5, recomputed by hand from its
  # own parameters: each residual branch is multiplied by a per-example 0/1
  # mask (the model's own draws, read back from `drop_path`) and divided by
  # (1 - rate) only with timm's scaling; inference is the plain block.
  rate = 0.5
  x = jnp.asarray(np.random.default_rng(0).normal(size=(8, 16, 4)),
                  jnp.float32)
  block = models.MixerBlock(tokens_mlp_dim=6, channels_mlp_dim=10,
                            stoch_depth_rate=rate, stoch_depth_scale=scale)
  params = block.init(jax.random.PRNGKey(0), x)['params']
  calls, drop_path = [], models.drop_path

  def spy(y, r, deterministic, rng, s=True):
    out = drop_path(y, r, deterministic, rng, s)
    calls.append((np.asarray(y), np.asarray(out)))
    return out

  monkeypatch.setattr(models, 'drop_path', spy)
  got = block.apply({'params': params}, x, train=True,
                    rngs={'dropout': jax.random.PRNGKey(5)})

  def mlp(p, y):
    h = nn.gelu(y @ p['Dense_0']['kernel'] + p['Dense_0']['bias'])
    return h @ p['Dense_1']['kernel'] + p['Dense_1']['bias']

  def norm(p, y):
    mean = y.mean(-1, keepdims=True)
    var = ((y - mean) ** 2).mean(-1, keepdims=True)
    return (y - mean) / jnp.sqrt(var + 1e-6) * p['scale'] + p['bias']

  factor = 1 / (1 - rate) if scale else 1.0
  (y0, out0), (y1, out1) = calls
  token = jnp.swapaxes(mlp(params['token_mixing'], jnp.swapaxes(
      norm(params['LayerNorm_0'], x), 1, 2)), 1, 2)
  np.testing.assert_allclose(y0, token, rtol=1e-5, atol=1e-6)
  kept = [np.all(out != 0, axis=(1, 2)) for out in (out0, out1)]
  for y, out, k in ((y0, out0, kept[0]), (y1, out1, kept[1])):
    assert 0 < k.sum() < 8  # Both kinds of example occur.
    np.testing.assert_allclose(out[k], y[k] * factor, rtol=1e-6)
    assert not np.any(out[~k])
  h = x + jnp.where(kept[0][:, None, None], token * factor, 0.0)
  channel = mlp(params['channel_mixing'], norm(params['LayerNorm_1'], h))
  np.testing.assert_allclose(y1, channel, rtol=1e-5, atol=1e-6)
  want = h + jnp.where(kept[1][:, None, None], channel * factor, 0.0)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  # Inference: the plain block, whichever scaling.
  plain = models.MixerBlock(tokens_mlp_dim=6, channels_mlp_dim=10)
  np.testing.assert_array_equal(
      block.apply({'params': params}, x, train=False),
      plain.apply({'params': params}, x, train=False))


def test_head_bias_init_and_unchanged_tree():
  m = models.MlpMixer(**TINY, head_bias_init=-6.9)
  params = m.init(jax.random.PRNGKey(0), _image(n=1), train=False)['params']
  np.testing.assert_array_equal(params['head']['bias'], np.full(7, -6.9,
                                                                np.float32))
  assert not np.any(params['head']['kernel'])
  plain = models.MlpMixer(**TINY).init(jax.random.PRNGKey(0), _image(n=1),
                                       train=False)['params']
  assert _flat_shapes(params) == _flat_shapes(plain)
  logits = m.apply({'params': params}, _image(n=2), train=False)
  np.testing.assert_allclose(logits, -6.9, rtol=1e-6)
