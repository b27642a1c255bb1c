"""The BiT ResNet baseline (mixer/resnet.py): BiT's architecture, selected by
`model.arch`, and the tools that must take it (summary, FLOPs, few-shot)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import cifar10_resnet_cpu
from configs import models as model_configs
from mixer import flops
from mixer import models
from mixer import resnet
from mixer import summary
from mixer.evaluators import fewshot


def _params(model, size=32):
  # Jitted: an eager init compiles each of the ResNet's ops on its own.
  return jax.jit(lambda x: model.init(jax.random.PRNGKey(0), x, train=False))(
      jnp.zeros((1, size, size, 3)))['params']


def _count(tree):
  return sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(tree))


def _bottleneck_params(cin, width, stride):
  """Params of one pre-activation unit, by hand: GN on the input, three
  bias-free convs, a projection when the shape changes, two inner GNs."""
  out = 4 * width
  n = 2 * cin + cin * width + 9 * width * width + width * out + 4 * width
  return n + (cin * out if cin != out or stride != 1 else 0)


def test_arch_selects_the_resnet_and_mixer_configs_are_unchanged():
  config = cifar10_resnet_cpu.get_config()
  model = models.build_model(config.model)
  assert isinstance(model, resnet.BitResNet)
  assert 'arch' not in model_configs.seed000('baseline')
  assert isinstance(models.build_model(model_configs.seed000('baseline')),
                    models.MlpMixer)
  with pytest.raises(ValueError, match='model.arch must be one of'):
    models.build_model({**config.model.to_dict(), 'arch': 'vit'})
  with pytest.raises(ValueError, match='for arch bit_resnet: model.patches'):
    models.build_model({**config.model.to_dict(), 'patches': 4})
  # The CPU baseline's parameters, counted by hand: 3x3 root, one unit per
  # stage (widths 16, 32, 64, 128), final GN, head.
  m = config.model
  expected = 27 * m.width
  cin = m.width
  for i in range(4):
    expected += _bottleneck_params(cin, m.width * 2 ** i, 1 if i == 0 else 2)
    cin = 4 * m.width * 2 ** i
  expected += 2 * cin + cin * 10 + 10
  assert _count(_params(model)) == expected
  # mixer.summary prints the same total.
  text = summary.summarize(config)
  assert text.splitlines()[-1] == f'Total params: {expected:,}'
  assert 'stage4_unit1/conv_proj (StdConv)' in text


def test_bit_r50x1_is_bits_resnet50():
  model = models.build_model(model_configs.bit_paper('R50x1'))
  params = jax.eval_shape(lambda: _params(model, 224))
  assert _count(params) == 25_549_352  # BiT-R50x1 with a 1000-class head.
  assert [k for k in params if k.startswith('stage')][-1] == 'stage4_unit3'
  assert params['root']['kernel'].shape == (7, 7, 3, 64)
  assert model.hidden_dim == 2048


def test_pre_activation_units_with_standardised_weights():
  config = cifar10_resnet_cpu.get_config()
  model = models.build_model(config.model)
  params = _params(model)
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 32, 32, 3))
  apply = jax.jit(lambda p, x: model.apply({'params': p}, x))
  assert float(jnp.abs(apply(params, x)).max()) == 0.0  # Zero head.
  params['head']['kernel'] = jax.random.normal(
      jax.random.PRNGKey(2), params['head']['kernel'].shape)
  logits = apply(params, x)
  # Weight standardisation: a conv kernel scaled and shifted per output
  # channel computes the same function.
  conv = params['stage2_unit1']['conv2']['kernel']
  shifted = jax.tree_util.tree_map(lambda a: a, params)
  shifted['stage2_unit1']['conv2']['kernel'] = 3.0 * conv + 0.1 * jnp.arange(
      conv.shape[-1], dtype=conv.dtype) / conv.shape[-1]
  np.testing.assert_allclose(apply(shifted, x), logits, rtol=2e-5, atol=2e-5)
  # A change that is not per output channel does change it.
  other = jax.tree_util.tree_map(lambda a: a, params)
  other['stage2_unit1']['conv2']['kernel'] = conv + 0.1 * jnp.arange(
      conv.shape[0], dtype=conv.dtype)[:, None, None, None]
  assert float(jnp.abs(apply(other, x) - logits).max()) > 1e-2
  # Pre-activation: the identity path of a unit is its raw input.
  unit = resnet.ResidualUnit(64, num_groups=8)
  y = jax.random.normal(jax.random.PRNGKey(3), (1, 8, 8, 256))
  up = jax.jit(unit.init)(jax.random.PRNGKey(4), y)
  up = jax.tree_util.tree_map(jnp.zeros_like, up)  # The branch outputs 0.
  np.testing.assert_array_equal(jax.jit(unit.apply)(up, y), y)
  # Headless: the pooled features, as few-shot extracts them.
  features = jax.jit(fewshot.headless(model).apply)(
      {'params': fewshot.strip_head(params)}, x)
  assert features.shape == (2, model.hidden_dim)


def test_matmul_convolutions_are_xlas():
  """conv_impl 'matmul' (a CPU's default) computes XLA's convolution, also
  strided, padded and 7x7, with the same gradients."""
  assert resnet.conv2d.__doc__ and models.build_model(
      model_configs.cifar_resnet()).conv_impl == 'auto'
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 11, 12, 5))
  conv = jax.jit(resnet.conv2d, static_argnums=(2, 3, 4))
  for k, stride, padding in ((1, 1, 'SAME'), (1, 2, 'SAME'), (3, 1, 'SAME'),
                             (3, 2, 'SAME'), (7, 2, 3)):
    kernel = jax.random.normal(jax.random.PRNGKey(k), (k, k, 5, 4))
    outs = {impl: conv(x, kernel, stride, padding, impl)
            for impl in ('xla', 'matmul', 'auto')}
    np.testing.assert_allclose(outs['matmul'], outs['xla'], atol=1e-4)
    np.testing.assert_array_equal(outs['auto'], outs['matmul'])  # A CPU.
    grads = {impl: jax.jit(jax.grad(lambda w, impl=impl: jnp.sum(jnp.sin(
        resnet.conv2d(x, w, stride, padding, impl)))))(kernel)
             for impl in ('xla', 'matmul')}
    np.testing.assert_allclose(grads['matmul'], grads['xla'], atol=1e-3)
  config = cifar10_resnet_cpu.get_config()
  model = models.build_model(config.model)
  params = _params(model)
  params['head']['kernel'] = jnp.ones_like(params['head']['kernel'])
  images = jax.random.normal(jax.random.PRNGKey(5), (2, 32, 32, 3))
  np.testing.assert_allclose(
      jax.jit(model.clone(conv_impl='xla').apply)({'params': params}, images),
      jax.jit(model.apply)({'params': params}, images), rtol=1e-4, atol=1e-4)


def test_check_names_the_field():
  bad = [({'conv_impl': 'fft'}, 'model.conv_impl must be one of'),
         ({'num_groups': 12}, 'num_groups 12 must divide'),
         ({'root': 'tiny'}, 'model.root must be one of'),
         ({'depth': ()}, 'model.depth must be'),
         ({'width': 0}, 'model.width must be a positive')]
  for fields, message in bad:
    model = models.build_model(model_configs.cifar_resnet(**fields))
    with pytest.raises(ValueError, match=message):
      model.check((32, 32, 3))


@pytest.mark.parametrize('variant,size', [('cifar', 32), ('R50x1', 64)])
def test_analytic_flops_match_xla_cost_analysis(variant, size):
  config = cifar10_resnet_cpu.get_config()
  if variant != 'cifar':
    config.model = model_configs.bit_paper(variant)
  config.image_size = size
  model = models.build_model(config.model)
  x = jnp.zeros((1, size, size, 3))
  params = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x))
  analysis = jax.jit(lambda p, x: model.apply(p, x)).lower(
      params, x).compile().cost_analysis()
  analysis = analysis[0] if isinstance(analysis, list) else analysis
  analytic = 2 * flops.forward_macs_per_image(config)
  # XLA also counts GroupNorm, ReLU, pooling and the residual adds.
  assert 0.97 * analytic <= analysis['flops'] <= 1.25 * analytic
