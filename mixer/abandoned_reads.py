"""Orbax's abandoned checkpoint reads: echoes of a restore that already failed.

Orbax reads a checkpoint's arrays concurrently. When one read fails (a
damaged or truncated step) it raises that error -- which
`mixer.checkpoints.restore` reports, setting the step aside -- and abandons
the other reads. They surface later, whenever Python collects them, as
"unraisable" exceptions: a read coroutine of orbax's collected unfinished
(GeneratorExit), and asyncio's "Event loop is closed" from
`call_soon_threadsafe` when a read completes after orbax closed its event
loop. They cannot be awaited or cancelled from outside orbax, and say
nothing the reported error did not, so `quiet()` drops exactly these (as
warnings they would land in whatever test or notebook cell runs next; on a
console, as tracebacks after the one-line error). Standard library only:
the command-line layer (`mixer.cli`) installs it before anything else.
"""

import inspect
import os
import sys
import traceback


def is_abandoned_read(unraisable) -> bool:
  """Whether a `sys.unraisablehook` argument is one of those echoes."""
  exc, obj = unraisable.exc_value, unraisable.object
  if isinstance(exc, RuntimeError) and str(exc) == 'Event loop is closed':
    return any(f.name == 'call_soon_threadsafe' for f in
               traceback.extract_tb(unraisable.exc_traceback))
  code = getattr(obj, 'cr_code', None)
  return (inspect.iscoroutine(obj) and code is not None and
          f'{os.sep}orbax{os.sep}' in code.co_filename and
          isinstance(exc.__cause__ or exc.__context__, GeneratorExit))


def quiet() -> None:
  """Installs a `sys.unraisablehook` that drops `is_abandoned_read` and
  passes everything else to the previous hook (once per process)."""
  previous = sys.unraisablehook
  if getattr(previous, '_mixer_abandoned_reads', False):
    return

  def hook(unraisable):
    if not is_abandoned_read(unraisable):
      previous(unraisable)

  hook._mixer_abandoned_reads = True  # pylint: disable=protected-access
  sys.unraisablehook = hook
