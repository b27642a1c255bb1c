"""The main job sized for a 2-core CPU: minutes, not a day.

The seed-000 CIFAR-10 recipe (`configs.common.seed000_cifar10`: AdamW lr 1e-3,
weight decay 0.05, 5% warmup then cosine, label smoothing 0.1, pad-4 crop +
flip, clipping at 1) on a Mixer half as wide as the baseline (C = 128, 4
blocks, patch 4, D_S = 64, D_C = 512: 569,994 parameters, a quarter of the
baseline's FLOPs) for one epoch at batch 128, evaluated on all 10,000 test
images at the end. README.md gives its measured wall time and accuracy on
the 2-core machine; `configs/cifar10_baseline.py` (100 epochs at batch 512)
takes about 20 hours there.
"""

from configs import common


def get_config():
  c = common.seed000_cifar10('baseline')
  c.model.model_name = 'seed000-baseline-cpu'
  c.model.hidden_dim = 128
  c.model.tokens_mlp_dim = 64
  c.model.channels_mlp_dim = 512
  c.batch_size = 128
  c.num_epochs = 1
  c.checkpoint_every_steps = 195  # Twice (390 steps at batch 128).
  return c
