"""Mixer-L/16 (paper Table 1) with the paper's base optimisation recipe only.

`configs.common.paper_pretrain('L/16')`: the Table 1 model with a 1000-class
head on ImageNet-1k (`imagenet2012`) at 224x224, with the paper's base
optimisation recipe (sec. 3.1, App. B): Adam (b1 0.9, b2 0.999) with
decoupled weight decay 0.1, batch 4096, lr 1e-3, 10k warmup steps then
linear decay, clipping at global norm 1, 300 epochs, Inception crop + flip.
It carries none of the regularisation of the paper's Table 4: no
RandAugment, no mixup, no stochastic depth (and no dropout), so it is not
the recipe behind the paper's ImageNet results. Use it for parameter counts
(`python -m mixer.summary`), benchmarks (`python -m mixer.benchmark`) and as
a starting point for a recipe of one's own.

The paper's full recipe (Table 4) for this model is
`configs/imagenet2012_mixer_l16.py` (ImageNet-1k) and
`configs/imagenet21k_mixer_l16.py` (ImageNet-21k); see docs/imagenet.md.

Set `--config.model.num_classes=0` for the headless model whose parameter
count the paper's Table 1 reports (rounded).
"""

from configs import common


def get_config():
  return common.paper_pretrain('L/16')
