"""A BiT ResNet (v2) in Flax: the convolutional baseline of the paper's analyses.

The paper compares Mixer with BiT ResNets (Kolesnikov et al., 2020): ResNet-50
in the input-permutation study (§3.4, Fig. 4), ResNet-152x2 in the data-size
study (§3.3, Fig. 2 right). This is that architecture, as big_vision's
`models/bit_paper.py` builds it: pre-activation bottleneck units
(GroupNorm -> ReLU -> 1x1 conv -> GroupNorm -> ReLU -> 3x3 conv (stride) ->
GroupNorm -> ReLU -> 1x1 conv to 4x the unit's width, plus the identity or a
1x1 projection of the pre-activated input), every convolution weight-
standardised and without bias, a final GroupNorm + ReLU, global average
pooling and a zero-initialised head.

It is used only as the baseline: selected by `config.model.arch =
'bit_resnet'` (`mixer.models.build_model`), with `configs.models.bit_resnet`
building the config. Two roots: 'imagenet' (7x7 stride-2 conv + 3x3 stride-2
max-pool, BiT's) and 'cifar' (one 3x3 stride-1 conv, for 32x32 images). No
pretrained BiT weights are loaded (the Mixer's official `.npz` loading is
Mixer-only); GroupNorm is Flax's (epsilon 1e-5), which BiT's released
weights would need replaced.

Parameter tree: root/kernel, stage{i}_unit{j}/{gn1,gn2,gn3}/{scale,bias},
stage{i}_unit{j}/{conv1,conv2,conv3,conv_proj}/kernel (i, j from 1),
pre_head_norm/{scale,bias}, head/{kernel,bias}.
"""

from typing import Any, Optional, Sequence, Tuple, Union

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp

ROOTS = ('imagenet', 'cifar')
CONV_IMPLS = ('auto', 'xla', 'matmul')


def standardize(w, axis, eps: float = 1e-10):
  """Zero mean, unit variance over `axis` (BiT's weight standardisation)."""
  w = w - jnp.mean(w, axis=axis, keepdims=True)
  return w / jnp.sqrt(jnp.mean(jnp.square(w), axis=axis, keepdims=True) + eps)


def _padding(size: int, kernel: int, stride: int,
             padding: Union[str, int]) -> Tuple[int, int]:
  """(low, high) padding of one spatial axis: 'SAME' as XLA computes it, or
  `padding` pixels on both sides."""
  if padding != 'SAME':
    return int(padding), int(padding)
  out = -(-size // stride)
  total = max((out - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


def conv2d(x, kernel, stride: int, padding: Union[str, int], impl: str):
  """NHWC x HWIO convolution, no bias.

  impl 'xla' is `lax.conv_general_dilated`; 'matmul' gathers the k x k
  shifted (strided) views of the padded input side by side and multiplies
  them with the kernel reshaped to [k * k * C_in, C_out], the same sums.
  'auto' is 'matmul' on a CPU, where XLA computes a convolution's weight
  gradient inside a loop (the train step's `lax.scan` when steps_per_dispatch
  or grad_accum_steps > 1) some 15x slower than outside one (and outside one
  the matmul form is as fast, 216 vs 207 img/s at batch 128), and 'xla'
  elsewhere.
  """
  kh, kw, cin, cout = kernel.shape
  pads = [_padding(x.shape[1], kh, stride, padding),
          _padding(x.shape[2], kw, stride, padding)]
  if impl == 'auto':
    impl = 'matmul' if jax.default_backend() == 'cpu' else 'xla'
  if impl == 'xla':
    return lax.conv_general_dilated(x, kernel, (stride, stride), pads,
                                    dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  if kh == kw == 1 and stride == 1 and pads == [(0, 0), (0, 0)]:
    return jnp.einsum('bhwc,cd->bhwd', x, kernel[0, 0])
  x = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
  ho = (x.shape[1] - kh) // stride + 1
  wo = (x.shape[2] - kw) // stride + 1
  views = [x[:, i:i + stride * (ho - 1) + 1:stride,
             j:j + stride * (wo - 1) + 1:stride, :]
           for i in range(kh) for j in range(kw)]
  patches = jnp.concatenate(views, axis=-1) if len(views) > 1 else views[0]
  return jnp.einsum('bhwk,kd->bhwd', patches,
                    kernel.reshape(kh * kw * cin, cout))


class StdConv(nn.Module):
  """A bias-free convolution whose kernel is standardised per output
  channel (BiT's weight standardisation); its param is `kernel` [k, k,
  C_in, C_out], lecun-normal as Flax's `nn.Conv`."""
  features: int
  kernel_size: int
  stride: int = 1
  padding: Union[str, int] = 'SAME'
  impl: str = 'auto'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    k = self.kernel_size
    kernel = self.param('kernel', nn.initializers.lecun_normal(),
                        (k, k, x.shape[-1], self.features))
    kernel = standardize(kernel, axis=(0, 1, 2)).astype(self.dtype)
    return conv2d(x.astype(self.dtype), kernel, self.stride, self.padding,
                  self.impl)


class ResidualUnit(nn.Module):
  """Pre-activation bottleneck unit: out width 4 * `width`."""
  width: int
  strides: int = 1
  num_groups: int = 32
  dtype: Any = jnp.float32
  conv_impl: str = 'auto'

  @nn.compact
  def __call__(self, x):
    out = 4 * self.width
    conv = lambda f, k, s, name: StdConv(f, k, s, impl=self.conv_impl,
                                         dtype=self.dtype, name=name)
    norm = lambda name: nn.GroupNorm(self.num_groups, epsilon=1e-5,
                                     dtype=self.dtype, name=name)
    y = nn.relu(norm('gn1')(x))
    residual = x
    if x.shape[-1] != out or self.strides != 1:
      residual = conv(out, 1, self.strides, 'conv_proj')(y)
    y = conv(self.width, 1, 1, 'conv1')(y)
    y = nn.relu(norm('gn2')(y))
    y = conv(self.width, 3, self.strides, 'conv2')(y)
    y = nn.relu(norm('gn3')(y))
    y = conv(out, 1, 1, 'conv3')(y)
    return y + residual


class BitResNet(nn.Module):
  """BiT ResNet v2.

  Attributes:
    num_classes: size of the zero-initialised head; 0 returns the pooled
      features (a headless feature extractor, as `MlpMixer`).
    depth: units per stage, e.g. (3, 4, 6, 3) for ResNet-50.
    width: width of the first stage's units (BiT: 64 x the width factor);
      stage i has width * 2^i, its units output 4x that.
    root: 'imagenet' (7x7/2 conv + 3x3/2 max-pool) or 'cifar' (3x3/1 conv).
    num_groups: GroupNorm groups (BiT: 32); must divide every width.
    dtype: computation dtype (parameters stay float32).
    head_bias_init: the head's initial bias (for the sigmoid loss).
    model_name: a name for logs and tables.
    conv_impl: how convolutions are computed (`conv2d`): 'auto' (matmuls
      over shifted views on a CPU, XLA's convolution elsewhere), 'xla' or
      'matmul'; the same function and parameters either way.
  """
  num_classes: int
  depth: Sequence[int] = (3, 4, 6, 3)
  width: int = 64
  root: str = 'imagenet'
  num_groups: int = 32
  dtype: Any = jnp.float32
  head_bias_init: float = 0.0
  model_name: Optional[str] = None
  conv_impl: str = 'auto'

  @property
  def hidden_dim(self) -> int:
    """Width of the pooled features (the last stage's output)."""
    return 4 * self.width * 2 ** (len(self.depth) - 1)

  def widths(self) -> Tuple[int, ...]:
    """Every channel count a GroupNorm sees."""
    stages = [self.width * 2 ** i for i in range(len(self.depth))]
    return tuple(sorted({self.width} | set(stages) | {4 * s for s in stages}))

  def check(self, image_shape: Sequence[int]) -> None:
    """Raises one ValueError naming the bad field."""
    depth = tuple(self.depth) if isinstance(self.depth, (tuple, list)) else ()
    if not depth or not all(isinstance(d, int) and d > 0 for d in depth):
      raise ValueError('model.depth must be a non-empty tuple of positive '
                       f'unit counts per stage, got {self.depth!r}')
    for field in ('width', 'num_groups'):
      value = getattr(self, field)
      if not isinstance(value, int) or value <= 0:
        raise ValueError(f'model.{field} must be a positive integer, got '
                         f'{value!r}')
    if not isinstance(self.num_classes, int) or self.num_classes < 0:
      raise ValueError('model.num_classes must be an integer >= 0, '
                       f'got {self.num_classes!r}')
    if self.root not in ROOTS:
      raise ValueError(f'model.root must be one of {", ".join(ROOTS)}, got '
                       f'{self.root!r}')
    if self.conv_impl not in CONV_IMPLS:
      raise ValueError(f'model.conv_impl must be one of '
                       f'{", ".join(CONV_IMPLS)}, got {self.conv_impl!r}')
    bad = [w for w in self.widths() if w % self.num_groups]
    if bad:
      raise ValueError(f'model.num_groups {self.num_groups} must divide every '
                       f'width of the network; it does not divide {bad[0]}')
    if len(image_shape) != 3 or min(image_shape) <= 0:
      raise ValueError(f'the input must be (h, w, c), got {image_shape}')

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    del train  # No dropout, no batch statistics.
    self.check(x.shape[1:])
    if self.root == 'imagenet':
      x = StdConv(self.width, 7, 2, padding=3, impl=self.conv_impl,
                  dtype=self.dtype, name='root')(x)
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=[(1, 1), (1, 1)])
    else:
      x = StdConv(self.width, 3, 1, impl=self.conv_impl, dtype=self.dtype,
                  name='root')(x)
    for i, units in enumerate(self.depth):
      for j in range(units):
        x = ResidualUnit(self.width * 2 ** i,
                         strides=2 if i > 0 and j == 0 else 1,
                         num_groups=self.num_groups, dtype=self.dtype,
                         conv_impl=self.conv_impl,
                         name=f'stage{i + 1}_unit{j + 1}')(x)
    x = nn.GroupNorm(self.num_groups, epsilon=1e-5, dtype=self.dtype,
                     name='pre_head_norm')(x)
    x = jnp.mean(nn.relu(x), axis=(1, 2))
    if self.num_classes:
      x = nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros,
                   bias_init=nn.initializers.constant(self.head_bias_init),
                   dtype=self.dtype, name='head')(x)
    return x


def build(kwargs) -> BitResNet:
  """`BitResNet` from `config.model`'s fields (without `arch`), `dtype` a
  name; unknown fields raise one ValueError naming them."""
  fields = set(BitResNet.__dataclass_fields__) - {'parent', 'name'}
  unknown = sorted(set(kwargs) - fields)
  if unknown:
    raise ValueError(f'unknown model config field(s) for arch bit_resnet: '
                     f'{", ".join("model." + u for u in unknown)}')
  if isinstance(kwargs.get('depth'), list):
    kwargs['depth'] = tuple(kwargs['depth'])
  return BitResNet(**kwargs)
