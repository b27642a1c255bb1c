"""Patch size 2 / 4 / 8 on CIFAR-10, everything else the baseline's.

    python sweep.py --sweep=configs/sweeps/patch_size.py --workdir=workdirs/ps

Base: `configs/cifar10_baseline.py` (seed 000 baseline: C = 256, 4 blocks,
D_S = 128, D_C = 1024, its 100-epoch AdamW recipe). On 32x32 images the patch
size sets the sequence length: 256, 64 and 16 tokens. The widths stay fixed,
so the token-mixing MLP keeps D_S = 128 hidden units for any sequence length
and the cost is roughly proportional to the token count: 1.23, 0.31 and
0.08 GFLOPs per image forward for patch 2, 4 and 8 (patch 2 costs about four
times the baseline, 18 PFLOPs of training for 100 epochs).
"""

from configs import cifar10_baseline
from mixer import sweeps


def get_sweep():
  return sweeps.grid(
      cifar10_baseline.get_config, 'patch{size}',
      derived=lambda p: {'model.model_name':
                         f'seed000-baseline-p{p["model.patches.size"][0]}'},
      **{'model.patches.size': [(2, 2), (4, 4), (8, 8)]})
