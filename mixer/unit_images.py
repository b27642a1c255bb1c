"""Hidden units as images (paper §3.5, Fig. 5 and App. D): pure numpy.

What `python -m mixer.visualize` draws, computed here without a model, a
file or a plotting library, so that every rule below is tested on hand-made
weights:

* Token-mixing units. `MixerBlock_i/token_mixing/Dense_0/kernel` is
  [S, D_S]: column u holds the S weights hidden unit u gives the S = gh x gw
  tokens, which lie on the patch grid in row-major order (the model reshapes
  the stem's [gh, gw, C] output to [gh * gw, C]). `token_units` reshapes it
  to D_S images of gh x gw.
* Opposite-phase pairs (`opposite_pairs`): greedy. Among the units not yet
  paired, the two with the most negative Pearson correlation form a pair;
  repeat until fewer than two remain (an odd D_S leaves one unpaired).
  Every exact negative is found: correlation -1 is the minimum, so those
  pairs are taken before any other. Greedy, not an optimal matching: a
  later pair may be less opposite than the optimum would make it, which is
  why each pair's correlation is reported. In a pair, the unit whose
  largest-magnitude weight is positive comes first.
* Spatial frequency (`radial_frequency`): the energy-weighted mean radial
  frequency of the unit's 2-D FFT, sum_k |F(k)|^2 |k| / sum_k |F(k)|^2, with
  k in cycles per patch along each axis (numpy's `fftfreq`, so 0 for a
  constant unit, 0.5 for the Nyquist frequency along one axis, at most
  sqrt(0.5)). Pairs are sorted by the mean of their two units' frequencies
  (equal for exact negatives), lowest first, as in Fig. 5.
* Local or global (`spatial_extent`): the radius of gyration of the unit's
  energy w^2 on the grid (about its energy-weighted centroid), divided by
  that of a uniform unit on the same grid. 0 for a single token, about 1
  for a unit spread over the whole image (a sinusoid, or i.i.d. noise such as
  the initialisation). A unit is local when its extent is below
  `LOCAL_EXTENT` (0.5): its energy lies within half the radius of a whole-
  image unit; global otherwise. An all-zero unit has no extent (NaN) and is
  neither.
* Stem units (`stem_units`): `stem/kernel` [ph, pw, c, C] gives C patches of
  ph x pw x c, each mapped to [0, 1] by its own min and max (App. D's
  rendering).

Layout (`mosaic`) places equally sized tiles in rows, with a wider gap
between groups (the pairs), and `diverging_rgb` colours token-mixing
weights (blue negative, white zero, red positive).
"""

import math
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

LOCAL_EXTENT = 0.5  # spatial_extent below this: a local unit.
OPPOSITE_CORRELATION = -0.5  # A pair at or below this: opposite phase.

# Diverging colours (RGB in [0, 1]) of -1, 0 and +1.
_NEGATIVE = np.array([0.13, 0.40, 0.67])
_ZERO = np.array([1.0, 1.0, 1.0])
_POSITIVE = np.array([0.70, 0.09, 0.17])


def token_units(kernel: Any, grid: Tuple[int, int]) -> np.ndarray:
  """[D_S, gh, gw] from a token-mixing `Dense_0/kernel` [S, D_S]."""
  kernel = np.asarray(kernel, np.float64)
  gh, gw = (int(g) for g in grid)
  if kernel.ndim != 2 or kernel.shape[0] != gh * gw:
    raise ValueError(f'a token-mixing kernel must be [S, D_S] with S = '
                     f'{gh} x {gw} = {gh * gw} tokens, got shape '
                     f'{tuple(kernel.shape)}')
  return kernel.T.reshape(kernel.shape[1], gh, gw)


def correlations(units: np.ndarray) -> np.ndarray:
  """[N, N] Pearson correlations of the units' weights (0 where a unit is
  constant)."""
  flat = np.asarray(units, np.float64).reshape(len(units), -1)
  flat = flat - flat.mean(axis=1, keepdims=True)
  norm = np.linalg.norm(flat, axis=1)
  safe = np.where(norm > 0, norm, 1.0)
  unit = flat / safe[:, None]
  corr = unit @ unit.T
  corr[norm == 0, :] = 0.0
  corr[:, norm == 0] = 0.0
  return np.clip(corr, -1.0, 1.0)


def _positive_first(units: np.ndarray, i: int, j: int) -> Tuple[int, int]:
  flat = units[i].reshape(-1)
  return (i, j) if flat[np.argmax(np.abs(flat))] >= 0 else (j, i)


def opposite_pairs(units: np.ndarray
                   ) -> Tuple[List[Tuple[int, int]], List[float], List[int]]:
  """(pairs, their correlations, unpaired units): the greedy pairing of the
  module docstring, pairs in the order they were formed."""
  units = np.asarray(units, np.float64)
  n = len(units)
  corr = correlations(units)
  rows, cols = np.triu_indices(n, k=1)
  order = np.lexsort((cols, rows, corr[rows, cols]))  # Most negative first.
  free = np.ones(n, bool)
  pairs, values = [], []
  for k in order:
    i, j = int(rows[k]), int(cols[k])
    if free[i] and free[j]:
      free[i] = free[j] = False
      pairs.append(_positive_first(units, i, j))
      values.append(float(corr[i, j]))
  return pairs, values, [int(i) for i in np.flatnonzero(free)]


def radial_frequency(units: np.ndarray) -> np.ndarray:
  """[N] energy-weighted mean radial frequency, cycles per patch (module
  docstring); 0 for an all-zero unit."""
  units = np.asarray(units, np.float64)
  gh, gw = units.shape[1:3]
  power = np.abs(np.fft.fft2(units, axes=(1, 2))) ** 2
  fy = np.fft.fftfreq(gh)[:, None]
  fx = np.fft.fftfreq(gw)[None, :]
  radius = np.sqrt(fy ** 2 + fx ** 2)
  total = power.sum(axis=(1, 2))
  weighted = (power * radius).sum(axis=(1, 2))
  return np.where(total > 0, weighted / np.where(total > 0, total, 1.0), 0.0)


def spatial_extent(units: np.ndarray) -> np.ndarray:
  """[N] radius of gyration of w^2 over that of a uniform unit (module
  docstring); NaN for an all-zero unit."""
  units = np.asarray(units, np.float64)
  gh, gw = units.shape[1:3]
  y, x = np.meshgrid(np.arange(gh), np.arange(gw), indexing='ij')
  energy = units ** 2
  total = energy.sum(axis=(1, 2))
  e = energy / np.where(total > 0, total, 1.0)[:, None, None]
  cy = (e * y).sum(axis=(1, 2))
  cx = (e * x).sum(axis=(1, 2))
  spread = (e * ((y[None] - cy[:, None, None]) ** 2 +
                 (x[None] - cx[:, None, None]) ** 2)).sum(axis=(1, 2))
  uniform = math.sqrt((gh * gh - 1) / 12 + (gw * gw - 1) / 12)
  if uniform == 0:  # A 1 x 1 grid: every unit is the whole image.
    return np.where(total > 0, 1.0, np.nan)
  return np.where(total > 0, np.sqrt(spread) / uniform, np.nan)


def sorted_pairs(pairs: Sequence[Tuple[int, int]], frequency: np.ndarray
                 ) -> List[int]:
  """Indices into `pairs`, lowest mean frequency first (ties: pair order)."""
  means = [(frequency[i] + frequency[j]) / 2 for i, j in pairs]
  return sorted(range(len(pairs)), key=lambda p: (means[p], p))


def analyse(units: np.ndarray) -> Dict[str, Any]:
  """Everything the figure and its numbers need for one set of units.

  Returns a dict: `order` (unit indices in drawing order: the sorted pairs,
  each positive-first, then any unpaired unit), `pairs` ([i, j,
  correlation, mean frequency] in drawing order), `unpaired`, `frequency`,
  `extent` (per unit), and the counts `units`, `local`, `global` (an
  all-zero unit is neither),
  `opposite_pairs` (correlation <= OPPOSITE_CORRELATION).
  """
  units = np.asarray(units, np.float64)
  pairs, corr, unpaired = opposite_pairs(units)
  frequency = radial_frequency(units)
  extent = spatial_extent(units)
  ranked = sorted_pairs(pairs, frequency)
  order = [u for p in ranked for u in pairs[p]] + list(unpaired)
  local = int((extent < LOCAL_EXTENT).sum())  # NaN (a zero unit): neither.
  return {
      'order': order,
      'pairs': [[pairs[p][0], pairs[p][1], corr[p],
                 float((frequency[pairs[p][0]] + frequency[pairs[p][1]]) / 2)]
                for p in ranked],
      'unpaired': list(unpaired),
      'frequency': frequency,
      'extent': extent,
      'units': len(units),
      'local': local,
      'global': int((extent >= LOCAL_EXTENT).sum()),
      'opposite_pairs': int(sum(c <= OPPOSITE_CORRELATION for c in corr)),
  }


def paired_tiles(units: np.ndarray, order: Sequence[int]) -> np.ndarray:
  """[N, gh, gw] in [-1, 1]: the units in `order`, each consecutive two
  (a pair) divided by their common largest |weight|, so that both share one
  colour scale with 0 in the middle (a last odd unit by its own)."""
  units = np.asarray(units, np.float64)[list(order)]
  out = np.zeros_like(units)
  for start in range(0, len(units), 2):
    group = units[start:start + 2]
    peak = np.abs(group).max()
    out[start:start + 2] = group / peak if peak > 0 else group
  return out


def stem_units(kernel: Any) -> np.ndarray:
  """[C, ph, pw, c] in [0, 1] from `stem/kernel` [ph, pw, c, C], each unit
  scaled by its own min and max (a constant unit is 0.5)."""
  kernel = np.asarray(kernel, np.float64)
  if kernel.ndim != 4:
    raise ValueError(f'stem/kernel must be [ph, pw, channels, C], got shape '
                     f'{tuple(kernel.shape)}')
  units = np.moveaxis(kernel, 3, 0)
  low = units.min(axis=(1, 2, 3), keepdims=True)
  span = units.max(axis=(1, 2, 3), keepdims=True) - low
  return np.where(span > 0, (units - low) / np.where(span > 0, span, 1.0),
                  0.5)


def upscale(tiles: np.ndarray, factor: int) -> np.ndarray:
  """Each weight drawn as a factor x factor block of pixels."""
  factor = int(factor)
  if factor < 1:
    raise ValueError(f'the scale must be a positive integer, got {factor}')
  return np.repeat(np.repeat(tiles, factor, axis=1), factor, axis=2)


def mosaic_shape(n: int, tile: Tuple[int, int], columns: int, gap: int = 1,
                 group: int = 1, group_gap: int = 1) -> Tuple[int, int]:
  """(height, width) `mosaic` gives for `n` tiles of `tile` (h, w)."""
  columns = max(1, min(int(columns), n))
  rows = -(-n // columns)
  h, w = tile
  width = columns * w + (columns - 1) * gap + (
      (columns - 1) // group) * (group_gap - gap)
  return rows * h + (rows - 1) * group_gap, width


def mosaic(tiles: np.ndarray, columns: int, gap: int = 1, group: int = 1,
           group_gap: int = 1, fill: float = np.nan) -> np.ndarray:
  """Tiles [N, h, w(, c)] placed row by row, `columns` per row: `gap`
  pixels between neighbours, `group_gap` between groups of `group` columns
  and between rows; `fill` elsewhere."""
  tiles = np.asarray(tiles, np.float64)
  n, h, w = tiles.shape[:3]
  columns = max(1, min(int(columns), n))
  height, width = mosaic_shape(n, (h, w), columns, gap, group, group_gap)
  out = np.full((height, width) + tiles.shape[3:], fill)
  for k, tile in enumerate(tiles):
    r, c = divmod(k, columns)
    top = r * (h + group_gap)
    left = c * (w + gap) + (c // group) * (group_gap - gap)
    out[top:top + h, left:left + w] = tile
  return out


def pair_columns(n: int) -> int:
  """Tiles per row for `n` paired tiles: an even number near sqrt(n), so a
  pair never straddles two rows and the figure is about square."""
  return max(2, 2 * round(math.sqrt(max(n, 1)) / 2))


def diverging_rgb(values: np.ndarray) -> np.ndarray:
  """uint8 RGB of values in [-1, 1]: blue (-1), white (0), red (+1); NaN
  (the background) white."""
  v = np.clip(np.nan_to_num(np.asarray(values, np.float64), nan=0.0), -1, 1)
  end = np.where(v[..., None] < 0, _NEGATIVE, _POSITIVE)
  rgb = _ZERO + np.abs(v)[..., None] * (end - _ZERO)
  return np.round(rgb * 255).astype(np.uint8)


def to_uint8(values: np.ndarray) -> np.ndarray:
  """uint8 of values in [0, 1]; NaN (the background) white."""
  v = np.clip(np.nan_to_num(np.asarray(values, np.float64), nan=1.0), 0, 1)
  return np.round(v * 255).astype(np.uint8)
