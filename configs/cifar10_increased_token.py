"""Seed 000 CIFAR-10 ablation, variant 'increased_token' (see configs.models.SEED000_RATIOS).

Recipe shared by the four variants: configs.common.seed000_cifar10.
"""

from configs import common


def get_config():
  return common.seed000_cifar10('increased_token')
