"""Analytic FLOP count of a Mixer train step, from the config alone.

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


def train_flops_per_image(config) -> int:
  """Forward + backward = 3 x forward; FLOPs = 2 x MACs."""
  return 3 * 2 * forward_macs_per_image(config)
