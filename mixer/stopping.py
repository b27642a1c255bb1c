"""Stopping a run on request: Ctrl-C, or an event set by another thread.

Owns turning SIGINT into a request the training loop serves at the next
step boundary (save the current step, then raise `Interrupted`), and the
watchdog that exits the process when a step takes too long to get there.
Knows nothing of training; the loop supplies what to say (`fallback`).
"""

import os
import signal
import socket
import sys
import threading
import time
from typing import Callable, Optional

import jax


class Interrupted(KeyboardInterrupt):
  """The run was stopped (Ctrl-C, or `stop` set) at a step boundary.

  The message says which checkpoint holds the state and how to resume.
  """


# How long after Ctrl-C the loop may take to reach a step boundary and save
# the state; past it (a step that takes longer, e.g. a large batch on a
# CPU), the process exits at once and the last checkpoint is the resume
# point. A checkpoint write that has started is waited for, up to
# STOP_SAVE_SECONDS.
STOP_GRACE_SECONDS = 8.0
STOP_SAVE_SECONDS = 60.0

class StopRequest:
  """A stop request: SIGINT (Ctrl-C) in a single-process run's main thread,
  or `event` set by another thread (a notebook).

  The SIGINT handler only sets `event`; the loop notices it at the next
  step boundary, saves the current step and raises `Interrupted`. A Python
  handler runs only between bytecodes, so while the main thread waits on a
  long device step a watchdog thread (woken through `signal.set_wakeup_fd`)
  gives the loop STOP_GRACE_SECONDS, then prints `fallback()` and exits the
  process; a second Ctrl-C exits at once. A checkpoint write in progress
  (`saving`) is waited for, so a stop never leaves a half-written step
  behind (and orbax's atomic writes would set one aside anyway).
  """

  def __init__(self, event: Optional[threading.Event] = None):
    self.event = event or threading.Event()
    self.saving = threading.Event()
    self.fallback: Callable[[], str] = lambda: 'stopped'
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
    count, deadline = 0, None
    while not self._done.is_set():
      timeout = None if deadline is None else max(deadline - time.time(), 0.05)
      self._read.settimeout(timeout)
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
        deadline = time.time() + STOP_GRACE_SECONDS
      elif deadline is not None and time.time() >= deadline:
        if self.saving.is_set():
          deadline = time.time() + STOP_SAVE_SECONDS
          self.saving.clear()
        else:
          self._exit('')

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
