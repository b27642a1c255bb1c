r"""Mixer-L/16 pre-trained on ImageNet-1k: paper Table 4, row 2.

300 epochs at batch 4096, Adam (0.9, 0.999), lr 1e-3 with 10k warmup steps then
linear decay to 1e-8 (big_vision's linear_end, 1e-5 of the peak), weight decay
0.1 (decoupled, kernels only), clipping at global norm 1, RandAugment(2, 15)
with big_vision's ops, mixup 0.5, dropout 0, stochastic depth 0.1, Inception
crop + flip at 224. Built by `configs.common.paper_table4`.

    python train.py --config=configs/imagenet2012_mixer_l16.py \
        --config.data_dir=/path/to/tensorflow_datasets --workdir=W

`--config=configs/imagenet2012_mixer_l16.py:gpu8` is the smaller variant one
8-GPU machine can run, big_vision's GPU variant (batch 512, 60 epochs
on ImageNet-1k and 30 on ImageNet-21k; lr, weight decay, the 10k warmup steps
and the evaluations unchanged);
docs/imagenet.md gives both commands, how to prepare the data and the expected
cost.
"""

from configs import common


def get_config(arg=None):
  """`arg`: '' or 'paper' (Table 4 as published), or 'gpu8'."""
  return common.paper_table4('L/16', 'imagenet2012', arg)
