"""The command-line contract every tool shares through `mixer/cli.py`.

`train.py`, `sweep.py` and `python -m mixer.{summary,predict,benchmark,
report}`: a problem with what the user gave prints exactly one line
`error: ...` on stderr naming the input at fault and the fix, exit status 1,
no traceback; `--debug` (or MIXER_DEBUG=1) shows the traceback instead. Each
case runs the real program in a subprocess; all of them fail before any
training or data loading, so each takes about a second.
"""

import os
import pathlib
import re
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]

TOOLS = {
    'train': ['train.py'],
    'sweep': ['sweep.py'],
    'summary': ['-m', 'mixer.summary'],
    'predict': ['-m', 'mixer.predict'],
    'benchmark': ['-m', 'mixer.benchmark'],
    'report': ['-m', 'mixer.report'],
}
# The module each tool runs, for the static checks of the contract.
SOURCES = {
    'train': 'train.py', 'sweep': 'sweep.py', 'summary': 'mixer/summary.py',
    'predict': 'mixer/predict.py', 'benchmark': 'mixer/benchmark.py',
    'report': 'mixer/report.py', 'fewshot': 'mixer/fewshot.py',
}

BASELINE = '--config=configs/cifar10_baseline.py'

SWEEP_OK = '''
from configs import cifar10_baseline
from mixer import sweeps


def get_sweep():
  return [sweeps.run('a', cifar10_baseline.get_config, seed=1),
          sweeps.run('b', cifar10_baseline.get_config, seed=2)]
'''

SWEEP_UNKNOWN_KEY = '''
from configs import cifar10_baseline
from mixer import sweeps


def get_sweep():
  return [sweeps.run('a', cifar10_baseline.get_config,
                     **{'model.hiden_dim': 64})]
'''

FILES = {
    'notes.txt': 'hello\n',
    'syntax_config.py': 'def get_config(:\n  pass\n',
    'no_get_config.py': 'x = 1\n',
    'sweep_syntax.py': 'def get_sweep(:\n  return []\n',
    'sweep_no_get.py': 'RUNS = []\n',
    'sweep_raises.py': 'def get_sweep():\n  return [1 / 0]\n',
    'sweep_unknown_key.py': SWEEP_UNKNOWN_KEY,
    'sweep_ok.py': SWEEP_OK,
}


@pytest.fixture(scope='module')
def files(tmp_path_factory):
  root = tmp_path_factory.mktemp('cli')
  for name, text in FILES.items():
    (root / name).write_text(text)
  Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / 'img.png')
  (root / 'empty_dir').mkdir()
  return root


def run_tool(tool, args, *, cwd=REPO, **env):
  return subprocess.run(
      [sys.executable, *TOOLS[tool], *args], cwd=cwd,
      env=dict(os.environ, **env), capture_output=True, text=True,
      timeout=180)


def assert_one_error_line(out, *expected):
  """Exit status 1 and stderr exactly one line `error: ...` holding every
  `expected` text."""
  lines = out.stderr.strip().splitlines()
  assert out.returncode == 1, out.stderr[-3000:]
  assert len(lines) == 1, out.stderr[-3000:]
  assert re.fullmatch(r'error: \S.*', lines[0]), lines[0]
  for text in expected:
    assert text in lines[0], (text, lines[0])
  return lines[0]


# (tool, args, texts the one error line must hold); {tmp} is the folder of
# FILES.
CASES = {
    # A config file given to any tool: parsed by cli.parse_flags.
    'train-missing-config': (
        'train', ['--config=nope.py', '--workdir={tmp}/w'],
        ['config file nope.py not found', '--config=configs/']),
    'summary-missing-config': (
        'summary', ['--config={tmp}/nope.py'],
        ['config file {tmp}/nope.py not found', '--config=']),
    'summary-config-syntax-error': (
        'summary', ['--config={tmp}/syntax_config.py'],
        ['config file {tmp}/syntax_config.py has a syntax error at line 1',
         'fix the file']),
    'summary-config-without-get_config': (
        'summary', ['--config={tmp}/no_get_config.py'],
        ['{tmp}/no_get_config.py defines no get_config()']),
    'summary-bad-flag-value': (
        'summary', [BASELINE, '--config.model.hidden_dim=abc'],
        ['--config.model.hidden_dim=abc', 'give an integer']),
    'summary-unknown-field': (
        'summary', [BASELINE, '--config.model.hiden_dim=3'],
        ["unknown config field 'model.hiden_dim'", "did you mean 'hidden_dim'"]),
    'summary-no-config': ('summary', [], ['--config is required']),
    'summary-bad-model-dtype': (
        'summary', [BASELINE, '--config.model.dtype=nonsense'],
        ["model.dtype must be one of float32, bfloat16, float16, got "
         "'nonsense'"]),
    'train-bad-model-dtype': (
        'train', [BASELINE, '--workdir={tmp}/w_dtype',
                  '--config.model.dtype=nonsense'],
        ["model.dtype must be one of float32, bfloat16, float16, got "
         "'nonsense'"]),
    'summary-positional-argument': (
        'summary', [BASELINE, 'extra'], ['unexpected arguments: extra']),
    'benchmark-missing-config': (
        'benchmark', ['--config=nope.py'], ['config file nope.py not found']),
    'benchmark-bad-flag-value': (
        'benchmark', [BASELINE, '--steps=abc'],
        ['--steps=abc', 'give an integer']),
    'benchmark-zero-repeats': (
        'benchmark', [BASELINE, '--repeats=0'],
        ['--repeats must be at least 1, got 0']),
    'benchmark-bad-dtype': (
        'benchmark', [BASELINE, '--dtype=float8'],
        ['--dtype must be one of', "'float8'"]),
    'benchmark-unknown-field': (
        'benchmark', [BASELINE, '--config.bach_size=8'],
        ["unknown config field 'bach_size'"]),
    'report-missing-dir': (
        'report', ['{tmp}/no_such_sweep'],
        ['sweep folder {tmp}/no_such_sweep does not exist', 'sweep.py']),
    'report-file-not-dir': (
        'report', ['{tmp}/notes.txt'],
        ['sweep folder {tmp}/notes.txt is a file, not a folder']),
    'report-no-dir': ('report', [], ['python -m mixer.report SWEEP_DIR']),
    'predict-text-file-checkpoint': (
        'predict', [BASELINE, '--checkpoint={tmp}/notes.txt', '{tmp}/img.png'],
        ['checkpoint {tmp}/notes.txt is not an .npz archive',
         'orbax checkpoint', 'workdir']),
    'predict-missing-checkpoint': (
        'predict', ['--checkpoint={tmp}/nope', '{tmp}/img.png'],
        ['checkpoint {tmp}/nope does not exist']),
    'predict-folder-without-checkpoint': (
        'predict', ['--checkpoint={tmp}/empty_dir', '{tmp}/img.png'],
        ['no checkpoint found in {tmp}/empty_dir']),
    'predict-no-checkpoint-flag': (
        'predict', [BASELINE, '{tmp}/img.png'], ['--checkpoint is required']),
    'predict-bad-flag-value': (
        'predict', ['--checkpoint={tmp}/nope', '--top_k=abc'],
        ['--top_k=abc']),
    'sweep-syntax-error': (
        'sweep', ['--sweep={tmp}/sweep_syntax.py', '--dry_run'],
        ['sweep file {tmp}/sweep_syntax.py has a syntax error at line 1',
         'fix the file']),
    'sweep-missing-file': (
        'sweep', ['--sweep={tmp}/nope.py', '--dry_run'],
        ['sweep file {tmp}/nope.py not found', '--sweep=configs/sweeps/']),
    'sweep-no-get_sweep': (
        'sweep', ['--sweep={tmp}/sweep_no_get.py', '--dry_run'],
        ['{tmp}/sweep_no_get.py defines no get_sweep()',
         'add a function get_sweep()']),
    'sweep-get_sweep-raises': (
        'sweep', ['--sweep={tmp}/sweep_raises.py', '--dry_run'],
        ['sweep file {tmp}/sweep_raises.py', 'get_sweep() raised '
         'ZeroDivisionError: division by zero (line 2)', 'fix the sweep file']),
    'sweep-unknown-key-in-file': (
        'sweep', ['--sweep={tmp}/sweep_unknown_key.py', '--dry_run'],
        ['sweep file {tmp}/sweep_unknown_key.py, line 7', "run 'a'",
         "unknown config field 'model.hiden_dim'",
         "did you mean 'model.hidden_dim'?", 'fix the override']),
    'sweep-unknown-set-key': (
        'sweep', ['--sweep={tmp}/sweep_ok.py', '--dry_run',
                  '--set=model.hiden_dim=3'],
        ["--set=model.hiden_dim=3: unknown config field 'model.hiden_dim'",
         "did you mean 'model.hidden_dim'?"]),
    'sweep-set-without-equals': (
        'sweep', ['--sweep={tmp}/sweep_ok.py', '--dry_run',
                  '--set=num_train_steps'],
        ['--set=num_train_steps: expected key=value',
         '--set=num_train_steps=20']),
    'sweep-set-unparsable': (
        'sweep', ['--sweep={tmp}/sweep_ok.py', '--dry_run',
                  '--set=model.patches.size=(8,8'],
        ["--set=model.patches.size=(8,8: cannot set config field "
         "'model.patches.size'", 'does not parse as a Python literal',
         'give a tuple such as (4, 4)']),
    'sweep-set-wrong-type': (
        'sweep', ['--sweep={tmp}/sweep_ok.py', '--dry_run',
                  '--set=num_train_steps=1.5'],
        ["--set=num_train_steps=1.5: cannot set config field "
         "'num_train_steps'", 'give an int']),
    'sweep-no-workdir': (
        'sweep', ['--sweep={tmp}/sweep_ok.py'],
        ['--workdir is required unless --dry_run']),
}


def _fill(items, tmp):
  return [str(i).replace('{tmp}', str(tmp)) for i in items]


@pytest.mark.parametrize('case', sorted(CASES))
def test_bad_input_is_one_error_line(case, files):
  tool, args, expected = CASES[case]
  out = run_tool(tool, _fill(args, files))
  assert_one_error_line(out, *_fill(expected, files))
  assert not out.stdout.strip()


# One case per tool (and the environment variable): the traceback instead.
DEBUG_CASES = ['train-missing-config', 'summary-unknown-field',
               'benchmark-zero-repeats', 'report-missing-dir',
               'predict-text-file-checkpoint', 'sweep-syntax-error',
               'sweep-unknown-set-key']


@pytest.mark.parametrize('case,how', [(c, 'flag') for c in DEBUG_CASES] +
                         [('sweep-syntax-error', 'env')])
def test_debug_shows_the_traceback(case, how, files):
  tool, args, _ = CASES[case]
  args = _fill(args, files)
  if how == 'flag':
    out = run_tool(tool, args + ['--debug'])
  else:
    out = run_tool(tool, args, MIXER_DEBUG='1')
  assert out.returncode != 0
  assert 'Traceback (most recent call last)' in out.stderr, out.stderr[-3000:]


@pytest.mark.parametrize('tool', sorted(SOURCES))
def test_every_tool_uses_the_shared_helper(tool):
  """`from mixer import cli` before JAX, flags defined in define_flags()
  under __main__ (train.py: at the top, it is only a program), and
  `cli.run(main)` at the end; no tool prints its own `error:` lines."""
  source = (REPO / SOURCES[tool]).read_text()
  lines = source.splitlines()
  cli_line = next(i for i, l in enumerate(lines)
                  if l.strip().startswith('from mixer import cli'))
  jax_lines = [i for i, l in enumerate(lines)
               if re.match(r'\s*(import jax|from jax)', l)]
  assert not jax_lines or cli_line < min(jax_lines)
  main_block = source[source.rindex("if __name__ == '__main__':"):]
  assert main_block.rstrip().endswith('cli.run(main)')
  assert 'app.run(' not in source
  assert "print(f'error:" not in source
  if tool != 'train':
    assert 'define_flags()' in main_block
    top = source[:source.index('def define_flags')]
    assert 'flags.DEFINE_' not in top and 'DEFINE_config_file' not in top


def test_cli_helpers_one_line_and_closed_loop_filter():
  """`cli.fail`/`cli.warn` print one line; the unraisable-hook filter drops
  only asyncio's 'Event loop is closed' from call_soon_threadsafe."""
  code = '''
import asyncio, sys
from mixer import cli


class Raises:  # Its __del__ raises: Python reports it as unraisable.
  def __init__(self, exc):
    self.exc = exc
  def __del__(self):
    raise self.exc


cli.warn('two\\nlines')
cli.quiet_closed_loop_errors()
loop = asyncio.new_event_loop(); loop.close()
try:
  loop.call_soon_threadsafe(print)
except RuntimeError as e:
  Raises(e)  # From asyncio's call_soon_threadsafe: dropped.
Raises(RuntimeError('Event loop is closed'))  # Not from asyncio: shown.
cli.fail('bad\\n  input')
'''
  out = subprocess.run([sys.executable, '-c', code], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
  assert out.returncode == 1
  lines = out.stderr.strip().splitlines()
  assert lines[0] == 'warning: two lines'
  assert lines[-1] == 'error: bad input'
  assert out.stderr.count('Event loop is closed') == 1  # The second only.
  assert 'call_soon_threadsafe' not in out.stderr
