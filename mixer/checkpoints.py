"""Checkpoints: this project's training state (orbax) and official `.npz` files.

Training state lives in `workdir/checkpoints/<step>/` written by an orbax
`CheckpointManager`: asynchronous, atomic (a step folder only appears once
fully written; unfinished temporary folders are cleaned up on start) and
keeping the newest `config.keep_checkpoints`. Each step holds two items:
`state` (a pytree: step, params, opt_state, rng) and `meta` (JSON: the config
and the data position), so a run resumes where it stopped, RNG and data order
included.
"""

import os
from typing import Any, Optional, Tuple

from absl import logging
import jax
import orbax.checkpoint as ocp

CHECKPOINT_SUBDIR = 'checkpoints'


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), CHECKPOINT_SUBDIR)


def manager(workdir: str, *, keep: int = 3, async_save: bool = True,
            read_only: bool = False) -> ocp.CheckpointManager:
  """The orbax manager for `workdir/checkpoints` (created if needed)."""
  options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, create=not read_only, read_only=read_only,
      enable_async_checkpointing=async_save, cleanup_tmp_directories=True)
  return ocp.CheckpointManager(
      checkpoint_dir(workdir), item_names=('state', 'meta'), options=options)


def save(mgr: ocp.CheckpointManager, step: int, state: Any,
         meta: dict) -> bool:
  """Starts saving `state` (host or device arrays) at `step`; async."""
  return mgr.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))


def restore(mgr: ocp.CheckpointManager, target: Any,
            step: Optional[int] = None) -> Optional[Tuple[int, Any, dict]]:
  """(step, state, meta) of `step` (default: latest), or None if none exists.

  `target` is a pytree of the expected structure (e.g. the freshly
  initialised state); arrays come back with its shapes and dtypes.
  """
  step = mgr.latest_step() if step is None else step
  if step is None:
    return None
  abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)
  restored = mgr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
  logging.info('Restored checkpoint step %d from %s', step, mgr.directory)
  return step, restored['state'], restored['meta']


def restore_params(path: str) -> Any:
  """Params from one of this project's checkpoints, without a target tree.

  `path` may be a workdir, its `checkpoints/` folder, or one step folder.
  """
  path = os.path.abspath(path)
  if os.path.isdir(os.path.join(path, CHECKPOINT_SUBDIR)):
    path = os.path.join(path, CHECKPOINT_SUBDIR)
  if os.path.isdir(os.path.join(path, 'state')):
    step_dir = path
  else:
    steps = sorted((int(d) for d in os.listdir(path) if d.isdigit()))
    if not steps:
      raise ValueError(f'no checkpoint found in {path}')
    step_dir = os.path.join(path, str(steps[-1]))
  state = ocp.StandardCheckpointer().restore(os.path.join(step_dir, 'state'))
  return state['params']
