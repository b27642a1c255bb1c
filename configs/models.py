"""Model specs, defined once: the paper's Table 1 and the seed models.

Every experiment config takes its `config.model` from here. Widths follow the
paper's names: `hidden_dim` = C, `tokens_mlp_dim` = D_S (the MLP acting along
the token axis), `channels_mlp_dim` = D_C (acting along channels).
"""

import ml_collections

# Paper Table 1: name -> (num_blocks, hidden C, D_S, D_C); patch from the name.
_TABLE1 = {
    'S': (8, 512, 256, 2048),
    'B': (12, 768, 384, 3072),
    'L': (24, 1024, 512, 4096),
    'H': (32, 1280, 640, 5120),
}
PAPER_VARIANTS = ('S/32', 'S/16', 'B/32', 'B/16', 'L/32', 'L/16', 'H/14')


def mixer(*, patch, hidden_dim, num_blocks, tokens_mlp_dim, channels_mlp_dim,
          num_classes=1000, name=None, **extensions):
  """A `config.model` ConfigDict; extensions default to the paper (off)."""
  ph, pw = (patch, patch) if isinstance(patch, int) else tuple(patch)
  m = ml_collections.ConfigDict()
  m.model_name = name or f'Mixer-{hidden_dim}x{num_blocks}/{ph}x{pw}'
  m.patches = ml_collections.ConfigDict({'size': (ph, pw)})
  m.num_classes = num_classes
  m.num_blocks = num_blocks
  m.hidden_dim = hidden_dim
  m.tokens_mlp_dim = tokens_mlp_dim
  m.channels_mlp_dim = channels_mlp_dim
  m.activation = 'gelu'
  m.dropout_rate = 0.0
  m.stoch_depth = 0.0
  m.use_pre_head_norm = True
  m.dtype = 'float32'
  m.stoch_depth_scale = True  # timm's rescaling; False: big_vision's mask.
  m.head_bias_init = 0.0
  # Recompute the activation in the backward pass (less memory, same
  # values; mixer/models.py, docs/benchmarks.md).
  m.remat_activation = True
  for key, value in extensions.items():
    if key not in m:
      raise KeyError(f'unknown model field {key!r}')
    m[key] = value
  return m


def paper(variant, num_classes=1000, **extensions):
  """Paper Table 1 model, e.g. `paper('B/16')`."""
  if variant not in PAPER_VARIANTS:
    raise ValueError(f'unknown Mixer variant {variant!r}; one of '
                     f'{", ".join(PAPER_VARIANTS)}')
  size, patch = variant.split('/')
  blocks, hidden, d_s, d_c = _TABLE1[size]
  return mixer(patch=int(patch), hidden_dim=hidden, num_blocks=blocks,
               tokens_mlp_dim=d_s, channels_mlp_dim=d_c,
               num_classes=num_classes, name=f'Mixer-{variant}', **extensions)


# Seed 000: CIFAR-10 ablation (32x32, patch 4, C=256, 4 blocks). The seed gives
# widths as mlp_ratio = (token ratio, channel ratio) times C, as timm does:
# D_S = ratio[0] * C acts on the 64 tokens, D_C = ratio[1] * C on channels.
SEED000_RATIOS = {
    'baseline': (0.5, 4.0),
    'increased_token': (1.0, 4.0),
    'increased_channel': (0.5, 8.0),
    'balanced_ratio': (1.0, 1.0),
}


def seed000(variant, **extensions):
  token_ratio, channel_ratio = SEED000_RATIOS[variant]
  hidden = 256
  return mixer(patch=4, hidden_dim=hidden, num_blocks=4,
               tokens_mlp_dim=int(token_ratio * hidden),
               channels_mlp_dim=int(channel_ratio * hidden), num_classes=10,
               name=f'seed000-{variant}', **extensions)


def seed001(**extensions):
  """Seed 001: 12 blocks, C=512, D_S=D_C=512, 32 tokens of 4x8x3=96 values.

  Its stem is a Linear on rearranged 4x8 patches, which is exactly a Conv with
  kernel = stride = (4, 8); it has no LayerNorm before pooling.
  """
  extensions.setdefault('use_pre_head_norm', False)
  return mixer(patch=(4, 8), hidden_dim=512, num_blocks=12, tokens_mlp_dim=512,
               channels_mlp_dim=512, num_classes=10, name='seed001',
               **extensions)


def seed002(**extensions):
  """Seed 002: Fashion-MNIST, 28x28x1, patch 4 (49 tokens), 8 blocks, C=16,
  D_S=1024, D_C=512, ReLU, dropout 0.1."""
  extensions.setdefault('activation', 'relu')
  extensions.setdefault('dropout_rate', 0.1)
  return mixer(patch=4, hidden_dim=16, num_blocks=8, tokens_mlp_dim=1024,
               channels_mlp_dim=512, num_classes=10, name='seed002',
               **extensions)


def _grid(image_size, patch_size):
  h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(
      image_size)
  ph, pw = patch_size
  if h % ph or w % pw:
    raise ValueError(f'patch size {(ph, pw)} does not divide the image size '
                     f'{(h, w)}')
  return h // ph, w // pw


def finetune_model_config(model_config, old_image_size, new_image_size):
  """`model_config` for fine-tuning at `new_image_size` a model pretrained at
  `old_image_size` (same patch size), per the paper's Appendix C.

  An image k times larger per side has k^2 times more tokens; the pretrained
  token-mixing MLP is then replicated block-diagonally over k^2 groups of
  tokens (mixer.pretrained.change_resolution), which needs
  `tokens_mlp_dim = k^2 * D_S`. Returns a copy with that width (unchanged if
  the resolution is). Only integer factors are possible (ValueError else).
  """
  m = ml_collections.ConfigDict(model_config.to_dict())
  size = m.patches.size
  patch = (size, size) if isinstance(size, int) else tuple(size)
  (h, w), (nh, nw) = (_grid(old_image_size, patch),
                      _grid(new_image_size, patch))
  if nh % h or nw % w:
    raise ValueError(
        f'fine-tuning at {new_image_size} from {old_image_size} (patch grid '
        f'{(h, w)} -> {(nh, nw)}) needs an integer resolution factor '
        '(paper Appendix C)')
  m.tokens_mlp_dim = model_config.tokens_mlp_dim * (nh // h) * (nw // w)
  return m


def cifar_fast(**extensions):
  """The model of `configs/cifar10_fast.py`: the seed-000 family (patch 4,
  64 tokens, C=256, D_C=4C) made deeper (8 blocks) with D_S = C, i.e. seed
  000's 'increased token' widths at twice the depth. 4,493,066 params."""
  return mixer(patch=4, hidden_dim=256, num_blocks=8, tokens_mlp_dim=256,
               channels_mlp_dim=1024, num_classes=10, name='cifar-fast',
               **extensions)


# The convolutional baseline of the paper's analyses (mixer/resnet.py): BiT
# ResNets v2. Units per stage of BiT's named depths (big_vision's
# get_block_desc); layers = 3 x units + 2.
BIT_DEPTHS = {
    26: (2, 2, 2, 2),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}


def bit_resnet(*, depth, width, root='imagenet', num_groups=32,
               num_classes=1000, name=None, **extensions):
  """A `config.model` ConfigDict for `mixer.resnet.BitResNet`.

  `depth` is units per stage or one of BIT_DEPTHS' names (50 -> (3, 4, 6,
  3)); `width` the first stage's width (BiT's R50x1: 64).
  """
  units = BIT_DEPTHS[depth] if isinstance(depth, int) else tuple(depth)
  m = ml_collections.ConfigDict()
  m.arch = 'bit_resnet'
  m.model_name = name or f'BiT-R{3 * sum(units) + 2}-w{width}'
  m.num_classes = num_classes
  m.depth = units
  m.width = width
  m.root = root
  m.num_groups = num_groups
  m.dtype = 'float32'
  m.head_bias_init = 0.0
  # 'auto': matmuls over shifted views on a CPU (XLA's convolution weight
  # gradients inside the train step's loops are ~50x slower there), XLA's
  # convolution elsewhere; the same function (mixer/resnet.py).
  m.conv_impl = 'auto'
  for key, value in extensions.items():
    if key not in m:
      raise KeyError(f'unknown model field {key!r}')
    m[key] = value
  return m


def bit_paper(variant, num_classes=1000):
  """A BiT ResNet of the paper, e.g. 'R50x1' (Fig. 4) or 'R152x2' (Fig. 2)."""
  depth, factor = variant[1:].split('x')
  if int(depth) not in BIT_DEPTHS:
    raise ValueError(f'unknown BiT variant {variant!r}; depths '
                     f'{", ".join(map(str, BIT_DEPTHS))}')
  return bit_resnet(depth=int(depth), width=64 * int(factor), root='imagenet',
                    num_classes=num_classes, name=f'BiT-{variant}')


def cifar_resnet(**extensions):
  """The CPU-sized baseline of `configs/cifar10_resnet_cpu.py`: BiT-R14 on
  32x32 images (3x3 root, four stages of one bottleneck unit at 32, 16, 8
  and 4 pixels, widths 16..128, outputs 64..512), GroupNorm with 8 groups
  (BiT's 2 channels per group at the first stage's width). 507,674 params
  with a 10-class head, next to the CPU Mixer's 569,994."""
  fields = dict(depth=(1, 1, 1, 1), width=16, root='cifar', num_groups=8,
                num_classes=10, name='BiT-R14-w16-cifar')
  fields.update(extensions)
  return bit_resnet(**fields)
