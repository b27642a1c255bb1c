r"""Paper-scale Mixers on CIFAR-10: S/32, S/16, B/32, B/16 at 224x224.

    python sweep.py --sweep=configs/sweeps/paper_scale.py --workdir=W
    # Fine-tuning the official GSAM checkpoints, copied into DIR first:
    gsutil cp gs://mixer_models/gsam/Mixer-{S_32,S_16,B_32,B_16}.npz DIR/
    python sweep.py --sweep=configs/sweeps/paper_scale.py:DIR --workdir=W

This is the paper's CIFAR-10 protocol (sec. 3.1, App. C, as vit_jax runs
it): Table 1 models at resolution 224 (CIFAR's 32x32 images are resized;
49 tokens for /32, 196 for /16), SGD with momentum 0.9, batch 512, 10k steps,
500 warmup steps then cosine from 0.03, clipping at 1, no weight decay,
Inception crop + flip (`configs.common.paper_finetune`). All four runs share
it, so the table compares scale (S vs B) and patch size (/32 vs /16).

With no argument the models train from random initialisation: a
no-pre-training control, far below the paper's transfer numbers, which
come from ImageNet(-21k) pre-training.

With `:DIR`, each run starts from one file in DIR, named as in the official
bucket (`CHECKPOINTS` below; the `init_checkpoint` column of the summary
shows the path):

  run          file in DIR      official source
  Mixer-S_32   Mixer-S_32.npz   gs://mixer_models/gsam/Mixer-S_32.npz
  Mixer-S_16   Mixer-S_16.npz   gs://mixer_models/gsam/Mixer-S_16.npz
  Mixer-B_32   Mixer-B_32.npz   gs://mixer_models/gsam/Mixer-B_32.npz
  Mixer-B_16   Mixer-B_16.npz   gs://mixer_models/gsam/Mixer-B_16.npz

All four were trained from scratch on ImageNet-1k with GSAM ("Surrogate
Gap Minimization Improves Sharpness-Aware Training", arXiv 2203.08065, an
optimiser refining SAM) and without strong data augmentation (vit_jax
README, "Update (9.6.2022)" and its changelog); their 1000-class head is
replaced by a zero 10-class one. The folder contents are the
`gsutil ls -lh gs://mixer_models/*` output saved in vit_jax's
`vit_jax.ipynb`; the 224x224 pre-training resolution is inferred from the
listed file sizes (docs/pretrained.md), no source states it. `gsam/` is the
only folder holding all four sizes: `imagenet1k/` and `imagenet21k/` (the
Mixer paper's own Adam-trained checkpoints) hold only B/16 and L/16, and
`sam/` (SAM on ImageNet-1k) only B/16 and B/32. Another folder's
`Mixer-B_16.npz` placed in DIR loads as well (same shapes; the ImageNet-21k
head of 21843 classes is re-initialised), but then B/16 is pre-trained
differently from the other runs. A run whose file is missing fails on its
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

import collections
import os

from configs import common
from mixer import sweeps

VARIANTS = ('S/32', 'S/16', 'B/32', 'B/16')
DATASET = 'cifar10'
IMAGE_SIZE = 224

# The official checkpoint each run fine-tunes with `:DIR` (DIR holds it under
# the same file name), and what it was trained on. Sources: the vit_jax
# README's Mixer section and changelog, and the bucket listing in
# vit_jax.ipynb; docs/pretrained.md lists every official Mixer checkpoint.
Checkpoint = collections.namedtuple('Checkpoint', ('source', 'trained_on'))
_GSAM = ('ImageNet-1k (1000-class head), 224x224, GSAM optimiser, no strong '
         'data augmentation')
CHECKPOINTS = {
    'S/32': Checkpoint('gs://mixer_models/gsam/Mixer-S_32.npz', _GSAM),
    'S/16': Checkpoint('gs://mixer_models/gsam/Mixer-S_16.npz', _GSAM),
    'B/32': Checkpoint('gs://mixer_models/gsam/Mixer-B_32.npz', _GSAM),
    'B/16': Checkpoint('gs://mixer_models/gsam/Mixer-B_16.npz', _GSAM),
}


def checkpoint_file(variant):
  """'B/16' -> 'Mixer-B_16.npz': the file a `:DIR` run reads from DIR."""
  return CHECKPOINTS[variant].source.rsplit('/', 1)[-1]


def get_sweep(checkpoint_dir=None):
  runs = []
  for variant in VARIANTS:
    name = 'Mixer-' + variant.replace('/', '_')
    overrides = {'grad_accum_steps': 8}
    if checkpoint_dir:
      overrides['init_checkpoint'] = os.path.join(checkpoint_dir,
                                                  checkpoint_file(variant))
    runs.append(sweeps.run(
        name, common.paper_finetune(variant, DATASET, IMAGE_SIZE),
        show=('model.hidden_dim', 'model.num_blocks', 'model.patches.size'),
        hide=('grad_accum_steps',), **overrides))
  return runs
