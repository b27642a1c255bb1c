"""A run's folder: creating it, checking it holds this run, and clearing it.

`prepare_workdir` runs before anything is written: it creates the workdir,
checks that it is writable, and refuses it when it holds a run whose config
differs in a field that matters (`RESUMABLE_FIELDS` lists those that may
change between a run and its resumption); with `overwrite`, that run's
outputs are deleted instead. Configs are compared as the JSON a run writes
(`config_json`, saved as `config.json` and in every checkpoint).

Owns the workdir's layout outside the checkpoints (`config.json`,
`metrics.jsonl`, `results.json`, TensorBoard events); never trains or
evaluates.
"""

import glob
import json
import os
import shutil
from typing import Any, Dict, List, Optional, Tuple

from absl import logging
import jax
import ml_collections

from mixer import checkpoints
from mixer import devices


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
    'eval_batch_size', 'skip_nonfinite_steps',
)



def config_json(config) -> Dict[str, Any]:
  """The config as JSON, as `config.json` and the checkpoints hold it."""
  return json.loads(config.to_json_best_effort())



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
    if old[key] != new[key]:
      diffs.append(f'{key} ({json.dumps(old[key])} -> {json.dumps(new[key])})')
  return diffs


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


# What `overwrite` deletes: everything a run writes into its workdir.
_RUN_OUTPUTS = (checkpoints.CHECKPOINT_SUBDIR, checkpoints.INCOMPLETE_SUBDIR,
                'metrics.jsonl', 'results.json', 'config.json',
                'events.out.tfevents.*')


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


def prepare_workdir(config: ml_collections.ConfigDict, workdir: str, *,
                    overwrite: bool = False) -> None:
  """Checks `workdir` before anything is written to it.

  Creates it, checks that it is writable, and refuses it when it holds a run
  whose config differs in a field that matters (see `RESUMABLE_FIELDS`);
  with `overwrite`, that run's outputs (checkpoints, metrics, results,
  config.json, TensorBoard events) are deleted instead.

  Raises:
    WorkdirError: one line naming the workdir and, for another run, every
      differing field.
  """
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise WorkdirError(f'cannot create workdir {workdir}: {_os_text(e)}'
                       ) from e
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


def write_json_atomic(path: str, obj: Any) -> None:
  tmp = f'{path}.tmp-{os.getpid()}'
  with open(tmp, 'w') as f:
    json.dump(obj, f, indent=2)
  os.replace(tmp, path)

