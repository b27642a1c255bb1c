"""mixer.report on synthetic run folders: done, partial, failed, not started."""

import csv
import json
import os

import pytest

from mixer import report

STEPS_PER_EPOCH = 100


def _config(**fields):
  config = {'model': {'model_name': 'm', 'hidden_dim': 64, 'num_blocks': 2},
            'eval_split': 'test', 'num_epochs': 4, 'num_train_steps': -1,
            'data_dir': ''}
  config['model'].update(fields)
  return config


def _metrics(run_dir, steps, acc0=0.3):
  with open(os.path.join(run_dir, 'metrics.jsonl'), 'w') as f:
    for i, step in enumerate(steps):
      rec = {'step': step, 'epoch': step / STEPS_PER_EPOCH,
             'train_loss': 2.3 - 0.2 * i, 'train_accuracy': 0.1 + 0.05 * i,
             'learning_rate': 1e-3, 'grad_norm': 1.0, 'images_per_sec': 900.0}
      if step % STEPS_PER_EPOCH == 0:
        rec.update(eval_loss=1.9 - 0.1 * i, eval_accuracy=acc0 + 0.05 * i,
                   eval_examples=10000)
      f.write(json.dumps(rec) + '\n')
    f.write('{"step": 99')  # A torn last line (killed mid-write).


def make_sweep(root):
  """Four runs, one per status, plus a sweep.json listing them."""
  runs = [('C64_L2', {'model.hidden_dim': 64, 'model.num_blocks': 2}),
          ('C64_L4', {'model.hidden_dim': 64, 'model.num_blocks': 4}),
          ('C128_L2', {'model.hidden_dim': 128, 'model.num_blocks': 2}),
          ('C128_L4', {'model.hidden_dim': 128, 'model.num_blocks': 4})]
  with open(os.path.join(root, 'sweep.json'), 'w') as f:
    json.dump({'sweep': 'configs/sweeps/x.py',
               'global_overrides': {'num_epochs': 4},
               'runs': [{'name': n, 'fields': fl} for n, fl in runs]}, f)
  done = os.path.join(root, 'C64_L2')
  os.makedirs(done)
  _metrics(done, range(50, 401, 50))
  with open(os.path.join(done, 'config.json'), 'w') as f:
    json.dump(_config(), f)
  with open(os.path.join(done, 'results.json'), 'w') as f:
    json.dump({'status': 'done', 'final_eval_accuracy': 0.61,
               'final_eval_loss': 1.1, 'best_eval_accuracy': 0.62,
               'eval_examples': 10000, 'steps': 400, 'epochs': 4.0,
               'resumed_from_step': 200, 'wall_seconds': 3725.0,
               'train_seconds': 3600.0, 'images_per_second': 1234.5,
               'num_params': 1_234_567, 'num_devices': 1,
               'device_kind': 'cpu', 'config': _config()}, f)
  partial = os.path.join(root, 'C64_L4')
  os.makedirs(os.path.join(partial, 'checkpoints', '200'))
  _metrics(partial, range(50, 251, 50), acc0=0.25)
  with open(os.path.join(partial, 'config.json'), 'w') as f:
    json.dump(_config(num_blocks=4), f)
  with open(os.path.join(partial, 'sweep_run.json'), 'w') as f:
    json.dump({'name': 'C64_L4', 'pid': 2 ** 22 + 7, 'host': 'elsewhere',
               'started': 0}, f)
  failed = os.path.join(root, 'C128_L2')
  os.makedirs(failed)
  with open(os.path.join(failed, 'error.txt'), 'w') as f:
    f.write('ValueError: batch_size 7 must be a positive multiple\n\n'
            'Traceback (most recent call last):\n  ...\n')
  return root


def test_report_rows_csv_markdown_png(tmp_path):
  make_sweep(str(tmp_path))
  paths = report.write_report(str(tmp_path))

  rows, columns, _ = report.collect(str(tmp_path))
  assert columns == ['model.hidden_dim', 'model.num_blocks']
  by = {r['name']: r for r in rows}
  assert [r['name'] for r in rows] == ['C64_L2', 'C64_L4', 'C128_L2',
                                       'C128_L4']
  assert by['C64_L2']['status'] == 'done'
  assert by['C64_L4']['status'] == 'partial'
  assert by['C64_L4']['steps'] == 250  # The torn line is skipped.
  assert 'step 250/400' in by['C64_L4']['detail']
  assert 'checkpoint 200' in by['C64_L4']['detail']
  assert by['C64_L4']['best_eval_accuracy'] == pytest.approx(0.4)
  assert by['C128_L2']['status'] == 'failed'
  assert by['C128_L2']['error'].startswith('ValueError: batch_size 7')
  assert by['C128_L4']['status'] == 'not started'

  with open(paths['csv']) as f:
    table = list(csv.DictReader(f))
  assert [t['name'] for t in table] == [r['name'] for r in rows]
  assert table[0]['model.hidden_dim'] == '64'
  assert table[0]['num_params'] == '1234567'
  assert float(table[0]['final_eval_accuracy']) == 0.61
  assert [t['status'] for t in table] == ['done', 'partial', 'failed',
                                          'not started']

  with open(paths['markdown']) as f:
    md = f.read()
  assert '| run | hidden_dim | num_blocks | params |' in md
  assert ('| C64_L2 | 64 | 2 | 1.23M | 61.00 | 62.00 | 4 | 1:02:05 | 1,234 |'
          in md)
  assert 'failed (ValueError: batch_size 7' in md
  assert '| C128_L4 | 128 | 4 |' in md and 'not started |' in md
  assert '`num_epochs=4`' in md
  assert '![training curves](curves.png)' in md

  with open(paths['curves'], 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  assert os.path.getsize(paths['curves']) > 10_000


def test_report_without_sweep_json_diffs_configs(tmp_path):
  """Plain train.py workdirs: the columns are the config fields that differ."""
  for name, blocks in (('a', 2), ('b', 8)):
    run_dir = tmp_path / name
    run_dir.mkdir()
    (run_dir / 'config.json').write_text(json.dumps(
        _config(num_blocks=blocks, model_name=name)))
    _metrics(str(run_dir), [50, 100])
  rows, columns, _ = report.collect(str(tmp_path))
  assert columns == ['model.num_blocks']
  assert [r['fields'] for r in rows] == [{'model.num_blocks': 2},
                                         {'model.num_blocks': 8}]
  assert all(r['status'] == 'partial' for r in rows)
  report.write_report(str(tmp_path))
  assert (tmp_path / 'curves.png').stat().st_size > 0


def test_report_of_empty_folder(tmp_path):
  paths = report.write_report(str(tmp_path))
  assert os.path.getsize(paths['curves']) > 0
  with open(paths['csv']) as f:
    assert len(list(csv.reader(f))) == 1  # The header only.


def test_check_sweep_dir(tmp_path):
  report.check_sweep_dir(str(tmp_path))
  with pytest.raises(ValueError, match=r'sweep folder .*/nope does not exist; '
                     r'pass the folder a sweep writes into \(sweep.py '
                     r'--workdir\)'):
    report.check_sweep_dir(str(tmp_path / 'nope'))
  (tmp_path / 'f.txt').write_text('x')
  with pytest.raises(ValueError, match='is a file, not a folder'):
    report.check_sweep_dir(str(tmp_path / 'f.txt'))


def test_cli_writes_the_report(tmp_path):
  """The success path through cli.run: the summary on stdout, files
  written, nothing on stderr."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  from tests.conftest import REPO  # pylint: disable=g-import-not-at-top
  make_sweep(str(tmp_path))
  out = subprocess.run([sys.executable, '-m', 'mixer.report', str(tmp_path)],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-3000:]
  assert '| C64_L2 |' in out.stdout
  assert out.stdout.strip().splitlines()[-1] == (
      f'wrote {tmp_path / "curves.png"}')
  assert not out.stderr.strip()
