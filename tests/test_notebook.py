"""Executes notebooks/mixer_colab.ipynb on the CPU, tiny settings, the way a
user does on Colab: Run all, press stop while it trains, restart the runtime,
Run all again, re-run cells.

Every code cell runs in a `python3` kernel of the test's own interpreter,
started in a scratch folder (as Colab starts in /content): the install cell
sees the importable project (this checkout, first on PYTHONPATH), skips the
install and changes into the repository. The parameters cell reads the
MIXER_NOTEBOOK_* variables set here: a 32-wide, 1-block Mixer, batch 64, 500
test images, STEPS baseline steps and one sweep run (patch 8) of 10 steps,
with the real CIFAR-10 from $MIXER_DATA_DIR.

The branch CI's kernel never takes -- a fresh Colab runtime where `mixer` is
not installed: clone, keep or upgrade JAX for the TPU or GPU found, install
-- runs in its own interpreter with that environment faked (the commands are
recorded, not run), as do mounting Drive for a workdir there and hiding the
GPU from TensorFlow.
"""

import asyncio
import os
import pathlib
import re
import threading
import time

import pytest

nbformat = pytest.importorskip('nbformat')
nbclient = pytest.importorskip('nbclient')

REPO = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / 'notebooks' / 'mixer_colab.ipynb'

TINY_OVERRIDES = ';'.join([
    'model.hidden_dim=32', 'model.num_blocks=1', 'model.tokens_mlp_dim=16',
    'model.channels_mlp_dim=64', 'batch_size=64', 'warmup_steps=2',
    'eval_split=test[:500]', 'eval_batch_size=250'])
# Long enough that the stop lands while it trains (the first record is
# logged at step 10), short enough for a test.
STEPS = 100


class Session:
  """One kernel running the notebook's cells (and extra cells) in order."""

  def __init__(self, cwd: pathlib.Path):
    self.nb = nbformat.read(str(NOTEBOOK), as_version=4)
    self.client = nbclient.NotebookClient(
        self.nb, kernel_name='python3', timeout=180,
        resources={'metadata': {'path': str(cwd)}})
    self.cells = []  # Every cell run, in order.

  def __enter__(self):
    self._kernel = self.client.setup_kernel()
    self._kernel.__enter__()
    return self

  def __exit__(self, *exc):
    return self._kernel.__exit__(*exc)

  def run(self, cell, index=None):
    """Runs one cell (a notebook cell or source text); returns the cell."""
    if isinstance(cell, str):
      cell = nbformat.v4.new_code_cell(cell)
      self.nb.cells.append(cell)
      index = len(self.nb.cells) - 1
    self.cells.append(cell)
    self.client.execute_cell(cell, index)
    return cell

  def run_all(self):
    for i, cell in enumerate(self.nb.cells):
      if cell.cell_type == 'code':
        self.run(cell, i)

  def code_cell(self, marker: str):
    """The notebook's code cell whose source contains `marker`."""
    found = [c for c in self.nb.cells
             if c.cell_type == 'code' and marker in c.source]
    assert len(found) == 1, marker
    return found[0], self.nb.cells.index(found[0])

  def interrupt(self):
    """What Colab's stop button does: interrupt the kernel (SIGINT)."""
    asyncio.run(self.client.km.interrupt_kernel())  # An async manager.


def text(*cells) -> str:
  return '\n'.join(o.get('text', '') for c in cells for o in c.outputs
                   if o.get('output_type') == 'stream')


def images(cells) -> int:
  return sum('image/png' in o.get('data', {}) for c in cells
             for o in c.outputs)


def errors(cells):
  return [f"{o['ename']}: {o['evalue']}" for c in cells for o in c.outputs
          if o.get('output_type') == 'error']


def saved_steps(run_dir: pathlib.Path):
  ckpt = run_dir / 'checkpoints'
  return sorted(int(p.name) for p in ckpt.iterdir()
                if p.name.isdigit()) if ckpt.is_dir() else []


def test_notebook_stop_restart_rerun(tmp_path, data_dir, monkeypatch):
  if not (REPO / 'mixer' / 'data' / '__init__.py').exists():
    pytest.skip('the input pipeline is not in this checkout yet')
  workdir = tmp_path / 'notebook'
  cwd = tmp_path / 'content'  # Where the kernel starts, like Colab's /content.
  cwd.mkdir()
  for key, value in {
      'MIXER_DATA_DIR': str(data_dir),
      'MIXER_NOTEBOOK_STEPS': str(STEPS),
      'MIXER_NOTEBOOK_SWEEP_STEPS': '10',
      'MIXER_NOTEBOOK_OVERRIDES': TINY_OVERRIDES,
      'MIXER_NOTEBOOK_SWEEP': 'configs/sweeps/patch_size.py',  # Relative.
      'MIXER_NOTEBOOK_SWEEP_ONLY': 'patch8x8',
      'MIXER_NOTEBOOK_WORKDIR': str(workdir),
      'MIXER_NOTEBOOK_POLL_SECONDS': '0.2',
      'PYTHONPATH': os.pathsep.join(
          [str(REPO)] + [p for p in [os.environ.get('PYTHONPATH')] if p]),
  }.items():
    monkeypatch.setenv(key, value)  # The kernel inherits the environment.
  run_dir = workdir / 'train' / 'cifar10_baseline'
  sweep_dir = workdir / 'patch_size'

  # 1. Run all; press stop once training has logged its first step.
  with Session(cwd) as s:
    def press_stop():
      deadline = time.time() + 150
      while time.time() < deadline:
        metrics = run_dir / 'metrics.jsonl'
        if metrics.exists() and metrics.read_text().count('\n') >= 1:
          s.interrupt()
          return
        time.sleep(0.05)
    presser = threading.Thread(target=press_stop, daemon=True)
    presser.start()
    s.run_all()
    presser.join()
  out = text(*s.cells)
  assert errors(s.cells) == []  # The stop returns cleanly.
  assert f'mixer is importable from {REPO}; nothing to install' in out
  assert f'Working directory: {REPO}' in out
  assert 'local cpu device' in out
  assert 'Stop requested' in out
  stopped = re.search(r'stopped at step ([\d,]+) .*checkpoint', out)
  assert stopped, out  # The thread's Interrupted message.
  step = int(stopped.group(1).replace(',', ''))
  assert 0 < step < STEPS and saved_steps(run_dir) == [step]
  assert not (run_dir / 'results.json').exists()
  assert 'No results: the training was stopped' in out
  assert 'Not starting the sweep' in out  # Run all goes on, starts nothing.
  assert not sweep_dir.exists() and images(s.cells) == 0

  # 2. A new kernel (a runtime restart), Run all: resumes and finishes.
  with Session(cwd) as s:
    s.run_all()
    out = text(*s.cells)
    assert errors(s.cells) == [], out
    assert f'Working directory: {REPO}' in out
    assert f'resumed_from_step: {step}' in out
    assert f'steps: {STEPS}' in out
    assert images(s.cells) == 2  # Baseline curves, sweep curves.
    assert '1 runs, 0 failed' in out

    # 3. Same kernel, re-run the training cell: the finished run
    # re-evaluates; re-run the sweep cell: its run is skipped.
    train_cell, train_index = s.code_cell('train_and_evaluate(config,')
    sweep_cell, sweep_index = s.code_cell('just_stopped()\n')
    rerun = [s.run(train_cell, train_index), s.run(sweep_cell, sweep_index)]
    out = text(*rerun)
    assert errors(rerun) == [], out
    assert 'finished in' in out and '1 runs, 0 failed' in out

    # 4. The training cell re-run while this kernel's run is still alive:
    # the same run is reattached, never started twice.
    s.run("JOB = Job(('training', run_dir, config.to_json_best_effort()),\n"
          "          lambda: (time.sleep(1.5), 'the live run')[1])\n"
          'JOB.thread.start()')
    cell = s.run(train_cell, train_index)
    assert 'reattaching to it' in text(cell)
    assert errors([cell]) == []
    s.run("assert results == 'the live run', results")
    # Another run alive (a sweep): stopped first, then the training runs.
    s.run("JOB = Job(('sweep', sweep_dir, ''), lambda: STOP.wait(60))\n"
          'JOB.thread.start()')
    cell = s.run(train_cell, train_index)
    assert 'stopping it first' in text(cell) and 'finished in' in text(cell)
    assert errors([cell]) == []
    # An error in the thread is raised in the cell.
    with pytest.raises(nbclient.exceptions.CellExecutionError,
                       match='ZeroDivisionError'):
      s.run("run_with_live_view(('test', 'x', ''), lambda: 1 / 0, str)")

  results = (run_dir / 'results.json').read_text()
  assert f'"resumed_from_step": {STEPS}' in results  # The re-evaluation.
  assert (run_dir / 'metrics.jsonl').read_text().count('\n') >= 2
  summary = (sweep_dir / 'summary.md').read_text()
  assert '| patch8x8 | 8x8 |' in summary
  assert '| patch2x2 | 2x2 |' in summary and '| patch4x4 | 4x4 |' in summary
  assert summary.count('| not started |') == 2
  assert (sweep_dir / 'curves.png').stat().st_size > 10_000


# Runs the notebook's install, parameters and accelerator cells in a fresh
# interpreter where `mixer` is not importable yet (a new Colab runtime), with
# `subprocess.run` recording the commands (`git clone` writes a stand-in
# checkout), and fakes for what only Colab has: Drive, a GPU JAX sees, and
# TensorFlow (which records what it is told).
_DRIVER = r'''
import importlib.machinery, importlib.util, json, os, subprocess, sys, types
fake = json.loads(os.environ['FAKE'])
calls, mounted, hidden = [], [], []
real_find_spec = importlib.util.find_spec
def find_spec(name, *args, **kwargs):
  if name == 'mixer':
    return None  # Not installed yet.
  if name == 'tensorflow':
    return importlib.machinery.ModuleSpec('tensorflow', None)
  return real_find_spec(name, *args, **kwargs)
importlib.util.find_spec = find_spec
def run(cmd, check=False, **kwargs):
  cmd = list(cmd)
  calls.append(cmd)
  if cmd[:2] == ['git', 'clone']:
    os.makedirs(os.path.join(cmd[-1], 'configs'))
    with open(os.path.join(cmd[-1], 'pyproject.toml'), 'w') as f:
      f.write('dependencies = ["jax%s", "flax"]\n' % fake['jax_requirement'])
  if '-c' in cmd:
    with open(cmd[cmd.index('-c') + 1]) as f:
      calls.append(f.read().splitlines())
  return subprocess.CompletedProcess(cmd, 0)
subprocess.run = run
drive = types.ModuleType('google.colab.drive')
drive.mount = mounted.append
colab = types.ModuleType('google.colab')
colab.drive = drive
colab_modules = {'google.colab': colab, 'google.colab.drive': drive}
tf = types.ModuleType('tensorflow')
tf.config = types.SimpleNamespace(
    set_visible_devices=lambda devices, kind: hidden.append([devices, kind]))
sys.modules['tensorflow'] = tf
try:
  for i, source in enumerate(fake['cells']):
    if i == 2 and fake.get('gpu'):
      import jax
      gpu = types.SimpleNamespace(platform='gpu', device_kind='NVIDIA H100')
      jax.devices = lambda *args: [gpu]
      jax.local_device_count = lambda *args: 1
    if i == 1:  # Only the parameters cell is on Colab (jax probes it too).
      sys.modules.update(colab_modules)
    exec(compile(source, f'cell{i}', 'exec'), globals())
    for name in colab_modules:
      sys.modules.pop(name, None)
except SystemExit as e:
  print('SystemExit:', e)
print('RESULT ' + json.dumps({'calls': calls, 'mounted': mounted,
                              'hidden': hidden}))
'''


def _fresh_runtime(tmp_path, jax_requirement, env, gpu=False):
  import json  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  nb = nbformat.read(str(NOTEBOOK), as_version=4)
  markers = ('def find_accelerator', 'def _env(', 'devices = jax.devices()')
  cells = [next(c.source for c in nb.cells if c.cell_type == 'code' and
                m in c.source) for m in markers]
  run_env = {k: v for k, v in os.environ.items()
             if not k.startswith(('MIXER_', 'TPU_', 'COLAB_'))}
  run_env.update(env, FAKE=json.dumps({
      'jax_requirement': jax_requirement, 'cells': cells, 'gpu': gpu}),
                 MIXER_REPO_DIR=str(tmp_path / 'content' / 'mlp-mixer'))
  out = subprocess.run([sys.executable, '-c', _DRIVER], cwd=tmp_path,
                       env=run_env, capture_output=True, text=True,
                       timeout=120)
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads(out.stdout.split('RESULT ', 1)[1])
  return out.stdout, result


def test_install_cell_on_a_fresh_tpu_runtime(tmp_path):
  import importlib.metadata  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  repo = str(tmp_path / 'content' / 'mlp-mixer')
  url = 'https://example.org/you/mlp-mixer.git'
  out, result = _fresh_runtime(tmp_path, '>=0.10', {
      'MIXER_REPO_URL': url, 'COLAB_TPU_ADDR': '10.0.0.2:8470',
      'MIXER_NOTEBOOK_WORKDIR': '/content/drive/MyDrive/mixer-runs'})
  assert 'accelerator: tpu (COLAB_TPU_ADDR)' in out, out
  clone, install, constraints = result['calls']
  assert clone == ['git', 'clone', '--depth=1', url, repo]
  # The runtime's jax is kept: pinned in a constraints file, never upgraded.
  assert install[:5] == [sys.executable, '-m', 'pip', 'install', '-q']
  assert install[5] == '-c' and install[-2:] == ['-e', repo]
  assert f'jax=={importlib.metadata.version("jax")}' in constraints
  assert f'Working directory: {repo}' in out
  # The workdir on Drive: Drive is mounted first.
  assert result['mounted'] == ['/content/drive']
  assert 'runs go to /content/drive/MyDrive/mixer-runs' in out


def test_install_cell_on_a_gpu_runtime_with_an_old_jax(tmp_path):
  import sys  # pylint: disable=g-import-not-at-top
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  (bin_dir / 'nvidia-smi').write_text('#!/bin/sh\n')
  (bin_dir / 'nvidia-smi').chmod(0o755)
  out, result = _fresh_runtime(tmp_path, '>=99', {
      'MIXER_REPO_URL': 'https://example.org/x.git',
      'PATH': f'{bin_dir}{os.pathsep}{os.environ["PATH"]}'}, gpu=True)
  assert 'accelerator: gpu (nvidia-smi)' in out, out
  assert 'is older than this project needs (jax>=99): upgrading it' in out
  upgrade = result['calls'][1]
  assert upgrade == [sys.executable, '-m', 'pip', 'install', '-q', '-U',
                     'jax[cuda12]>=99']
  # JAX sees the GPU; TensorFlow (tf.data) is told to see none.
  assert result['hidden'] == [[[], 'GPU']]
  assert 'TensorFlow sees no GPU' in out
  assert result['mounted'] == []  # The default workdir: no Drive.


def test_install_cell_without_a_repository_says_what_to_fill_in(tmp_path):
  out, result = _fresh_runtime(tmp_path, '>=0.10', {})
  assert 'SystemExit: Fill in REPO_URL above' in out
  assert result['calls'] == []
