"""Shared test fixtures: real data location and tiny configs."""

import os
import pathlib
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))


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
