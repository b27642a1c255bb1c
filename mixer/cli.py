"""What every command-line tool shares: one-line errors, a quiet console, --debug.

The contract of `train.py`, `sweep.py` and `python -m mixer.<tool>`: a
problem with what the user gave (a flag, a config, data, a checkpoint, a
workdir) prints one line `error: <what is wrong and how to fix it>` on stderr
and exits with status 1; the traceback appears only with `--debug` (or
MIXER_DEBUG=1). An unexpected exception (a bug) is one line too, saying so.
Ctrl-C exits with status 130 and one line (`interrupted`, or what the
training loop saved and how to resume).

The console shows the project's own log lines. Libraries' INFO chatter
(orbax's ~15 lines per checkpoint, JAX's libtpu probe, TensorFlow's C++
start-up messages, clu's echo of every metric) is dropped, and their
warnings and errors are shown as one line without a traceback; `--debug` or
`--verbosity=1` shows everything as the libraries logged it.

Import this module before JAX or TensorFlow: it sets the environment
variables that silence their C++ start-up logging (unless --debug is given).
"""

import logging as std_logging
import os
import re
import sys
from typing import Callable, Optional, Sequence

from absl import app
from absl import flags
from absl import logging

# Errors about what a run was given. The project raises ValueError
# subclasses (DataError, WorkdirError, ...), OSErrors (CheckpointWriteError,
# files), and FloatingPointError for a non-finite loss.
USER_ERRORS = (ValueError, OSError, FloatingPointError)

_DEBUG_VALUES = ('--debug', '-debug', '--debug=true', '--debug=True',
                 '--debug=1')

# Where the project's own code lives: log records from elsewhere are quiet.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_PROJECT_PARTS = tuple(os.path.join(_ROOT, d) + os.sep
                       for d in ('mixer', 'configs', 'benchmarks', 'tests'))
_PROJECT_FILES = tuple(os.path.join(_ROOT, f) for f in ('train.py', 'sweep.py'))

if 'debug' not in flags.FLAGS:
  flags.DEFINE_bool('debug', False, 'Show tracebacks and every library log '
                    'line (also MIXER_DEBUG=1).')


def debug_requested(argv: Optional[Sequence[str]] = None) -> bool:
  """--debug (before or after flag parsing) or MIXER_DEBUG=1."""
  if os.environ.get('MIXER_DEBUG', '') not in ('', '0'):
    return True
  if flags.FLAGS.is_parsed():
    return bool(flags.FLAGS.debug)
  argv = sys.argv if argv is None else argv
  return any(a in _DEBUG_VALUES for a in argv[1:])


if not debug_requested():
  # TensorFlow's C++ INFO/WARNING lines at import ("oneDNN custom operations
  # are on", "All log messages before absl::InitializeLog()"). TensorFlow only
  # reads data and writes TensorBoard events here, so its oneDNN kernels
  # (whose notice that is) make no difference.
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')


def one_line(text, limit: int = 2000) -> str:
  text = ' '.join(str(text).split())
  return text if len(text) <= limit else text[:limit - 3] + '...'


def fail(message, status: int = 1):
  """Prints `error: <message>` (one line) on stderr and exits."""
  print(f'error: {one_line(message)}', file=sys.stderr, flush=True)
  sys.exit(status)


def _is_project(record: std_logging.LogRecord) -> bool:
  path = os.path.abspath(record.pathname or '')
  return path.startswith(_PROJECT_PARTS) or path in _PROJECT_FILES


class QuietLibraries(std_logging.Filter):
  """Drops other packages' INFO lines; their warnings and errors become one
  line without a traceback."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    if _is_project(record):
      return True
    if record.levelno < std_logging.WARNING:
      return False
    if '/orbax/' in (record.pathname or '') and \
        record.levelno < std_logging.ERROR:
      return False
    first = record.getMessage().strip().splitlines()
    record.msg = first[0] if first else ''
    record.args = None
    record.exc_info = None
    record.exc_text = None
    record.stack_info = None
    return True


def configure_logging(verbose: Optional[bool] = None) -> None:
  """INFO for the project's lines; libraries quiet unless `verbose`
  (default: --debug or --verbosity >= 1)."""
  if verbose is None:
    verbose = debug_requested() or (
        flags.FLAGS.is_parsed() and flags.FLAGS.verbosity >= 1)
  if logging.get_verbosity() < logging.INFO:
    logging.set_verbosity(logging.INFO)
  handler = logging.get_absl_handler()
  for f in list(handler.filters):
    if isinstance(f, QuietLibraries):
      handler.removeFilter(f)
  if not verbose:
    handler.addFilter(QuietLibraries())
    std_logging.captureWarnings(True)


def _override_error(e: BaseException, argv: Sequence[str]) -> str:
  """ml_collections' error for `--config.foo=1` on a field that does not
  exist (a bare "'foo'" KeyError/AttributeError), as one sentence."""
  text = str(e)  # Nested reprs: "'foo'" or '\'\\\'foo\\\'\\nDid you mean...'
  name = re.search(r'[A-Za-z_]\w*', text)
  name = name.group() if name else text
  hint = re.search(r'Did you mean \W*(\w+)', text)
  given = [a for a in argv[1:] if a.startswith('--config.') and
           re.split(r'[.=]', a[len('--config.'):].split('=')[0])[-1] == name]
  if given:
    field = given[0][len('--config.'):].split('=')[0]
    message = f'unknown config field {field!r} in {given[0]}'
  else:
    message = f'unknown config field {name!r}'
  return message + (f'; did you mean {hint.group(1)!r}?' if hint else '')


def parse_flags(argv: Sequence[str]):
  """absl's flag parsing with every error (a bad flag value, a missing
  required flag, an unknown or mistyped `--config.<field>`, a config file
  that does not load) as one `error:` line."""
  try:
    return flags.FLAGS(argv)
  except Exception as e:  # pylint: disable=broad-except
    if debug_requested(argv):
      raise
    if isinstance(e, flags.Error):
      fail(str(e))
    if isinstance(e, (AttributeError, KeyError)):
      fail(_override_error(e, argv))
    fail(f'{type(e).__name__}: {e}')


def describe_exception(e: BaseException) -> str:
  """The one line for an exception: user errors as they are, anything else
  marked as unexpected."""
  if isinstance(e, USER_ERRORS):
    return str(e) or type(e).__name__
  return (f'unexpected {type(e).__name__}: {e} (this looks like a bug; '
          '--debug shows the traceback)')


def run(main: Callable[[Sequence[str]], None]) -> None:
  """`app.run(main)` with the contract above."""

  def wrapped(argv):
    configure_logging()
    try:
      main(argv)
    except app.UsageError as e:
      if debug_requested():
        raise
      fail(str(e))
    except KeyboardInterrupt as e:
      if debug_requested():
        raise
      print(one_line(e) or 'interrupted', file=sys.stderr, flush=True)
      sys.exit(130)
    except Exception as e:  # pylint: disable=broad-except
      if debug_requested():
        raise
      fail(describe_exception(e))

  app.run(wrapped, flags_parser=parse_flags)
