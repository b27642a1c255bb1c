"""What every command-line tool shares: one-line errors, a quiet console, --debug.

The contract of `train.py`, `sweep.py` and `python -m mixer.<tool>`: a
problem with what the user gave (a flag, a config, data, a checkpoint, a
workdir) prints one line `error: <what is wrong and how to fix it>` on stderr
and exits with status 1; the traceback appears only with `--debug` (or
MIXER_DEBUG=1). An unexpected exception (a bug) is one line too, saying so.
Ctrl-C exits with status 130 and one line (`interrupted`, or what the
training loop saved and how to resume). A config file that does not load
(missing, a syntax error, no get_config(), get_config() raising) is one line
naming the file; `warn` prints one `warning: ...` line for a run that goes on.

The console shows the project's own log lines, as plain lines (`warning: `
or `error: ` in front of warnings and errors; absl's time/thread/file prefix
only with --debug). Libraries' INFO chatter
(orbax's ~15 lines per checkpoint, JAX's libtpu probe, TensorFlow's C++
start-up messages, clu's echo of every metric) is dropped, and their
warnings and errors are shown as one line without a traceback; `--debug` or
`--verbosity=1` shows everything as the libraries logged it. The echoes of
orbax's concurrent reads of a damaged checkpoint (asyncio's "Event loop is
closed" tracebacks and "exception was never retrieved" lines, printed after
the restore has already failed with its own error) are dropped as well; see
`quiet_closed_loop_errors`.

Import this module before JAX or TensorFlow: it sets the environment
variables that silence their C++ start-up logging (unless --debug is given).
"""

import logging as std_logging
import os
import re
import sys
import traceback
from typing import Callable, List, Optional, Sequence, Tuple

from absl import app
from absl import flags
from absl import logging

from mixer import abandoned_reads

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


def warn(message) -> None:
  """Prints `warning: <message>` (one line) on stderr; the run goes on."""
  print(f'warning: {one_line(message)}', file=sys.stderr, flush=True)


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
    if record.name == 'asyncio' and 'exception was never retrieved' in str(
        record.msg):
      # Orbax's concurrent reads of a damaged checkpoint: the first failure
      # is raised (and reported); the other reads' failures are left in
      # futures nobody awaits, which asyncio logs when they are collected.
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


class PlainFormatter(std_logging.Formatter):
  """A log line as the user reads it: the message alone, `warning: ` or
  `error: ` in front of warnings and errors (absl's `I1202 17:12:12.578803
  1406 local.py:379]` prefix is for debugging: --debug)."""

  def format(self, record: std_logging.LogRecord) -> str:
    text = super().format(record)
    if record.levelno >= std_logging.ERROR:
      return f'error: {text}'
    if record.levelno >= std_logging.WARNING:
      return f'warning: {text}'
    return text


def configure_logging(verbose: Optional[bool] = None) -> None:
  """INFO for the project's lines, plain (`PlainFormatter`); libraries
  quiet, unless `verbose` (default: --debug or --verbosity >= 1), which
  shows every line in absl's format."""
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
    handler.setFormatter(PlainFormatter('%(message)s'))
    std_logging.captureWarnings(True)
  else:
    handler.setFormatter(logging.PythonFormatter())


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


def _config_files(argv: Sequence[str]) -> List[Tuple[str, str]]:
  """[(flag name, config file path)] of the config-file flags in `argv`
  (`--config=configs/x.py:arg` gives ('config', 'configs/x.py'))."""
  from ml_collections.config_flags import config_flags as cf  # pylint: disable=g-import-not-at-top
  names = [name for name in flags.FLAGS
           if isinstance(flags.FLAGS[name].parser, cf.ConfigFileFlagParser)]
  found = []
  args = list(argv[1:])
  for i, arg in enumerate(args):
    for name in names:
      m = re.match(rf'^--?{re.escape(name)}(=(.*))?$', arg)
      if m:
        value = m.group(2) if m.group(1) else (
            args[i + 1] if i + 1 < len(args) else '')
        found.append((name, value.split(':', 1)[0]))
  return found


def _frame_in(tb_or_text, path: str) -> Optional[int]:
  """The last line number of `path` in a traceback (object or text)."""
  target = os.path.abspath(path)
  if isinstance(tb_or_text, str):
    lines = [int(n) for f, n in re.findall(r'File "([^"]+)", line (\d+)',
                                           tb_or_text)
             if os.path.abspath(f) == target]
  else:
    lines = [f.lineno for f in traceback.extract_tb(tb_or_text)
             if os.path.abspath(f.filename) == target]
  return lines[-1] if lines else None


def _config_file_error(e: Optional[BaseException],
                       argv: Sequence[str]) -> Optional[str]:
  """One line for a config file that does not load (missing, a syntax
  error, no get_config(), get_config() raising), naming the file and the
  fix; None when the problem is not the file itself."""
  files = _config_files(argv)
  if not files:
    return None
  # A file that was not found is kept as an error object by ml_collections
  # and raised on first use (or while applying --config.<field> overrides).
  for name, path in files:
    value = flags.FLAGS[name].value
    missing = type(value).__name__ == '_ErrorConfig'
    if missing or (e is not None and 'earlier failure to load' in str(e)):
      where = ('' if os.path.isabs(path) else
               f' (relative to the current directory {os.getcwd()})')
      return (f'config file {path} not found{where}: give --{name}= the path '
              'of an experiment config file, e.g. '
              f'--{name}=configs/cifar10_baseline.py from the repository root')
  if e is None:
    return None
  name, path = files[-1]
  if isinstance(e, SyntaxError) and e.filename and \
      os.path.abspath(e.filename) == os.path.abspath(path):
    return (f'config file {path} has a syntax error at line {e.lineno}: '
            f'{e.msg}; fix the file')
  text = str(e)
  if 'Error whilst parsing config file' in text:
    last = [l for l in text.strip().splitlines() if l.strip()][-1].strip()
    line = _frame_in(text, path)
    at = f' (line {line})' if line else ''
    return (f'config file {path}: get_config() raised {last}{at}; fix the '
            f'file or the argument after ":" in --{name}')
  if isinstance(e, AttributeError) and "attribute 'get_config'" in text:
    return (f'config file {path} defines no get_config(); add a function '
            'get_config() returning an ml_collections.ConfigDict')
  line = _frame_in(e.__traceback__, path)
  if line is not None:
    return (f'config file {path} failed to load: {type(e).__name__}: {e} '
            f'(line {line}); fix the file')
  return None


def _flag_error(e: flags.Error) -> str:
  """absl's message, with a missing required flag said plainly."""
  text = str(e)
  m = re.match(r'^flag --(\w+)=None: Flag --\w+ must have a value other '
               r'than None\.?$', text.strip())
  if m:
    return (f'--{m.group(1)} is required: pass --{m.group(1)}=... '
            '(--helpshort lists the flags)')
  if 'invalid literal for int()' in text:
    return text + '; give an integer'
  if 'could not convert string to float' in text:
    return text + '; give a number'
  return text


def parse_flags(argv: Sequence[str]):
  """absl's flag parsing with every error (a bad flag value, a missing
  required flag, an unknown or mistyped `--config.<field>`, a config file
  that does not load) as one `error:` line."""
  try:
    parsed = flags.FLAGS(argv)
  except Exception as e:  # pylint: disable=broad-except
    if debug_requested(argv):
      raise
    problem = _config_file_error(e, argv)
    if problem:
      fail(problem)
    if isinstance(e, flags.Error):
      fail(_flag_error(e))
    if isinstance(e, (AttributeError, KeyError)):
      fail(_override_error(e, argv))
    fail(f'{type(e).__name__}: {e}')
  problem = _config_file_error(None, argv)
  if problem:  # A missing file: ml_collections would raise on first use.
    if debug_requested(argv):
      for name, _ in _config_files(argv):
        getattr(flags.FLAGS[name].value, 'lock', None)  # Raises its error.
    fail(problem)
  return parsed


def describe_exception(e: BaseException) -> str:
  """The one line for an exception: user errors as they are, anything else
  marked as unexpected."""
  if isinstance(e, USER_ERRORS):
    return str(e) or type(e).__name__
  return (f'unexpected {type(e).__name__}: {e} (this looks like a bug; '
          '--debug shows the traceback)')


def quiet_closed_loop_errors() -> None:
  """Drops the echoes of orbax's abandoned reads of a damaged checkpoint
  (`mixer.abandoned_reads`); everything else goes to the previous hook."""
  abandoned_reads.quiet()


def run(main: Callable[[Sequence[str]], None]) -> None:
  """`app.run(main)` with the contract above."""

  def wrapped(argv):
    configure_logging()
    if not debug_requested():
      quiet_closed_loop_errors()
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
