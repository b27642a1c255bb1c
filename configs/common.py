"""Training fields shared by every experiment config, with their defaults.

Experiment files call `base(model, ...)` and override what their recipe
changes; nothing here is copied into them. Field names are part of the
project's interface (scripts, sweeps and tests rely on them).
"""

import ml_collections

from configs import models


def base(model, *, dataset, image_size, channels=3, **overrides):
  """Returns a complete ConfigDict: every field the training loop reads.

  Args:
    model: a `config.model` ConfigDict from `configs.models`.
    dataset: tfds name ('cifar10', 'imagenet2012', ...) or a local dataset
      name found under `data_dir` / $MIXER_DATA_DIR ('cifar10',
      'fashion_mnist').
    image_size: model input resolution, int or (h, w).
    channels: image channels (1 for Fashion-MNIST).
    **overrides: any top-level field below.
  """
  c = ml_collections.ConfigDict()
  c.model = model

  # Data.
  c.dataset = dataset
  c.data_dir = ''  # '' -> $MIXER_DATA_DIR/<dataset> if present, else tfds.
  c.image_size = image_size
  c.channels = channels
  # 'host': batches fed from host memory (or streamed through tf.data when the
  # data is too large, needs resizing or Inception crops); 'device': the
  # uint8 dataset lives on the accelerator, only indices are sent per step.
  c.input_pipeline = 'host'
  c.shuffle_buffer = 50_000
  c.train_split = 'train'
  c.eval_split = 'test'
  # A second held-out split evaluated beside eval_split at every eval, logged
  # as minival_loss / minival_accuracy ('' = none); big_vision holds out
  # train[99%:] of ImageNet so.
  c.minival_split = ''
  # More evaluations beside eval_split at every eval: name -> (dataset ('' =
  # config.dataset), split[, label feature]), logged as <name>_loss,
  # <name>_accuracy; each must be there when the run starts (a one-line
  # error names a missing one). E.g. big_vision's ImageNet-V2 and ReaL:
  # {'v2': ('imagenet_v2', 'test'),
  #  'real': ('imagenet2012_real', 'validation', 'real_label')}.
  c.extra_evals = ml_collections.ConfigDict()
  c.augment = ml_collections.ConfigDict()
  c.augment.crop = 'pad'  # 'pad' (pad+random crop), 'inception', 'none'.
  c.augment.crop_padding = 4
  c.augment.flip = True
  c.augment.randaugment_layers = 0  # RandAugment(N, M); 0 = off.
  c.augment.randaugment_magnitude = 0
  # 'paper': RandAugment's 14 ops; 'big_vision': its 16 (the Mixer paper's).
  c.augment.randaugment_ops = 'paper'
  c.augment.mixup_alpha = 0.0  # 0 = off.
  c.augment.cutmix_alpha = 0.0  # 0 = off.
  c.augment.eval_crop = 'center'  # 'center' (resize-crop) or 'resize'.
  # One fixed pixel permutation for every image, train and eval (paper
  # §3.4; mixer/input_permutation.py); none by default.
  c.input_permutation = input_permutation_defaults()

  # Optimisation (paper pre-training: Adam 0.9/0.999, clip 1, warmup+linear).
  c.batch_size = 512  # Global, over all devices and processes.
  c.eval_batch_size = 1000
  c.grad_accum_steps = 1  # Micro-batches per step (batch_size is the total).
  c.num_epochs = 100
  c.num_train_steps = -1  # > 0 overrides num_epochs.
  c.optimizer = 'adamw'  # 'adam', 'adamw' or 'sgd'.
  c.learning_rate = 1e-3
  c.lr_schedule = 'linear'  # 'linear', 'cosine' or 'constant' after warmup.
  # The schedule follows the run that actually trains (mixer.optim):
  # * Warmup: the first of these that is >= 0 wins (-1 = unset).
  #   warmup_percent is a fraction of the run in [0, 1] (big_vision's unit):
  #   every shipped recipe states its warmup so, so it keeps its share when
  #   num_train_steps, num_epochs or batch_size change (a 3-step smoke run
  #   warms up for 1 step). warmup_steps / warmup_epochs are exact amounts for
  #   a user to set (e.g. --config.warmup_steps=100 overrides the recipe's
  #   share); one that does not fit in the run is an error, never altered.
  # * Decay: linear or cosine from learning_rate down to
  #   lr_end * learning_rate, reached exactly at the run's last step, however
  #   long the run is. lr_end is relative, a fraction of learning_rate, as
  #   big_vision's linear_end (its schedules multiply the base rate): the
  #   weight decay, scaled by the schedule, ends at the same fraction.
  c.warmup_percent = -1.0
  c.warmup_epochs = -1.0
  c.warmup_steps = -1
  c.lr_end = 0.0
  c.b1 = 0.9
  c.b2 = 0.999
  c.momentum = 0.9  # sgd only.
  c.weight_decay = 0.1  # Decoupled, kernels only, relative to lr (optax).
  c.grad_clip_norm = 1.0  # Global norm; 0 = off.
  c.label_smoothing = 0.0
  # 'softmax' cross-entropy, or 'sigmoid' (big_vision's sigmoid_xent: one
  # binary cross-entropy per class; pair it with model.head_bias_init < 0).
  c.loss = 'softmax'

  # Loop.
  c.seed = 0
  c.log_every_steps = 50
  c.eval_every_steps = -1  # -1 = once per epoch; 0 = only at the end.
  c.checkpoint_every_steps = 1000
  # Also save whenever this many minutes passed since the last checkpoint
  # (0 = off), so a slow run (a CPU) never loses more than that to a kill.
  c.checkpoint_every_minutes = 10.0
  c.keep_checkpoints = 3
  c.steps_per_dispatch = 1  # Train steps fused per dispatch (lax.scan).
  # A step whose loss, gradients or new parameters are NaN/Inf stops the run
  # (the last checkpoint stays the last good state); True drops such updates
  # instead (params and optimizer state unchanged) and counts them in the
  # metrics as `skipped_steps`. See docs/guarantees.md.
  c.skip_nonfinite_steps = False
  # With skip_nonfinite_steps: stop the run when more than this share of the
  # last 100 steps (at least 10 seen) had to be skipped: it is diverging.
  c.skip_nonfinite_limit = 0.5
  # Fine-tuning start point: '' (train from scratch), an official `.npz` or
  # one of this project's orbax checkpoints (workdir, its checkpoints/ dir or
  # a step dir); see mixer.pretrained.load_init_params. The paper's
  # checkpoints are published at https://console.cloud.google.com/storage/mixer_models/
  # e.g. `gsutil cp gs://mixer_models/imagenet21k/Mixer-B_16.npz .`
  c.init_checkpoint = ''
  # Token groups when init_checkpoint has fewer tokens (higher fine-tuning
  # resolution, paper App. C): 'strided' sub-grids or contiguous 'tiles'.
  c.init_token_grouping = 'strided'
  # Few-shot linear evaluation of the frozen features (the paper's metric;
  # mixer/evaluators/fewshot.py): off unless fewshot.every_steps > 0.
  c.fewshot = fewshot_defaults()

  for key, value in overrides.items():
    if key not in c:
      raise KeyError(f'unknown config field {key!r}')
    c[key] = value
  return c


def seed000_cifar10(variant):
  """Seed 000's CIFAR-10 ablation: one recipe for all four variants.

  The seed gives only the models (its tables). The recipe is the plain one a
  small CIFAR Mixer trains well with: AdamW lr 1e-3, weight decay 0.05
  (relative to lr), 5 warmup epochs (5% of the run) then cosine, label
  smoothing 0.1, pad-4 random crop + flip, batch 512, 100 epochs, clipping
  at 1.
  """
  steps_per_epoch = 50_000 // 512
  return base(models.seed000(variant), dataset='cifar10', image_size=32,
              batch_size=512, num_epochs=100, optimizer='adamw',
              learning_rate=1e-3, weight_decay=0.05, lr_schedule='cosine',
              warmup_percent=5 / 100, label_smoothing=0.1,
              checkpoint_every_steps=10 * steps_per_epoch)


PAPER_WARMUP_STEPS = 10_000  # At batch 4096 (paper App. B).
BIG_VISION_EVAL_EVERY = 2500  # big_vision's mlp_mixer_i1k.py log_steps.
IMAGENET2012_TRAIN = 1_281_167  # Images in ImageNet-1k's train split.


def streamed_steps(train_examples, epochs, batch_size):
  """Steps of a streamed run of `epochs` (ImageNet): big_vision's count,
  round(epochs * train_examples / batch_size) (`mixer.trainer`)."""
  return max(1, round(epochs * train_examples / batch_size))


def warmup_share(steps, train_examples, epochs, batch_size):
  """`warmup_percent` that gives exactly `steps` warmup steps in a streamed
  run of `epochs` over `train_examples` images at `batch_size`."""
  return steps / streamed_steps(train_examples, epochs, batch_size)


def input_permutation_defaults(**fields):
  """`config.input_permutation` (mixer/input_permutation.py): `kind` 'none',
  'patch_pixel' (the order of the patches and of the pixels within a patch,
  on the grid of `patch_size`, (0, 0) = the model's patch) or 'global' (all
  pixels), drawn from numpy's default_rng(`seed`); `align_init` (Mixer,
  patch_pixel) starts from the unpermuted run's initial weights mapped by
  the permutation."""
  p = ml_collections.ConfigDict()
  p.kind = 'none'
  p.seed = 0
  p.patch_size = (0, 0)
  p.align_init = False
  for key, value in fields.items():
    if key not in p:
      raise KeyError(f'unknown input_permutation field {key!r}')
    p[key] = value
  return p


def fewshot_defaults(**fields):
  """`config.fewshot`: big_vision's few-shot settings (shots 1, 5, 10, 25;
  l2_reg 2^10; 3 seeds), evaluated every `every_steps` (0 = never) on
  `datasets`, name -> (dataset, train split, test split)."""
  f = ml_collections.ConfigDict()
  f.every_steps = 0
  f.datasets = {'cifar10': ('cifar10', 'train', 'test')}
  f.shots = (1, 5, 10, 25)
  f.l2_reg = 2.0 ** 10
  f.num_seeds = 3
  f.seed = 0
  f.batch_size = 256
  f.num_test = -1  # The first num_test test examples; <= 0: all.
  f.data_dir = ''  # '' = $MIXER_DATA_DIR/<dataset> or tfds (see fewshot.py).
  for key, value in fields.items():
    if key not in f:
      raise KeyError(f'unknown fewshot field {key!r}')
    f[key] = value
  return f


def paper_pretrain(variant):
  """Paper Table 1 model with the paper's base ImageNet-1k optimisation
  recipe (sec. 3.1, App. B): Adam b1 0.9 b2 0.999, batch 4096, lr 1e-3,
  weight decay 0.1, 10k warmup steps (as a share of the run,
  `warmup_share`) then linear decay, clipping at global norm 1, 300 epochs,
  resolution 224, Inception crop + flip -- without Table 4's RandAugment,
  mixup or stochastic depth; `paper_table4` is the full recipe."""
  c = base(models.paper(variant, num_classes=1000), dataset='imagenet2012',
           image_size=224, batch_size=4096, num_epochs=300, optimizer='adamw',
           learning_rate=1e-3, weight_decay=0.1, lr_schedule='linear',
           warmup_percent=warmup_share(PAPER_WARMUP_STEPS, IMAGENET2012_TRAIN,
                                       300, 4096),
           grad_clip_norm=1.0, eval_batch_size=1024,
           train_split='train', eval_split='validation', shuffle_buffer=250_000,
           checkpoint_every_steps=2000, log_every_steps=50,
           eval_every_steps=BIG_VISION_EVAL_EVERY)
  c.augment.crop = 'inception'
  return c


# Paper Table 4 (App. B), "Hyperparameter settings used for pre-training Mixer
# models", its ImageNet rows: (size, dataset) -> (epochs, RandAugment
# magnitude, mixup alpha). Every row also has lr 1e-3, weight decay 0.1,
# dropout 0.0 and stochastic depth 0.1. The ImageNet-21k epochs are read as
# 300 like the ImageNet-1k rows; see docs/imagenet.md for that uncertainty.
TABLE4 = {
    ('B', 'imagenet2012'): (300, 15, 0.5),
    ('L', 'imagenet2012'): (300, 15, 0.5),
    ('B', 'imagenet21k'): (300, 10, 0.2),
    ('L', 'imagenet21k'): (300, 20, 0.5),
}
TABLE4_LEARNING_RATE = 1e-3
TABLE4_WEIGHT_DECAY = 0.1
TABLE4_DROPOUT = 0.0
TABLE4_STOCH_DEPTH = 0.1
TABLE4_RANDAUGMENT_LAYERS = 2

# Pre-training datasets as big_vision trains on them: name -> (classes,
# train split, eval split, minival split, initial head bias). ImageNet-1k
# holds out train[99%:] as minival (big_vision's configs/mlp_mixer_i1k.py)
# and evaluates on the validation set. ImageNet-21k follows big_vision's tfds
# `imagenet21k` (21843 classes, one 'full' split; the first 51,200 images
# held out: full[:25600] its "test", full[25600:51200] its "val", here the
# minival). The head bias starts near log(1 / classes), as big_vision's
# init_head_bias (-6.9 in mlp_mixer_i1k.py, -10 in vit_i21k.py).
PRETRAIN_DATASETS = {
    'imagenet2012': (1000, 'train[:99%]', 'validation', 'train[99%:]', -6.9),
    'imagenet21k': (21843, 'full[51200:]', 'full[:25600]', 'full[25600:51200]',
                    -10.0),
}
# big_vision's few-shot datasets (configs/common_fewshot.py), evaluated every
# 25k steps as there; ImageNet itself is left out, as in big_vision's default
# (it needs the manual download, and its 50k validation images in memory).
# The evaluations big_vision's configs run beside the validation set (every
# 2,500 steps), as `config.extra_evals`: mlp_mixer_i1k.py's train[:2%],
# ImageNet-V2 and ImageNet ReaL (its minival is `minival_split`);
# vit_i21k.py's full[51200:76800] of the training data.
PRETRAIN_EXTRA_EVALS = {
    'imagenet2012': {
        'train2pct': ('', 'train[:2%]'),
        'v2': ('imagenet_v2', 'test'),
        'real': ('imagenet2012_real', 'validation', 'real_label'),
    },
    'imagenet21k': {'train25k': ('', 'full[51200:76800]')},
}
PRETRAIN_FEWSHOT = {
    'caltech': ('caltech101', 'train', 'test'),
    'cars': ('cars196:2.1.0', 'train', 'test'),
    'cifar100': ('cifar100', 'train', 'test'),
    'dtd': ('dtd', 'train', 'test'),
    'pets': ('oxford_iiit_pet', 'train', 'test'),
    'uc_merced': ('uc_merced', 'train[:1000]', 'train[1000:]'),
}
PRETRAIN_FEWSHOT_EVERY = 25_000
# Images in each recipe's train split, for the warmup's share and for cost
# estimates (the run counts its data). ImageNet-1k: train[:99%], 99% of
# 1,281,167 rounded as tfds rounds. ImageNet-21k: the fall 2011 release
# (14,197,122 images) less the 51,200 held out; other releases differ a
# little.
PRETRAIN_TRAIN_EXAMPLES = {
    'imagenet2012': round(0.99 * IMAGENET2012_TRAIN),
    'imagenet21k': 14_197_122 - 51_200,
}

# `:gpu8` variants, for one machine with 8 GPUs: big_vision's GPU variant of
# mlp_mixer_i1k.py (mode 'gpu8'): global batch 512 instead of 4096 and 60
# epochs instead of 300; learning rate, weight decay, the 10k warmup steps
# and every evaluation unchanged. big_vision has no ImageNet-21k GPU
# variant; ours applies the same rule with 30 epochs (ours, for a budget).
GPU8_BATCH_SIZE = 512
GPU8_EPOCHS = {'imagenet2012': 60, 'imagenet21k': 30}


def paper_table4(variant, dataset, mode=None):
  """Paper Table 4 pre-training recipe of `variant` on `dataset`.

  `paper_pretrain`'s optimisation (Adam b1 0.9 b2 0.999, batch 4096, 10k
  warmup steps then linear decay, global-norm clipping at 1, decoupled
  weight decay on kernels only, 224 px) plus the row's epochs, lr, weight
  decay, RandAugment(2, M) with big_vision's op list, mixup(alpha), dropout
  and stochastic depth (ramping linearly from 0 at the first block to 0.1 at
  the last, per example). Inception crop (5-100% of the area) + flip for
  training, big_vision's resize_small(256)|central_crop(224) for evaluation.

  And how big_vision, where the paper's Mixers were trained, runs it
  (configs/mlp_mixer_i1k.py): sigmoid cross-entropy with the head bias
  starting at -6.9 (-10 for ImageNet-21k's 21,843 classes), stochastic depth
  as a plain 0/1 mask (no rescaling of kept branches), the linear decay
  ending at 1e-5 of the peak (1e-8), train[:99%] for training with
  train[99%:] evaluated as minival beside the validation set, ImageNet-V2,
  ImageNet ReaL and train[:2%] (`PRETRAIN_EXTRA_EVALS`) every 2,500 steps,
  and few-shot linear evaluations every 25k steps (`PRETRAIN_FEWSHOT`).

  Args:
    variant: a paper Table 1 variant, e.g. 'B/16' (Table 4 has rows for the
      B and L sizes; their patch size 16 is what the paper pre-trains).
    dataset: 'imagenet2012' or 'imagenet21k'.
    mode: None, '' or 'paper' for the paper's recipe; 'gpu8' for the smaller
      variant one 8-GPU machine can run (`GPU8_*`, docs/imagenet.md).
  """
  if dataset not in PRETRAIN_DATASETS:
    raise ValueError(f'unknown pre-training dataset {dataset!r}; one of '
                     f'{", ".join(PRETRAIN_DATASETS)}')
  if variant not in models.PAPER_VARIANTS:
    raise ValueError(f'unknown Mixer variant {variant!r}; one of '
                     f'{", ".join(models.PAPER_VARIANTS)}')
  size = variant.split('/')[0]
  if (size, dataset) not in TABLE4:
    raise ValueError(f'paper Table 4 has no row for Mixer-{size} on '
                     f'{dataset}; rows: '
                     + ', '.join(f'Mixer-{s} {d}' for s, d in TABLE4))
  mode = mode or 'paper'
  if mode not in ('paper', 'gpu8'):
    raise ValueError(f"config argument must be '' / 'paper' or 'gpu8', got "
                     f'{mode!r}')
  epochs, magnitude, mixup = TABLE4[(size, dataset)]
  (num_classes, train_split, eval_split, minival_split,
   head_bias) = PRETRAIN_DATASETS[dataset]
  c = paper_pretrain(variant)
  c.model.num_classes = num_classes
  c.model.dropout_rate = TABLE4_DROPOUT
  c.model.stoch_depth = TABLE4_STOCH_DEPTH
  c.model.stoch_depth_scale = False  # big_vision's plain 0/1 mask.
  c.model.head_bias_init = head_bias
  c.loss = 'sigmoid'  # big_vision's sigmoid_xent (docs/imagenet.md).
  c.dataset = dataset
  c.train_split = train_split
  c.eval_split = eval_split
  c.minival_split = minival_split
  c.num_epochs = epochs
  c.warmup_percent = warmup_share(
      PAPER_WARMUP_STEPS, PRETRAIN_TRAIN_EXAMPLES[dataset], epochs,
      c.batch_size)
  c.lr_end = 1e-5  # big_vision's linear_end: the decay ends at 1e-8.
  c.extra_evals = PRETRAIN_EXTRA_EVALS[dataset]
  c.fewshot = fewshot_defaults(every_steps=PRETRAIN_FEWSHOT_EVERY,
                               datasets=PRETRAIN_FEWSHOT)
  c.learning_rate = TABLE4_LEARNING_RATE
  c.weight_decay = TABLE4_WEIGHT_DECAY
  c.label_smoothing = 0.0
  c.augment.crop = 'inception'
  c.augment.inception_area_min = 0.05  # big_vision's and vit_jax's 5%.
  c.augment.flip = True
  c.augment.randaugment_layers = TABLE4_RANDAUGMENT_LAYERS
  c.augment.randaugment_magnitude = magnitude
  c.augment.randaugment_ops = 'big_vision'
  c.augment.mixup_alpha = mixup
  c.augment.cutmix_alpha = 0.0
  c.augment.eval_crop = 'center'
  if mode == 'gpu8':
    c.num_epochs = GPU8_EPOCHS[dataset]
    c.batch_size = GPU8_BATCH_SIZE
    c.eval_batch_size = GPU8_BATCH_SIZE
    c.checkpoint_every_steps = 5000
    c.warmup_percent = warmup_share(
        PAPER_WARMUP_STEPS, PRETRAIN_TRAIN_EXAMPLES[dataset], c.num_epochs,
        c.batch_size)
  return c


# Paper fine-tuning (sec. 3.1, App. C) as vit_jax's configs run it: dataset ->
# (classes, train steps, train split, eval split). vit_jax trains on
# train[:98%] (train[:99%] for ImageNet), holding the rest out for choosing
# hyper-parameters; here the whole train split is used.
FINETUNE_DATASETS = {
    'cifar10': (10, 10_000, 'train', 'test'),
    'cifar100': (100, 10_000, 'train', 'test'),
    'oxford_iiit_pet': (37, 500, 'train', 'test'),
    'oxford_flowers102': (102, 500, 'train', 'test'),
    'imagenet2012': (1000, 20_000, 'train', 'validation'),
}
PRETRAIN_IMAGE_SIZE = 224  # All released Mixer checkpoints.


def paper_finetune(variant, dataset, image_size=224, *,
                   pretrain_image_size=PRETRAIN_IMAGE_SIZE):
  """Fine-tuning a pretrained paper model (set `init_checkpoint`).

  The paper's recipe (and vit_jax's `configs/common.py`): SGD with momentum
  0.9, batch 512, global-norm clipping at 1, linear warmup (500 steps, as a
  share of the run; 5% of the 500-step Pets and Flowers runs) then
  cosine decay, no weight decay, no label smoothing, base learning rate 0.03
  (the paper picks from a small grid), 10k steps for CIFAR, 500 for Pets and
  Flowers, 20k for ImageNet; Inception crop + flip for training, a plain
  resize for evaluation. At image_size > 224 the token-mixing width grows as
  in Appendix C (`models.finetune_model_config`).
  """
  if dataset not in FINETUNE_DATASETS:
    raise ValueError(f'unknown fine-tuning dataset {dataset!r}; one of '
                     f'{", ".join(FINETUNE_DATASETS)}')
  num_classes, steps, train_split, eval_split = FINETUNE_DATASETS[dataset]
  model = models.paper(variant, num_classes=num_classes)
  model = models.finetune_model_config(model, pretrain_image_size, image_size)
  # The recipe's length is in steps: num_epochs=0 says it has no length in
  # epochs (so a shortened run's log never quotes one).
  c = base(model, dataset=dataset, image_size=image_size, batch_size=512,
           num_train_steps=steps, num_epochs=0, optimizer='sgd', momentum=0.9,
           learning_rate=0.03, lr_schedule='cosine',
           warmup_percent=500 / steps if steps > 500 else 0.05,
           weight_decay=0.0, grad_clip_norm=1.0, label_smoothing=0.0,
           train_split=train_split, eval_split=eval_split,
           eval_batch_size=512, eval_every_steps=max(steps // 10, 50),
           checkpoint_every_steps=min(1000, steps), log_every_steps=10)
  c.augment.crop = 'inception'
  c.augment.flip = True
  c.augment.eval_crop = 'resize'
  return c
