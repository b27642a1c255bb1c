"""MLP-Mixer (Tolstikhin et al., 2021) in Flax linen.

The default model is exactly the paper's reference code (Appendix E, and
google-research/vision_transformer `vit_jax/models_mixer.py`): the same module
structure, parameter names, shapes and initialisers, so an official `.npz`
checkpoint maps one-to-one onto `MlpMixer(...).init(...)['params']` and the
same parameters give the same logits.

Parameter tree (B = num_blocks)::

    stem/{kernel,bias}                                  Conv, kernel = stride = patch
    MixerBlock_{i}/LayerNorm_0/{scale,bias}             i in [0, B)
    MixerBlock_{i}/token_mixing/Dense_{0,1}/{kernel,bias}
    MixerBlock_{i}/LayerNorm_1/{scale,bias}
    MixerBlock_{i}/channel_mixing/Dense_{0,1}/{kernel,bias}
    pre_head_layer_norm/{scale,bias}                    (unless use_pre_head_norm=False)
    head/{kernel,bias}                                  zero-initialised (unless num_classes=0)

Flax defaults are kept on purpose (PyTorch ports differ): `nn.gelu` is the
tanh approximation, LayerNorm epsilon is 1e-6, Dense/Conv kernels are
lecun-normal and biases zero; the head kernel is zero.

Opt-in extensions (all off by default, none adds or renames a parameter):
dropout inside the MLPs, stochastic depth ramping linearly over blocks (with
timm's rescaling of kept branches, or big_vision's plain 0/1 mask), ReLU
instead of GELU, no pre-head LayerNorm, rectangular patches, a compute dtype
(e.g. bfloat16 activations with float32 parameters), a constant initial head
bias (big_vision's `init_head_bias` for the sigmoid loss) and
`num_classes=0` for a headless feature extractor returning the pooled
representation.

`remat_activation` (on by default) recomputes the activation in the backward
pass (`jax.checkpoint`) instead of keeping its intermediates: bit-identical
values, and for a training step of the CIFAR baseline on a CPU 20% less of
XLA's temporary memory (768 of 3,834 MiB at batch 512: one [batch, tokens,
D_C] and one [batch, C, D_S] float32 array per block) at no measured cost
in speed (docs/benchmarks.md). Off (`model.remat_activation=False`) keeps
them, for a device where memory is plentiful and the recomputation is not
free.
"""

from typing import Any, Callable, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from mixer import resnet

ACTIVATIONS = {
    # Flax's default GELU is the tanh approximation, as in the reference code.
    'gelu': nn.gelu,
    'gelu_exact': lambda x: nn.gelu(x, approximate=False),
    'relu': nn.relu,
}
DTYPES = ('float32', 'bfloat16', 'float16')
# `config.model.arch`: absent or 'mixer' for MlpMixer; 'bit_resnet' for the
# convolutional baseline of the paper's analyses (mixer/resnet.py).
ARCHS = ('mixer', 'bit_resnet')


def patch_hw(patches: Any) -> Tuple[int, int]:
  """Returns (h, w) from an int, an (h, w) pair, or vit_jax's `patches.size`."""
  size = patches
  if hasattr(patches, 'size') and not isinstance(patches, (int, tuple, list)):
    size = patches.size
  elif isinstance(patches, dict):
    size = patches['size']
  if isinstance(size, int):
    return (size, size)
  size = tuple(int(s) for s in size)
  if len(size) != 2:
    raise ValueError(f'model.patches.size must be an int or (h, w), got {size}')
  return size


def input_shape(config: Any) -> Tuple[int, int, int]:
  """(h, w, c) of one model input, from an experiment config's
  `image_size` (int or (h, w)) and `channels` (default 3)."""
  size = config.image_size
  h, w = (size, size) if isinstance(size, int) else tuple(size)
  return (int(h), int(w), int(config.get('channels', 3)))


def get_activation(name: str) -> Callable[[jnp.ndarray], jnp.ndarray]:
  if name not in ACTIVATIONS:
    raise ValueError(f'model.activation must be one of {sorted(ACTIVATIONS)}, '
                     f'got {name!r}')
  return ACTIVATIONS[name]


class MlpBlock(nn.Module):
  """Dense -> activation -> Dense, back to the input width.

  With `dropout_rate > 0` dropout follows the activation and the second Dense
  (as in timm's `Mlp`); it has no parameters, so the tree is unchanged.
  """
  mlp_dim: int
  activation: str = 'gelu'
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32
  remat_activation: bool = True

  @nn.compact
  def __call__(self, x, *, deterministic: bool = True):
    y = nn.Dense(self.mlp_dim, dtype=self.dtype)(x)
    activation = get_activation(self.activation)
    if self.remat_activation:  # Recomputed in the backward pass.
      activation = jax.checkpoint(activation)
    y = activation(y)
    y = nn.Dropout(self.dropout_rate)(y, deterministic=deterministic)
    y = nn.Dense(x.shape[-1], dtype=self.dtype)(y)
    return nn.Dropout(self.dropout_rate)(y, deterministic=deterministic)


def drop_path(x: jnp.ndarray, rate: float, deterministic: bool,
              rng: Optional[jax.Array], scale: bool = True) -> jnp.ndarray:
  """Stochastic depth: drops a residual branch per example.

  With `scale` (timm's DropPath) kept branches are multiplied by
  1 / (1 - rate), so a branch's expected value is the branch itself; without
  (big_vision's `_stoch_depth_mask`, what the paper's models were trained
  with) the branch is multiplied by a 0/1 mask and kept branches are left as
  they are. Either way the inference model (`deterministic=True`) is the
  unchanged branch.
  """
  if deterministic or rate == 0.0:
    return x
  keep = 1.0 - rate
  shape = (x.shape[0],) + (1,) * (x.ndim - 1)
  mask = jax.random.bernoulli(rng, keep, shape)
  return jnp.where(mask, x / keep if scale else x, jnp.zeros_like(x))


class MixerBlock(nn.Module):
  """One Mixer layer: token mixing then channel mixing, each pre-norm residual.

  `tokens_mlp_dim` (D_S) is the hidden width of the MLP acting along the token
  (patch) axis; `channels_mlp_dim` (D_C) the one acting along channels.
  """
  tokens_mlp_dim: int
  channels_mlp_dim: int
  activation: str = 'gelu'
  dropout_rate: float = 0.0
  stoch_depth_rate: float = 0.0
  dtype: Any = jnp.float32
  stoch_depth_scale: bool = True
  remat_activation: bool = True

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    deterministic = not train
    mlp = lambda dim, name: MlpBlock(dim, self.activation, self.dropout_rate,
                                     self.dtype, self.remat_activation,
                                     name=name)
    rng = lambda: (self.make_rng('dropout')
                   if train and self.stoch_depth_rate > 0 else None)
    y = nn.LayerNorm(dtype=self.dtype)(x)
    y = jnp.swapaxes(y, 1, 2)
    y = mlp(self.tokens_mlp_dim, 'token_mixing')(y, deterministic=deterministic)
    y = jnp.swapaxes(y, 1, 2)
    drop = lambda y: drop_path(y, self.stoch_depth_rate, deterministic, rng(),
                               self.stoch_depth_scale)
    x = x + drop(y)
    y = nn.LayerNorm(dtype=self.dtype)(x)
    y = mlp(self.channels_mlp_dim, 'channel_mixing')(
        y, deterministic=deterministic)
    return x + drop(y)


class MlpMixer(nn.Module):
  """Mixer architecture.

  Attributes:
    patches: patch size: an int, (h, w), or an object/dict with `.size` as in
      vit_jax configs. Non-square patches are an extension.
    num_classes: size of the zero-initialised head; 0 returns the pooled
      features (a headless feature extractor).
    num_blocks, hidden_dim, tokens_mlp_dim, channels_mlp_dim: the paper's
      depth, C, D_S and D_C.
    activation: 'gelu' (tanh approximation, the paper), 'gelu_exact', 'relu'.
    dropout_rate: dropout inside every MLP (0 = the paper's inference model).
    stoch_depth: stochastic depth of the last block; block i uses
      i / (num_blocks - 1) * stoch_depth (linear ramp, as paper/big_vision).
    stoch_depth_scale: rescale kept branches by 1 / (1 - rate) (timm); False
      is big_vision's plain mask (see `drop_path`).
    head_bias_init: the head's initial bias (0, the paper's fine-tuning;
      big_vision starts sigmoid-loss pre-training at -6.9, about
      log(1/1000)).
    use_pre_head_norm: the paper has a LayerNorm before pooling.
    dtype: computation dtype (parameters stay float32).
    remat_activation: recompute the MLP activation in the backward pass
      instead of storing it (module docstring); no effect on values.
  """
  patches: Any
  num_classes: int
  num_blocks: int
  hidden_dim: int
  tokens_mlp_dim: int
  channels_mlp_dim: int
  activation: str = 'gelu'
  dropout_rate: float = 0.0
  stoch_depth: float = 0.0
  use_pre_head_norm: bool = True
  dtype: Any = jnp.float32
  model_name: Optional[str] = None
  stoch_depth_scale: bool = True
  head_bias_init: float = 0.0
  remat_activation: bool = True

  def check(self, image_shape: Sequence[int]) -> None:
    """Raises one ValueError naming the bad field; `image_shape` is (h, w, c)."""
    for field in ('num_blocks', 'hidden_dim', 'tokens_mlp_dim',
                  'channels_mlp_dim'):
      value = getattr(self, field)
      if not isinstance(value, int) or value <= 0:
        raise ValueError(f'model.{field} must be a positive integer, '
                         f'got {value!r}')
    if not isinstance(self.num_classes, int) or self.num_classes < 0:
      raise ValueError('model.num_classes must be an integer >= 0, '
                       f'got {self.num_classes!r}')
    ph, pw = patch_hw(self.patches)
    if ph <= 0 or pw <= 0:
      raise ValueError(f'model.patches.size must be positive, got {(ph, pw)}')
    h, w = image_shape[0], image_shape[1]
    if h % ph or w % pw:
      raise ValueError(f'model.patches.size {(ph, pw)} does not divide the '
                       f'image size {(h, w)}')
    for field in ('dropout_rate', 'stoch_depth'):
      value = getattr(self, field)
      if not 0.0 <= value < 1.0:
        raise ValueError(f'model.{field} must be in [0, 1), got {value!r}')
    get_activation(self.activation)

  @nn.compact
  def __call__(self, inputs, *, train: bool):
    self.check(inputs.shape[1:])
    ph, pw = patch_hw(self.patches)
    x = nn.Conv(self.hidden_dim, (ph, pw), strides=(ph, pw), dtype=self.dtype,
                name='stem')(inputs)
    n, h, w, c = x.shape
    x = jnp.reshape(x, (n, h * w, c))
    for i in range(self.num_blocks):
      rate = self.stoch_depth * i / max(self.num_blocks - 1, 1)
      x = MixerBlock(self.tokens_mlp_dim, self.channels_mlp_dim,
                     self.activation, self.dropout_rate, rate, self.dtype,
                     self.stoch_depth_scale, self.remat_activation,
                     name=f'MixerBlock_{i}')(x, train=train)
    if self.use_pre_head_norm:
      x = nn.LayerNorm(dtype=self.dtype, name='pre_head_layer_norm')(x)
    x = jnp.mean(x, axis=1)
    if self.num_classes:
      x = nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros,
                   bias_init=nn.initializers.constant(self.head_bias_init),
                   dtype=self.dtype, name='head')(x)
    return x


def _dtype_of(kwargs):
  """`kwargs` with a `dtype` name ('bfloat16') turned into the dtype."""
  if isinstance(kwargs.get('dtype'), str):
    if kwargs['dtype'] not in DTYPES:
      raise ValueError(f'model.dtype must be one of {", ".join(DTYPES)}, got '
                       f'{kwargs["dtype"]!r}')
    kwargs['dtype'] = jnp.dtype(kwargs['dtype'])
  return kwargs


def build_model(model_config: Any, **overrides) -> MlpMixer:
  """Builds `MlpMixer` from `config.model` (a ConfigDict or dict).

  `model_config.dtype` may be a string ('float32', 'bfloat16'). Unknown fields
  raise a ValueError naming them. A config with `arch='bit_resnet'` builds
  the convolutional baseline instead (`mixer.resnet.BitResNet`); Mixer
  configs have no `arch` field.
  """
  kwargs = dict(model_config.to_dict() if hasattr(model_config, 'to_dict')
                else model_config)
  kwargs.update(overrides)
  arch = kwargs.pop('arch', 'mixer')
  if arch not in ARCHS:
    raise ValueError(f'model.arch must be one of {", ".join(ARCHS)}, got '
                     f'{arch!r}')
  if arch == 'bit_resnet':
    return resnet.build(_dtype_of(kwargs))
  fields = set(MlpMixer.__dataclass_fields__) - {'parent', 'name'}
  unknown = sorted(set(kwargs) - fields)
  if unknown:
    raise ValueError(f'unknown model config field(s): '
                     f'{", ".join("model." + u for u in unknown)}')
  kwargs = _dtype_of(kwargs)
  if 'patches' in kwargs:
    kwargs['patches'] = patch_hw(kwargs['patches'])
  return MlpMixer(**kwargs)
