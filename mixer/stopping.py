"""Stopping a run on request: Ctrl-C, or an event set by another thread.

Owns turning SIGINT into a request the training loop serves at the next
point where the state is whole (a step boundary, or between two evaluation
batches): the loop saves the last finished step there and raises
`Interrupted`. While the main thread waits on a long device step (a CPU
step can take half a minute), a watchdog thread says what the stop is
waiting for and for about how long, lets a second Ctrl-C quit at once, and
exits the process only if the wait runs far past its estimate (a hung
step). The loop supplies what to say (`waiting`, `fallback`), in the words of
`stopped_message`, `waiting_message` and `fallback_message`, which name
only steps known to have finished (or the one running).
"""

import os
import signal
import socket
import sys
import threading
import time
from typing import Callable, Optional, Tuple

import jax


class Interrupted(KeyboardInterrupt):
  """The run was stopped (Ctrl-C, or `stop` set) where its state is whole.

  The message says which checkpoint holds the state and how to resume.
  """


# After Ctrl-C the loop finishes what is running (the dispatched steps, or
# the current evaluation batch), saves, and exits. The watchdog waits for
# that for STOP_GRACE_SECONDS plus twice the loop's own estimate of the
# wait (steps slow down under load); only a wait past that (a hung step) or
# a second Ctrl-C exits without saving, naming the last checkpoint. With no
# estimate (the first, compiling dispatch: nothing of this session is
# trained yet) the wait is STOP_GRACE_SECONDS. A checkpoint write that has
# started is waited for, up to STOP_SAVE_SECONDS.
STOP_GRACE_SECONDS = 8.0
STOP_SAVE_SECONDS = 60.0
# When the loop has not begun saving this long after Ctrl-C, the watchdog
# prints what it is waiting for.
STOP_NOTICE_SECONDS = 1.0


class StopRequest:
  """A stop request: SIGINT (Ctrl-C) in a single-process run's main thread,
  or `event` set by another thread (a notebook).

  The SIGINT handler only sets `event`; the loop notices it at the next
  step boundary (or between evaluation batches), saves and raises
  `Interrupted`. A Python handler runs only between bytecodes, so while the
  main thread waits on a device step a watchdog thread (woken through
  `signal.set_wakeup_fd`) does the talking: after STOP_NOTICE_SECONDS it
  prints `waiting()`'s description (e.g. `finishing step 12 (a step takes
  ~32 s here), then saving it`), and it exits the process with
  `fallback()`'s message only when the wait exceeds its bound (see
  STOP_GRACE_SECONDS) or on a second Ctrl-C. The loop sets `saving` once
  it is saving; the watchdog then waits for the write (up to
  STOP_SAVE_SECONDS), so a stop never leaves a half-written step behind
  (orbax's atomic writes would set one aside anyway).
  """

  def __init__(self, event: Optional[threading.Event] = None):
    self.event = event or threading.Event()
    self.saving = threading.Event()
    self.fallback: Callable[[], str] = lambda: 'stopped'
    # (expected seconds until the loop can save, or None if unknown; what it
    # is waiting for, '' to say nothing).
    self.waiting: Callable[[], Tuple[Optional[float], str]] = (
        lambda: (None, ''))
    self._installed = False
    self._done = threading.Event()

  def requested(self) -> bool:
    return self.event.is_set()

  def __enter__(self) -> 'StopRequest':
    if (threading.current_thread() is not threading.main_thread() or
        jax.process_count() > 1):
      return self
    self._read, self._write = socket.socketpair()
    self._write.setblocking(False)
    self._old_fd = signal.set_wakeup_fd(self._write.fileno(),
                                        warn_on_full_buffer=False)
    self._old_handler = signal.signal(signal.SIGINT,
                                      lambda *_: self.event.set())
    self._installed = True
    threading.Thread(target=self._watch, daemon=True,
                     name='mixer-stop-watchdog').start()
    return self

  def _watch(self) -> None:
    count, deadline, notice_at, text = 0, None, None, ''
    save_extended = False
    while not self._done.is_set():
      wake = [t for t in (deadline, notice_at) if t is not None]
      self._read.settimeout(max(min(wake) - time.time(), 0.05) if wake
                            else None)
      try:
        data = self._read.recv(64)
        if not data:
          return  # Closed by __exit__.
      except socket.timeout:
        data = b''
      except OSError:
        return
      if self._done.is_set():
        return
      received = data.count(bytes([signal.SIGINT]))
      if received:
        count += received
        if count >= 2:
          self._exit('second Ctrl-C: ')
        expected, text = self._waiting()
        bound = STOP_GRACE_SECONDS + 2 * (expected or 0.0)
        deadline = time.time() + bound
        notice_at = time.time() + STOP_NOTICE_SECONDS if text else None
        continue
      now = time.time()
      if notice_at is not None and now >= notice_at:
        notice_at = None
        if not self.saving.is_set():
          print(f'stopping: {text}; Ctrl-C again to quit at once without '
                'saving', file=sys.stderr, flush=True)
      if deadline is not None and now >= deadline:
        if self.saving.is_set() and not save_extended:
          deadline, save_extended = now + STOP_SAVE_SECONDS, True
        else:
          self._exit('')

  def _waiting(self) -> Tuple[Optional[float], str]:
    try:
      return self.waiting()
    except Exception:  # pylint: disable=broad-except
      return None, ''

  def _exit(self, prefix: str) -> None:
    try:
      message = self.fallback()
    except Exception:  # pylint: disable=broad-except
      message = 'stopped'
    print(f'{prefix}{message}', file=sys.stderr, flush=True)
    os._exit(130)  # pylint: disable=protected-access

  def __exit__(self, *exc) -> None:
    self._done.set()
    if self._installed:
      signal.signal(signal.SIGINT, self._old_handler)
      signal.set_wakeup_fd(self._old_fd)
      self._write.close()
      self._read.close()
      self._installed = False


def _duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  h, rem = divmod(seconds, 3600)
  return f'{h}:{rem // 60:02d}:{rem % 60:02d}'


def stopped_message(*, step: int, start_step: int, total_steps: int,
                    last_saved: Optional[int], ckpt_dir: str, seconds: float,
                    during_evaluation: bool) -> str:
  """`Interrupted`'s message: where the run stopped and what holds it."""
  total = f'{total_steps:,}'
  if step == start_step:
    at = f'before step {step + 1:,} of {total} (nothing trained in this run)'
  else:
    at = f'at step {step:,} of {total}' + (
        ' during its evaluation' if during_evaluation else '')
  if last_saved:
    where = (f'checkpoint {last_saved} is in {ckpt_dir} (saved in '
             f'{seconds:.1f} s)')
    if during_evaluation and last_saved == step:
      where += '; its evaluation runs first when resumed'
  else:
    where = 'no checkpoint was written; the next run starts over'
  return f'stopped {at}: {where}; run the same command again to resume'


def waiting_message(*, phase: str, step: int, done_step: int,
                    step_seconds: Optional[float],
                    eval_batch_seconds: Optional[float],
                    untimed_eval_batch_seconds: float = 60.0
                    ) -> Tuple[Optional[float], str]:
  """(Expected seconds until the loop can save, None if unknown; what the
  stop waits for) in `phase` ('compiling', 'training', 'evaluating'), with
  `step` dispatched and `done_step` known to be finished."""
  if phase == 'compiling':
    return None, (f'step {step + 1:,} is compiling, which cannot be '
                  'interrupted; nothing of this run is trained yet, so it '
                  f'exits within {STOP_GRACE_SECONDS:.0f} s unless that '
                  'step finishes first')
  if phase == 'evaluating':
    expected = (2 * eval_batch_seconds if eval_batch_seconds
                else untimed_eval_batch_seconds)
    return expected, (f'finishing the evaluation batch in progress (up to '
                      f'~{expected:.0f} s), then saving step {step:,}; its '
                      'evaluation runs first when resumed')
  running = step - done_step
  if running <= 0:
    return 0.0, ''
  steps = (f'step {step:,}' if running == 1 else
           f'steps {done_step + 1:,}-{step:,}')
  took = f' (a step takes ~{step_seconds:.0f} s here)' if step_seconds else ''
  return ((running * step_seconds if step_seconds else None),
          f'finishing {steps}{took}, then saving step {step:,}')


def fallback_message(*, phase: str, step: int, done_step: int,
                     step_seconds: Optional[float], last_saved: Optional[int],
                     ckpt_dir: str, saved_ago: float) -> str:
  """What the watchdog says when it exits without the loop's save."""
  if last_saved:
    where = (f'the last checkpoint is step {last_saved} in {ckpt_dir}, saved '
             f'{_duration(saved_ago)} ago; run the same command again to '
             'resume from it')
  else:
    where = ('no checkpoint was written yet; the next run starts over '
             '(config.checkpoint_every_minutes bounds what a stop loses)')
  if phase == 'compiling':
    return (f'stopped while step {step + 1:,} was compiling, before anything '
            f'of this run was trained: {where}')
  if phase == 'evaluating':
    return (f'stopped during the evaluation of step {step:,} without waiting '
            f'for it: {where}')
  if step <= done_step:  # Between steps (host work, reading data).
    return (f'stopped after step {done_step:,} without saving it: {where}')
  took = f' (a step takes ~{step_seconds:.0f} s here)' if step_seconds else ''
  return (f'stopped during step {done_step + 1:,}{took} without waiting for '
          f'it: {where}')
