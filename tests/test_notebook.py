"""Executes notebooks/mixer_colab.ipynb end to end on the CPU, tiny settings.

Every code cell runs (the install cell sees the importable project and skips
itself) in a `python3` kernel of the test's own interpreter, with the
repository root as working directory and the real CIFAR-10 from
$MIXER_DATA_DIR. The parameters cell reads the MIXER_NOTEBOOK_* variables set
here: a 32-wide, 1-block Mixer, batch 64, 500 test images, 10 baseline steps
and one sweep run (patch 8) of 10 steps.
"""

import pathlib

import pytest

nbformat = pytest.importorskip('nbformat')
nbclient = pytest.importorskip('nbclient')

REPO = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / 'notebooks' / 'mixer_colab.ipynb'

TINY_OVERRIDES = ';'.join([
    'model.hidden_dim=32', 'model.num_blocks=1', 'model.tokens_mlp_dim=16',
    'model.channels_mlp_dim=64', 'batch_size=64', 'warmup_steps=2',
    'eval_split=test[:500]', 'eval_batch_size=250'])


def test_notebook_runs_with_tiny_settings(tmp_path, data_dir, monkeypatch):
  if not (REPO / 'mixer' / 'data' / '__init__.py').exists():
    pytest.skip('the input pipeline is not in this checkout yet')
  workdir = tmp_path / 'notebook'
  for key, value in {
      'MIXER_DATA_DIR': str(data_dir),
      'MIXER_NOTEBOOK_STEPS': '10',
      'MIXER_NOTEBOOK_SWEEP_STEPS': '10',
      'MIXER_NOTEBOOK_OVERRIDES': TINY_OVERRIDES,
      'MIXER_NOTEBOOK_SWEEP': 'configs/sweeps/patch_size.py',
      'MIXER_NOTEBOOK_SWEEP_ONLY': 'patch8x8',
      'MIXER_NOTEBOOK_WORKDIR': str(workdir),
      'MIXER_NOTEBOOK_POLL_SECONDS': '1',
  }.items():
    monkeypatch.setenv(key, value)  # The kernel inherits the environment.

  nb = nbformat.read(str(NOTEBOOK), as_version=4)
  client = nbclient.NotebookClient(
      nb, kernel_name='python3', timeout=180,
      resources={'metadata': {'path': str(REPO)}})
  client.execute()

  outputs = {i: c.get('outputs', []) for i, c in enumerate(nb.cells)
             if c.cell_type == 'code'}
  assert all(c.get('execution_count') for c in nb.cells
             if c.cell_type == 'code')
  text = '\n'.join(o.get('text', '') for outs in outputs.values()
                   for o in outs if o.get('output_type') == 'stream')
  assert 'nothing to install' in text
  assert 'local cpu device' in text
  images = [o for outs in outputs.values() for o in outs
            if 'image/png' in o.get('data', {})]
  assert len(images) == 2  # Baseline curves, sweep curves.

  run_dir = workdir / 'train' / 'cifar10_baseline'
  assert (run_dir / 'results.json').exists()
  assert (run_dir / 'metrics.jsonl').read_text().count('\n') >= 2
  sweep_dir = workdir / 'patch_size'
  summary = (sweep_dir / 'summary.md').read_text()
  assert '| patch8x8 | 8x8 |' in summary
  assert '| patch2x2 | 2x2 |' in summary and '| patch4x4 | 4x4 |' in summary
  assert summary.count('| not started |') == 2
  assert (sweep_dir / 'curves.png').stat().st_size > 10_000
