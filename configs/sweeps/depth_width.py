"""Width x depth grid on CIFAR-10: C in {128, 256, 512} x {2, 4, 8} blocks.

    python sweep.py --sweep=configs/sweeps/depth_width.py --workdir=workdirs/dw

Base: `configs/cifar10_baseline.py` (patch 4, 64 tokens, its 100-epoch AdamW
recipe). The MLP widths follow C with the baseline's ratios
(`configs.models.SEED000_RATIOS['baseline']`: D_S = C / 2, D_C = 4 C), the
way the paper scales S -> B -> L, so each run is "the baseline, wider or
deeper". Nine runs; C256_L4 is the baseline itself.

Cost grows linearly with depth and about quadratically with width: from
0.04 (C128_L2) to 2.44 GFLOPs per image forward (C512_L8), 0.31 for the
baseline; the whole grid costs about 18 baseline runs (~85 PFLOPs of
training).
"""

from configs import cifar10_baseline
from configs import models
from mixer import sweeps

HIDDEN_DIMS = (128, 256, 512)
NUM_BLOCKS = (2, 4, 8)


def _widths(point):
  """MLP widths and a model name that follow the point's C."""
  token_ratio, channel_ratio = models.SEED000_RATIOS['baseline']
  c, depth = point['model.hidden_dim'], point['model.num_blocks']
  return {'model.tokens_mlp_dim': int(token_ratio * c),
          'model.channels_mlp_dim': int(channel_ratio * c),
          'model.model_name': f'Mixer-{c}x{depth}/4x4'}


def get_sweep():
  return sweeps.grid(cifar10_baseline.get_config, 'C{hidden_dim}_L{num_blocks}',
                     derived=_widths,
                     **{'model.hidden_dim': list(HIDDEN_DIMS),
                        'model.num_blocks': list(NUM_BLOCKS)})
