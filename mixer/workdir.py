"""A run's folder: creating it, locking it, checking it holds this run, clearing it.

`open_workdir` runs before anything is written: it creates the workdir,
takes an exclusive lock on it for the whole run (`RunLock`: a second run on
the same workdir is refused, naming the holder; the lock dies with its
process, SIGKILL included), checks that it is writable, and refuses it when
it holds a run whose config differs in a field that matters
(`RESUMABLE_FIELDS` lists those that may change between a run and its
resumption); with `overwrite`, that run's outputs are deleted instead.
Configs are compared as the JSON a run writes (`config_json`, saved as
`config.json` and in every checkpoint); `check_config_values` refuses
values no run can use (NaN or infinite numbers).

Owns the workdir's layout outside the checkpoints (`config.json`,
`metrics.jsonl`, `results.json`, TensorBoard events); never trains or
evaluates.
"""

import contextlib
import datetime
import fcntl
import glob
import json
import math
import os
import shutil
import socket
import sys
import time
from typing import Any, Dict, Iterator, List, Optional, Tuple

from absl import logging
import jax
import ml_collections

from mixer import checkpoints
from mixer import devices
from mixer import metrics


class WorkdirError(ValueError):
  """The workdir cannot be used: not writable, or it holds another run."""


# Config fields a resumed run may change: they do not change what the
# checkpointed state means (run length, cadences, data location, how the
# same computation is split). Any other difference between a workdir's run
# and the new config makes `train_and_evaluate` refuse the workdir.
RESUMABLE_FIELDS = (
    'num_train_steps', 'num_epochs', 'log_every_steps', 'eval_every_steps',
    'checkpoint_every_steps', 'keep_checkpoints', 'steps_per_dispatch',
    'grad_accum_steps', 'input_pipeline', 'data_dir', 'eval_split',
    'eval_batch_size', 'skip_nonfinite_steps', 'checkpoint_every_minutes',
    'minival_split', 'fewshot', 'skip_nonfinite_limit',
    'model.remat_activation',  # Memory/speed only: the same values.
)


def config_json(config) -> Dict[str, Any]:
  """The config as JSON, as `config.json` and the checkpoints hold it."""
  return json.loads(config.to_json_best_effort())


def check_config_values(config, prefix: str = '') -> None:
  """Raises one ValueError naming the first number that is NaN or infinite.

  No field of a run can use one (a NaN learning rate fails at step 1, and
  would make the identical command look like another run, NaN != NaN).
  """
  for key, value in config.items():
    name = f'{prefix}{key}'
    if hasattr(value, 'items'):
      check_config_values(value, name + '.')
      continue
    for v in value if isinstance(value, (list, tuple)) else (value,):
      if isinstance(v, float) and not math.isfinite(v):
        raise ValueError(f'config field {name} is {v}: it must be a finite '
                         'number')


def _flat(tree: Any, prefix: str = '') -> Dict[str, Any]:
  """{'model.hidden_dim': 32, ...} from a nested JSON config."""
  out = {}
  for key, value in tree.items():
    name = f'{prefix}{key}'
    if isinstance(value, dict) and value:
      out.update(_flat(value, name + '.'))
    else:
      out[name] = value
  return out


def config_differences(old: Dict[str, Any], new: Dict[str, Any]) -> List[str]:
  """'field (old -> new)' for every field that matters and differs.

  Both are JSON configs (`config.json`). Fields in `RESUMABLE_FIELDS` and
  fields present on one side only (added or removed by a code change) are
  not compared.
  """
  old, new = _flat(old), _flat(new)
  diffs = []
  for key in sorted(set(old) & set(new)):
    if key in RESUMABLE_FIELDS or key.split('.')[0] in RESUMABLE_FIELDS:
      continue
    if not _same(old[key], new[key]):
      diffs.append(f'{key} ({json.dumps(old[key])} -> {json.dumps(new[key])})')
  return diffs


def _same(a: Any, b: Any) -> bool:
  """JSON values equal as numbers and sequences (NaN equals NaN, 1 == 1.0,
  a tuple saved as a list equals the tuple)."""
  if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
    return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
  if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
    return True
  return a == b


def _previous_config(workdir: str) -> Tuple[Optional[Dict[str, Any]], str]:
  """(config, where it came from) of the run already in `workdir`, if any.

  The latest complete checkpoint's (what a resume would continue), else
  `config.json` (a run that stopped before its first checkpoint).
  """
  ckpt_dir = checkpoints.checkpoint_dir(workdir)
  for step in reversed(checkpoints.complete_steps(ckpt_dir)):
    path = os.path.join(ckpt_dir, str(step), 'meta', 'metadata')
    try:
      with open(path) as f:
        config = json.load(f).get('config')
      if isinstance(config, dict):
        return config, f'checkpoint step {step}'
    except (OSError, ValueError, AttributeError):
      continue
  path = os.path.join(workdir, 'config.json')
  if os.path.exists(path):
    try:
      with open(path) as f:
        return json.load(f), 'config.json'
    except (OSError, ValueError) as e:
      logging.warning('Ignoring unreadable %s: %s', path, e)
  return None, ''


# Where a fresh start moves what an earlier attempt without a checkpoint
# left (its metrics and TensorBoard events), never deleting it.
PREVIOUS_ATTEMPTS = 'previous_attempts'
# What `overwrite` deletes: everything a run writes into its workdir.
_RUN_OUTPUTS = (checkpoints.CHECKPOINT_SUBDIR, checkpoints.INCOMPLETE_SUBDIR,
                'metrics.jsonl', 'results.json', 'config.json',
                'events.out.tfevents.*', PREVIOUS_ATTEMPTS)
# What a run writes outside its checkpoints.
_ATTEMPT_OUTPUTS = ('metrics.jsonl', 'results.json', 'events.out.tfevents.*')


def _clear_run_outputs(workdir: str) -> None:
  removed = []
  for pattern in _RUN_OUTPUTS:
    for path in glob.glob(os.path.join(glob.escape(workdir), pattern)):
      if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
      else:
        os.remove(path)
      removed.append(os.path.basename(path))
  if removed:
    logging.warning('overwrite: deleted %s from %s', ', '.join(sorted(
        removed)), workdir)


def _os_text(e: OSError) -> str:
  return e.strerror or str(e) or type(e).__name__


def _kind(path: str) -> str:
  if os.path.isfile(path):
    return 'a file'
  if os.path.exists(path):
    return 'a device or special file'
  return 'missing'


def _create(workdir: str) -> None:
  """Creates `workdir`, saying what is wrong when it cannot be a folder."""
  if not workdir or not str(workdir).strip():
    raise WorkdirError('the workdir is empty (--workdir=""): give the folder '
                       "that will hold the run's checkpoints and metrics")
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise WorkdirError(f'cannot create workdir {workdir}: it is '
                       f'{_kind(workdir)}, not a folder; give a folder path')
  parent = os.path.dirname(os.path.abspath(workdir))
  while parent and not os.path.exists(parent):
    parent = os.path.dirname(parent)
  if parent and not os.path.isdir(parent):
    raise WorkdirError(f'cannot create workdir {workdir}: {parent} is '
                       f'{_kind(parent)}, not a folder')
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise WorkdirError(f'cannot create workdir {workdir}: {_os_text(e)}'
                       ) from e


LOCK_FILE = '.lock'


class RunLock:
  """An exclusive lock on a workdir for the whole run (`flock` on
  `<workdir>/.lock`).

  The kernel drops it when its process ends, however it ends (SIGKILL
  included), so a killed run never blocks its restart. The file holds the
  holder's pid, host, start time and command, for the refusal message; it
  stays in the workdir. Two runs in one process (a notebook re-running a
  cell while its training thread runs) conflict as well.
  """

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, LOCK_FILE)
    self._fd = None

  def acquire(self) -> 'RunLock':
    try:
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
      raise WorkdirError(f'workdir {os.path.dirname(self.path)} is not '
                         f'writable: {_os_text(e)}') from e
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = self._holder(fd)
      os.close(fd)
      raise WorkdirError(
          f'workdir {os.path.dirname(self.path)} is in use by another run '
          f'({holder}); wait for it to finish or stop it, or use another '
          'workdir') from None
    except OSError as e:  # A file system without flock (some NFS).
      logging.warning('Cannot lock %s (%s): a second run on this workdir '
                      'would not be detected', self.path, _os_text(e))
      os.close(fd)
      return self
    self._fd = fd
    info = {'pid': os.getpid(), 'host': socket.gethostname(),
            'started': time.time(), 'command': ' '.join(sys.argv)}
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps(info).encode())
    return self

  @staticmethod
  def _holder(fd: int) -> str:
    try:
      info = json.loads(os.pread(fd, 65536, 0).decode() or '{}')
      started = datetime.datetime.fromtimestamp(info['started']).strftime(
          '%Y-%m-%d %H:%M:%S')
      return (f'pid {info["pid"]} on host {info["host"]}, started {started}: '
              f'{info.get("command", "")}'.rstrip(': '))
    except (OSError, ValueError, KeyError, TypeError):
      return 'holder unknown'

  def release(self) -> None:
    if self._fd is not None:
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None


@contextlib.contextmanager
def open_workdir(config: ml_collections.ConfigDict, workdir: str, *,
                 overwrite: bool = False) -> Iterator[str]:
  """`prepare_workdir`, holding the workdir's `RunLock` (process 0) until
  the block ends."""
  _create(workdir)
  lock = RunLock(workdir) if jax.process_index() == 0 else None
  if lock is not None:
    lock.acquire()
  try:
    prepare_workdir(config, workdir, overwrite=overwrite)
    yield workdir
  finally:
    if lock is not None:
      lock.release()


def prepare_workdir(config: ml_collections.ConfigDict, workdir: str, *,
                    overwrite: bool = False) -> None:
  """Checks `workdir` before anything is written to it.

  Creates it, checks that it is writable, and refuses it when it holds a run
  whose config differs in a field that matters (see `RESUMABLE_FIELDS`);
  with `overwrite`, that run's outputs (checkpoints, metrics, results,
  config.json, TensorBoard events) are deleted instead. Call it through
  `open_workdir`, which also locks the workdir.

  Raises:
    WorkdirError: one line naming the workdir and what is wrong with it
      (not a folder, not writable, another run's config with every
      differing field).
  """
  _create(workdir)
  probe = os.path.join(workdir, f'.write-test-{jax.process_index()}-'
                       f'{os.getpid()}')
  try:
    with open(probe, 'w') as f:
      f.write('ok')
    os.remove(probe)
  except OSError as e:
    raise WorkdirError(f'workdir {workdir} is not writable: {_os_text(e)}'
                       ) from e
  if overwrite:
    if jax.process_index() == 0:
      _clear_run_outputs(workdir)
    devices.sync('mixer_overwrite')
    return
  previous, source = _previous_config(workdir)
  if previous is None:
    return
  diffs = config_differences(previous, config_json(config))
  if diffs:
    shown = '; '.join(diffs[:10]) + (
        f'; and {len(diffs) - 10} more' if len(diffs) > 10 else '')
    raise WorkdirError(
        f'workdir {workdir} holds a run with another config ({source}): '
        f'{shown}; use another workdir, or pass --overwrite (overwrite=True) '
        'to delete its checkpoints and metrics and start over')


def set_aside_previous_attempt(workdir: str) -> Optional[str]:
  """Moves what an attempt without a checkpoint left (metrics.jsonl,
  results.json, TensorBoard events) to `<workdir>/previous_attempts/<time>/`
  before a fresh start; returns that folder, or None if there was nothing.
  """
  found = [p for pattern in _ATTEMPT_OUTPUTS
           for p in glob.glob(os.path.join(glob.escape(workdir), pattern))]
  if not found:
    return None
  dest = os.path.join(workdir, PREVIOUS_ATTEMPTS,
                      time.strftime('%Y%m%d-%H%M%S'))
  if os.path.exists(dest):
    dest += f'-{time.time_ns()}'
  os.makedirs(dest)
  for path in found:
    os.replace(path, os.path.join(dest, os.path.basename(path)))
  return dest


def write_json_atomic(path: str, obj: Any) -> None:
  """Writes `obj` as strict JSON (`metrics.dumps`: NaN/Inf become null and
  are listed under `nonfinite`), replacing `path` atomically."""
  tmp = f'{path}.tmp-{os.getpid()}'
  with open(tmp, 'w') as f:
    f.write(metrics.dumps(obj, indent=2))
  os.replace(tmp, path)


def run_config(checkpoint: str) -> Optional[ml_collections.ConfigDict]:
  """The run config saved beside an orbax checkpoint: `config.json` in the
  checkpoint folder or up to two folders above it (a workdir, its
  `checkpoints/`, or one step folder); None when there is none."""
  path = os.path.abspath(checkpoint)
  if not os.path.isdir(path):
    return None
  for folder in (path, os.path.dirname(path),
                 os.path.dirname(os.path.dirname(path))):
    file = os.path.join(folder, 'config.json')
    if os.path.isfile(file):
      try:
        with open(file) as f:
          return ml_collections.ConfigDict(json.load(f))
      except (OSError, ValueError) as e:
        raise ValueError(f'cannot read {file}: {e}; pass --config='
                         'configs/<name>.py instead') from e
  return None
