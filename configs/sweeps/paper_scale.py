r"""Paper-scale Mixers on CIFAR-10: S/32, S/16, B/32, B/16 at 224x224.

    python sweep.py --sweep=configs/sweeps/paper_scale.py --workdir=W
    # Fine-tuning official checkpoints found as DIR/Mixer-B_16.npz etc.:
    python sweep.py --sweep=configs/sweeps/paper_scale.py:DIR --workdir=W

This is the paper's CIFAR-10 protocol (sec. 3.1, App. C, as vit_jax runs
it): Table 1 models at resolution 224 (CIFAR's 32x32 images are resized;
49 tokens for /32, 196 for /16), SGD with momentum 0.9, batch 512, 10k steps,
500 warmup steps then cosine from 0.03, clipping at 1, no weight decay,
Inception crop + flip (`configs.common.paper_finetune`). All four runs share
it, so the table compares scale (S vs B) and patch size (/32 vs /16).

With no argument the models train from random initialisation: a
no-pre-training control, far below the paper's transfer numbers, which
come from ImageNet(-21k) pre-training. With `:DIR`, each run starts from
`DIR/Mixer-<S|B>_<16|32>.npz` (the official naming, e.g. from
`gs://mixer_models/imagenet21k/`); a run whose file is missing fails on its
own (error.txt) and the others still train.

Cost (FLOPs of one forward pass at 224 from XLA's cost analysis, 2 per
multiply-add; params with the 10-class head;
training is ~3x that; 10k steps x 512 = 5.1M images per run):

  run    params  GFLOPs/img  training
  S/32   18.6M    2.0          31 PFLOPs
  S/16   18.0M    7.6         117 PFLOPs
  B/32   59.5M    6.5         100 PFLOPs
  B/16   59.1M   25.3         389 PFLOPs

About 640 PFLOPs for the sweep (B/16 alone is 60%): an estimated 2-4 hours
at a sustained 50-100 TFLOP/s (one H100-class GPU, or a TPU v3-8 with
`--set=model.dtype=bfloat16`); out of reach on a CPU. `grad_accum_steps` is 8
(as in vit_jax) so a B/16 micro-batch fits a 16 GB device; it does not change
the optimisation.
"""

import os

from configs import common
from mixer import sweeps

VARIANTS = ('S/32', 'S/16', 'B/32', 'B/16')
DATASET = 'cifar10'
IMAGE_SIZE = 224


def get_sweep(checkpoint_dir=None):
  runs = []
  for variant in VARIANTS:
    name = 'Mixer-' + variant.replace('/', '_')
    overrides = {'grad_accum_steps': 8}
    if checkpoint_dir:
      overrides['init_checkpoint'] = os.path.join(checkpoint_dir,
                                                  name + '.npz')
    runs.append(sweeps.run(
        name, common.paper_finetune(variant, DATASET, IMAGE_SIZE),
        show=('model.hidden_dim', 'model.num_blocks', 'model.patches.size'),
        hide=('grad_accum_steps', 'init_checkpoint'), **overrides))
  return runs
