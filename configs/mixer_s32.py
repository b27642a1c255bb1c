"""Mixer-S/32 (paper Table 1) with the paper's base optimisation recipe only.

`configs.common.paper_pretrain('S/32')`: the model with the paper's base
ImageNet-1k optimisation only (no RandAugment, mixup or stochastic depth), for
parameter counts, benchmarks and as a starting point. Table 4 has no row for
Mixer-S; the full recipe exists for B and L (docs/imagenet.md).
`--config.model.num_classes=0` gives the headless model whose size Table 1
reports.
"""

from configs import common


def get_config():
  return common.paper_pretrain('S/32')
