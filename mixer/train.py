"""The training loop: `train_and_evaluate(config, workdir)`.

Data-parallel with `jax.pmap` over all local devices (gradients `pmean`'d over
the 'batch' axis; several processes each feed their own slice of the global
batch). What one step computes is `mixer.step`; around it: building
everything a run needs from the config (`Trainer`, in mixer/trainer.py),
feeding the steps (`steps_per_dispatch` > 1 fuses several into one dispatch;
with `input_pipeline='device'` the uint8 dataset lives on device and each
dispatch only receives the example indices, the same permutation the host
path uses, so both see identical data), and deciding when to log, evaluate
(`mixer.evaluators`) and checkpoint (`mixer.checkpoints`): that part is
`mixer.loop.Loop`; this module owns the run around it (the locked workdir,
the initial or restored state, results.json).

The run is resumable: the RNG for step s is `fold_in(seed key, s)` and the
data for step s is a function of (seed, s), so restoring the state of step s
from `workdir/checkpoints` continues exactly where the run stopped (on CPU
bit for bit, metrics.jsonl included except wall-clock fields; see
docs/guarantees.md).

Hardening: every step reports whether its loss, gradients and new
parameters are finite; the flags are checked on the host before every log,
eval and checkpoint, so a non-finite state is never saved (`NonFiniteError`
names the step), or with `config.skip_nonfinite_steps` such updates are
dropped and counted. A workdir that holds a run with another config is
refused (`mixer.workdir.WorkdirError`) unless `overwrite=True`. Ctrl-C (or
`stop`) saves the last finished step and raises
`mixer.stopping.Interrupted`.
"""

import os
import threading
import time
from typing import Any, Dict, Optional

from absl import logging
import jax
import ml_collections
import numpy as np

from mixer import checkpoints
from mixer import input_permutation
from mixer import loop as loop_lib
from mixer import metrics as metrics_lib
from mixer import step as step_lib
from mixer import stopping
from mixer.loop import NonFiniteError
from mixer.trainer import Trainer
from mixer import workdir as workdir_lib

__all__ = ['NonFiniteError', 'Trainer', 'train_and_evaluate']


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       overwrite: bool = False,
                       stop: Optional[threading.Event] = None
                       ) -> Dict[str, Any]:
  """Trains `config` in `workdir` (resuming if it holds a checkpoint).

  Writes `workdir/checkpoints/`, `metrics.jsonl`, TensorBoard events (when
  TensorFlow is installed), `config.json` and, at the end, `results.json`,
  whose content is also returned. Only process 0 writes files other than
  checkpoints (which every process takes part in). The workdir is locked
  for the whole run: a second run on it is refused.

  Args:
    config: the experiment config (see configs/common.py).
    workdir: where the run lives. A workdir holding a run with another
      config (fields outside `RESUMABLE_FIELDS`) is refused.
    overwrite: delete that run's outputs and start over instead.
    stop: set it (from another thread) to stop the run at the next step
      boundary, as Ctrl-C does: the current step is saved and `Interrupted`
      raised.

  Raises:
    ValueError (DataError, WorkdirError, ...): a bad config, data or
      workdir; one line, raised before anything is written.
    NonFiniteError: a step produced NaN/Inf (without
      `config.skip_nonfinite_steps`, or beyond its limit); nothing of it was
      logged or saved.
    checkpoints.CheckpointWriteError: a checkpoint could not be written; the
      previous one stays restorable.
    Interrupted: Ctrl-C or `stop`; the message names the checkpoint to
      resume from.
  """
  t_start = time.time()
  trainer = Trainer(config)
  with workdir_lib.open_workdir(config, workdir, overwrite=overwrite), \
      stopping.StopRequest(stop) as stop_request:
    return _run(trainer, config, workdir, stop_request, t_start)


def _run(trainer: Trainer, config, workdir: str, stop: stopping.StopRequest,
         t_start: float) -> Dict[str, Any]:
  """The run inside its locked workdir."""
  is_chief = trainer.process_index == 0
  if is_chief and metrics_lib.tensorboard_enabled():
    metrics_lib.preload_writers()
  for line in trainer.describe():
    logging.info('%s', line)
  resuming = bool(checkpoints.complete_steps(
      checkpoints.checkpoint_dir(workdir)))
  rng = jax.random.PRNGKey(config.seed)
  state = step_lib.create_train_state(config, trainer.model, trainer.tx, rng,
                                      load_init_checkpoint=not resuming)
  state = input_permutation.align_initial_state(config, state, trainer.tx)
  num_params = sum(int(np.prod(p.shape))
                   for p in jax.tree_util.tree_leaves(state.params))

  mgr = checkpoints.manager(workdir, keep=config.keep_checkpoints)
  try:
    restored = checkpoints.restore(mgr, step_lib.state_dict(state))
  except BaseException:
    mgr.close()
    raise
  meta = {}
  if restored is not None:
    _, saved, meta = restored
    state = step_lib.TrainState(**saved)
  start_step = int(state.step)
  if start_step:
    logging.info('Resuming from step %d of %d (checkpoint in %s)', start_step,
                 trainer.total_steps, checkpoints.checkpoint_dir(workdir))
  else:
    moved = (workdir_lib.set_aside_previous_attempt(workdir) if is_chief
             else None)
    logging.info('Starting fresh in %s: it holds no checkpoint%s', workdir,
                 f'; what an earlier attempt left (metrics, TensorBoard '
                 f'events) was moved to {moved}' if moved else '')
  config_json = workdir_lib.config_json(config)
  if is_chief:
    workdir_lib.write_json_atomic(os.path.join(workdir, 'config.json'),
                                  config_json)

  # A step saved before its evaluation finished writes its record again
  # when resumed (mixer.loop): drop the one a stopped run may have written.
  kept_step = start_step - 1 if meta.get('pending') else start_step
  writer = metrics_lib.MetricsWriter(workdir, is_chief=is_chief,
                                     resume_step=max(kept_step, 0))
  progress = metrics_lib.Progress(
      total_steps=trainer.total_steps, start_step=start_step,
      batch_size=trainer.batch_size, steps_per_epoch=trainer.steps_per_epoch,
      eval_every=trainer.eval_every,
      every_secs=loop_lib.PROGRESS_EVERY_SECONDS, writer=writer)
  logging.info('%s: %s params, %d devices x %d processes (%s)',
               config.model.model_name, f'{num_params:,}',
               trainer.num_devices, trainer.process_count,
               jax.devices()[0].device_kind)
  if trainer.process_count > 1:
    b_local = trainer.batch_size // trainer.process_count
    logging.info('Process %d of %d feeds examples [%d, %d) of every global '
                 'batch', trainer.process_index, trainer.process_count,
                 trainer.process_index * b_local,
                 (trainer.process_index + 1) * b_local)
  loop = loop_lib.Loop(trainer, config, workdir, mgr, writer, progress, stop,
                       meta, config_json, start_step)
  try:
    loop.run(state)
  except BaseException:
    # Let a checkpoint already on its way finish (it holds a good state), but
    # never hide the original error behind a second one.
    try:
      mgr.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      logging.warning('while stopping: a pending checkpoint failed: %s', e)
    writer.close()
    try:
      mgr.close()
    except Exception:  # pylint: disable=broad-except
      pass
    raise
  writer.flush()

  skip_nonfinite = bool(config.get('skip_nonfinite_steps', False))
  # The whole log, steps before a resume included.
  logged = (metrics_lib.read_records(workdir) if os.path.exists(
      os.path.join(workdir, 'metrics.jsonl')) else [])
  evals = loop.evals
  last_eval = evals.last_eval
  train_seconds, timed_steps = progress.timed(loop.step)
  accuracies = [evals.best_acc] + [r['eval_accuracy'] for r in logged
                                  if r.get('eval_accuracy') is not None]
  results = {
      'status': 'done',
      'usable': bool(np.isfinite(last_eval['eval_loss'])),
      'final_eval_accuracy': last_eval['eval_accuracy'],
      'final_eval_loss': last_eval['eval_loss'],
      'best_eval_accuracy': max(accuracies),
      'eval_examples': last_eval['eval_examples'],
      'steps': loop.step,
      'epochs': loop.step / trainer.steps_per_epoch,
      'resumed_from_step': start_step,
      'wall_seconds': time.time() - t_start,
      # Training steps only: compilation, evaluation and checkpoint writes
      # are not in these two.
      'train_seconds': train_seconds,
      'images_per_second': (timed_steps * trainer.batch_size / train_seconds
                            if train_seconds > 0 and timed_steps else None),
      'eval_seconds': evals.seconds,
      'num_params': num_params,
      'num_devices': trainer.num_devices * trainer.process_count,
      'device_kind': jax.devices()[0].device_kind,
      'config': config_json,
  }
  if evals.last_minival is not None:
    results['final_minival_accuracy'] = evals.last_minival['minival_accuracy']
    results['final_minival_loss'] = evals.last_minival['minival_loss']
  if evals.last_fewshot is not None:
    results['fewshot'] = evals.last_fewshot
  if skip_nonfinite:
    results['skipped_steps'] = int(
        sum(r.get('skipped_steps', 0) for r in logged))
  if is_chief:
    workdir_lib.write_json_atomic(os.path.join(workdir, 'results.json'),
                                  results)
  writer.close()
  mgr.close()
  logging.info(
      'Done: test accuracy %s (best %s, %s examples) after %s (%s) in %s%s; '
      'results in %s', loop_lib.pct(last_eval['eval_accuracy']),
      loop_lib.pct(results['best_eval_accuracy']),
      f'{last_eval["eval_examples"]:,}', metrics_lib.amount(loop.step, 'step'),
      metrics_lib.amount(results['epochs'], 'epoch', '.3g'),
      metrics_lib.format_duration(results['wall_seconds']),
      '' if results['usable'] else ' (NOT USABLE: the final eval loss is '
      'not finite)', os.path.join(workdir, 'results.json'))
  return results
