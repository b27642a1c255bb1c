"""The run's checkpoints: `workdir/checkpoints/<step>/`, written by orbax.

Training state lives in `workdir/checkpoints/<step>/` written by an orbax
`CheckpointManager`: asynchronous, atomic (a step folder only appears once
fully written; unfinished temporary folders are cleaned up on start, and a
step folder without its commit metadata is moved to
`workdir/checkpoints_incomplete/` with a warning) and keeping the newest
`config.keep_checkpoints`. Each step holds two items: `state` (a pytree:
step, params, opt_state, rng) and `meta` (JSON: the config and the data
position), so a run resumes where it stopped, RNG and data order included.
A failed write (e.g. disk full) raises `CheckpointWriteError`, one line that
names the newest complete checkpoint, which stays restorable.

Integrity: `save` records a SHA-256 digest of every saved array (its dtype,
shape and bytes) in the step's `meta`; `restore` recomputes them and a step
whose arrays differ from their digests, or that cannot be read at all
(truncated or zeroed files), is set aside like an incomplete step, with one
warning line, and the newest step that verifies is restored instead.

Owns only the run's own checkpoints; official `.npz` weights and fine-tuning
initialisation are `mixer.pretrained`.
"""

import errno
import hashlib
import json
import os
import shutil
import time
import weakref
from typing import Any, Dict, List, Optional, Tuple

from absl import logging
from etils import epath
from flax import traverse_util
import jax
import numpy as np
import orbax.checkpoint as ocp

from mixer import abandoned_reads
from mixer import devices
from mixer.params import flatten_params_shapes
from mixer.params import shape_problems
from mixer.params import unfreeze

CHECKPOINT_SUBDIR = 'checkpoints'
# Incomplete step folders are moved here (never deleted).
INCOMPLETE_SUBDIR = 'checkpoints_incomplete'


class CheckpointWriteError(OSError):
  """A checkpoint could not be written (disk full, permissions, ...).

  The message is one user-facing line naming the step, the cause and the
  newest complete checkpoint, which stays restorable; `errno` is the cause's
  (ENOSPC for a full disk).
  """

  def __str__(self) -> str:  # Without OSError's '[Errno N] ' prefix.
    return self.strerror or super().__str__()


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), CHECKPOINT_SUBDIR)


def is_complete(step_dir: str) -> bool:
  """Whether an orbax step folder was fully written (committed).

  Orbax writes `<step>.orbax-checkpoint-tmp-*` and renames it when done, so on
  a local disk a `<step>/` folder is complete; a copy interrupted halfway, a
  file system without atomic renames or a hand-edited folder can still leave
  one without its commit metadata or an item: such folders are not used.
  """
  try:
    with open(os.path.join(step_dir, '_CHECKPOINT_METADATA')) as f:
      meta = json.load(f)
  except (OSError, ValueError):
    return False
  if not isinstance(meta, dict) or not meta.get('commit_timestamp_nsecs'):
    return False
  return (os.path.isfile(os.path.join(step_dir, 'state', '_METADATA')) and
          os.path.isfile(os.path.join(step_dir, 'meta', 'metadata')))


def complete_steps(directory: str) -> List[int]:
  """Sorted steps of the complete step folders in a `checkpoints/` folder."""
  try:
    names = os.listdir(directory)
  except FileNotFoundError:
    return []
  return sorted(int(n) for n in names
                if n.isdigit() and is_complete(os.path.join(directory, n)))


def _set_aside(step_dir: str, reason: str) -> str:
  """Moves an unusable step folder to `<workdir>/checkpoints_incomplete/`."""
  workdir = os.path.dirname(os.path.dirname(os.path.abspath(step_dir)))
  dest_dir = os.path.join(workdir, INCOMPLETE_SUBDIR)
  os.makedirs(dest_dir, exist_ok=True)
  dest = os.path.join(dest_dir, os.path.basename(step_dir))
  if os.path.exists(dest):
    dest += f'-{time.time_ns()}'
  os.replace(step_dir, dest)
  logging.warning('Ignoring checkpoint %s (%s); moved it to %s', step_dir,
                  reason, dest)
  return dest


def set_aside_incomplete(directory: str) -> List[str]:
  """Clears incomplete `<step>/` folders out of the way of a resume.

  Orbax itself removes unfinished `*.orbax-checkpoint-tmp-*` folders
  (`cleanup_tmp_directories`). This handles step folders that look final
  but lack their commit metadata or an item:

  * older than the newest complete step: what remains of an old checkpoint
    whose deletion (orbax deletes beyond `max_to_keep` with a plain rmtree
    once a newer step is committed) was interrupted; removed.
  * newer: a copy or a write on a file system without atomic renames that
    did not finish; moved to `<workdir>/checkpoints_incomplete/` with a
    warning, never deleted.

  Returns the new locations of the folders moved.
  """
  moved = []
  try:
    names = sorted(os.listdir(directory))
  except FileNotFoundError:
    return moved
  done = complete_steps(directory)
  for name in names:
    path = os.path.join(directory, name)
    if not (name.isdigit() and os.path.isdir(path)) or is_complete(path):
      continue
    if done and int(name) < done[-1]:
      logging.info('Removing %s: an old checkpoint whose deletion was '
                   'interrupted', path)
      shutil.rmtree(path, ignore_errors=True)
    else:
      moved.append(_set_aside(path, 'incomplete: no commit metadata or a '
                                    'missing item'))
  return moved


def manager(workdir: str, *, keep: int = 3, async_save: bool = True,
            read_only: bool = False) -> ocp.CheckpointManager:
  """The orbax manager for `workdir/checkpoints` (created if needed).

  Unless `read_only`, incomplete step folders are first moved to
  `workdir/checkpoints_incomplete/` (by process 0) and unfinished temporary
  folders are deleted (by orbax), so the latest step is a complete one.
  """
  directory = checkpoint_dir(workdir)
  if not read_only:
    if jax.process_index() == 0:
      set_aside_incomplete(directory)
    devices.sync('mixer_checkpoints_set_aside')
  options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, create=not read_only, read_only=read_only,
      enable_async_checkpointing=async_save, cleanup_tmp_directories=True)
  return ocp.CheckpointManager(
      directory, item_names=('state', 'meta'), options=options)


def _root_cause(e: BaseException) -> BaseException:
  """The first OSError in `e`'s cause chain, else `e` itself."""
  seen, cur = set(), e
  while cur is not None and id(cur) not in seen:
    if isinstance(cur, OSError):
      return cur
    seen.add(id(cur))
    cur = cur.__cause__ or cur.__context__
  return e


# How TensorStore (orbax's array writer) reports a full disk: a
# RESOURCE_EXHAUSTED status whose text carries the OS error, not an OSError.
_DISK_FULL_TEXTS = ('no space left on device', 'enospc', 'disk quota exceeded')


def _is_disk_full(e: BaseException) -> bool:
  seen, cur = set(), e
  while cur is not None and id(cur) not in seen:
    seen.add(id(cur))
    if getattr(cur, 'errno', None) in (errno.ENOSPC, errno.EDQUOT):
      return True
    text = str(cur).lower()
    if any(t in text for t in _DISK_FULL_TEXTS):
      return True
    cur = cur.__cause__ or cur.__context__
  return False


def _write_error(mgr: ocp.CheckpointManager, step: Optional[int],
                 e: BaseException) -> CheckpointWriteError:
  """One line: which step failed, why, and which checkpoint is intact."""
  cause = _root_cause(e)
  directory = str(mgr.directory)
  done = complete_steps(directory)
  what = f'checkpoint step {step}' if step is not None else 'a checkpoint'
  intact = (f'the latest complete checkpoint, step {done[-1]}, is intact'
            if done else 'no complete checkpoint exists yet')
  if _is_disk_full(e):
    return CheckpointWriteError(
        errno.ENOSPC, f'cannot write {what} to {directory}: the disk is full '
        f'(No space left on device); {intact}; free some disk space and run '
        'the same command again to resume')
  text = ' '.join(str(cause).split()) or type(cause).__name__
  if len(text) > 300:
    text = text[:297] + '...'
  code = getattr(cause, 'errno', None)
  return CheckpointWriteError(
      code or errno.EIO, f'cannot write {what} to {directory}: '
      f'{type(cause).__name__}: {text}; {intact}')


# The step of each manager's last save, to name it if its (asynchronous)
# write fails later.
_LAST_SAVE = weakref.WeakKeyDictionary()


DIGEST = 'sha256'  # Of each array's dtype, shape and C-order bytes.


def digests(tree: Any) -> Dict[str, str]:
  """{'params/stem/kernel': hex digest, ...} of every array in `tree`."""
  out = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    x = np.ascontiguousarray(np.asarray(leaf))
    h = hashlib.sha256(f'{x.dtype.str}{x.shape}'.encode())
    h.update(memoryview(x.reshape(-1)).cast('B'))
    out[jax.tree_util.keystr(path)] = h.hexdigest()
  return out


def save(mgr: ocp.CheckpointManager, step: int, state: Any,
         meta: dict) -> bool:
  """Starts saving `state` (host arrays) at `step`; async.

  First waits for the previous save (orbax does too), so that its failure
  is reported with its step. The digests of `state`'s arrays go into `meta`
  (`digests`), so `restore` can tell a damaged step from a good one.

  Raises:
    CheckpointWriteError: this save or the previous one failed (disk full,
      permissions, ...); one line naming the step and the cause.
  """
  wait_until_finished(mgr)
  meta = dict(meta, digests=digests(state), digest=DIGEST)
  try:
    saved = mgr.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))
  except Exception as e:  # pylint: disable=broad-except
    raise _write_error(mgr, step, e) from e
  _LAST_SAVE[mgr] = step
  return saved


def wait_until_finished(mgr: ocp.CheckpointManager) -> None:
  """Blocks until pending saves are committed; errors as in `save`."""
  step = _LAST_SAVE.pop(mgr, None)
  try:
    mgr.wait_until_finished()
  except Exception as e:  # pylint: disable=broad-except
    raise _write_error(mgr, step, e) from e


def _saved_params_metadata(step_dir: str) -> Dict[str, Any]:
  """{'a/kernel': metadata with .shape} of a step's saved params."""
  meta = ocp.StandardCheckpointHandler().metadata(
      epath.Path(os.path.join(step_dir, 'state')))
  tree = getattr(meta, 'tree', meta)
  return traverse_util.flatten_dict(unfreeze(tree['params']), sep='/')


def _check_params_fit(step_dir: str, target: Any) -> None:
  """One ValueError if the saved params do not fit `target['params']`."""
  try:
    saved = _saved_params_metadata(step_dir)
  except Exception:  # pylint: disable=broad-except
    return  # Unreadable metadata: let the restore itself report it.
  problems = shape_problems(saved, flatten_params_shapes(target['params']),
                             source='the checkpoint')
  if problems:
    more = f' (and {len(problems) - 1} more)' if len(problems) > 1 else ''
    raise ValueError(
        f'checkpoint {step_dir} does not fit the model: {problems[0]}{more}; '
        'it was written by a run with another model config (use another '
        'workdir, or train.py --overwrite to start over)')


class CheckpointDamaged(ValueError):
  """A step folder cannot be read, or its arrays differ from their digests."""

  def __init__(self, step_dir: str, reason: str):
    super().__init__(f'checkpoint {step_dir} {reason}')
    self.reason = reason


def _restore_step(mgr: ocp.CheckpointManager, step: int, abstract: Any
                  ) -> Tuple[Any, dict]:
  step_dir = os.path.join(str(mgr.directory), str(step))
  try:
    restored = mgr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
  except Exception as e:  # pylint: disable=broad-except
    abandoned_reads.quiet()  # The other reads orbax gave up on.
    text = ' '.join(str(e).split())
    raise CheckpointDamaged(
        step_dir, f'cannot be read ({type(e).__name__}: {text[:200]})') from e
  meta = restored['meta']
  saved = meta.get('digests') if isinstance(meta, dict) else None
  if saved is not None:  # Checkpoints written before digests: not checked.
    actual = digests(restored['state'])
    bad = sorted(k for k in set(saved) | set(actual)
                 if saved.get(k) != actual.get(k))
    if bad:
      raise CheckpointDamaged(
          step_dir, f'is damaged: {len(bad)} of {len(saved)} arrays differ '
          f'from the digests recorded when it was saved (first: {bad[0]})')
  if isinstance(meta, dict):  # The digests are this module's business.
    meta = {k: v for k, v in meta.items() if k not in ('digests', 'digest')}
  return restored['state'], meta


def restore(mgr: ocp.CheckpointManager, target: Any,
            step: Optional[int] = None) -> Optional[Tuple[int, Any, dict]]:
  """(step, state, meta) of `step` (default: the newest that verifies), or
  None if there is none.

  `target` is a pytree of the expected structure (e.g. the freshly
  initialised state, a dict with 'params'); arrays come back with its shapes
  and dtypes, and are checked against the digests `save` recorded. Without
  `step`, a step that cannot be read or does not match its digests is moved
  to `<workdir>/checkpoints_incomplete/` with one warning, and the next
  older one is tried.

  Raises:
    ValueError: one line, when the saved params' paths or shapes differ from
      `target`'s (a run with another model config).
    CheckpointDamaged: `step` was given and is damaged.
    ValueError: every step was damaged (all of them are then set aside).
  """
  abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)
  steps = [step] if step is not None else sorted(mgr.all_steps(),
                                                 reverse=True)
  damaged = []
  for s in steps:
    step_dir = os.path.join(str(mgr.directory), str(s))
    if isinstance(target, dict) and 'params' in target:
      _check_params_fit(step_dir, target)
    t0 = time.time()
    try:
      state, meta = _restore_step(mgr, s, abstract)
    except CheckpointDamaged as e:
      if step is not None:
        raise
      if jax.process_index() == 0:
        _set_aside(step_dir, e.reason)
      devices.sync('mixer_checkpoints_set_aside_damaged')
      damaged.append(f'step {s}')
      mgr.reload()
      continue
    logging.info('Restored checkpoint step %d from %s (read and verified in '
                 '%.1f s)', s, mgr.directory, time.time() - t0)
    return s, state, meta
  if damaged:
    raise ValueError(
        f'no checkpoint in {mgr.directory} could be restored: '
        f'{", ".join(damaged)} failed verification and were moved to '
        f'{INCOMPLETE_SUBDIR}/; run the same command again to start from '
        'scratch, or put back a good copy')
  return None


def restore_params(path: str) -> Any:
  """Params from one of this project's checkpoints, without a target tree.

  `path` may be a workdir, its `checkpoints/` folder, or one step folder
  (a folder of steps gives its latest complete one).
  """
  path = os.path.abspath(path)
  if os.path.isdir(os.path.join(path, CHECKPOINT_SUBDIR)):
    path = os.path.join(path, CHECKPOINT_SUBDIR)
  if os.path.isdir(os.path.join(path, 'state')):
    step_dir = path
  else:
    steps = complete_steps(path)
    if not steps:
      raise ValueError(f'no checkpoint found in {path}')
    step_dir = os.path.join(path, str(steps[-1]))
  state = ocp.StandardCheckpointer().restore(os.path.join(step_dir, 'state'))
  return state['params']
