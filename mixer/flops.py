"""Analytic FLOP count of a Mixer (or BiT ResNet) train step, from the config alone.

Pure Python (no JAX import), so the PyTorch peer benchmark can use the very
same count. Matmul/conv FLOPs only (2 per multiply-accumulate); LayerNorm,
activations and the optimizer are a few percent for these widths and are
left out, as is usual for MFU.
"""


def _pair(value):
  if hasattr(value, 'size') and not isinstance(value, (int, tuple, list)):
    value = value.size
  if isinstance(value, dict):
    value = value['size']
  return (value, value) if isinstance(value, int) else tuple(value)


def forward_macs_per_image(config) -> int:
  """Multiply-accumulates of one forward pass of `config.model`."""
  m = config.model
  if m.get('arch', 'mixer') == 'bit_resnet':
    return resnet_macs_per_image(config)
  ph, pw = _pair(m.patches)
  h, w = _pair(config.image_size)
  c = config.get('channels', 3)
  s = (h // ph) * (w // pw)  # tokens
  hidden = m.hidden_dim
  macs = s * ph * pw * c * hidden  # stem
  macs += m.num_blocks * (2 * hidden * s * m.tokens_mlp_dim  # token mixing
                          + 2 * s * hidden * m.channels_mlp_dim)  # channels
  macs += hidden * m.num_classes  # head
  return int(macs)


def resnet_macs_per_image(config) -> int:
  """Multiply-accumulates of one forward pass of a BiT ResNet
  (`mixer.resnet`): its convolutions (SAME padding: a stride-2 layer
  outputs ceil(h / 2) rows) and the head."""
  m = config.model
  h, w = _pair(config.image_size)
  cin = config.get('channels', 3)
  half = lambda n: -(-n // 2)
  if m.root == 'imagenet':  # 7x7/2 conv, then the 3x3/2 max-pool.
    h, w = half(h), half(w)
    macs = h * w * 49 * cin * m.width
    h, w = half(h), half(w)
  else:  # 3x3/1 conv.
    macs = h * w * 9 * cin * m.width
  cin = m.width
  for i, units in enumerate(m.depth):
    mid = m.width * 2 ** i
    for j in range(units):
      stride = 2 if i > 0 and j == 0 else 1
      ho, wo = (half(h), half(w)) if stride == 2 else (h, w)
      if cin != 4 * mid or stride != 1:
        macs += ho * wo * cin * 4 * mid  # conv_proj
      macs += h * w * cin * mid  # conv1, 1x1
      macs += ho * wo * 9 * mid * mid  # conv2, 3x3 (the stride)
      macs += ho * wo * mid * 4 * mid  # conv3, 1x1
      h, w, cin = ho, wo, 4 * mid
  return int(macs + cin * m.num_classes)


def train_flops_per_image(config) -> int:
  """Forward + backward = 3 x forward; FLOPs = 2 x MACs."""
  return 3 * 2 * forward_macs_per_image(config)
