"""Every experiment config builds, validates and trains with its recipe."""

import importlib

import jax.numpy as jnp
import pytest

from mixer import augment
from mixer import models
from mixer import optim
from mixer import train
from tests.conftest import REPO

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


# -- every shipped config takes a short run ----------------------------------

def _dataset(name):
  return _get(name).dataset


# Trained from scratch on data in $MIXER_DATA_DIR (fine-tuning is not: its
# models are paper-size at 224).
LOCAL = [n for n in EXPERIMENTS if _dataset(n) in ('cifar10', 'fashion_mnist')
         and n != 'finetune']
# The Table 4 configs train end to end on the stand-in ImageNet in
# tests/test_recipes.py (test_recipe_trains_end_to_end).
STANDIN = [n for n in EXPERIMENTS if n not in LOCAL
           and not n.startswith(('imagenet2012_', 'imagenet21k_'))]


@pytest.mark.parametrize('name', LOCAL)
def test_local_config_takes_a_short_run(name, tmp_path, data_dir):
  # A user's first move: the config as shipped with only
  # --config.num_train_steps=3 --config.batch_size=8 added (CI also cuts
  # the evaluation to 64 examples; tests/test_docs.py runs the CLI).
  config = _get(name)
  if name == 'cifar10_fast':  # Its whole recipe runs (3 steps, one dispatch).
    assert config.input_pipeline == 'device'
    assert config.steps_per_dispatch == 10 and config.model.dtype == 'bfloat16'
  config.num_train_steps = 3
  config.batch_size = 8
  config.eval_split = 'test[:64]'
  config.eval_batch_size = 64
  results = train.train_and_evaluate(config, str(tmp_path))
  assert results['steps'] == 3 and results['usable']
  assert jnp.isfinite(results['final_eval_loss'])


@pytest.fixture
def standin_dir(imagenet_standin):
  return imagenet_standin


def _shrunk(name, standin_dir):
  """`name`'s config for a 3-step run at batch 32 on the stand-in ImageNet
  (or the real CIFAR-10 at 224 for fine-tuning), with the model shrunk: a
  paper-size Mixer at 224 takes minutes per step on a 2-core CPU. The
  recipe's other fields (schedule, warmup share, crops, loss) are kept."""
  config = _get(name)
  config.model.num_blocks = 1
  config.model.hidden_dim = 16
  config.model.tokens_mlp_dim = 8 * (config.model.tokens_mlp_dim //
                                     _paper_tokens_mlp_dim(config))
  config.model.channels_mlp_dim = 32
  config.num_train_steps = 3
  config.batch_size = 32
  config.eval_batch_size = 8
  if config.dataset.startswith('imagenet'):
    config.data_dir = standin_dir
    config.eval_split, config.minival_split = {
        'imagenet2012': ('validation[:8]', config.minival_split and
                         'train[99%:]'),
        'imagenet21k': ('full[:8]', config.minival_split and 'full[8:16]'),
    }[config.dataset]
    if config.dataset == 'imagenet21k':
      config.train_split = 'full[16:]'
      if 'train25k' in config.extra_evals:  # full[51200:76800], shrunk.
        config.extra_evals.train25k = ('', 'full[16:24]')
  else:
    config.eval_split = 'test[:8]'
  config.fewshot.every_steps = 0  # big_vision's datasets need downloads.
  return config


def _first_same(name, standin_dir):
  """The first config in STANDIN that shrinks to the same run as `name`
  (mixer_s16, _b16 and _l16 differ only in the model that is shrunk)."""
  mine = _shrunk(name, standin_dir).to_json_best_effort()
  for other in STANDIN[:STANDIN.index(name)]:
    theirs = _shrunk(other, standin_dir)
    theirs.model.model_name = _get(name).model.model_name
    if theirs.to_json_best_effort() == mine:
      return other
  return None


@pytest.mark.parametrize('name', STANDIN)
def test_imagenet_and_finetune_configs_take_a_short_run(name, tmp_path,
                                                        data_dir, standin_dir):
  config = _shrunk(name, standin_dir)
  same = _first_same(name, standin_dir)
  if same:
    pytest.skip(f'shrunk, {name} is the same run as {same}')
  results = train.train_and_evaluate(config, str(tmp_path))
  assert results['steps'] == 3 and results['usable']


def _paper_tokens_mlp_dim(config):
  """The config's D_S at pre-training resolution (fine-tuning at a higher
  one multiplies it, paper App. C)."""
  from configs import models as specs  # pylint: disable=g-import-not-at-top
  name = config.model.model_name.replace('Mixer-', '')
  return specs.paper(name).tokens_mlp_dim if name in specs.PAPER_VARIANTS \
      else config.model.tokens_mlp_dim
