"""Mixer-S/32 (paper Table 1) with the paper's ImageNet-1k pre-training recipe.

Set `--config.model.num_classes=0` for the headless model whose parameter
count the paper's Table 1 reports (rounded).
"""

from configs import common


def get_config():
  return common.paper_pretrain('S/32')
