"""Sweeps: the definition helpers, the shipped sweep files, and a real sweep.

The end-to-end test trains tiny Mixers on the real CIFAR-10 (10 steps each)
through `sweep.run_sweep`, then checks the resume semantics: finished runs are
skipped (their results.json is not rewritten), missing ones are trained, a
failing run is reported without stopping the others.
"""

import csv
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from configs import cifar10_baseline
from configs import models
from mixer import models as mixer_models
from mixer import report
from mixer import summary
from mixer import sweeps

REPO = pathlib.Path(__file__).resolve().parents[1]
SWEEP_FILES = sorted((REPO / 'configs' / 'sweeps').glob('[!_]*.py'))


def test_run_applies_dotted_overrides_and_locks():
  r = sweeps.run('c64', cifar10_baseline.get_config,
                 **{'model.hidden_dim': 64}, model__num_blocks=2,
                 learning_rate=3e-3)
  assert r.config.model.hidden_dim == 64
  assert r.config.model.num_blocks == 2
  assert r.config.learning_rate == 3e-3
  assert r.columns == ('model.hidden_dim', 'model.num_blocks', 'learning_rate')
  assert r.fields() == {'model.hidden_dim': 64, 'model.num_blocks': 2,
                        'learning_rate': 3e-3}
  assert cifar10_baseline.get_config().model.hidden_dim == 256  # Untouched.
  with pytest.raises(AttributeError):
    r.config.new_field = 1  # Locked, like train.py's --config.


def test_run_rejects_unknown_fields_and_bad_names():
  with pytest.raises(KeyError, match='model.hidden_dimm'):
    sweeps.run('x', cifar10_baseline.get_config, **{'model.hidden_dimm': 64})
  with pytest.raises(KeyError, match='nope'):
    sweeps.run('x', cifar10_baseline.get_config, show=('nope',))
  with pytest.raises(ValueError, match='folder name'):
    sweeps.run('S/16', cifar10_baseline.get_config)


def test_grid_is_the_cartesian_product():
  runs = sweeps.grid(
      cifar10_baseline.get_config, 'C{hidden_dim}_L{model.num_blocks}_p{size}',
      derived=lambda p: {'model.channels_mlp_dim': 4 * p['model.hidden_dim']},
      **{'model.hidden_dim': [32, 64], 'model.num_blocks': [1, 2, 3],
         'model.patches.size': [(4, 4)]})
  assert [r.name for r in runs] == [
      'C32_L1_p4x4', 'C32_L2_p4x4', 'C32_L3_p4x4',
      'C64_L1_p4x4', 'C64_L2_p4x4', 'C64_L3_p4x4']
  assert [(r.config.model.hidden_dim, r.config.model.num_blocks,
           r.config.model.channels_mlp_dim) for r in runs] == [
               (32, 1, 128), (32, 2, 128), (32, 3, 128),
               (64, 1, 256), (64, 2, 256), (64, 3, 256)]
  assert runs[0].config.model.patches.size == (4, 4)
  assert runs[0].columns == ('model.hidden_dim', 'model.num_blocks',
                             'model.patches.size', 'model.channels_mlp_dim')
  with pytest.raises(KeyError, match='no grid key'):
    sweeps.grid(cifar10_baseline.get_config, '{depth}',
                **{'model.num_blocks': [1]})


def test_global_overrides_parse_and_apply():
  parsed = sweeps.parse_assignments(
      ['num_train_steps=20', 'model.patches.size=(2, 2)', 'augment.flip=False',
       'dataset=cifar10', 'learning_rate=1e-3'])
  assert parsed == {'num_train_steps': 20, 'model.patches.size': (2, 2),
                    'augment.flip': False, 'dataset': 'cifar10',
                    'learning_rate': 1e-3}
  r = sweeps.with_overrides(
      sweeps.run('a', cifar10_baseline.get_config, **{'model.hidden_dim': 64}),
      parsed)
  assert r.config.num_train_steps == 20
  assert r.config.model.patches.size == (2, 2)
  assert not r.config.augment.flip
  assert r.columns == ('model.hidden_dim',)  # Global ones are not columns.


@pytest.mark.parametrize('path', SWEEP_FILES, ids=lambda p: p.stem)
def test_shipped_sweeps_load(path):
  runs = sweeps.load_sweep(str(path))
  assert len(runs) >= 3
  for r in runs:
    assert r.config.model.num_classes == 10
    assert r.config.dataset in ('cifar10', 'fashion_mnist')
    assert r.columns  # Every sweep shows what it varies.
    # Every run's model builds on its input (its parameter shapes, traced):
    # the docs check trains only a sweep's first and last runs.
    model = mixer_models.build_model(r.config.model)
    params = summary.abstract_params(model, mixer_models.input_shape(r.config))
    assert summary.count_params(params) > 0
  # Every run differs from every other in a shown field.
  shown = {json.dumps(r.fields(), sort_keys=True) for r in runs}
  assert len(shown) == len(runs)


def test_seed000_ablation_is_the_four_seed_variants():
  runs = sweeps.load_sweep(str(REPO / 'configs/sweeps/seed000_ablation.py'))
  assert [r.name for r in runs] == list(models.SEED000_RATIOS)
  for r in runs:
    token_ratio, channel_ratio = models.SEED000_RATIOS[r.name]
    assert r.fields() == {'model.tokens_mlp_dim': int(token_ratio * 256),
                          'model.channels_mlp_dim': int(channel_ratio * 256)}
  # One recipe: the configs differ in the model only.
  recipes = [{k: v for k, v in r.config.to_dict().items() if k != 'model'}
             for r in runs]
  assert all(rec == recipes[0] for rec in recipes)


# -- a real sweep -------------------------------------------------------------

TINY = {'model.hidden_dim': 32, 'model.num_blocks': 1,
        'model.tokens_mlp_dim': 16, 'model.channels_mlp_dim': 64,
        'batch_size': 64, 'num_train_steps': 10, 'warmup_steps': 2,
        'log_every_steps': 5, 'checkpoint_every_steps': 10,
        'eval_split': 'test[:500]', 'eval_batch_size': 250}

SWEEP_FILE = '''
from configs import cifar10_baseline
from mixer import sweeps


def get_sweep():
  return [
      sweeps.run('p4', cifar10_baseline.get_config,
                 **{'model.patches.size': (4, 4)}),
      sweeps.run('p8', cifar10_baseline.get_config,
                 **{'model.patches.size': (8, 8)}),
      # Fails in the trainer's set-up: batch 64 is not a multiple of 3.
      sweeps.run('bad', cifar10_baseline.get_config, grad_accum_steps=3),
  ]
'''


def _mtime(path):
  return os.stat(path).st_mtime_ns


@pytest.mark.skipif(not (REPO / 'mixer' / 'data' / '__init__.py').exists(),
                    reason='the input pipeline is not in this checkout yet')
def test_real_sweep_resumes_and_reports(tmp_path, data_dir, monkeypatch):
  monkeypatch.setenv('MIXER_DATA_DIR', str(data_dir))
  import sweep  # pylint: disable=g-import-not-at-top
  sweep_file = tmp_path / 'tiny_sweep.py'
  sweep_file.write_text(SWEEP_FILE)
  out = tmp_path / 'sweep'

  # "Killed" after the first run: p8 never started.
  outcomes = sweep.run_sweep(str(sweep_file), str(out), global_overrides=TINY,
                             only=['p4', 'bad'])
  assert [o['status'] for o in outcomes] == ['done', 'failed']
  rows = {r['name']: r for r in report.collect(str(out))[0]}
  assert rows['p4']['status'] == 'done'
  assert rows['p8']['status'] == 'not started'
  assert rows['bad']['status'] == 'failed'
  assert (out / 'bad' / 'error.txt').read_text().startswith('ValueError')
  first = out / 'p4' / 'results.json'
  first_mtime = _mtime(first)

  # Re-running trains only what is missing; the failure is reported again.
  outcomes = sweep.run_sweep(str(sweep_file), str(out), global_overrides=TINY)
  assert [(o['name'], o['status']) for o in outcomes] == [
      ('p4', 'skipped'), ('p8', 'done'), ('bad', 'failed')]
  assert _mtime(first) == first_mtime

  results = {n: json.loads((out / n / 'results.json').read_text())
             for n in ('p4', 'p8')}
  for res in results.values():
    assert res['status'] == 'done' and res['steps'] == 10
    assert res['eval_examples'] == 500
    assert res['config']['model']['hidden_dim'] == 32
  assert results['p8']['config']['model']['patches']['size'] == [8, 8]

  with open(out / 'summary.csv') as f:
    table = list(csv.DictReader(f))
  assert [(t['name'], t['model.patches.size'], t['grad_accum_steps'],
           t['status']) for t in table] == [
               ('p4', '[4, 4]', '', 'done'), ('p8', '[8, 8]', '', 'done'),
               ('bad', '', '3', 'failed')]
  for t in table[:2]:
    assert 0.0 <= float(t['final_eval_accuracy']) <= 1.0
    assert int(t['num_params']) > 0
  md = (out / 'summary.md').read_text()
  assert '| run | patches.size | grad_accum_steps |' in md
  assert '| p4 | 4x4 |  |' in md and '| p8 | 8x8 |  |' in md
  assert 'failed (ValueError' in md
  assert (out / 'curves.png').stat().st_size > 10_000

  # A run killed after its last checkpoint but before results.json: resumes
  # from that checkpoint (nothing left to train), only evaluates.
  os.remove(out / 'p8' / 'results.json')
  outcomes = sweep.run_sweep(str(sweep_file), str(out), global_overrides=TINY,
                             only=['p4', 'p8'])
  assert [o['status'] for o in outcomes] == ['skipped', 'done']
  assert json.loads((out / 'p8' / 'results.json').read_text())[
      'resumed_from_step'] == 10
  assert _mtime(first) == first_mtime


def test_cli_dry_run_and_failure_exit_code(tmp_path, data_dir):
  """The command line: --dry_run lists runs; a failed run makes exit code 1."""
  env = dict(os.environ, MIXER_DATA_DIR=str(data_dir))
  sweep_file = tmp_path / 'tiny_sweep.py'
  sweep_file.write_text(SWEEP_FILE)
  dry = subprocess.run(
      [sys.executable, 'sweep.py', f'--sweep={sweep_file}', '--dry_run',
       '--set=model.hidden_dim=32'], cwd=REPO, env=env, capture_output=True,
      text=True, timeout=120, check=True)
  # The --set overrides: once, and in every run's fields.
  assert dry.stdout.splitlines() == [
      '--set (every run): {"model.hidden_dim": 32}',
      'p4: {"model.patches.size": [4, 4], "model.hidden_dim": 32}',
      'p8: {"model.patches.size": [8, 8], "model.hidden_dim": 32}',
      'bad: {"grad_accum_steps": 3, "model.hidden_dim": 32}']
  out = tmp_path / 'sweep'
  failed = subprocess.run(
      [sys.executable, 'sweep.py', f'--sweep={sweep_file}',
       f'--workdir={out}', '--only=bad'], cwd=REPO, env=env,
      capture_output=True, text=True, timeout=120)
  assert failed.returncode == 1, failed.stderr[-2000:]
  assert 'FAILED bad: ValueError' in failed.stdout
  assert (out / 'bad' / 'error.txt').exists()
  assert (out / 'summary.md').exists() and (out / 'summary.csv').exists()


# -- errors in sweep files and --set, running from elsewhere, Ctrl-C ---------

SWEEP_TWO_RUNS = '''
from configs import cifar10_baseline
from mixer import sweeps


def get_sweep():
  return [sweeps.run('s0', cifar10_baseline.get_config, seed=0),
          sweeps.run('s1', cifar10_baseline.get_config, seed=1)]
'''


@pytest.mark.parametrize('text,expected', [
    ('def get_sweep(:\n  pass\n', ['has a syntax error at line 1',
                                   'fix the file']),
    ('import no_such_module_x\n', ['failed to load: ModuleNotFoundError',
                                   '(line 1)']),
    ('RUNS = []\n', ['defines no get_sweep()', 'add a function get_sweep()']),
    ('def get_sweep():\n  return {}["x"]\n',
     ["get_sweep() raised KeyError: 'x' (line 2)", 'fix the sweep file']),
    ('from configs import cifar10_baseline\nfrom mixer import sweeps\n'
     'def get_sweep():\n  return [sweeps.run("a", cifar10_baseline.get_config,'
     ' learning_rat=1.0)]\n',
     ["line 4: run 'a': unknown config field 'learning_rat' (did you mean "
      "'learning_rate'?)", 'fix the override in the sweep file']),
    ('from configs import cifar10_baseline\nfrom mixer import sweeps\n'
     'def get_sweep():\n  return [sweeps.run("a", cifar10_baseline.get_config,'
     ' num_train_steps="ten")]\n',
     ["run 'a': cannot set config field 'num_train_steps': it holds an int",
      'give an int']),
    ('def get_sweep():\n  return []\n', ['get_sweep() returned no runs']),
    ('def get_sweep():\n  return [1]\n', ['must return mixer.sweeps.Run items']),
    ('from configs import cifar10_baseline\nfrom mixer import sweeps\n'
     'def get_sweep():\n  return [sweeps.run("a", cifar10_baseline.get_config)'
     '] * 2\n', ["duplicate run name 'a'"]),
], ids=['syntax', 'import', 'no-get_sweep', 'raises', 'unknown-key',
        'wrong-type', 'empty', 'not-runs', 'duplicate'])
def test_sweep_file_errors_name_the_file_and_the_fix(tmp_path, text,
                                                      expected):
  path = tmp_path / 'my_sweep.py'
  path.write_text(text)
  with pytest.raises(sweeps.SweepError) as e:
    sweeps.load_sweep(str(path))
  message = str(e.value)
  assert message.startswith(f'sweep file {path}'), message
  assert '\n' not in message
  for part in expected:
    assert part in message, (part, message)


def test_missing_sweep_file_lists_the_shipped_ones(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  with pytest.raises(sweeps.SweepError) as e:
    sweeps.load_sweep('configs/sweeps/no_such.py', root=str(REPO))
  message = str(e.value)
  assert (f'not found in the current directory ({tmp_path}) nor in the '
          f'repository ({REPO})') in message
  assert 'configs/sweeps/patch_size.py' in message


def test_set_errors_name_the_item_and_the_fix():
  with pytest.raises(sweeps.SweepError, match=r'^--set=steps: expected '
                     r'key=value .* --set=num_train_steps=20'):
    sweeps.parse_assignments(['num_train_steps=2', 'steps'])
  with pytest.raises(sweeps.SweepError, match='^--set==3: expected'):
    sweeps.parse_assignments(['=3'])
  runs = [sweeps.run('a', cifar10_baseline.get_config)]
  items = ['model.hiden_dim=3']
  with pytest.raises(sweeps.SweepError) as e:
    sweeps.apply_global_overrides(runs, sweeps.parse_assignments(items),
                                  sweeps.assignment_texts(items))
  assert str(e.value).startswith(
      "--set=model.hiden_dim=3: unknown config field 'model.hiden_dim' "
      "(did you mean 'model.hidden_dim'?)")
  items = ['augment.flip=maybe']
  with pytest.raises(sweeps.SweepError) as e:
    sweeps.apply_global_overrides(runs, sweeps.parse_assignments(items),
                                  sweeps.assignment_texts(items))
  assert str(e.value) == (
      "--set=augment.flip=maybe: cannot set config field 'augment.flip': it "
      "holds a bool (now True), and 'maybe' is text that does not parse as a "
      'Python literal; give a bool such as True')
  # Good values still work, and shown_fields adds the --set keys.
  ok = sweeps.apply_global_overrides(runs, {'num_train_steps': 5})
  assert sweeps.shown_fields(ok[0], {'num_train_steps': 5}) == {
      'num_train_steps': 5}


def test_cli_runs_from_another_directory(tmp_path):
  """A relative --sweep not in the current directory is found in the
  repository root, and the log says so; a file in the current directory
  wins."""
  env = dict(os.environ)
  out = subprocess.run(
      [sys.executable, str(REPO / 'sweep.py'),
       '--sweep=configs/sweeps/patch_size.py', '--dry_run',
       '--set=num_train_steps=5'], cwd=tmp_path, env=env,
      capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.splitlines() == [
      '--set (every run): {"num_train_steps": 5}',
      'patch2x2: {"model.patches.size": [2, 2], "num_train_steps": 5}',
      'patch4x4: {"model.patches.size": [4, 4], "num_train_steps": 5}',
      'patch8x8: {"model.patches.size": [8, 8], "num_train_steps": 5}']
  assert (f'using {REPO}/configs/sweeps/patch_size.py from the repository'
          in out.stderr)
  local = tmp_path / 'configs' / 'sweeps'
  local.mkdir(parents=True)
  (local / 'patch_size.py').write_text(SWEEP_TWO_RUNS)
  out = subprocess.run(
      [sys.executable, str(REPO / 'sweep.py'),
       '--sweep=configs/sweeps/patch_size.py', '--dry_run'], cwd=tmp_path,
      env=env, capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-3000:]
  assert [l.split(':')[0] for l in out.stdout.splitlines()] == ['s0', 's1']
  assert 'from the repository' not in out.stderr


def test_cli_ctrl_c_saves_the_run_and_stops_the_sweep(tmp_path, data_dir):
  """SIGINT while the first run trains: it saves its step, is not recorded
  as failed, the second run never starts, exit status 130 with the run's
  message; the summary is current."""
  sweep_file = tmp_path / 'two.py'
  sweep_file.write_text(SWEEP_TWO_RUNS)
  out_dir = tmp_path / 'sweep'
  tiny = ['model.hidden_dim=16', 'model.num_blocks=1',
          'model.tokens_mlp_dim=8', 'model.channels_mlp_dim=16',
          'batch_size=16', 'num_train_steps=100000', 'warmup_steps=1',
          'log_every_steps=1', 'eval_split=test[:100]', 'eval_batch_size=100',
          'checkpoint_every_steps=100000']
  proc = subprocess.Popen(
      [sys.executable, str(REPO / 'sweep.py'), f'--sweep={sweep_file}',
       f'--workdir={out_dir}'] + [f'--set={t}' for t in tiny],
      cwd=tmp_path, env=dict(os.environ, MIXER_DATA_DIR=str(data_dir)),
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  metrics = out_dir / 's0' / 'metrics.jsonl'
  deadline = time.time() + 150
  while time.time() < deadline and proc.poll() is None and not (
      metrics.exists() and metrics.stat().st_size > 0):
    time.sleep(0.2)
  assert proc.poll() is None, proc.communicate()[1][-3000:]
  proc.send_signal(signal.SIGINT)
  stdout, stderr = proc.communicate(timeout=120)
  assert proc.returncode == 130, stderr[-3000:]
  last = stderr.strip().splitlines()[-1]
  assert last.startswith('sweep stopped during run s0 (1/2): stopped at step ')
  assert 'run the same command again to resume' in last
  assert 'Traceback' not in stderr
  assert not stdout.strip()  # No final summary line for a stopped sweep.
  assert not (out_dir / 's0' / 'error.txt').exists()
  assert not (out_dir / 's1').exists()
  steps = [int(n) for n in os.listdir(out_dir / 's0' / 'checkpoints')]
  assert steps and steps[0] > 0
  rows = {r['name']: r['status'] for r in report.collect(str(out_dir))[0]}
  assert rows == {'s0': 'partial', 's1': 'not started'}
