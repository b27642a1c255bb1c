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
"""

import ast
import copy
import dataclasses
import importlib
import importlib.util
import itertools
import os
import re
from typing import (Any, Callable, Dict, Iterable, List, Mapping, Optional,
                    Sequence, Tuple, Union)

import ml_collections

ConfigSource = Union[ml_collections.ConfigDict,
                     Callable[[], ml_collections.ConfigDict]]

# Run names become folder names: keep them portable.
_NAME_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.,=+-]*$')


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
      raise KeyError(f'unknown config field {key!r}')
    node = node[part]
  return node


def set_field(config: ml_collections.ConfigDict, key: str, value: Any) -> None:
  """Sets dotted `key` (which must exist) to `value`.

  Types follow ml_collections' rules (an int may replace a float, a list a
  tuple); a value of another type raises, as `--config.<key>` would.
  """
  *parents, leaf = key.split('.')
  node = config
  for part in parents:
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      raise KeyError(f'unknown config field {key!r}')
    node = node[part]
  if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
    raise KeyError(f'unknown config field {key!r}')
  current = node[leaf]
  if isinstance(current, tuple) and isinstance(value, list):
    value = tuple(value)
  if isinstance(current, ml_collections.ConfigDict) and isinstance(value, dict):
    value = ml_collections.ConfigDict(value)
  with node.unlocked():
    node[leaf] = value


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
  config = apply_overrides(_base_config(base), overrides)
  columns = [k for k in overrides if k not in hide]
  columns += [_dotted(k) for k in show if _dotted(k) not in columns]
  for key in columns:
    get_field(config, key)  # Raises early for a typo in `show`.
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


def load_sweep(path: str) -> List[Run]:
  """Runs of a sweep file; `path:arg` passes `arg` to `get_sweep(arg)`.

  `path` is a file (loaded by path, like `config_flags`, so it need not be on
  `sys.path`; it may import `configs` and `mixer` when run from the
  repository root or after `pip install`) or a module name such as
  `configs.sweeps.patch_size`.
  """
  arg = None
  if not os.path.exists(path):
    m = re.match(r'^(.+?\.py|[A-Za-z_][\w.]*):(.*)$', path)
    if m:
      path, arg = m.groups()
  if os.path.exists(path):
    module_name = 'sweep_' + re.sub(r'\W', '_', os.path.splitext(
        os.path.basename(path))[0])
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
  elif re.fullmatch(r'[A-Za-z_][\w.]*', path) and not path.endswith('.py'):
    module = importlib.import_module(path)
  else:
    raise FileNotFoundError(f'sweep file {path!r} not found')
  if not hasattr(module, 'get_sweep'):
    raise AttributeError(f'{path} defines no get_sweep()')
  runs = module.get_sweep() if arg is None else module.get_sweep(arg)
  runs = list(runs)
  for r in runs:
    if not isinstance(r, Run):
      raise TypeError(f'{path}: get_sweep() must return mixer.sweeps.Run '
                      f'items, got {type(r).__name__}')
  if not runs:
    raise ValueError(f'{path}: get_sweep() returned no runs')
  check_unique(runs)
  return runs


def parse_value(text: str) -> Any:
  """A command-line value: a Python literal when it parses, else the string.

  'true'/'false' (any case) are booleans, so `--set=augment.flip=false` works.
  """
  if text.lower() in ('true', 'false'):
    return text.lower() == 'true'
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def parse_assignments(items: Iterable[str]) -> Dict[str, Any]:
  """['a.b=1', 'c=x'] -> {'a.b': 1, 'c': 'x'}."""
  out = {}
  for item in items:
    if '=' not in item:
      raise ValueError(f'expected key=value, got {item!r}')
    key, text = item.split('=', 1)
    out[_dotted(key.strip())] = parse_value(text.strip())
  return out


def with_overrides(r: Run, overrides: Mapping[str, Any]) -> Run:
  """`r` with global overrides applied on top (not shown as columns)."""
  if not overrides:
    return r
  config = copy.deepcopy(r.config)
  config.unlock()
  config = apply_overrides(config, overrides)
  config.lock()
  return dataclasses.replace(r, config=config)
