"""Shared test fixtures: real data location and tiny configs."""

import os
import pathlib
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))

# Many tests compile the same tiny train step; a persistent compilation cache
# (shared with the subprocesses the tests start, through the environment)
# makes every compile after the first a cache hit. It lives in this checkout
# (git-ignored), so another checkout or user on the machine neither shares
# nor spoils it; delete the folder for a cold-cache run. Speed only: a cache
# hit runs the same executable a compile would produce.
_CACHE = os.environ.setdefault('JAX_COMPILATION_CACHE_DIR',
                               str(REPO / '.jax-cache' / 'tests'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')
# XLA:CPU's LLVM at -O0: the tests' tiny programs spend most of their time
# compiling, and -O0 compiles them about twice as fast (the same operations,
# run unoptimised: this changes speed only). Appended, so a caller's own
# XLA_FLAGS stay; inherited by the subprocesses the tests start.
if '--xla_backend_optimization_level' not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                             ' --xla_backend_optimization_level=0').strip()
# No TensorBoard events (metrics.jsonl is unchanged), so that the dozens of
# runs the tests start do not each spend ~5 s of CPU importing TensorFlow;
# test_cli_trains_checkpoints_evaluates_and_resumes turns them back on and
# checks the event file.
os.environ.setdefault('MIXER_TENSORBOARD', '0')
# The data location the README's test command gives, also when pytest is
# started without it: a test must never fall back to a tfds download.
if (REPO.parent / 'shared' / 'data').is_dir():
  os.environ.setdefault('MIXER_DATA_DIR', str(REPO.parent / 'shared' / 'data'))


def shared_data_dir() -> pathlib.Path:
  """$MIXER_DATA_DIR, else ../shared/data beside the checkout."""
  env = os.environ.get('MIXER_DATA_DIR')
  path = pathlib.Path(env) if env else REPO.parent / 'shared' / 'data'
  return path.resolve()


@pytest.fixture
def data_dir() -> pathlib.Path:
  path = shared_data_dir()
  if not (path / 'cifar10' / 'test.npz').exists():
    pytest.skip(f'real data not found in {path}')
  return path


def tiny_config(name: str = 'cifar10_baseline', **overrides):
  """A real experiment config shrunk to a seconds-long CPU run.

  Keys may be dotted ('model.hidden_dim', 'augment.flip').
  """
  import importlib  # pylint: disable=g-import-not-at-top
  config = importlib.import_module(f'configs.{name}').get_config()
  settings = {
      'model.hidden_dim': 32, 'model.num_blocks': 1,
      'model.tokens_mlp_dim': 16, 'model.channels_mlp_dim': 64,
      'batch_size': 32, 'eval_batch_size': 250, 'num_train_steps': 8,
      'warmup_steps': 2, 'log_every_steps': 2, 'eval_every_steps': 0,
      'checkpoint_every_steps': 4, 'eval_split': 'test[:500]',
  }
  settings.update(overrides)
  for key, value in settings.items():
    node = config
    *parents, leaf = key.split('.')
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


@pytest.fixture(scope='session')
def imagenet_standin(tmp_path_factory) -> str:
  """A TFDS data dir with stand-in `imagenet2012` (64 train, 24 validation
  images), `imagenet21k` (48 images), `imagenet_v2` and `imagenet2012_real`
  (12 each), written by tfds's own builders from generated JPEGs
  (benchmarks/input_pipeline.py); built once per test process."""
  from benchmarks import input_pipeline as standin  # pylint: disable=g-import-not-at-top
  root = str(tmp_path_factory.mktemp('tensorflow_datasets'))
  standin.write_imagenet2012_standin(root, num_train=64, num_val=24)
  standin.write_imagenet21k_standin(root, num=48)
  standin.write_imagenet_eval_standins(root, num=12)
  return root
