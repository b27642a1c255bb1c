"""benchmarks/side_by_side.py and timm_peer.py run as documented (CPU smoke)."""

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

TINY_MODEL = ['--set=model.hidden_dim=32', '--set=model.num_blocks=1',
              '--set=model.tokens_mlp_dim=16',
              '--set=model.channels_mlp_dim=64']


def _run(*args, timeout=600):
  return subprocess.run([sys.executable, 'benchmarks/side_by_side.py',
                         '--config=configs/cifar10_baseline.py', *args],
                        cwd=REPO, capture_output=True, text=True,
                        timeout=timeout)


def _has_torch() -> bool:
  return subprocess.run([sys.executable, '-c', 'import torch, timm'],
                        capture_output=True).returncode == 0


def test_peers_side_by_side_with_ratios_memory_and_compile_time():
  out = _run(*TINY_MODEL, '--batch_size=8', '--rounds=2', '--steps=1',
             '--peers=project,minimal,timm',
             f'--timm_python={sys.executable}')
  assert out.returncode == 0, out.stderr[-3000:]
  record = json.loads(out.stdout.strip().splitlines()[-1])
  rows = {r['peer']: r for r in record['rows']}
  assert set(rows) >= {'project', 'minimal'}
  assert rows['minimal']['x_minimal'] == 1.0
  for name in ('project', 'minimal'):
    r = rows[name]
    assert len(r['rounds_ms']) == 2 and r['img_per_s'] > 0
    assert r['img_per_s'] == pytest.approx(8e3 / r['step_ms'])
    assert r['compile_s'] > 0 and r['first_step_s'] > 0
    assert r['xla_temp_bytes'] > 0 and r['peak_rss_mb'] > 100
  if not _has_torch():  # This Python has no torch: the row says how.
    assert 'timm' not in rows
    assert any('pip install' in n and 'timm' in n for n in record['notes'])
  # The markdown table and the progress of every round.
  assert '| project |' in out.stdout and '| minimal | ' in out.stdout
  assert 'round 2/2' in out.stderr


@pytest.mark.parametrize('args,message', [
    (['--peers=project,jax'], "--peers: unknown peer(s) jax"),
    (['--rounds=0'], '--rounds must be at least 1, got 0'),
    (['--set=model.nope=1'], 'model.nope'),
])
def test_bad_arguments_are_one_error_line(args, message):
  out = _run(*args, timeout=120)
  assert out.returncode == 1
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: ')
  assert message in lines[0]


def test_timm_peer_without_torch_says_how_to_install_it():
  if _has_torch():
    pytest.skip('this Python has torch and timm')
  out = subprocess.run([sys.executable, 'benchmarks/timm_peer.py',
                        '--config=configs/cifar10_baseline.py'],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
  assert out.returncode == 1
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: ')
  assert 'pip install torch torchvision timm' in lines[0]
