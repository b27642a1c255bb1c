"""The convolutional baseline on the CPU-sized main job: a BiT ResNet-14.

`configs/cifar10_cpu.py` (the seed-000 CIFAR-10 recipe for one epoch at
batch 128: AdamW lr 1e-3, weight decay 0.05, 5% warmup then cosine, label
smoothing 0.1, pad-4 crop + flip) with its Mixer replaced by
`configs.models.cifar_resnet()` (pre-activation bottlenecks, GroupNorm,
weight-standardised convolutions; 507,674 params beside the Mixer's
569,994). It exists as the baseline of the paper's analyses
(configs/sweeps/permutation.py, configs/sweeps/data_scale.py, docs/paper.md);
on a 2-core CPU it trains at about 0.6x the Mixer's images per second.
"""

from configs import cifar10_cpu
from configs import models


def get_config():
  c = cifar10_cpu.get_config()
  c.model = models.cifar_resnet()
  return c
