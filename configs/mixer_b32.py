"""Mixer-B/32 (paper Table 1) with the paper's base optimisation recipe only.

`configs.common.paper_pretrain('B/32')`: the model with the paper's base
ImageNet-1k optimisation only (no RandAugment, mixup or stochastic depth), for
parameter counts, benchmarks and as a starting point. The paper's full recipe
for it (Table 4) is `common.paper_table4('B/32', 'imagenet2012')` (Table 4's B
rows; the shipped files are the /16 ones); see docs/imagenet.md.
`--config.model.num_classes=0` gives the headless model whose size Table 1
reports.
"""

from configs import common


def get_config():
  return common.paper_pretrain('B/32')
