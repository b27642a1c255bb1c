r"""Few-shot linear accuracy of a checkpoint: `python -m mixer.fewshot`.

    python -m mixer.fewshot --config=configs/<x>.py --checkpoint=PATH \
        --datasets=cifar10 --shots=1,5,10,25

`--checkpoint` is an official `.npz` or one of this project's orbax
checkpoints (a workdir, its `checkpoints/` folder or one step folder); with
a workdir, `--config` defaults to its `config.json`. Prints one row per
dataset and one column per shot count (accuracy in %, the mean over
`num_seeds` draws of the shots), then the seconds it took. The metric is
`mixer.evaluators.fewshot` (big_vision's `fewshot_lsr`, docs/fewshot.md).
Errors follow the CLI contract of `mixer.cli`: one `error:` line, exit 1.
"""

if __name__ == '__main__':
  # The CLI contract: imported before JAX (quiet C++ start-up logging).
  from mixer import cli  # pylint: disable=g-import-not-at-top

import os
import time
from typing import Any, Dict, Optional, Sequence, Tuple

from absl import flags
from ml_collections import config_flags

from mixer import pretrained
from mixer import workdir as workdir_lib
from mixer.evaluators.fewshot import FewShotEvaluator
from mixer.evaluators.fewshot import fewshot_config

_CONFIG = None
_CHECKPOINT = None
_DATASETS = None
_SHOTS = None
_NUM_SEEDS = None
_NUM_TEST = None
_BATCH_SIZE = None
_DATA_DIR = None


def define_flags():
  """Defines the command-line flags (only when run as a program, so that
  importing this module next to other CLIs never redefines a flag)."""
  global _CONFIG, _CHECKPOINT, _DATASETS, _SHOTS, _NUM_SEEDS, _NUM_TEST
  global _BATCH_SIZE, _DATA_DIR
  _CONFIG = config_flags.DEFINE_config_file(
      'config', None, 'Config the checkpoint was trained with (default: the '
      'config.json of the workdir --checkpoint points into).',
      lock_config=False)
  _CHECKPOINT = flags.DEFINE_string(
      'checkpoint', None, 'Official .npz file, or an orbax workdir / its '
      'checkpoints/ folder / one step folder.')
  _DATASETS = flags.DEFINE_list(
      'datasets', None, 'Few-shot datasets (names in config.fewshot.datasets, '
      'or any dataset read as (name, train, test)); default: '
      'config.fewshot.datasets.')
  _SHOTS = flags.DEFINE_list(
      'shots', None, 'Shots per class, e.g. 1,5,10,25 (default: '
      'config.fewshot.shots).')
  _NUM_SEEDS = flags.DEFINE_integer(
      'num_seeds', None, 'Draws of the shots averaged (default: '
      'config.fewshot.num_seeds).')
  _NUM_TEST = flags.DEFINE_integer(
      'num_test', None, 'Use the first N test examples; <= 0: all (default: '
      'config.fewshot.num_test).')
  _BATCH_SIZE = flags.DEFINE_integer(
      'batch_size', None, 'Images per feature-extraction batch (default: '
      'config.fewshot.batch_size).')
  _DATA_DIR = flags.DEFINE_string(
      'data_dir', None, 'Folder of the few-shot datasets (default: '
      'config.fewshot.data_dir, config.data_dir, $MIXER_DATA_DIR, tfds).')


def parse_shots(values: Sequence[str]) -> Tuple[int, ...]:
  try:
    shots = tuple(int(v) for v in values)
  except ValueError:
    shots = ()
  if not shots or min(shots) <= 0:
    raise ValueError(f'--shots must be positive integers separated by commas '
                     f'(e.g. --shots=1,5,10,25), got {",".join(values)!r}')
  return shots


def load_checkpoint(config, checkpoint: str):
  """(headless model, params without head) from an official `.npz` or an
  orbax checkpoint, checked against `config.model`."""
  return pretrained.load_for_model(config, checkpoint, head=False)


def format_table(results: Dict[str, Dict[int, float]],
                 shots: Sequence[int]) -> str:
  """One row per dataset, one column per shot count, accuracies in %."""
  width = max([len(n) for n in results] + [len('dataset')]) + 2
  header = f'{"dataset":<{width}}' + ''.join(
      f'{f"{s}-shot":>10}' for s in shots)
  lines = [header, '-' * len(header)]
  for name, accs in results.items():
    lines.append(f'{name:<{width}}' + ''.join(
        f'{100 * accs[int(s)]:>10.2f}' for s in shots))
  return '\n'.join(lines)


def run_cli(config, checkpoint: str, datasets: Optional[Sequence[str]] = None,
            overrides: Optional[Dict[str, Any]] = None) -> str:
  """Evaluates `checkpoint`; returns the printed text."""
  t0 = time.time()
  overrides = dict(overrides or {})
  fs = fewshot_config(config)
  if datasets:
    known = fs.datasets.to_dict() if hasattr(fs.datasets, 'to_dict') else dict(
        fs.datasets)
    overrides['datasets'] = {
        n: tuple(known[n]) if n in known else (n, 'train', 'test')
        for n in datasets}
  model, params = load_checkpoint(config, checkpoint)
  evaluator = FewShotEvaluator(config, model, overrides)
  results = {name: evaluator.evaluate_dataset(params, name)
             for name in evaluator.fs.datasets}
  seconds = time.time() - t0
  fs = evaluator.fs
  title = (f'Few-shot linear accuracy (%) of {checkpoint}: mean of '
           f'{fs.num_seeds} seed(s) from {fs.seed}, l2_reg {fs.l2_reg:g}, '
           + ('all test examples' if int(fs.num_test) <= 0 else
              f'first {int(fs.num_test)} test examples'))
  return '\n'.join([title, format_table(results, fs.shots),
                    f'took {seconds:.1f} s'])


def main(argv):
  from absl import app  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  checkpoint = _CHECKPOINT.value
  if not checkpoint:
    raise ValueError('--checkpoint is required: an official .npz file or a '
                     'run\'s workdir / checkpoint folder')
  config = _CONFIG.value
  if config is None:
    config = workdir_lib.run_config(checkpoint)
    if config is None:
      if not os.path.exists(checkpoint):
        raise ValueError(f'checkpoint {checkpoint} does not exist; pass an '
                         'official .npz file or a run\'s workdir')
      raise ValueError(f'--config is required: {checkpoint} has no '
                       'config.json beside it; pass --config=configs/'
                       '<name>.py, the config it was trained with')
  overrides = {}
  if _SHOTS.value:
    overrides['shots'] = parse_shots(_SHOTS.value)
  for key, flag in (('num_seeds', _NUM_SEEDS), ('num_test', _NUM_TEST),
                    ('batch_size', _BATCH_SIZE), ('data_dir', _DATA_DIR)):
    if flag.value is not None:
      overrides[key] = flag.value
  print(run_cli(config, checkpoint, _DATASETS.value, overrides), flush=True)


if __name__ == '__main__':
  define_flags()
  cli.run(main)
