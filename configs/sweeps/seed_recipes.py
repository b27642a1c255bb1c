"""Every seed model under one documented recipe: `configs/cifar10_fast.py`'s.

    python sweep.py --sweep=configs/sweeps/seed_recipes.py --workdir=workdirs/seeds

Runs the four seed-000 CIFAR-10 variants, seed 001's CIFAR-10 model and seed
002's Fashion-MNIST model with the same training recipe as `cifar10_fast`
(AdamW 2e-3, 200 epochs, batch 512, RandAugment(2, 10), mixup 0.8 / cutmix
1.0, label smoothing 0.1, stochastic depth 0.1, bf16, device-resident data),
so the table compares the models, not their authors' recipes. Each model
keeps its own architecture (seed 002 its ReLU and dropout 0.1). The seeds
report ~90.1% (seed 001, 80 epochs) and 89.17% (seed 002, 60 epochs).

Cost: 0.3-0.6 GFLOP per forward image for the seed-000 models, 0.64 for seed
001's; 200 epochs are 2-20 PFLOP per run: minutes each on one modern GPU.
"""

from configs import cifar10_fast
from configs import models
from mixer import sweeps


def _recipe(model, **data):
  config = cifar10_fast.get_config()
  model.stoch_depth = 0.1
  model.dtype = 'bfloat16'
  config.model = model
  for key, value in data.items():
    config[key] = value
  return config


SHOW = ('dataset', 'model.num_blocks', 'model.hidden_dim',
        'model.tokens_mlp_dim', 'model.channels_mlp_dim')


def get_sweep():
  runs = [sweeps.run(f'seed000_{variant}', _recipe(models.seed000(variant)),
                     show=SHOW)
          for variant in models.SEED000_RATIOS]
  runs.append(sweeps.run('seed001', _recipe(models.seed001()), show=SHOW))
  runs.append(sweeps.run(
      'seed002_fashion_mnist',
      _recipe(models.seed002(), dataset='fashion_mnist', image_size=28,
              channels=1), show=SHOW))
  return runs
