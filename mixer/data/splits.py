"""tfds-style split strings: 'train', 'train[:90%]', 'train[-5000:]', 'train+test'.

Owns parsing and the absolute bounds of a slice (rounded as tfds rounds, so a
local copy and tfds select the same examples). Must not read data.
"""

import dataclasses
import re
from typing import List, Optional, Tuple

from mixer.data.base import DataError

_SUB_SPLIT_RE = re.compile(r'^(?P<name>[\w-]+)(\[(?P<sel>[^\]]*)\])?$')
_BOUND_RE = re.compile(r'^(?P<val>-?\d+(\.\d*)?)?(?P<unit>%)?$')


@dataclasses.dataclass(frozen=True)
class SubSplit:
  name: str
  start: Optional[float] = None
  stop: Optional[float] = None
  percent: bool = False

  def bounds(self, n: int, spec: str) -> Tuple[int, int]:
    """Absolute [start, stop) for a split of n examples, as tfds computes it.

    Percent boundaries round to the closest example (tfds' default
    `rounding='closest'`), so 'train[:90%]' holds the same examples whether
    the data come from tfds or from a local copy.
    """
    def absolute(value, default):
      if value is None:
        return default
      if self.percent:
        value = int(round(value * n / 100.0))
      if abs(value) > n:
        raise DataError(f'split {spec!r}: boundary {value} is outside the '
                        f'{n} examples of {self.name!r}')
      return n + value if value < 0 else value

    start, stop = absolute(self.start, 0), absolute(self.stop, n)
    return start, max(start, stop)


def parse_split(spec: str) -> List[SubSplit]:
  """Parses tfds-style split strings (no 'shard' units, no 'all')."""
  parts = []
  for sub in re.split(r'\s*\+\s*', str(spec).strip()):
    m = _SUB_SPLIT_RE.match(sub)
    if not m:
      raise DataError(f'unrecognised split {spec!r}; expected e.g. "train", '
                      '"train[:90%]", "train[45000:]" or "train+test"')
    sel = m.group('sel')
    if sel is None:
      parts.append(SubSplit(m.group('name')))
      continue
    bounds = sel.split(':')
    matches = [_BOUND_RE.match(b.strip()) for b in bounds]
    if len(bounds) != 2 or not all(matches):
      raise DataError(f'unrecognised split {spec!r}: only slices like '
                      '[a:b] of example counts or percents are supported')
    percent = any(mm.group('unit') for mm in matches)
    values = []
    for mm in matches:
      val = mm.group('val')
      if val is None:
        values.append(None)
      elif percent:
        values.append(float(val))
      elif '.' in val:
        raise DataError(f'split {spec!r}: fractional example counts need %')
      else:
        values.append(int(val))
    parts.append(SubSplit(m.group('name'), values[0], values[1], percent))
  return parts

