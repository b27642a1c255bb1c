r"""Trains and evaluates an MLP-Mixer: the project's main job.

    python train.py --config=configs/cifar10_baseline.py --workdir=workdirs/baseline
    python train.py --config=configs/cifar10_baseline.py --workdir=W \
        --config.num_train_steps=200 --config.batch_size=128

Any config field can be overridden as `--config.<field>=<value>`. Running
again with the same workdir resumes from its latest checkpoint.
"""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from mixer import train

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Experiment config file (configs/<name>.py).',
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Folder for checkpoints, metrics and results.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  logging.set_verbosity(logging.INFO)
  train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == '__main__':
  flags.mark_flags_as_required(['config', 'workdir'])
  app.run(main)
