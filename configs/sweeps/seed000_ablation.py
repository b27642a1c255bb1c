"""Seed 000's CIFAR-10 ablation: the four MLP-width variants, one recipe.

    python sweep.py --sweep=configs/sweeps/seed000_ablation.py \
        --workdir=workdirs/seed000_ablation

The variants differ only in the token- and channel-mixing MLP widths
(`configs.models.SEED000_RATIOS`: D_S, D_C as multiples of C = 256); all
train with `configs.common.seed000_cifar10` (AdamW, cosine, 100 epochs,
batch 512), so the table isolates the width ratios. The report shows D_S and
D_C for each run.

Cost (64 tokens, 4 blocks, C = 256): 0.14 (balanced_ratio) to 0.58
(increased_channel) GFLOPs per image forward, 0.3 for the baseline; training
is about 3x forward, so 100 epochs of 50k images are 2-9 PFLOPs per run:
minutes on one modern GPU, many hours on a CPU.
"""

from configs import common
from configs import models
from mixer import sweeps


def get_sweep():
  return [
      sweeps.run(variant, common.seed000_cifar10(variant),
                 show=('model.tokens_mlp_dim', 'model.channels_mlp_dim'))
      for variant in models.SEED000_RATIOS
  ]
