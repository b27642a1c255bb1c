r"""What the token-mixing MLPs learn (paper §3.5, Fig. 5): `python -m mixer.visualize`.

    python -m mixer.visualize --checkpoint=workdirs/cifar10_cpu --out=DIR
    python -m mixer.visualize --config=configs/mixer_b16.py \
        --checkpoint=Mixer-B_16.npz --out=DIR

`--checkpoint` is one of this project's runs (a workdir, its `checkpoints/`
folder or one step folder: `--config` defaults to the run's `config.json`)
or an official `.npz` (`--config` required: the config of its model, e.g.
`configs/mixer_b16.py` for both Mixer-B_16 files; the head is not read, so
any number of classes fits). Loading is `mixer.pretrained.load_for_model`,
which checks every other parameter against the config's model.

Writes in `--out` (created if needed):

* `token_mixing_block_<i>.png` for the first `--blocks` blocks (default 3,
  as Fig. 5): every hidden unit of `MixerBlock_<i>/token_mixing/Dense_0`
  as an image on the gh x gw patch grid (blue negative, white zero, red
  positive), next to its most opposite-phase unit, the pairs sorted by
  spatial frequency, lowest first, row by row; `token_mixing.png` the
  blocks side by side. Pairing, frequency and the local/global rule are
  defined in `mixer.unit_images`.
* `stem.png`: the stem's C linear projection units as ph x pw patches (RGB,
  or grey for one channel), each scaled by its own min and max (App. D).
* With `--minus_init` (runs only), the same figures of what training
  changed: the run's weights minus its initial weights, drawn again from
  its `config.json` and seed exactly as `train.py` draws them
  (`initial_params`). After a short run the weights are still mostly their
  random initialisation, which hides what was learned (docs/visualize.md).
* `units.json`: per block the pairs (unit, unit, correlation, frequency in
  cycles per patch), every unit's frequency and extent, and the counts
  printed on the console, beside the same counts for an i.i.d. Gaussian
  matrix of the same shape (what an untrained layer looks like).

Errors follow the CLI contract of `mixer.cli`: one `error:` line, exit 1.
"""

if __name__ == '__main__':
  # The CLI contract: imported before JAX (quiet C++ start-up logging).
  from mixer import cli  # pylint: disable=g-import-not-at-top

import json
import os
from typing import Any, Dict, List, Optional

from absl import flags
from absl import logging
import jax
from ml_collections import config_flags
import numpy as np
import optax

from mixer import models
from mixer import pretrained
from mixer import step as step_lib
from mixer import unit_images as ui
from mixer import workdir as workdir_lib
from mixer.params import unfreeze
from mixer.predict import resolve_config

DEFAULT_BLOCKS = 3  # Fig. 5 shows the first three token-mixing MLPs.
TILE_PIXELS = 48  # Auto --scale: a unit's image about this many pixels wide.
PAIR_GAP, GROUP_GAP, PANEL_GAP = 2, 8, 24  # Pixels between tiles / panels.
BASELINE_SEED = 0

_CONFIG = None
_CHECKPOINT = None
_OUT = None
_BLOCKS = None
_SCALE = None
_MINUS_INIT = None


def define_flags():
  """Defines the command-line flags (only when run as a program, so that
  importing this module next to other CLIs never redefines a flag)."""
  global _CONFIG, _CHECKPOINT, _OUT, _BLOCKS, _SCALE, _MINUS_INIT
  _CONFIG = config_flags.DEFINE_config_file(
      'config', None, 'Config of the checkpoint\'s model (default for a '
      'run: its config.json; required for an .npz).', lock_config=False)
  _CHECKPOINT = flags.DEFINE_string(
      'checkpoint', None, 'Official .npz file or a run (workdir, its '
      'checkpoints/ folder or one step folder).')
  _OUT = flags.DEFINE_string('out', None, 'Folder the figures are written '
                             'to (created if needed).')
  _BLOCKS = flags.DEFINE_integer(
      'blocks', DEFAULT_BLOCKS, 'How many token-mixing MLPs to draw, from '
      'the first (default 3, as the paper\'s Fig. 5; at most the model\'s).')
  _SCALE = flags.DEFINE_integer(
      'scale', 0, 'Pixels per weight (0: about 48 pixels per unit).')
  _MINUS_INIT = flags.DEFINE_bool(
      'minus_init', False, 'Draw what training changed: the run\'s weights '
      'minus its initial weights (from its config.json and seed; runs only).')


def grid_of(config) -> tuple:
  """(gh, gw) token grid and (ph, pw) patch of `config`'s model."""
  h, w, _ = models.input_shape(config)
  ph, pw = models.patch_hw(config.model.patches)
  return (h // ph, w // pw), (ph, pw)


def initial_params(checkpoint: str) -> Dict[str, Any]:
  """The initial parameters (numpy, without the head) of the run
  `checkpoint` belongs to: `mixer.step.create_train_state` with the run's
  `config.json` and `jax.random.PRNGKey(config.seed)`, as `train.py`.

  Raises:
    ValueError: one line, for an `.npz` or a folder without `config.json`
      (no known initialisation) or a run that started from a checkpoint.
  """
  run = workdir_lib.run_config(checkpoint)
  if run is None:
    pretrained.check_checkpoint(checkpoint)
    raise ValueError(f'--minus_init needs one of this project\'s runs: '
                     f'{checkpoint} has no config.json beside it, so its '
                     'initial weights are unknown; pass the run\'s workdir')
  if run.get('init_checkpoint'):
    raise ValueError(f'--minus_init: the run of {checkpoint} started from '
                     f'the checkpoint {run.init_checkpoint}, not from a '
                     'random initialisation; draw it without --minus_init')
  model = models.build_model(run.model)
  state = step_lib.create_train_state(run, model, optax.identity(),
                                      jax.random.PRNGKey(run.seed),
                                      load_init_checkpoint=False)
  params = jax.tree_util.tree_map(np.asarray, unfreeze(state.params))
  return {k: v for k, v in params.items() if k != 'head'}


def minus(params: Dict[str, Any], init: Dict[str, Any]) -> Dict[str, Any]:
  """`params - init`, leaf by leaf (float64)."""
  return jax.tree_util.tree_map(
      lambda a, b: np.asarray(a, np.float64) - np.asarray(b, np.float64),
      unfreeze(params), {k: init[k] for k in params})


def init_cosines(params: Dict[str, Any], init: Dict[str, Any]
                 ) -> Dict[str, float]:
  """{'stem': c, 'MixerBlock_<i>': c}: the cosine between the trained and
  the initial stem kernel / token-mixing `Dense_0` kernel (1: training has
  not moved them; about 0 once the initialisation is forgotten)."""
  def cosine(a, b):
    a, b = (np.asarray(x, np.float64).reshape(-1) for x in (a, b))
    return round(float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))), 4)
  out = {'stem': cosine(params['stem']['kernel'], init['stem']['kernel'])}
  for k in sorted((k for k in params if k.startswith('MixerBlock_')),
                  key=lambda k: int(k.split('_')[1])):
    kernel = lambda p: p[k]['token_mixing']['Dense_0']['kernel']
    out[k] = cosine(kernel(params), kernel(init))
  return out


def _scale(scale: int, size) -> int:
  if scale < 0:
    raise ValueError(f'--scale must be >= 0 (0: automatic), got {scale}')
  return scale or max(1, round(TILE_PIXELS / max(size)))


def _counts(result: Dict[str, Any]) -> Dict[str, Any]:
  counts = {k: result[k] for k in ('units', 'local', 'global',
                                   'opposite_pairs')}
  counts['median_frequency'] = round(float(np.median(result['frequency'])),
                                     4)
  return counts


def token_mixing_figure(units: np.ndarray, result: Dict[str, Any],
                        scale: int) -> np.ndarray:
  """uint8 RGB [H, W, 3] of one block's units in `result['order']`."""
  tiles = ui.upscale(ui.paired_tiles(units, result['order']), scale)
  grid = ui.mosaic(tiles, ui.pair_columns(len(tiles)), gap=PAIR_GAP, group=2,
                   group_gap=GROUP_GAP)
  return ui.diverging_rgb(grid)


def stem_figure(kernel: Any, scale: int) -> np.ndarray:
  """uint8 [H, W, 3] (or [H, W] for one channel) of the stem's units."""
  tiles = ui.stem_units(kernel)
  if tiles.shape[-1] not in (1, 3):
    raise ValueError(f'stem/kernel has {tiles.shape[-1]} input channels: '
                     'only RGB (3) or grey (1) patches can be drawn')
  tiles = ui.upscale(tiles, scale)
  if tiles.shape[-1] == 1:
    tiles = tiles[..., 0]
  columns = int(np.ceil(np.sqrt(len(tiles))))
  return ui.to_uint8(ui.mosaic(tiles, columns, gap=PAIR_GAP, group=1,
                               group_gap=PAIR_GAP))


def side_by_side(images: List[np.ndarray]) -> np.ndarray:
  """RGB images of equal height in a row, PANEL_GAP white pixels apart."""
  height = max(i.shape[0] for i in images)
  parts = []
  for k, image in enumerate(images):
    pad = np.full((height,) + image.shape[1:], 255, np.uint8)
    pad[:image.shape[0]] = image
    parts.append(pad)
    if k + 1 < len(images):
      parts.append(np.full((height, PANEL_GAP, 3), 255, np.uint8))
  return np.concatenate(parts, axis=1)


def _save_png(image: np.ndarray, path: str) -> None:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  Image.fromarray(image).save(path)


def _summary(result: Dict[str, Any]) -> Dict[str, Any]:
  return dict(
      _counts(result),
      pairs=[[int(i), int(j), round(float(r), 4), round(float(f), 4)]
             for i, j, r, f in result['pairs']],
      unpaired=[int(u) for u in result['unpaired']],
      frequency=[round(float(f), 4) for f in result['frequency']],
      extent=[None if np.isnan(e) else round(float(e), 4)
              for e in result['extent']])  # Strict JSON: no NaN.


def visualize(params: Dict[str, Any], grid, patch, out: str,
              blocks: Optional[int] = None, scale: int = 0,
              source: str = '', minus_init: bool = False,
              init_cosine: Optional[Dict[str, float]] = None
              ) -> Dict[str, Any]:
  """Writes the figures and `units.json` of `params` in `out`; returns what
  `units.json` holds. `blocks` None: the first DEFAULT_BLOCKS (or all, if
  fewer); a number larger than the model's is an error. `minus_init` and
  `init_cosine` (`init_cosines`) are recorded as given."""
  available = sorted(int(k.split('_')[1]) for k in params
                     if k.startswith('MixerBlock_'))
  if blocks is None:
    blocks = min(DEFAULT_BLOCKS, len(available))
  if blocks < 1 or blocks > len(available):
    raise ValueError(f'--blocks={blocks}, but the model has '
                     f'{len(available)} blocks: give 1 to {len(available)}')
  scale_tokens = _scale(scale, grid)
  os.makedirs(out, exist_ok=True)
  panels, files, report = [], [], {
      'checkpoint': source, 'minus_init': bool(minus_init),
      'init_cosine': init_cosine,
      'grid': list(grid), 'patch': list(patch),
      'local_extent': ui.LOCAL_EXTENT,
      'opposite_correlation': ui.OPPOSITE_CORRELATION, 'blocks': []}
  for b in available[:blocks]:
    kernel = params[f'MixerBlock_{b}']['token_mixing']['Dense_0']['kernel']
    units = ui.token_units(kernel, grid)
    result = ui.analyse(units)
    baseline = ui.analyse(ui.token_units(np.random.default_rng(
        BASELINE_SEED).standard_normal(np.shape(kernel)), grid))
    panel = token_mixing_figure(units, result, scale_tokens)
    panels.append(panel)
    path = os.path.join(out, f'token_mixing_block_{b}.png')
    _save_png(panel, path)
    files.append(path)
    report['blocks'].append(dict(block=b, **_summary(result),
                                 gaussian=_counts(baseline)))
  path = os.path.join(out, 'token_mixing.png')
  _save_png(side_by_side(panels), path)
  files.insert(0, path)
  stem = np.asarray(params['stem']['kernel'])
  path = os.path.join(out, 'stem.png')
  _save_png(stem_figure(stem, _scale(scale, stem.shape[:2])), path)
  files.append(path)
  report['stem'] = {'units': int(stem.shape[3]),
                    'patch': [int(s) for s in stem.shape[:3]]}
  path = os.path.join(out, 'units.json')
  files.append(path)
  report['files'] = [os.path.basename(f) for f in files]
  with open(path, 'w') as f:
    json.dump(report, f, indent=1)
  return report


def format_report(report: Dict[str, Any], out: str) -> str:
  """The console lines: one row of counts per block, then the files."""
  gh, gw = report['grid']
  ph, pw = report['patch']
  what = ' minus its initial weights' if report['minus_init'] else ''
  lines = [f'Token-mixing units of {report["checkpoint"]}{what} ({gh} x {gw} '
           f'tokens of {ph} x {pw} pixels)',
           'pairs: greedy, most negative correlation first; opposite: r <= '
           f'{ui.OPPOSITE_CORRELATION}; local: extent < {ui.LOCAL_EXTENT}; '
           'frequency in cycles per patch',
           f'{"checkpoint":^50} | i.i.d. Gaussian, same shape',
           'block  units  local  global  opposite  median freq | local  '
           'opposite  median freq']
  for b in report['blocks']:
    g = b['gaussian']
    lines.append(f'{b["block"]:>5} {b["units"]:>6} {b["local"]:>6} '
                 f'{b["global"]:>7} {b["opposite_pairs"]:>9} '
                 f'{b["median_frequency"]:>12.3f} | {g["local"]:>5} '
                 f'{g["opposite_pairs"]:>9} {g["median_frequency"]:>12.3f}')
  s = report['stem']
  if report.get('init_cosine'):
    lines.append('cosine of the trained and the initial kernels: ' +
                 ', '.join(f'{k} {v:.3f}'
                           for k, v in report['init_cosine'].items()))
  lines.append(f'stem: {s["units"]} units of '
               f'{" x ".join(map(str, s["patch"]))}')
  lines.append(f'wrote {", ".join(report["files"])} in {out}')
  return '\n'.join(lines)


def main(argv):
  from absl import app  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  if not _CHECKPOINT.value:
    raise ValueError('--checkpoint is required: ' + pretrained.EXPECTED)
  if not _OUT.value:
    raise ValueError('--out is required: the folder the figures are '
                     'written to')
  config, warning = resolve_config(_CONFIG.value, _CHECKPOINT.value)
  if warning:
    cli.warn(warning)
  blocks = _BLOCKS.value if flags.FLAGS['blocks'].present else None
  _scale(_SCALE.value, (1, 1))  # A bad --scale before the load.
  _, params = pretrained.load_for_model(config, _CHECKPOINT.value,
                                        head=False)
  cosines = None
  if _MINUS_INIT.value:
    init = initial_params(_CHECKPOINT.value)
    cosines = init_cosines(params, init)
    params = minus(params, init)
  grid, patch = grid_of(config)
  report = visualize(params, grid, patch, _OUT.value, blocks, _SCALE.value,
                     source=_CHECKPOINT.value, minus_init=_MINUS_INIT.value,
                     init_cosine=cosines)
  print(format_report(report, _OUT.value), flush=True)


if __name__ == '__main__':
  define_flags()
  cli.run(main)
