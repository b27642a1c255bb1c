"""Every experiment config builds, validates and trains with its recipe."""

import importlib

import jax.numpy as jnp
import pytest

from mixer import augment
from mixer import models
from mixer import optim
from mixer import train
from tests.conftest import REPO
from tests.conftest import tiny_config

EXPERIMENTS = sorted(
    p.stem for p in (REPO / 'configs').glob('*.py')
    if p.stem not in ('__init__', 'common', 'models')
    and 'def get_config(' in p.read_text())


def _get(name):
  module = importlib.import_module(f'configs.{name}')
  try:
    return module.get_config()
  except TypeError:  # Configs that take an argument have a default one.
    pytest.skip(f'{name} needs a config argument')


@pytest.mark.parametrize('name', EXPERIMENTS)
def test_config_builds_and_validates(name):
  config = _get(name)
  for field in ('dataset', 'data_dir', 'batch_size', 'num_epochs',
                'num_train_steps', 'log_every_steps', 'eval_every_steps',
                'checkpoint_every_steps', 'seed', 'model'):
    assert field in config, field
  model = models.build_model(config.model)
  model.check(models.input_shape(config))
  optim.make_optimizer(config, total_steps=max(config.warmup_steps + 1,
                                               10_000))
  augment.make_train_augment(config.augment, config.model.num_classes)
  assert config.batch_size > 0


def test_fast_recipe_runs_its_whole_step_on_cpu(tmp_path, data_dir):
  # The recipe as configured (bf16, device-resident data, RandAugment, mixup
  # + cutmix, stochastic depth, 10 fused steps), on a tiny model.
  config = tiny_config('cifar10_fast', num_train_steps=10, warmup_steps=2,
                       log_every_steps=10, checkpoint_every_steps=10)
  assert config.input_pipeline == 'device' and config.steps_per_dispatch == 10
  res = train.train_and_evaluate(config, str(tmp_path))
  assert res['steps'] == 10 and res['eval_examples'] == 500
  assert jnp.isfinite(res['final_eval_loss'])
