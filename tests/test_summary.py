"""`python -m mixer.summary` prints the exact parameter counts of the specs."""

import importlib
import os
import subprocess
import sys

import pytest

from mixer import summary
from tests.conftest import REPO

SEED_TOTALS = {  # ../shared/seeds/000_*.txt and 001.
    'cifar10_baseline': 2_188_298,
    'cifar10_increased_token': 2_254_346,
    'cifar10_increased_channel': 4_289_546,
    'cifar10_balanced_ratio': 678_410,
    'cifar10_seed001': 6_782_858,
}
PAPER_HEADLESS = {  # num_classes=0; the paper's Table 1 rounds these.
    'mixer_s32': 18_591_624, 'mixer_s16': 18_015_264,
    'mixer_b32': 59_524_428, 'mixer_b16': 59_111_472,
    'mixer_l32': 205_914_264, 'mixer_l16': 207_171_168,
    'mixer_h14': 431_069_952,
}


def _config(name):
  return importlib.import_module(f'configs.{name}').get_config()


def _total(text):
  last = text.strip().splitlines()[-1]
  assert last.startswith('Total params: ')
  return int(last.split(': ')[1].replace(',', ''))


@pytest.mark.parametrize('name', sorted(SEED_TOTALS))
def test_seed_totals(name):
  assert _total(summary.summarize(_config(name))) == SEED_TOTALS[name]


@pytest.mark.parametrize('name', sorted(PAPER_HEADLESS))
def test_paper_totals_headless(name):
  config = _config(name)
  config.model.num_classes = 0
  assert _total(summary.summarize(config)) == PAPER_HEADLESS[name]


def test_seed002_model_has_the_seeds_shape():
  text = summary.summarize(_config('fashion_mnist_seed002'))
  assert '(1, 7, 7, 16)' in text  # 28x28 with 4x4 patches -> 49 tokens, C=16
  assert '(1, 16, 1024)' in text  # token MLP hidden width D_S = 1024


def test_rows_match_seed_table_layout():
  text = summary.summarize(_config('cifar10_baseline'))
  # The seed's table: token MLP Linear(64->128) on transposed [256, 64] input.
  assert 'MixerBlock_0/token_mixing/Dense_0 (Dense)' in text
  line = next(l for l in text.splitlines()
              if l.startswith('MixerBlock_0/token_mixing/Dense_0'))
  assert '(1, 256, 128)' in line and line.rstrip().endswith('8,320')


def test_cli_prints_total_last():
  out = subprocess.run(
      [sys.executable, '-m', 'mixer.summary',
       '--config=configs/mixer_h14.py', '--config.model.num_classes=0'],
      cwd=REPO, capture_output=True, text=True, timeout=120, check=True)
  assert out.stdout.strip().splitlines()[-1] == 'Total params: 431,069,952'


def test_cli_bad_config_is_one_clear_error():
  out = subprocess.run(
      [sys.executable, '-m', 'mixer.summary',
       '--config=configs/cifar10_baseline.py', '--config.model.patches.size=(5,5)'],
      cwd=REPO, capture_output=True, text=True, timeout=120)
  assert out.returncode == 1
  assert out.stderr.strip().splitlines() == [
      'error: model.patches.size (5, 5) does not divide the image size (32, 32)']


def test_cli_missing_config_from_another_directory(tmp_path):
  """A relative --config is relative to the current directory: the one
  error line says so and what to pass."""
  out = subprocess.run(
      [sys.executable, '-m', 'mixer.summary',
       '--config=configs/cifar10_baseline.py'],
      cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(REPO)),
      capture_output=True, text=True, timeout=120)
  assert out.returncode == 1
  assert out.stderr.strip().splitlines() == [
      'error: config file configs/cifar10_baseline.py not found (relative to '
      f'the current directory {tmp_path}): give --config= the path of an '
      'experiment config file, e.g. --config=configs/cifar10_baseline.py '
      'from the repository root']
