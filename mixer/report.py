r"""Summarises a sweep folder: a Markdown table, a CSV and training curves.

    python -m mixer.report workdirs/patch_size

reads every run folder under the given directory (those listed in its
`sweep.json`, written by `sweep.py`, and any other folder that looks like a
training workdir) and writes

* `summary.md`: one row per run: its name, the fields the sweep varies, the
  parameter count, final and best test accuracy, the final linear few-shot
  accuracies (when the runs evaluate them, `config.fewshot`), wall time,
  training throughput and status, followed by the curves;
* `summary.csv`: the same rows with unformatted values (and a few more);
* `curves.png`: test accuracy and train loss against epochs, one colour per
  run.

A run's status is `done` (results.json), `failed` (error.txt; its first line
is shown), `partial` (metrics or checkpoints but no results: still training
or interrupted; the last logged step is shown) or `not started`. The report
only reads the folders, so it can be run at any time, also while the sweep
trains.

Errors follow the CLI contract of `mixer.cli`: a missing or non-folder
SWEEP_DIR prints one `error:` line naming it and the fix, exit status 1
(`--debug` shows the traceback).
"""

if __name__ == '__main__':
  # The CLI contract: imported first (quiet C++ start-up logging).
  from mixer import cli  # pylint: disable=g-import-not-at-top

import csv
import datetime
import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

from absl import app

RESULTS = 'results.json'
ERROR = 'error.txt'
RUN_INFO = 'sweep_run.json'
SWEEP_INFO = 'sweep.json'
METRICS = 'metrics.jsonl'
CONFIG = 'config.json'
CHECKPOINTS = 'checkpoints'

# Config fields that differ between runs for reasons that are not the
# experiment (used only when no sweep.json names the varied fields).
_NOT_EXPERIMENT_FIELDS = ('model.model_name', 'data_dir', 'init_checkpoint')

STATUSES = ('done', 'partial', 'failed', 'not started')


def _read_json(path: str) -> Optional[Any]:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def read_metrics(run_dir: str) -> List[Dict[str, Any]]:
  """Records of `metrics.jsonl` sorted by step (a torn last line is skipped).

  A resumed run rewrites the file from its checkpoint step on; should a
  step still appear twice, its last record wins.
  """
  by_step: Dict[int, Dict[str, Any]] = {}
  try:
    with open(os.path.join(run_dir, METRICS)) as f:
      for line in f:
        try:
          rec = json.loads(line)
          step = int(rec['step'])
        except (ValueError, KeyError, TypeError):
          continue
        by_step.setdefault(step, {}).update(rec)
  except OSError:
    return []
  return [by_step[s] for s in sorted(by_step)]


def _checkpoint_steps(run_dir: str) -> List[int]:
  try:
    names = os.listdir(os.path.join(run_dir, CHECKPOINTS))
  except OSError:
    return []
  return sorted(int(n) for n in names if n.isdigit())


def _pid_alive(info: Optional[Dict[str, Any]]) -> bool:
  """Whether the process that started the run (per sweep_run.json) lives."""
  if not info or info.get('host') != os.uname().nodename:
    return False
  try:
    os.kill(int(info['pid']), 0)
  except (OSError, KeyError, TypeError, ValueError):
    return False
  return True


def _total_steps(config: Optional[Dict[str, Any]],
                 records: Sequence[Dict[str, Any]]) -> Optional[int]:
  """The run's planned steps, from its config and the logged epoch/step."""
  if not config:
    return None
  if (config.get('num_train_steps') or -1) > 0:
    return int(config['num_train_steps'])
  for rec in reversed(records):
    if rec.get('epoch'):
      # Whole batches per epoch (in memory) or N / B (streamed): either
      # way the planned steps are num_epochs times the logged rate.
      return int(round(config.get('num_epochs', 0) * rec['step'] /
                       rec['epoch'])) or None
  return None


def flatten(d: Dict[str, Any], prefix: str = '') -> Dict[str, Any]:
  out = {}
  for k, v in d.items():
    key = f'{prefix}{k}'
    if isinstance(v, dict):
      out.update(flatten(v, key + '.'))
    else:
      out[key] = v
  return out


def load_run(run_dir: str, name: str,
             fields: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
  """One report row (raw values) plus the run's metrics records."""
  results = _read_json(os.path.join(run_dir, RESULTS))
  info = _read_json(os.path.join(run_dir, RUN_INFO))
  config = _read_json(os.path.join(run_dir, CONFIG))
  if config is None and results:
    config = results.get('config')
  records = read_metrics(run_dir)
  if fields is None:
    fields = (info or {}).get('fields', {})
  row: Dict[str, Any] = {
      'name': name, 'fields': dict(fields), 'config': config,
      'records': records, 'status': 'not started', 'detail': '',
      'num_params': None, 'final_eval_accuracy': None,
      'best_eval_accuracy': None, 'final_eval_loss': None, 'steps': None,
      'epochs': None, 'wall_seconds': None, 'train_seconds': None,
      'images_per_second': None, 'num_devices': None, 'device_kind': None,
      'error': None, 'fewshot': {},
  }
  evals = [r for r in records if 'eval_accuracy' in r]
  if results and results.get('status') == 'done':
    row['status'] = 'done'
    for key in ('num_params', 'final_eval_accuracy', 'best_eval_accuracy',
                'final_eval_loss', 'steps', 'epochs', 'wall_seconds',
                'train_seconds', 'images_per_second', 'num_devices',
                'device_kind'):
      row[key] = results.get(key)
    row['fewshot'] = dict(results.get('fewshot') or {})
    if results.get('resumed_from_step'):
      row['detail'] = f'resumed from step {results["resumed_from_step"]}'
    return row

  # Not finished: whatever the folder shows so far.
  last_step = records[-1]['step'] if records else None
  ckpts = _checkpoint_steps(run_dir)
  if evals:
    row['final_eval_accuracy'] = evals[-1]['eval_accuracy']
    row['final_eval_loss'] = evals[-1].get('eval_loss')
    row['best_eval_accuracy'] = max(r['eval_accuracy'] for r in evals)
  if last_step is not None:
    row['steps'] = last_step
    row['epochs'] = records[-1].get('epoch')
    rates = [r['images_per_sec'] for r in records if r.get('images_per_sec')]
    if rates:
      row['images_per_second'] = rates[-1]
  error = None
  if os.path.exists(os.path.join(run_dir, ERROR)):
    with open(os.path.join(run_dir, ERROR)) as f:
      error = f.readline().strip() or 'unknown error'
  parts = []
  if last_step is not None or ckpts:
    total = _total_steps(config, records)
    if last_step is not None:
      parts.append(f'step {last_step}' + (f'/{total}' if total else ''))
    if ckpts:
      parts.append(f'checkpoint {ckpts[-1]}')
  if error is not None:
    row['status'] = 'failed'
    row['error'] = error
    parts.insert(0, error)
  elif parts or info or config:
    row['status'] = 'partial'
    if not parts:
      parts.append('no step logged yet')
    if _pid_alive(info):
      parts.append('running')
      if info.get('started'):  # Time so far.
        row['wall_seconds'] = max(0.0, _now() - float(info['started']))
  row['detail'] = ', '.join(parts)
  return row


def _now() -> float:
  return datetime.datetime.now().timestamp()


def _looks_like_run(path: str) -> bool:
  return os.path.isdir(path) and any(
      os.path.exists(os.path.join(path, f))
      for f in (RESULTS, ERROR, RUN_INFO, CONFIG, METRICS))


def collect(sweep_dir: str) -> Tuple[List[Dict[str, Any]], List[str],
                                     Dict[str, Any]]:
  """(rows, field columns, sweep info) for every run under `sweep_dir`.

  Runs listed in `sweep.json` come first, in sweep order, then any other
  run folder by name. The field columns are the union of the runs' shown
  fields; with no sweep.json, the config fields that differ between runs.
  """
  info = _read_json(os.path.join(sweep_dir, SWEEP_INFO)) or {}
  rows, listed = [], set()
  for entry in info.get('runs', []):
    listed.add(entry['name'])
    rows.append(load_run(os.path.join(sweep_dir, entry['name']), entry['name'],
                         entry.get('fields', {})))
  try:
    others = sorted(os.listdir(sweep_dir))
  except OSError:
    others = []
  for name in others:
    path = os.path.join(sweep_dir, name)
    if name not in listed and _looks_like_run(path):
      rows.append(load_run(path, name))

  columns: List[str] = []
  for row in rows:
    columns += [k for k in row['fields'] if k not in columns]
  if not columns:
    flat = [flatten(r['config']) for r in rows if r['config']]
    if len(flat) > 1:
      keys = sorted(set().union(*flat))
      columns = [k for k in keys if k not in _NOT_EXPERIMENT_FIELDS and
                 len({json.dumps(f.get(k), sort_keys=True) for f in flat}) > 1]
      for row in rows:
        cfg = flatten(row['config'] or {})
        row['fields'] = {k: cfg.get(k) for k in columns}
  return rows, columns, info


# -- formatting --------------------------------------------------------------


def _fmt_value(v: Any) -> str:
  if v is None:
    return ''
  if isinstance(v, (list, tuple)):
    return 'x'.join(_fmt_value(x) for x in v)
  if isinstance(v, float):
    return f'{v:g}'
  return str(v)


def _fmt_params(n: Optional[int]) -> str:
  if n is None:
    return ''
  if n >= 1e9:
    return f'{n / 1e9:.2f}B'
  if n >= 1e6:
    return f'{n / 1e6:.2f}M'
  if n >= 1e3:
    return f'{n / 1e3:.1f}K'
  return str(n)


def _fmt_pct(v: Optional[float]) -> str:
  return '' if v is None else f'{100 * v:.2f}'


def _fmt_duration(seconds: Optional[float]) -> str:
  if seconds is None:
    return ''
  seconds = int(round(seconds))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f'{h}:{m:02d}:{s:02d}'


def _fmt_rate(v: Optional[float]) -> str:
  return '' if v is None else f'{v:,.0f}'


def _eval_split(rows: Sequence[Dict[str, Any]]) -> str:
  splits = {(r['config'] or {}).get('eval_split') for r in rows}
  splits.discard(None)
  return splits.pop() if len(splits) == 1 else 'eval'


def short_names(columns: Sequence[str]) -> List[str]:
  """Column headers: a field's last name where no other column shares it."""
  # 'size' alone says too little: keep its parent ('patches.size').
  leaves = ['.'.join(c.split('.')[-2:]) if c.endswith('.size') else
            c.split('.')[-1] for c in columns]
  return [leaf if leaves.count(leaf) == 1 else c
          for c, leaf in zip(columns, leaves)]


def fewshot_keys(rows: Sequence[Dict[str, Any]]) -> List[str]:
  """The few-shot metrics any finished run has ('fewshot/cifar10_5shot'),
  by dataset then shots."""
  keys = {k for r in rows for k in r.get('fewshot') or {}}

  def order(key):
    name, _, shots = key.split('/', 1)[-1].rpartition('_')
    return (name, int(shots[:-4]) if shots[:-4].isdigit() else 0, key)

  return sorted(keys, key=order)


def fewshot_header(key: str) -> str:
  """'fewshot/cifar10_5shot' -> '5-shot cifar10 %'."""
  name, _, shots = key.split('/', 1)[-1].rpartition('_')
  return f'{shots[:-4]}-shot {name} %' if shots.endswith('shot') else key


def markdown(rows: Sequence[Dict[str, Any]], columns: Sequence[str],
             info: Dict[str, Any], title: str) -> str:
  """The summary.md text."""
  split = _eval_split(rows)
  shots = fewshot_keys(rows)
  headers = (['run'] + short_names(columns) +
             ['params', f'final {split} acc %', f'best {split} acc %'] +
             [fewshot_header(k) for k in shots] +
             ['epochs', 'wall time', 'train img/s', 'status'])
  lines = [f'# Sweep {title}', '']
  if info.get('sweep'):
    lines.append(f'Sweep file: `{info["sweep"]}`  ')
  if info.get('global_overrides'):
    sets = ', '.join(f'`{k}={_fmt_value(v)}`'
                     for k, v in info['global_overrides'].items())
    lines.append(f'Overrides for all runs: {sets}  ')
  counts = {s: sum(r['status'] == s for r in rows) for s in STATUSES}
  lines.append(f'Runs: {len(rows)} (' + ', '.join(
      f'{n} {s}' for s, n in counts.items() if n) + ')  ')
  lines.append(f'Updated: {datetime.datetime.now():%Y-%m-%d %H:%M:%S}')
  lines += ['', '| ' + ' | '.join(headers) + ' |',
            '|' + '|'.join('---' if i == 0 or h == 'status' else '---:'
                           for i, h in enumerate(headers)) + '|']
  unfinished = False
  for r in rows:
    done = r['status'] == 'done'
    mark = '' if done else '*'
    unfinished |= not done and r['final_eval_accuracy'] is not None
    acc = (lambda v: _fmt_pct(v) + (mark if v is not None else ''))
    status = r['status'] + (f' ({r["detail"]})' if r['detail'] else '')
    epochs = '' if r['epochs'] is None else f'{r["epochs"]:.3g}'
    cells = ([r['name']] + [_fmt_value(r['fields'].get(c)) for c in columns] +
             [_fmt_params(r['num_params']), acc(r['final_eval_accuracy']),
              acc(r['best_eval_accuracy'])] +
             [_fmt_pct((r.get('fewshot') or {}).get(k)) for k in shots] +
             [epochs,
              _fmt_duration(r['wall_seconds']),
              _fmt_rate(r['images_per_second']), status])
    lines.append('| ' + ' | '.join(c.replace('|', '\\|') for c in cells) + ' |')
  lines.append('')
  if unfinished:
    lines.append('\\* so far: the run has not finished.')
    lines.append('')
  lines.append('Wall time: the whole run (compilation and evaluation '
               'included); train img/s: training steps only, after the first '
               '(compiling) dispatch.')
  lines += ['', '![training curves](curves.png)', '']
  return '\n'.join(lines)


CSV_COLUMNS = ('status', 'detail', 'num_params', 'final_eval_accuracy',
               'best_eval_accuracy', 'final_eval_loss', 'steps', 'epochs',
               'wall_seconds', 'train_seconds', 'images_per_second',
               'num_devices', 'device_kind', 'error')


def write_csv(path: str, rows: Sequence[Dict[str, Any]],
              columns: Sequence[str]) -> None:
  shots = fewshot_keys(rows)
  with open(path + '.tmp', 'w', newline='') as f:
    w = csv.writer(f)
    w.writerow(['name'] + list(columns) + list(CSV_COLUMNS) + shots)
    for r in rows:
      fields = [json.dumps(v) if isinstance(v, (list, tuple, dict)) else
                ('' if v is None else v)
                for v in (r['fields'].get(c) for c in columns)]
      fewshot = r.get('fewshot') or {}
      w.writerow([r['name']] + fields +
                 ['' if r[k] is None else r[k] for k in CSV_COLUMNS] +
                 [fewshot.get(k, '') for k in shots])
  os.replace(path + '.tmp', path)


def plot_curves(path: str, rows: Sequence[Dict[str, Any]], title: str) -> None:
  """Test accuracy and train loss vs epoch, one colour per run."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  split = _eval_split(rows)
  n = max(len(rows), 1)
  cmap = plt.get_cmap('tab10' if n <= 10 else 'tab20')
  fig, (ax_acc, ax_loss) = plt.subplots(
      1, 2, figsize=(13, 4.8), layout='constrained')
  handles = []
  for i, r in enumerate(rows):
    color = cmap(i % cmap.N)
    style = '-' if i < cmap.N else '--'
    label = r['name'] + ('' if r['status'] == 'done' else f' ({r["status"]})')
    evals = [x for x in r['records'] if 'eval_accuracy' in x and 'epoch' in x]
    train = [x for x in r['records'] if 'train_loss' in x and 'epoch' in x]
    marker = 'o' if len(evals) <= 20 else None
    if evals:
      ax_acc.plot([x['epoch'] for x in evals],
                  [100 * x['eval_accuracy'] for x in evals], style,
                  color=color, marker=marker, markersize=4, linewidth=1.6)
    if train:
      ax_loss.plot([x['epoch'] for x in train],
                   [x['train_loss'] for x in train], style, color=color,
                   marker='o' if len(train) <= 20 else None, markersize=3,
                   linewidth=1.3)
    handles.append(matplotlib.lines.Line2D(
        [], [], color=color, linestyle=style, linewidth=2, label=label))
  ax_acc.set_title(f'{split.capitalize()} accuracy')
  ax_acc.set_xlabel('epoch')
  ax_acc.set_ylabel(f'{split} accuracy (%)')
  ax_loss.set_title('Train loss')
  ax_loss.set_xlabel('epoch')
  ax_loss.set_ylabel('train loss (cross-entropy)')
  for ax in (ax_acc, ax_loss):
    ax.grid(True, alpha=0.3)
    if not ax.lines:
      ax.text(0.5, 0.5, 'no metrics yet', ha='center', va='center',
              transform=ax.transAxes, color='gray')
  if handles:
    fig.legend(handles=handles, loc='outside right upper', title='run',
               fontsize='small', ncols=1 if len(handles) <= 16 else 2)
  fig.suptitle(title)
  fig.savefig(path + '.tmp.png', dpi=110)
  plt.close(fig)
  os.replace(path + '.tmp.png', path)


def write_report(sweep_dir: str) -> Dict[str, str]:
  """Writes summary.md, summary.csv and curves.png; returns their paths."""
  rows, columns, info = collect(sweep_dir)
  title = os.path.basename(os.path.abspath(sweep_dir))
  if info.get('sweep'):  # '.../patch_size.py[:arg]' or a module name.
    source = info['sweep'].split(':')[0]
    title = (os.path.splitext(os.path.basename(source))[0]
             if source.endswith('.py') else source.rsplit('.', 1)[-1])
  paths = {'markdown': os.path.join(sweep_dir, 'summary.md'),
           'csv': os.path.join(sweep_dir, 'summary.csv'),
           'curves': os.path.join(sweep_dir, 'curves.png')}
  plot_curves(paths['curves'], rows, f'Sweep {title}')
  write_csv(paths['csv'], rows, columns)
  text = markdown(rows, columns, info, title)
  with open(paths['markdown'] + '.tmp', 'w') as f:
    f.write(text)
  os.replace(paths['markdown'] + '.tmp', paths['markdown'])
  return paths


def define_flags():
  """The command-line flags: none besides the shared --debug (SWEEP_DIR is
  positional); kept for the same shape as the other tools."""


def check_sweep_dir(path: str) -> None:
  """One ValueError naming `path` when it cannot be reported on."""
  fix = ('pass the folder a sweep writes into (sweep.py --workdir), or any '
         "folder holding train.py workdirs")
  if not os.path.exists(path):
    raise ValueError(f'sweep folder {path} does not exist; {fix}')
  if not os.path.isdir(path):
    raise ValueError(f'sweep folder {path} is a file, not a folder; {fix}')
  if not os.access(path, os.W_OK | os.X_OK):
    raise ValueError(f'sweep folder {path} is not writable (the report '
                     'writes summary.md, summary.csv and curves.png into it); '
                     'fix its permissions or copy it somewhere writable')


def main(argv):
  if len(argv) != 2:
    given = (f'; got {len(argv) - 1} arguments: {" ".join(argv[1:])}'
             if len(argv) > 2 else '')
    raise app.UsageError('give one sweep folder: python -m mixer.report '
                         f'SWEEP_DIR{given}')
  check_sweep_dir(argv[1])
  paths = write_report(argv[1])
  with open(paths['markdown']) as f:
    print(f.read())
  print('\n'.join(f'wrote {p}' for p in paths.values()))


if __name__ == '__main__':
  define_flags()
  cli.run(main)
