r"""Invariance to input permutations (paper §3.4, Fig. 4): {Mixer, ResNet} x
{none, patch_pixel, global}.

    python sweep.py --sweep=configs/sweeps/permutation.py --workdir=workdirs/permutation
    # Paper size (accelerators; ImageNet-1k in $TFDS_DATA_DIR):
    python sweep.py --sweep=configs/sweeps/permutation.py:paper --workdir=W

Every run trains on images whose pixels are shuffled by one fixed permutation
(`config.input_permutation`, mixer/input_permutation.py), the same for all
images, in training, evaluation and the few-shot probe, and the same for both
models (seed 0, on the Mixer's patch grid): `none`; `patch_pixel`, the patch
order and the pixels inside every patch shuffled; `global`, all pixels.

A Mixer is exactly invariant to `patch_pixel` (a permutation of its stem and
token-mixing weights computes the same function on the permuted images).
The `Mixer_patch_pixel` run makes that literal: with
`input_permutation.align_init` it starts from `Mixer_none`'s initial weights
mapped by the permutation, so the two runs follow the same trajectory up to
float rounding (their curves coincide). A ResNet has no such map.

CPU size (the default): `configs/cifar10_cpu.py`'s Mixer (C = 128, 4 blocks,
patch 4, 570K params) beside `configs/cifar10_resnet_cpu.py`'s BiT ResNet-14
(508K params), one epoch of CIFAR-10 at batch 128, the same recipe; test
accuracy on all 10,000 test images every 78 steps and at the end, and the
linear few-shot accuracy (1/5/10/25 shots, 3 draws) on CIFAR-10 at the end.

`:paper`: the paper's pair, Mixer-B/16 and BiT-R50x1, with the paper's base
pre-training setup (`configs.common.paper_pretrain`: Adam, batch 4096, 10k
warmup then linear decay, Inception crop + flip, 300 epochs) on ImageNet-1k
at 224 (the paper pre-trains on JFT-300M, which is not public), permutations
on the 16x16 grid; few-shot on big_vision's datasets every 25k steps
(`configs.common.PRETRAIN_FEWSHOT`; the paper plots ImageNet 5-shot).
B/16 is 25.2 GFLOPs per image forward, R50x1 8.2 (`mixer.flops`, 2 per
multiply-add): about 29 and 9 EFLOPs of training per run, 115 for the sweep;
TPU-pod or multi-GPU-week work, never a CPU job.
"""

from configs import cifar10_cpu
from configs import cifar10_resnet_cpu
from configs import common
from configs import models
from mixer import sweeps

KINDS = ('none', 'patch_pixel', 'global')
SEED = 0
SHOW = ('model.model_name', 'input_permutation.kind')


def _runs(bases, patch, **overrides):
  """One run per (model, kind): permutations on the `patch` grid, seed SEED;
  Mixer patch_pixel starts aligned with Mixer none."""
  runs = []
  for label, base in bases:
    for kind in KINDS:
      fields = {'input_permutation.kind': kind,
                'input_permutation.seed': SEED,
                'input_permutation.patch_size': patch,
                'input_permutation.align_init': (label == 'Mixer' and
                                                 kind == 'patch_pixel'),
                **overrides}
      runs.append(sweeps.run(f'{label}_{kind}', base, show=SHOW,
                             hide=tuple(fields)[1:], **fields))
  return runs


def cpu_sweep():
  """The CPU-sized sweep (about 40 minutes on 2 cores)."""
  steps = 390  # One epoch at batch 128, the main CPU job's length.
  return _runs((('Mixer', cifar10_cpu.get_config),
                ('ResNet', cifar10_resnet_cpu.get_config)), (4, 4),
               num_train_steps=steps, eval_every_steps=78, log_every_steps=13,
               **{'fewshot.every_steps': steps})


def paper_sweep():
  """Mixer-B/16 and BiT-R50x1 on ImageNet-1k, the paper's §3 setup."""
  mixer = common.paper_pretrain('B/16')
  mixer.fewshot = common.fewshot_defaults(
      every_steps=common.PRETRAIN_FEWSHOT_EVERY,
      datasets=common.PRETRAIN_FEWSHOT)
  resnet = common.paper_pretrain('B/16')
  resnet.model = models.bit_paper('R50x1')
  resnet.fewshot = mixer.fewshot
  return _runs((('Mixer', mixer), ('ResNet', resnet)), (16, 16))


def get_sweep(size=None):
  if size in (None, '', 'cpu'):
    return cpu_sweep()
  if size == 'paper':
    return paper_sweep()
  raise ValueError(f"the argument after ':' must be 'paper' or 'cpu', got "
                   f'{size!r}')
