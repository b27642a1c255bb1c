r"""Runs a sweep: named training runs, one after another, one folder each.

    python sweep.py --sweep=configs/sweeps/patch_size.py --workdir=workdirs/ps
    # A quick CPU smoke run of the same sweep:
    python sweep.py --sweep=configs/sweeps/patch_size.py --workdir=/tmp/patch \
        --set=num_train_steps=20 --set=batch_size=64 --set=model.hidden_dim=32

Each run of the sweep file's `get_sweep()` trains in `<workdir>/<run name>/`
with `mixer.train.train_and_evaluate`. Running the same command again continues
the sweep: finished runs (`results.json` with status "done") are skipped and a
run that was interrupted resumes from its latest checkpoint. A run that fails
writes `<run>/error.txt` and the sweep goes on with the next; the exit status
is 1 if any run failed. A dataset that cannot be had at all (no local copy
and no network to download it: `mixer.data.DatasetUnavailable`) is tried
once: the later runs on it fail at once with the same error.

After every run `<workdir>/summary.md`, `summary.csv` and `curves.png` are
rewritten (see `mixer/report.py`), so they are current while the sweep runs.

A relative `--sweep` path is looked up in the current directory, then in the
repository root (the folder holding this file), so the shipped
`configs/sweeps/...` work from anywhere; the log says when the latter was
used. `--dry_run` lists the runs with their varied fields and the `--set`
overrides, training nothing.

Errors follow the CLI contract of `mixer.cli`: a bad sweep file, `--set` item
or flag prints one line `error: ...` naming it and the fix, exit status 1
(`--debug` shows the traceback). Ctrl-C saves the current run's step and
stops the sweep (exit status 130; the same command continues it).

On several hosts, start the same command on each with a workdir they all
see: every process trains the same runs in the same order (process 0 writes
the files), so they must agree on which runs are already done.
"""

from mixer import cli  # pylint: disable=g-bad-import-order  (before JAX/TF)

import json
import os
import sys
import time
import traceback
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from absl import app
from absl import flags
from absl import logging

from mixer import report
from mixer import sweeps

# The repository root: relative --sweep paths not found in the current
# directory are looked up here.
REPO = os.path.dirname(os.path.abspath(__file__))

_SWEEP = None
_WORKDIR = None
_SET = None
_ONLY = None
_DRY_RUN = None


def define_flags():
  """Defines the command-line flags (only when run as a program, so that
  importing this module next to other CLIs never redefines a flag)."""
  global _SWEEP, _WORKDIR, _SET, _ONLY, _DRY_RUN
  _SWEEP = flags.DEFINE_string(
      'sweep', None, 'Sweep file (configs/sweeps/<name>.py), optionally '
      '`path:arg` to call get_sweep(arg).')
  _WORKDIR = flags.DEFINE_string(
      'workdir', None, 'Sweep folder: one sub-folder per run plus the summary.')
  _SET = flags.DEFINE_multi_string(
      'set', [], 'key=value applied to every run after its own overrides, e.g. '
      '--set=num_train_steps=20 --set=model.hidden_dim=32 (repeatable).')
  _ONLY = flags.DEFINE_list(
      'only', [], 'Train only these runs (comma-separated names); the summary '
      'still lists all.')
  _DRY_RUN = flags.DEFINE_bool(
      'dry_run', False, 'List the runs and their overrides, train nothing.')

RESULTS = 'results.json'
ERROR = 'error.txt'
RUN_INFO = 'sweep_run.json'
SWEEP_INFO = 'sweep.json'


def is_done(run_dir: str) -> bool:
  """True when `run_dir` holds the results of a finished run."""
  path = os.path.join(run_dir, RESULTS)
  try:
    with open(path) as f:
      return json.load(f).get('status') == 'done'
  except (OSError, ValueError):
    return False


def _write_json(path: str, obj: Any) -> None:
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(obj, f, indent=2, default=str)
  os.replace(tmp, path)


def _config_dict(config) -> Dict[str, Any]:
  return json.loads(config.to_json_best_effort())


def write_sweep_info(workdir: str, sweep_file: str,
                     runs: Sequence[sweeps.Run],
                     global_overrides: Dict[str, Any]) -> None:
  """`sweep.json`: every run's name and shown fields, so the report can list
  runs that have not started yet."""
  _write_json(os.path.join(workdir, SWEEP_INFO), {
      'sweep': sweep_file,
      'global_overrides': global_overrides,
      'runs': [{'name': r.name, 'fields': r.fields(),
                'overrides': sweeps.jsonable(dict(r.overrides))}
               for r in runs],
  })


def _data_key(config) -> Tuple[str, str]:
  """What decides whether a run's dataset can be found (the environment
  is the same for every run of a sweep)."""
  return str(config.dataset), str(config.get('data_dir', '') or '')


def train_one(r: sweeps.Run, run_dir: str, *, chief: bool = True,
              unavailable: Optional[Dict[Tuple[str, str], str]] = None
              ) -> Dict[str, Any]:
  """Trains (or resumes) one run; never raises for a failure of the run.

  `unavailable` maps the datasets earlier runs found unavailable
  (`_data_key`) to their error: a run on one fails at once with that error,
  and this run's own such failure is added to it.

  Returns {'name', 'status': 'done'|'skipped'|'failed', 'error'?}.
  """
  from mixer import train  # pylint: disable=g-import-not-at-top
  from mixer.data.base import DatasetUnavailable  # pylint: disable=g-import-not-at-top
  if is_done(run_dir):
    with open(os.path.join(run_dir, RESULTS)) as f:
      saved = json.load(f).get('config')
    if saved is not None and saved != _config_dict(r.config):
      logging.warning('%s: finished with a config that differs from the '
                      'sweep\'s now; delete %s to retrain it', r.name, run_dir)
    logging.info('%s: already done, skipping', r.name)
    return {'name': r.name, 'status': 'skipped'}
  error_path = os.path.join(run_dir, ERROR)
  if chief:
    os.makedirs(run_dir, exist_ok=True)
    if os.path.exists(error_path):
      os.remove(error_path)  # A retry: the old error no longer describes it.
    _write_json(os.path.join(run_dir, RUN_INFO), {
        'name': r.name, 'fields': r.fields(), 'pid': os.getpid(),
        'host': os.uname().nodename, 'started': time.time()})
  key = _data_key(r.config)
  if unavailable is not None and key in unavailable:
    line = unavailable[key]
    if chief:
      with open(error_path, 'w') as f:
        f.write(line + '\n\nNot tried: an earlier run of this sweep found '
                'the same dataset unavailable.\n')
    logging.error('%s failed: %s (found by an earlier run; not tried again)',
                  r.name, line)
    return {'name': r.name, 'status': 'failed', 'error': line}
  logging.info('%s: training in %s', r.name, run_dir)
  try:
    train.train_and_evaluate(r.config, run_dir)
  except Exception as e:  # pylint: disable=broad-except
    line = f'{type(e).__name__}: {e}'.splitlines()[0]
    if chief:
      with open(error_path, 'w') as f:
        f.write(line + '\n\n' + traceback.format_exc())
    logging.error('%s failed: %s (details in %s)', r.name, line, error_path)
    if isinstance(e, DatasetUnavailable) and unavailable is not None:
      unavailable[key] = line
    return {'name': r.name, 'status': 'failed', 'error': line}
  return {'name': r.name, 'status': 'done'}


def load_runs(sweep_file: str, global_overrides: Mapping[str, Any],
              set_texts: Optional[Mapping[str, str]] = None
              ) -> List[sweeps.Run]:
  """The sweep file's runs with the global overrides applied.

  Raises:
    sweeps.SweepError: one line naming the sweep file or the `--set` item
      at fault and the fix.
  """
  runs = sweeps.load_sweep(sweep_file, root=REPO)
  return sweeps.apply_global_overrides(runs, global_overrides, set_texts)


def run_sweep(sweep_file: str, workdir: str, *,
              global_overrides: Optional[Dict[str, Any]] = None,
              only: Sequence[str] = (),
              set_texts: Optional[Mapping[str, str]] = None
              ) -> List[Dict[str, Any]]:
  """Trains every run of `sweep_file` in `workdir`; returns their outcomes.

  A run that fails is recorded (`<run>/error.txt`) and the sweep goes on.
  Ctrl-C (`mixer.stopping.Interrupted`, raised by the run after it saved
  its step) stops the sweep: the summary is rewritten and the interrupt
  raised again with the sweep's position in its message; the run is not
  recorded as failed.
  """
  global_overrides = dict(global_overrides or {})
  runs = load_runs(sweep_file, global_overrides, set_texts)
  unknown = set(only) - {r.name for r in runs}
  if unknown:
    raise ValueError(f'--only names no run of the sweep: {sorted(unknown)}; '
                     f'give names from: {", ".join(r.name for r in runs)}')
  chief = _is_chief()
  if chief:
    os.makedirs(workdir, exist_ok=True)
    write_sweep_info(workdir, sweep_file, runs, global_overrides)
    _report(workdir)
  outcomes = []
  unavailable = {}  # Datasets found unavailable: tried once per sweep.
  todo = [r for r in runs if not only or r.name in only]
  for i, r in enumerate(todo):
    logging.info('=== run %d/%d: %s', i + 1, len(todo), r.name)
    try:
      outcomes.append(train_one(r, os.path.join(workdir, r.name),
                                chief=chief, unavailable=unavailable))
    except KeyboardInterrupt as e:
      if chief:
        _report(workdir)
      what = ' '.join(str(e).split()) or (
          'interrupted before the run saved a new step; run the same '
          'command again to continue the sweep')
      message = (f'sweep stopped during run {r.name} ({i + 1}/{len(todo)}): '
                 f'{what}')
      try:
        stopped = type(e)(message)
      except TypeError:
        stopped = KeyboardInterrupt(message)
      raise stopped from e
    if chief:
      _report(workdir)
  return outcomes


def _is_chief() -> bool:
  """Only process 0 of a multi-host job writes the sweep's own files."""
  import jax  # pylint: disable=g-import-not-at-top
  return jax.process_index() == 0


def _report(workdir: str) -> None:
  """Rewrites the summary; a plotting problem must not stop the sweep."""
  try:
    report.write_report(workdir)
  except Exception:  # pylint: disable=broad-except
    logging.exception('could not write the sweep report')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])} '
                         '(sweep.py takes only flags, e.g. --sweep=... '
                         '--workdir=...)')
  logging.set_verbosity(logging.INFO)
  sweep_file, note = sweeps.resolve_sweep_file(_SWEEP.value, REPO)
  if note:
    logging.info('%s', note)
  overrides = sweeps.parse_assignments(_SET.value)
  texts = sweeps.assignment_texts(_SET.value)
  if _DRY_RUN.value:
    runs = load_runs(sweep_file, overrides, texts)
    if overrides:
      print('--set (every run): '
            f'{json.dumps(sweeps.jsonable(overrides), default=str)}')
    for r in runs:
      fields = sweeps.shown_fields(r, overrides)
      print(f'{r.name}: {json.dumps(fields, default=str)}')
    return
  outcomes = run_sweep(sweep_file, _WORKDIR.value,
                       global_overrides=overrides, only=_ONLY.value,
                       set_texts=texts)
  failed = [o for o in outcomes if o['status'] == 'failed']
  print(f'sweep: {len(outcomes)} runs, '
        f'{sum(o["status"] == "done" for o in outcomes)} trained, '
        f'{sum(o["status"] == "skipped" for o in outcomes)} already done, '
        f'{len(failed)} failed; summary in '
        f'{os.path.join(_WORKDIR.value, "summary.md")}')
  for o in failed:
    print(f'  FAILED {o["name"]}: {o["error"]}')
  if failed:
    sys.exit(1)


if __name__ == '__main__':
  define_flags()
  flags.mark_flags_as_required(['sweep'])
  flags.register_multi_flags_validator(
      ['workdir', 'dry_run'], lambda f: bool(f['workdir']) or f['dry_run'],
      message='--workdir is required unless --dry_run: pass --workdir= the '
      'folder that will hold one sub-folder per run')
  cli.run(main)
