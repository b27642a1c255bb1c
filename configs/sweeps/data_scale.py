r"""Pre-training data size (paper §3.3, Fig. 2 right): Mixer beside a ResNet on
growing subsets of the training set, every run the same number of steps.

    python sweep.py --sweep=configs/sweeps/data_scale.py --workdir=workdirs/data_scale
    # Paper size (accelerators; ImageNet-1k in $TFDS_DATA_DIR):
    python sweep.py --sweep=configs/sweeps/data_scale.py:paper --workdir=W

The paper pre-trains on random 3%, 10%, 30% and 100% subsets of JFT-300M
for 233, 70, 23 and 7 epochs, i.e. the same number of steps: fewer examples,
more epochs. Its claim: when the data is small, Mixer overfits more than the
(BiT) ResNet; as the data grows, Mixer improves faster. Each run reports the
test accuracy and the linear few-shot accuracy of its features (1/5/10/25
shots, the paper's proxy is 5-shot), in the sweep's summary.

CPU size (the default): `configs/cifar10_cpu.py`'s Mixer and
`configs/cifar10_resnet_cpu.py`'s BiT ResNet-14 on `train[:10%]`,
`train[:30%]` and `train` of CIFAR-10 (5,000 / 15,000 / 50,000 images; 10, 3.3
and 1 epochs), 390 steps at batch 128 each; evaluated on all 10,000 test
images at the end, few-shot on CIFAR-10 (shots drawn from the whole training
split) at the end.

`:paper`: Mixer-L/16 beside BiT-R152x2 (the paper's Fig. 2 pair) on 3%, 10%,
30% and 100% of ImageNet-1k's `train[:99%]` (big_vision's split; `train[99%:]`
is the minival), each for the steps of 300 epochs of the whole split (92,897
at batch 4096, `configs.common.paper_pretrain`'s setup), few-shot on
big_vision's datasets every 25k steps. The paper's pre-training set,
JFT-300M, is not public and 236x larger than ImageNet-1k; its smallest subset
(9M images) is still 7x ImageNet-1k, so the small end here overfits far
more. Mixer-L/16 is 89 GFLOPs per image forward, R152x2 92 (`mixer.flops`,
2 per multiply-add): about 100 EFLOPs of training per run, 800 for the
sweep; TPU-pod work, never a CPU job.
"""

from configs import cifar10_cpu
from configs import cifar10_resnet_cpu
from configs import common
from configs import models
from mixer import sweeps

CPU_SPLITS = (('10pct', 'train[:10%]'), ('30pct', 'train[:30%]'),
              ('100pct', 'train'))
CPU_STEPS = 390  # One epoch of the whole set at batch 128.
PAPER_SPLITS = (('3pct', 'train[:3%]'), ('10pct', 'train[:10%]'),
                ('30pct', 'train[:30%]'), ('100pct', 'train[:99%]'))
SHOW = ('model.model_name', 'train_split')


def _runs(bases, splits, **overrides):
  """One run per (model, split), all `overrides` (the step count) alike."""
  runs = []
  for label, base in bases:
    for tag, split in splits:
      fields = {'train_split': split, **overrides}
      runs.append(sweeps.run(f'{label}_{tag}', base, show=SHOW,
                             hide=tuple(fields)[1:], **fields))
  return runs


def cpu_sweep():
  """The CPU-sized sweep (about 40 minutes on 2 cores)."""
  return _runs((('Mixer', cifar10_cpu.get_config),
                ('ResNet', cifar10_resnet_cpu.get_config)), CPU_SPLITS,
               num_train_steps=CPU_STEPS, eval_every_steps=0,
               log_every_steps=13, **{'fewshot.every_steps': CPU_STEPS})


def paper_sweep():
  """Mixer-L/16 and BiT-R152x2 on ImageNet-1k subsets, equal steps."""
  mixer = common.paper_pretrain('L/16')
  mixer.fewshot = common.fewshot_defaults(
      every_steps=common.PRETRAIN_FEWSHOT_EVERY,
      datasets=common.PRETRAIN_FEWSHOT)
  mixer.minival_split = 'train[99%:]'
  resnet = mixer.copy_and_resolve_references()
  resnet.model = models.bit_paper('R152x2')
  # big_vision's run length for streamed data: round(epochs * N / B).
  steps = int(round(mixer.num_epochs *
                    common.PRETRAIN_TRAIN_EXAMPLES['imagenet2012'] /
                    mixer.batch_size))
  return _runs((('Mixer', mixer), ('ResNet', resnet)), PAPER_SPLITS,
               num_train_steps=steps)


def get_sweep(size=None):
  if size in (None, '', 'cpu'):
    return cpu_sweep()
  if size == 'paper':
    return paper_sweep()
  raise ValueError(f"the argument after ':' must be 'paper' or 'cpu', got "
                   f'{size!r}')
