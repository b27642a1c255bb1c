"""The steps of a run and what happens between them.

`Loop` dispatches the train steps (fused `steps_per_dispatch` at a time, from
host batches or indices into a device-resident dataset) and, at the right
steps, fetches their metrics (stopping at the first non-finite step, or
skipping it within `config.skip_nonfinite_limit`), logs progress and
metrics, evaluates, checkpoints (every `checkpoint_every_steps` and every
`checkpoint_every_minutes`, the first time-based one after
FIRST_CHECKPOINT_SECONDS of training) and serves a stop request (Ctrl-C) by
saving the last finished step. A step that is also evaluated is saved
before its evaluation when a save is due (always at the end) or a stop
interrupts the evaluation; the checkpoint's meta then carries the step's
`pending` record and the evaluations still owed, which a resumed run does
first. The run around it -- the workdir, restoring, results.json -- is
`mixer.train`.
"""

import collections
import time
from typing import Any, Dict, Iterator, Optional, Tuple

from absl import logging
import jax
import numpy as np

from mixer import checkpoints
from mixer import data
from mixer import devices
from mixer import metrics as metrics_lib
from mixer import step as step_lib
from mixer import stopping
from mixer.evaluators import EvaluationStopped
from mixer.loop_evals import Evaluations
from mixer.loop_evals import pct  # pylint: disable=unused-import (public)
from mixer.trainer import Trainer


class NonFiniteError(FloatingPointError):
  """The loss, gradients or parameters became NaN/Inf at some step.

  Raised before anything of that step (or later) is logged or saved: the
  last checkpoint stays the last good state.
  """


# Dispatches queued on the device beyond the one running: enough to keep an
# accelerator busy, few enough that a stop request is served promptly. When
# a step takes longer than SLOW_STEP_SECONDS (a CPU), or before one step
# was timed, nothing is queued: the host's work between steps is negligible
# then, and Ctrl-C waits for one step at most.
MAX_IN_FLIGHT = 2
SLOW_STEP_SECONDS = 0.5
# The first time-based checkpoint of a session comes after this much time
# (from the end of the first, compiling, dispatch), or after
# checkpoint_every_minutes if shorter; later ones every
# checkpoint_every_minutes. A slow run (a CPU) then has a resume point
# within a minute or two of starting.
FIRST_CHECKPOINT_SECONDS = 60.0
# A stop during an evaluation whose batches were not timed yet (the first,
# compiling, batch) waits this long for it at most.
UNTIMED_EVAL_BATCH_SECONDS = 60.0
# A progress line at least this often (seconds), besides every
# `log_every_steps`.
PROGRESS_EVERY_SECONDS = 30.0
# With skip_nonfinite_steps, the window of recent steps whose skipped share
# is checked against config.skip_nonfinite_limit.
SKIP_WINDOW = 100


def _agree(flag: bool) -> bool:
  """Process 0's `flag` on every process (a no-op with one process), so
  decisions taken from a clock are the same everywhere."""
  if jax.process_count() == 1:
    return flag
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return bool(multihost_utils.broadcast_one_to_all(np.int32(flag)))


class Loop:
  """The steps from `start_step` to the end, and what happens between them:
  progress lines, metrics, evaluations, checkpoints, stop requests."""

  def __init__(self, trainer: Trainer, config, workdir: str, mgr, writer,
               progress: metrics_lib.Progress, stop: stopping.StopRequest,
               meta: Dict[str, Any], config_json: Dict[str, Any],
               start_step: int):
    self.trainer, self.config, self.workdir = trainer, config, workdir
    self.mgr, self.writer, self.progress, self.stop = (mgr, writer, progress,
                                                       stop)
    self.config_json = config_json
    self.start_step = self.step = start_step
    self.done_step = start_step  # The last step known to have finished.
    self.dispatching = 0  # Steps of the dispatch call in progress.
    # What the loop waits on: 'compiling' (the first dispatch), 'training'
    # or 'evaluating'; what a stop request says while it waits.
    self.phase = 'compiling'
    self.first_dispatch_seconds = None
    self.ckpt_dir = checkpoints.checkpoint_dir(workdir)
    self.last_saved = start_step if start_step else None
    self.last_saved_time = time.time()
    self.saved_this_session = False
    # The restored step's record and evaluations a stop interrupted.
    self.resume_pending = meta.get('pending')
    self.skip_nonfinite = bool(config.get('skip_nonfinite_steps', False))
    self.skip_limit = float(config.get('skip_nonfinite_limit', 0.5))
    self.recent_finite = collections.deque(maxlen=SKIP_WINDOW)
    self.unlogged = metrics_lib.UnloggedSteps(meta.get('unlogged'))
    self.pending = []  # (first step, per-dispatch device metrics) to fetch.
    self.in_flight = collections.deque()
    self.evals = Evaluations(trainer, progress)
    self.last_log = None  # (timed seconds, step) at the last log record.
    self.projected = False
    self.first_dispatch_step = None  # Its own line says it is done.
    minutes = float(config.get('checkpoint_every_minutes', 0) or 0)
    self.save_every_seconds = minutes * 60 if minutes > 0 else None
    stop.fallback = self._fallback_message
    stop.waiting = self._waiting

  # -- the loop --------------------------------------------------------------

  def run(self, state: step_lib.TrainState) -> None:
    trainer, config = self.trainer, self.config
    if config.input_pipeline == 'device':
      images, labels = data.load_split(config, config.train_split)
      resident = (devices.replicate(images),
                  devices.replicate(labels.astype(np.int32)))
      chunks = trainer.index_chunks(self.step)
      run = lambda st, xs: trainer.p_train_indexed(st, *xs, *resident)
    elif config.input_pipeline == 'host':
      chunks = _prefetch(trainer.host_chunks(self.step), size=2)
      run = lambda st, xs: trainer.p_train(st, *xs)
    else:
      raise ValueError("input_pipeline must be 'host' or 'device', got "
                       f'{config.input_pipeline!r}')
    self.pstate = devices.replicate(state)
    del state
    if self.resume_pending is not None:
      self._finish_pending(self.resume_pending)
    self.phase = 'compiling'
    t_first = time.time()
    for k, xs in chunks:
      if self.stop.requested():
        self._stop()
      self.dispatching = k  # A CPU may run the steps inside the call.
      self.pstate, m = run(self.pstate, xs)
      self.pending.append((self.step, m))
      self.step += k
      self.dispatching = 0
      self.in_flight.append((self.step, m))
      while len(self.in_flight) > self._in_flight_limit():
        end, oldest = self.in_flight.popleft()
        jax.block_until_ready(oldest)
        self.done_step = max(self.done_step, end)
      if self.step - k == self.start_step:  # The first dispatch compiles.
        self.first_dispatch_step = self.step
        jax.block_until_ready(m)
        self.done_step = self.step
        self.first_dispatch_seconds = time.time() - t_first
        self.progress.start(self.step)
        self.phase = 'training'
        self.last_saved_time = time.time()  # Timed saves count from here.
        self._first_line(k, self.first_dispatch_seconds)
      self._between_steps()
    self._collect()
    jax.block_until_ready(self.pstate.step)
    self.progress.pause(self.step)
    checkpoints.wait_until_finished(self.mgr)
    if self.evals.last_eval is None:  # Nothing left to train: evaluate it.
      self._run_evals({}, {'eval': True})

  def _step_seconds(self) -> Optional[float]:
    """Seconds per training step here, from the steps known to be done."""
    rate = self.progress.images_per_sec(self.done_step)
    return self.trainer.batch_size / rate if rate else None

  def _in_flight_limit(self) -> int:
    per_step = self._step_seconds()
    fast = per_step is not None and per_step <= SLOW_STEP_SECONDS
    return MAX_IN_FLIGHT if fast else 0

  def _between_steps(self) -> None:
    """Logs, evaluates and saves when their time has come."""
    step, trainer, config = self.step, self.trainer, self.config
    at_end = step == trainer.total_steps
    record = {}
    log_step = step % config.log_every_steps == 0 or at_end
    if log_step:
      self._collect()
      record.update(self.unlogged.record(self.skip_nonfinite))
      record['epoch'] = step / trainer.steps_per_epoch
      record['images_per_sec'] = self._interval_rate()
    timed_line = (self.progress.due() and trainer.process_count == 1 and
                  step != self.first_dispatch_step)
    if log_step or timed_line:
      if not log_step:
        self._collect()
      shown = record if log_step else self.unlogged.peek()
      logging.info('%s', self.progress.line(
          step, f'loss {shown.get("train_loss", float("nan")):.4f}, acc '
          f'{shown.get("train_accuracy", float("nan")):.4f}, '))
      self._projection()
    every = config.checkpoint_every_steps
    due = (every > 0 and step % every == 0) or at_end
    interval = self._save_interval()
    if not due and interval:
      late = time.time() - self.last_saved_time >= interval
      due = (_agree(late) if trainer.process_count > 1 and log_step
             else late and trainer.process_count == 1)
    evals = {
        'eval': bool(trainer.eval_every and step % trainer.eval_every == 0
                     or at_end),
        'fewshot': bool(trainer.fewshot and (
            step % trainer.fewshot_every == 0 or at_end))}
    if any(evals.values()):
      pending = {'record': dict(record), **evals}
      if self.stop.requested():
        self._stop(pending)
      if due:  # Saved first: a stop during the evaluation keeps the step.
        self._save(pending)
        due = False
      self._run_evals(record, pending)
    if record:
      self.writer.write(step, record)
    if due:
      self._save()

  def _save_interval(self) -> Optional[float]:
    """Seconds between time-based checkpoints now (None: none)."""
    every = self.save_every_seconds
    if every and not self.saved_this_session:
      return min(every, FIRST_CHECKPOINT_SECONDS)
    return every

  def _run_evals(self, record: Dict[str, Any], pending: Dict[str, Any]
                 ) -> None:
    """The evaluations `pending` asks for, into `record`; a stop request
    during them saves the step (with `pending`) and stops the run."""
    self._collect()
    params = jax.block_until_ready(self.pstate.params)
    self.phase = 'evaluating'
    try:
      if pending.get('eval'):
        self.evals.classification(params, self.step, record,
                                  self._stop_check())
      if pending.get('fewshot'):
        self.evals.fewshot(params, self.step, record, self._stop_check())
    except EvaluationStopped:
      self._stop(pending)
    self.phase = 'training'

  def _finish_pending(self, pending: Dict[str, Any]) -> None:
    """At a resume: the evaluations and the record of the restored step
    that a stop interrupted (or that had not run when it was saved)."""
    logging.info('Step %s was saved before its evaluation finished: '
                 'evaluating it first', f'{self.step:,}')
    record = dict(pending.get('record') or {})
    self._run_evals(record, pending)
    if record:
      self.writer.write(self.step, record)

  # -- metrics -----------------------------------------------------------------

  def _collect(self) -> None:
    """Fetches pending metrics; stops at the first non-finite step."""
    if not self.pending:
      return
    fetched = jax.device_get([m for _, m in self.pending])
    self.done_step = self.step  # Every dispatched step is in `pending`.
    for (first, _), f in zip(self.pending, fetched):
      per_step = {k: np.asarray(v[0]).reshape(-1) for k, v in f.items()}
      finite = per_step['finite'].astype(bool)
      bad = np.flatnonzero(~finite)
      if bad.size and not self.skip_nonfinite:
        raise NonFiniteError(self._nonfinite_message(first + int(bad[0]) + 1,
                                                     per_step, int(bad[0])))
      for i in bad:
        logging.warning('step %d: non-finite loss, gradients or parameters; '
                        'update skipped (skip_nonfinite_steps)',
                        first + int(i) + 1)
      self.unlogged.add(first, per_step)
      self.recent_finite.extend(finite.tolist())
    self.pending = []
    if self.skip_nonfinite:
      self._check_skipped()

  def _nonfinite_message(self, step: int, per_step, i: int) -> str:
    saved = (f'the last checkpoint, step {self.last_saved}, in '
             f'{self.ckpt_dir} is intact' if self.last_saved else
             'no checkpoint was written')
    values = (f'train_loss {per_step["train_loss"][i]:.4g}, grad_norm '
              f'{per_step["grad_norm"][i]:.4g}')
    if self.start_step and step == self.start_step + 1:
      return (f'non-finite loss, gradients or parameters at step {step}, the '
              f'first step after resuming from checkpoint {self.start_step} '
              f'({values}): that checkpoint may be damaged even though its '
              'arrays match their digests (e.g. written from a diverged '
              'state by an older version); move its folder out of '
              f'{self.ckpt_dir} to resume from the one before, or use '
              '--overwrite to start over')
    return (f'non-finite loss, gradients or parameters at step {step} '
            f'({values}); stopped before saving it: {saved}; lower the '
            'learning rate, or set config.skip_nonfinite_steps=True to skip '
            'such updates')

  def _check_skipped(self) -> None:
    window = list(self.recent_finite)
    skipped = window.count(False)
    if len(window) >= 10 and skipped > self.skip_limit * len(window):
      saved = (f'the last checkpoint, step {self.last_saved}, is intact'
               if self.last_saved else 'no checkpoint was written')
      raise NonFiniteError(
          f'{skipped} of the last {len(window)} steps (up to step '
          f'{self.step}) were non-finite and skipped, more than '
          f'config.skip_nonfinite_limit={self.skip_limit:g} of them: the run '
          f'is diverging; {saved}; lower the learning rate')

  def _interval_rate(self) -> Optional[float]:
    """Training images/s since the previous log record."""
    seconds, steps = self.progress.timed(self.step)
    last = self.last_log or (0.0, 0)
    self.last_log = (seconds, steps)
    if seconds - last[0] <= 0 or steps == last[1]:
      return None
    return (steps - last[1]) * self.trainer.batch_size / (seconds - last[0])

  def _first_line(self, k: int, seconds: float) -> None:
    loss = ''
    if self.trainer.process_count == 1:
      self._collect()
      shown = self.unlogged.peek()
      if 'train_loss' in shown:
        loss = f' (train loss {shown["train_loss"]:.4f})'
    logging.info(
        'step %s/%s: the first %s done in %.1f s, compilation included%s; '
        'progress every %d steps or %.0f s', f'{self.step:,}',
        f'{self.trainer.total_steps:,}',
        'step' if k == 1 else f'{k} steps', seconds, loss,
        self.config.log_every_steps, PROGRESS_EVERY_SECONDS)

  def _projection(self) -> None:
    """Once, at the first progress line after the compiling dispatch (30 s
    or `log_every_steps` of timing): the projected wall time of the rest of
    the run on this device."""
    seconds, steps = self.progress.timed(self.step)
    if self.projected or seconds <= 0 or steps < 2 or \
        self.step >= self.trainer.total_steps:
      return
    self.projected = True
    logging.info(
        'Projected wall time on this device (%s): %s for the remaining %s '
        'steps at %s img/s', jax.devices()[0].device_kind,
        self.progress.eta(self.step),
        f'{self.trainer.total_steps - self.step:,}',
        f'{self.progress.images_per_sec(self.step):,.0f}')

  # -- evaluation and checkpoints --------------------------------------------

  def _stop_check(self):
    """What an evaluation checks between batches (single-process runs: the
    processes of a multi-host run must run the same batches)."""
    return self.stop.requested if self.trainer.process_count == 1 else None

  def _save(self, pending: Optional[Dict[str, Any]] = None) -> None:
    """Checkpoints the current step; `pending`: its record and evaluations
    still to come (a resumed run does them first)."""
    self._collect()  # Never save a non-finite state.
    jax.block_until_ready(self.pstate.step)
    # Saving starts only now: a stop's watchdog extends its wait for a
    # write, never for a step that hangs before it.
    stopping_now = self.stop.saving.is_set()
    self.stop.saving.set()
    self.progress.pause(self.step)
    host_state = jax.device_get(devices.unreplicate(self.pstate))
    meta = {'step': self.step, 'config': self.config_json,
            'unlogged': self.unlogged.to_json()}
    if pending is not None:
      meta['pending'] = pending
    checkpoints.save(self.mgr, self.step, step_lib.state_dict(host_state),
                     meta)
    self.last_saved, self.last_saved_time = self.step, time.time()
    self.saved_this_session = True
    self.progress.resume()
    if not stopping_now:
      self.stop.saving.clear()

  def _stop(self, pending: Optional[Dict[str, Any]] = None) -> None:
    """Saves the current step once its dispatch is done (with `pending`
    when its evaluation did not finish) and raises `Interrupted` naming
    the checkpoint to resume from."""
    t0 = time.time()
    self._collect()
    jax.block_until_ready(self.pstate.step)  # Within the watchdog's grace.
    self.stop.saving.set()
    if self.step != self.last_saved and self.step > self.start_step:
      self._save(pending)
    checkpoints.wait_until_finished(self.mgr)
    raise stopping.Interrupted(stopping.stopped_message(
        step=self.step, start_step=self.start_step,
        total_steps=self.trainer.total_steps, last_saved=self.last_saved,
        ckpt_dir=self.ckpt_dir, seconds=time.time() - t0,
        during_evaluation=pending is not None))

  def _waiting(self) -> Tuple[Optional[float], str]:
    """For the stop watchdog: (seconds until the loop can save, or None if
    unknown; what it is waiting for)."""
    return stopping.waiting_message(
        phase=self.phase, step=self.step + self.dispatching,
        done_step=self.done_step,
        step_seconds=self._step_seconds() or self.first_dispatch_seconds,
        eval_batch_seconds=self.evals.batch_seconds(),
        untimed_eval_batch_seconds=UNTIMED_EVAL_BATCH_SECONDS)

  def _fallback_message(self) -> str:
    """What the stop watchdog says when it exits without the loop's help."""
    return stopping.fallback_message(
        phase=self.phase, step=self.step + self.dispatching,
        done_step=self.done_step,
        step_seconds=self._step_seconds(), last_saved=self.last_saved,
        ckpt_dir=self.ckpt_dir,
        saved_ago=time.time() - self.last_saved_time)


def _prefetch(chunks: Iterator[Tuple[int, Any]], size: int = 2
              ) -> Iterator[Tuple[int, Any]]:
  """Keeps `size` chunks in flight to the local devices (split on axis 0)."""
  queue = collections.deque()

  def put(chunk):
    k, arrays = chunk
    return k, tuple(devices.shard(a) for a in arrays)

  for chunk in chunks:
    queue.append(put(chunk))
    if len(queue) >= size:
      yield queue.popleft()
  while queue:
    yield queue.popleft()
