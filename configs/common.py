"""Training fields shared by every experiment config, with their defaults.

Experiment files call `base(model, ...)` and override what their recipe
changes; nothing here is copied into them. Field names are part of the
project's interface (scripts, sweeps and tests rely on them).
"""

import ml_collections

from configs import models


def base(model, *, dataset, image_size, channels=3, **overrides):
  """Returns a complete, unlocked-for-nothing ConfigDict.

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
  c.input_pipeline = 'host'  # 'host' (tfds/numpy batches) or 'device'.
  c.shuffle_buffer = 50_000
  c.train_split = 'train'
  c.eval_split = 'test'
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

  # Optimisation (paper pre-training: Adam 0.9/0.999, clip 1, warmup+linear).
  c.batch_size = 512  # Global, over all devices and processes.
  c.eval_batch_size = 1000
  c.grad_accum_steps = 1  # Micro-batches per step (batch_size is the total).
  c.num_epochs = 100
  c.num_train_steps = -1  # > 0 overrides num_epochs.
  c.optimizer = 'adamw'  # 'adam', 'adamw' or 'sgd'.
  c.learning_rate = 1e-3
  c.lr_schedule = 'linear'  # 'linear', 'cosine' or 'constant' after warmup.
  c.warmup_steps = 500
  c.b1 = 0.9
  c.b2 = 0.999
  c.momentum = 0.9  # sgd only.
  c.weight_decay = 0.1  # Decoupled, kernels only, relative to lr (optax).
  c.grad_clip_norm = 1.0  # Global norm; 0 = off.
  c.label_smoothing = 0.0

  # Loop.
  c.seed = 0
  c.log_every_steps = 50
  c.eval_every_steps = -1  # -1 = once per epoch; 0 = only at the end.
  c.checkpoint_every_steps = 1000
  c.keep_checkpoints = 3
  c.steps_per_dispatch = 1  # Train steps fused per dispatch (lax.scan).
  # Fine-tuning start point: '' (train from scratch), an official `.npz` or
  # one of this project's orbax checkpoints (workdir, its checkpoints/ dir or
  # a step dir); see mixer.checkpoints.load_init_params. The paper's
  # checkpoints are published at https://console.cloud.google.com/storage/mixer_models/
  # e.g. `gsutil cp gs://mixer_models/imagenet21k/Mixer-B_16.npz .`
  c.init_checkpoint = ''
  # Token groups when init_checkpoint has fewer tokens (higher fine-tuning
  # resolution, paper App. C): 'strided' sub-grids or contiguous 'tiles'.
  c.init_token_grouping = 'strided'

  for key, value in overrides.items():
    if key not in c:
      raise KeyError(f'unknown config field {key!r}')
    c[key] = value
  return c


def seed000_cifar10(variant):
  """Seed 000's CIFAR-10 ablation: one recipe for all four variants.

  The seed gives only the models (its tables). The recipe is the plain one a
  small CIFAR Mixer trains well with: AdamW lr 1e-3, weight decay 0.05
  (relative to lr), 5 warmup epochs then cosine, label smoothing 0.1,
  pad-4 random crop + flip, batch 512, 100 epochs, clipping at 1.
  """
  steps_per_epoch = 50_000 // 512
  return base(models.seed000(variant), dataset='cifar10', image_size=32,
              batch_size=512, num_epochs=100, optimizer='adamw',
              learning_rate=1e-3, weight_decay=0.05, lr_schedule='cosine',
              warmup_steps=5 * steps_per_epoch, label_smoothing=0.1,
              checkpoint_every_steps=10 * steps_per_epoch)


def paper_pretrain(variant):
  """Paper Table 1 model with its ImageNet-1k pre-training recipe (sec. 3.1,
  App. B): Adam b1 0.9 b2 0.999, batch 4096, lr 1e-3, weight decay 0.1,
  10k warmup steps then linear decay, clipping at global norm 1, 300 epochs,
  resolution 224, Inception crop + flip."""
  c = base(models.paper(variant, num_classes=1000), dataset='imagenet2012',
           image_size=224, batch_size=4096, num_epochs=300, optimizer='adamw',
           learning_rate=1e-3, weight_decay=0.1, lr_schedule='linear',
           warmup_steps=10_000, grad_clip_norm=1.0, eval_batch_size=1024,
           train_split='train', eval_split='validation', shuffle_buffer=250_000,
           checkpoint_every_steps=2000, log_every_steps=100,
           eval_every_steps=5000)
  c.augment.crop = 'inception'
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
  0.9, batch 512, global-norm clipping at 1, linear warmup (500 steps) then
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
  c = base(model, dataset=dataset, image_size=image_size, batch_size=512,
           num_train_steps=steps, optimizer='sgd', momentum=0.9,
           learning_rate=0.03, lr_schedule='cosine', warmup_steps=500,
           weight_decay=0.0, grad_clip_norm=1.0, label_smoothing=0.0,
           train_split=train_split, eval_split=eval_split,
           eval_batch_size=512, eval_every_steps=max(steps // 10, 50),
           checkpoint_every_steps=min(1000, steps), log_every_steps=10)
  c.augment.crop = 'inception'
  c.augment.flip = True
  c.augment.eval_crop = 'resize'
  return c
