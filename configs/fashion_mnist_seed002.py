"""Seed 002's Fashion-MNIST Mixer: 28x28x1, patch 4, 8 blocks, C=16, D_S=1024,
D_C=512, ReLU, dropout 0.1.

The seed's best run (89.17% test accuracy): lr 0.01, dropout 0.1, batch 256,
60 epochs. The seed does not name the optimiser; its run-manager style trains
with Adam at a constant rate, which is what this config does (no warmup, no
weight decay, no clipping, no augmentation).
"""

from configs import common
from configs import models


def get_config():
  c = common.base(
      models.seed002(), dataset='fashion_mnist', image_size=28, channels=1,
      batch_size=256, num_epochs=60, optimizer='adam', learning_rate=0.01,
      lr_schedule='constant', warmup_percent=0.0, weight_decay=0.0,
      grad_clip_norm=0.0, checkpoint_every_steps=2000)
  c.augment.crop = 'none'
  c.augment.flip = False
  return c
