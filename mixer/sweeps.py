"""Sweep definitions: named runs built from a base config plus overrides.

A sweep file (`configs/sweeps/<name>.py`) defines `get_sweep()` returning a
list of `Run`s; `sweep.py` trains them one after another, each in its own
folder, and `mixer.report` tabulates them. The helpers here keep sweep files
declarative: they name only what a run changes, the base experiment config
supplies everything else.

    from configs import cifar10_baseline
    from mixer import sweeps

    def get_sweep():
      return sweeps.grid(cifar10_baseline.get_config,
                         'C{hidden_dim}_L{num_blocks}',
                         **{'model.hidden_dim': [128, 256],
                            'model.num_blocks': [2, 4]})

Override keys are dotted paths into the config ('model.hidden_dim',
'augment.mixup_alpha'); `model__hidden_dim=` is accepted as a keyword-friendly
spelling. Unknown keys raise, so a typo cannot silently train the baseline.

Problems with a sweep file or an override raise `SweepError` (a ValueError)
with one line naming the file (and line) or the key, and the fix:
`sweep.py` prints it as its `error:` line.
"""

import ast
import copy
import dataclasses
import difflib
import importlib
import importlib.util
import itertools
import os
import re
import traceback
from typing import (Any, Callable, Dict, Iterable, List, Mapping, Optional,
                    Sequence, Tuple, Union)

import ml_collections

ConfigSource = Union[ml_collections.ConfigDict,
                     Callable[[], ml_collections.ConfigDict]]

# Run names become folder names: keep them portable.
_NAME_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.,=+-]*$')


class SweepError(ValueError):
  """A sweep file or an override that cannot be used: one line naming it
  (file and line, or key) and the fix."""


class UnknownFieldError(KeyError):
  """A dotted override key that names no config field.

  A KeyError (as a missing key always was); `str()` is the plain message
  (KeyError would quote it), with the closest existing field as a hint.
  """

  def __init__(self, key: str, config=None, prefix: str = ''):
    self.key = key
    hint = _closest_field(config, key) if config is not None else None
    message = f'{prefix}unknown config field {key!r}' + (
        f' (did you mean {hint!r}?)' if hint else '')
    super().__init__(message)

  def __str__(self) -> str:
    return str(self.args[0]) if self.args else ''


class FieldValueError(ValueError):
  """An override value of a type the config field cannot hold."""

  def __init__(self, key: str, message: str):
    self.key = key
    super().__init__(message)


def _dotted_keys(config, prefix: str = '') -> List[str]:
  keys = []
  for k, v in config.items():
    keys.append(prefix + k)
    if isinstance(v, ml_collections.ConfigDict):
      keys += _dotted_keys(v, prefix + k + '.')
  return keys


def _closest_field(config, key: str) -> Optional[str]:
  try:
    keys = _dotted_keys(config)
  except Exception:  # pylint: disable=broad-except
    return None
  match = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
  return match[0] if match else None


def _type_name(value: Any) -> str:
  """'an int', 'a tuple', ... of `value`'s type."""
  name = type(value).__name__
  return ('an ' if name[:1] in 'aeiou' else 'a ') + name


def _is_literal(text: str) -> bool:
  try:
    ast.literal_eval(text)
  except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
    return False
  return True


@dataclasses.dataclass(frozen=True)
class Run:
  """One run of a sweep.

  Attributes:
    name: folder name under the sweep directory, unique within the sweep.
    config: the complete, locked experiment config.
    overrides: dotted key -> value, what this run changes relative to its base
      (shown as table columns by `mixer.report`).
    columns: dotted keys the report shows for this run; their values are read
      from `config`, so they always show what was actually trained.
  """
  name: str
  config: ml_collections.ConfigDict
  overrides: Mapping[str, Any]
  columns: Tuple[str, ...]

  def fields(self) -> Dict[str, Any]:
    """{column: value in the final config} for the report."""
    return {key: jsonable(get_field(self.config, key)) for key in self.columns}


def jsonable(value: Any) -> Any:
  """`value` with ConfigDicts as dicts and tuples as lists (for JSON)."""
  if isinstance(value, ml_collections.ConfigDict):
    value = value.to_dict()
  if isinstance(value, dict):
    return {k: jsonable(v) for k, v in value.items()}
  if isinstance(value, (tuple, list)):
    return [jsonable(v) for v in value]
  return value


def _dotted(key: str) -> str:
  return key.replace('__', '.')


def get_field(config: ml_collections.ConfigDict, key: str) -> Any:
  """The value at dotted `key`; KeyError naming the key if it does not exist."""
  node = config
  for part in key.split('.'):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      raise UnknownFieldError(key, config)
    node = node[part]
  return node


def set_field(config: ml_collections.ConfigDict, key: str, value: Any) -> None:
  """Sets dotted `key` (which must exist) to `value`.

  Types follow ml_collections' rules (an int may replace a float, a list a
  tuple); a value of another type raises, as `--config.<key>` would.

  Raises:
    UnknownFieldError: (a KeyError) `key` names no field.
    FieldValueError: (a ValueError) the field cannot hold `value`.
  """
  *parents, leaf = key.split('.')
  node = config
  for part in parents:
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      raise UnknownFieldError(key, config)
    node = node[part]
  if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
    raise UnknownFieldError(key, config)
  current = node[leaf]
  if isinstance(current, tuple) and isinstance(value, list):
    value = tuple(value)
  if isinstance(current, ml_collections.ConfigDict) and isinstance(value, dict):
    value = ml_collections.ConfigDict(value)
  try:
    with node.unlocked():
      node[leaf] = value
  except (TypeError, ValueError) as e:
    if isinstance(current, ml_collections.ConfigDict):
      fix = (f'it is a group of fields: set one of them instead, e.g. '
             f'{key}.{next(iter(current.keys()), "<field>")}')
    else:
      unparsed = (isinstance(value, str) and not isinstance(current, str) and
                  not _is_literal(value))
      fix = (f'it holds {_type_name(current)} (now {current!r}), and '
             f'{value!r} is ' + ('text that does not parse as a Python '
                                 'literal' if unparsed else
                                 _type_name(value)) +
             f'; give {_type_name(current)} such as {current!r}')
    raise FieldValueError(key, f'cannot set config field {key!r}: {fix}'
                          ) from e


def apply_overrides(config: ml_collections.ConfigDict,
                    overrides: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """A copy of `config` with `overrides` applied (dotted keys)."""
  config = copy.deepcopy(config)
  for key, value in overrides.items():
    set_field(config, _dotted(key), value)
  return config


def _base_config(base: ConfigSource) -> ml_collections.ConfigDict:
  config = base() if callable(base) else base
  if not isinstance(config, ml_collections.ConfigDict):
    raise TypeError(f'base must be a ConfigDict or return one, got '
                    f'{type(config).__name__}')
  return copy.deepcopy(config)


def check_name(name: str) -> str:
  if not isinstance(name, str) or not _NAME_RE.match(name):
    raise ValueError(
        f'run name {name!r} must start with a letter or digit and use only '
        'letters, digits and _ . , = + - (it becomes a folder name)')
  return name


def run(name: str, base: ConfigSource, *, show: Sequence[str] = (),
        hide: Sequence[str] = ('model.model_name',), **overrides) -> Run:
  """One run: `base` (a ConfigDict or a `get_config`-like function) + overrides.

  Args:
    name: the run's folder name.
    base: the experiment config, or a function returning it (called once).
    show: extra dotted keys the report should show (e.g. fields that differ
      between the bases of a sweep rather than through overrides).
    hide: override keys not worth a table column.
    **overrides: dotted keys (pass them as `**{'model.hidden_dim': 128}`) or
      `model__hidden_dim=128`.
  """
  overrides = {_dotted(k): v for k, v in overrides.items()}
  base_config = _base_config(base)
  try:
    config = apply_overrides(base_config, overrides)
  except UnknownFieldError as e:
    raise UnknownFieldError(e.key, base_config,
                            prefix=f'run {name!r}: ') from None
  except FieldValueError as e:
    raise FieldValueError(e.key, f'run {name!r}: {e}') from e.__cause__
  columns = [k for k in overrides if k not in hide]
  columns += [_dotted(k) for k in show if _dotted(k) not in columns]
  for key in columns:
    try:
      get_field(config, key)  # Raises early for a typo in `show`.
    except UnknownFieldError:
      raise UnknownFieldError(key, config,
                              prefix=f'run {name!r}: show=: ') from None
  config.lock()
  return Run(name=check_name(name), config=config, overrides=overrides,
             columns=tuple(columns))


def format_name(name_format: Union[str, Callable[[Dict[str, Any]], str]],
                point: Mapping[str, Any]) -> str:
  """Formats a run name from a grid point.

  `name_format` is a function of the point, or a string whose `{key}` or
  `{key:spec}` fields name a dotted key of the point or its last component
  when that is unambiguous ('C{hidden_dim}' for 'model.hidden_dim'). Tuples
  are written joined by 'x' ((4, 4) -> '4x4').
  """
  if callable(name_format):
    return name_format(dict(point))
  by_leaf: Dict[str, List[str]] = {}
  for key in point:
    by_leaf.setdefault(key.split('.')[-1], []).append(key)

  def value_of(field: str) -> Any:
    field = _dotted(field)
    if field in point:
      return point[field]
    keys = by_leaf.get(field, [])
    if len(keys) != 1:
      raise KeyError(f'name format field {{{field}}} matches '
                     f'{keys or "no grid key"}; grid keys: {list(point)}')
    return point[keys[0]]

  def replace(match: 're.Match[str]') -> str:
    value = value_of(match.group(1))
    if isinstance(value, (tuple, list)):
      return 'x'.join(format(v, match.group(2) or '') for v in value)
    return format(value, match.group(2) or '')

  return re.sub(r'\{([A-Za-z0-9_.]+)(?::([^{}]*))?\}', replace, name_format)


def grid(base: ConfigSource,
         name_format: Union[str, Callable[[Dict[str, Any]], str]],
         *,
         derived: Optional[Callable[[Dict[str, Any]],
                                    Mapping[str, Any]]] = None,
         show: Sequence[str] = (), **axes: Iterable[Any]) -> List[Run]:
  """The Cartesian product of `axes` (dotted key -> values), one run each.

  Runs come in row-major order of the keyword arguments (the last axis varies
  fastest). `derived(point)` may return further overrides that depend on the
  point (e.g. MLP widths that follow `model.hidden_dim`); the report shows
  them too.
  """
  axes = {_dotted(k): list(v) for k, v in axes.items()}
  if not axes:
    raise ValueError('grid needs at least one axis')
  for key, values in axes.items():
    if not values:
      raise ValueError(f'grid axis {key!r} has no values')
  base_config = _base_config(base)
  runs = []
  for values in itertools.product(*axes.values()):
    point = dict(zip(axes, values))
    overrides = dict(point)
    if derived is not None:
      overrides.update({_dotted(k): v for k, v in derived(dict(point)).items()})
    runs.append(run(format_name(name_format, point), base_config, show=show,
                    **overrides))
  return runs


def check_unique(runs: Sequence[Run]) -> None:
  seen = set()
  for r in runs:
    if r.name in seen:
      raise ValueError(f'duplicate run name {r.name!r} in sweep')
    seen.add(r.name)


# -- loading sweeps and command-line overrides ------------------------------

# The repository holding this package: where `configs/sweeps/` lives.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_MODULE_RE = r'[A-Za-z_][\w.]*'


def split_spec(spec: str) -> Tuple[str, Optional[str]]:
  """'configs/sweeps/x.py:arg' -> ('configs/sweeps/x.py', 'arg'); a path
  that exists as given is never split."""
  if os.path.exists(spec):
    return spec, None
  m = re.match(rf'^(.+?\.py|{_MODULE_RE}):(.*)$', spec)
  if m:
    return m.group(1), m.group(2)
  return spec, None


def resolve_sweep_file(spec: str, root: Optional[str] = REPO
                       ) -> Tuple[str, Optional[str]]:
  """(what to load, note) for `--sweep=spec`.

  A relative file path is looked up in the current directory first, then
  in `root` (the repository root, which holds `configs/sweeps/`), so
  `sweep.py` can be run from anywhere; `note` says so when `root` was used
  (else None). Absolute paths and module names are returned unchanged.
  """
  path, arg = split_spec(spec)
  if os.path.isabs(path) or os.path.exists(path) or not root:
    return spec, None
  candidate = os.path.join(root, path)
  if not os.path.exists(candidate):
    return spec, None
  resolved = candidate if arg is None else f'{candidate}:{arg}'
  return resolved, (f'sweep file {path} is not in the current directory '
                    f'({os.getcwd()}); using {candidate} from the repository')


def shipped_sweeps(root: Optional[str] = REPO) -> List[str]:
  """Paths (relative to `root`) of the sweep files in configs/sweeps/."""
  folder = os.path.join(root or REPO, 'configs', 'sweeps')
  try:
    names = sorted(os.listdir(folder))
  except OSError:
    return []
  return [f'configs/sweeps/{n}' for n in names
          if n.endswith('.py') and not n.startswith('_')]


def _line_in(e: BaseException, path: str) -> Optional[int]:
  """The innermost line of `path` in `e`'s traceback."""
  target = os.path.abspath(path)
  lines = [f.lineno for f in traceback.extract_tb(e.__traceback__)
           if os.path.abspath(f.filename) == target]
  return lines[-1] if lines else None


def _not_found(path: str, root: Optional[str]) -> SweepError:
  where = f'the current directory ({os.getcwd()})'
  if root and not os.path.isabs(path):
    where += f' nor in the repository ({root})'
  shipped = shipped_sweeps(root)
  example = shipped[0] if shipped else 'configs/sweeps/<name>.py'
  listing = f' (shipped: {", ".join(shipped)})' if shipped else ''
  return SweepError(f'sweep file {path} not found in {where}; pass '
                    f'--sweep= the path of a sweep file, e.g. '
                    f'--sweep={example}{listing}')


def _load_module(path: str, root: Optional[str]):
  """The sweep file (by path) or module, errors as SweepError."""
  if os.path.isdir(path):
    raise SweepError(f'sweep file {path} is a folder; pass --sweep= a sweep '
                     'file such as configs/sweeps/patch_size.py')
  if os.path.exists(path):
    module_name = 'sweep_' + re.sub(r'\W', '_', os.path.splitext(
        os.path.basename(path))[0])
    try:
      spec = importlib.util.spec_from_file_location(module_name, path)
      module = importlib.util.module_from_spec(spec)
      spec.loader.exec_module(module)
    except SyntaxError as e:
      if e.filename and os.path.abspath(e.filename) == os.path.abspath(path):
        raise SweepError(f'sweep file {path} has a syntax error at line '
                         f'{e.lineno}: {e.msg}; fix the file') from e
      raise SweepError(f'sweep file {path} failed to load: SyntaxError in '
                       f'{e.filename} line {e.lineno}: {e.msg}') from e
    except Exception as e:  # pylint: disable=broad-except
      line = _line_in(e, path)
      at = f' (line {line})' if line else ''
      raise SweepError(f'sweep file {path} failed to load: '
                       f'{type(e).__name__}: {e}{at}; fix the file') from e
    return module
  if re.fullmatch(_MODULE_RE, path) and not path.endswith('.py'):
    try:
      return importlib.import_module(path)
    except ModuleNotFoundError as e:
      if e.name and path.startswith(e.name):
        raise _not_found(path, root) from e
      raise SweepError(f'sweep module {path} failed to load: {e}') from e
    except Exception as e:  # pylint: disable=broad-except
      raise SweepError(f'sweep module {path} failed to load: '
                       f'{type(e).__name__}: {e}') from e
  raise _not_found(path, root)


def load_sweep(path: str, *, root: Optional[str] = None) -> List[Run]:
  """Runs of a sweep file; `path:arg` passes `arg` to `get_sweep(arg)`.

  `path` is a file (loaded by path, like `config_flags`, so it need not be on
  `sys.path`; it may import `configs` and `mixer` when run from the
  repository root or after `pip install`) or a module name such as
  `configs.sweeps.patch_size`. With `root`, a relative path not found in
  the current directory is looked up there (`resolve_sweep_file`).

  Raises:
    SweepError: one line naming the file (and line) and the fix: missing,
      a syntax error, no get_sweep(), get_sweep() raising (an unknown
      override key, a value the field cannot hold, ...) or returning no
      runs, duplicate names.
  """
  if root:
    path = resolve_sweep_file(path, root)[0]
  path, arg = split_spec(path)
  module = _load_module(path, root)
  get_sweep = getattr(module, 'get_sweep', None)
  if not callable(get_sweep):
    raise SweepError(f'sweep file {path} defines no get_sweep(); add a '
                     'function get_sweep() returning a list of runs '
                     '(mixer.sweeps.run(...) or mixer.sweeps.grid(...))')
  call = 'get_sweep()' if arg is None else f'get_sweep({arg!r})'
  try:
    runs = list(get_sweep() if arg is None else get_sweep(arg))
  except (UnknownFieldError, FieldValueError) as e:
    line = _line_in(e, path)
    at = f', line {line}' if line else ''
    raise SweepError(f'sweep file {path}{at}: {e}; fix the override in the '
                     'sweep file (keys are dotted config fields, e.g. '
                     'model.hidden_dim)') from e
  except Exception as e:  # pylint: disable=broad-except
    line = _line_in(e, path)
    at = f' (line {line})' if line else ''
    raise SweepError(
        f'sweep file {path}: {call} raised {type(e).__name__}: {e}{at}; '
        'fix the sweep file' + (' or the argument after ":"' if arg else '')
    ) from e
  for r in runs:
    if not isinstance(r, Run):
      raise SweepError(f'sweep file {path}: {call} must return '
                       'mixer.sweeps.Run items (from sweeps.run or '
                       f'sweeps.grid), got a {type(r).__name__}')
  if not runs:
    raise SweepError(f'sweep file {path}: {call} returned no runs')
  try:
    check_unique(runs)
  except ValueError as e:
    raise SweepError(f'sweep file {path}: {e}; give every run its own '
                     'name') from e
  return runs


def parse_value(text: str) -> Any:
  """A command-line value: a Python literal when it parses, else the string.

  'true'/'false' (any case) are booleans, so `--set=augment.flip=false` works.
  """
  if text.lower() in ('true', 'false'):
    return text.lower() == 'true'
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
    return text


def parse_assignments(items: Iterable[str],
                      flag: str = '--set') -> Dict[str, Any]:
  """['a.b=1', 'c=x'] -> {'a.b': 1, 'c': 'x'}.

  Raises:
    SweepError: an item without `=` or with an empty key, named as
      `<flag>=<item>`.
  """
  out = {}
  for item in items:
    key, sep, text = str(item).partition('=')
    if not sep or not key.strip():
      raise SweepError(
          f'{flag}={item}: expected key=value with a dotted config field as '
          f'the key, e.g. {flag}=num_train_steps=20 or '
          f'{flag}=model.hidden_dim=32')
    out[_dotted(key.strip())] = parse_value(text.strip())
  return out


def assignment_texts(items: Iterable[str]) -> Dict[str, str]:
  """{dotted key: the item as typed} of `parse_assignments`' items."""
  return {_dotted(str(i).split('=', 1)[0].strip()): str(i) for i in items
          if '=' in str(i)}


def with_overrides(r: Run, overrides: Mapping[str, Any]) -> Run:
  """`r` with global overrides applied on top (not shown as columns).

  Raises:
    UnknownFieldError, FieldValueError: naming the key (see
      `apply_global_overrides` for one line naming the flag).
  """
  if not overrides:
    return r
  config = copy.deepcopy(r.config)
  config.unlock()
  config = apply_overrides(config, overrides)
  config.lock()
  return dataclasses.replace(r, config=config)


def apply_global_overrides(runs: Sequence[Run], overrides: Mapping[str, Any],
                           texts: Optional[Mapping[str, str]] = None,
                           flag: str = '--set') -> List[Run]:
  """`with_overrides` for every run; a bad key or value raises one
  SweepError naming `<flag>=<item as typed>` and the fix."""
  texts = dict(texts or {})
  out = []
  for r in runs:
    try:
      out.append(with_overrides(r, overrides))
    except (UnknownFieldError, FieldValueError) as e:
      key = e.key
      given = texts.get(key) or f'{key}={overrides.get(key)!r}'
      run = f' (run {r.name!r})' if len(runs) > 1 and out else ''
      fix = ('; keys are dotted config fields, e.g. '
             f'{flag}=model.hidden_dim=32' if isinstance(
                 e, UnknownFieldError) else '')
      raise SweepError(f'{flag}={given}{run}: {e}{fix}') from e
  return out


def shown_fields(r: Run, overrides: Mapping[str, Any]) -> Dict[str, Any]:
  """The run's varied fields plus the global overrides' keys, with their
  values in the run's final config (what `--dry_run` prints)."""
  fields = r.fields()
  for key in overrides:
    key = _dotted(key)
    if key not in fields:
      fields[key] = jsonable(get_field(r.config, key))
  return fields
