"""`python -m mixer.visualize` and `mixer.unit_images`: the paper's Fig. 5.

Pairing and frequency order on hand-made units (sinusoids of known
frequency, each with its exact negative), the locality measure, the shapes
of the drawn grids, and the CLI end to end on a synthetic file in the
official B/16 layout (14 x 14 tokens, 768 channels, D_S = 384; only the
depth and D_C shrunk, to keep it cheap).
"""

import json
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from configs import mixer_b16
from mixer import checkpoints
from mixer import models
from mixer import pretrained
from mixer import unit_images as ui
from mixer import visualize

REPO = pathlib.Path(__file__).resolve().parents[1]

# (ky, kx) cycles over an 8 x 8 grid, and a phase: cos(2 pi (ky y + kx x) / 8
# + phase). Radial frequency sqrt(ky^2 + kx^2) / 8 cycles per patch (the
# Nyquist (4, 4) one: sqrt(0.5)).
SINUSOIDS = [((2, 3), 0.1), ((0, 1), 0.3), ((4, 4), 0.0), ((1, 1), 1.0),
             ((3, 0), 1.7), ((0, 2), 2.0), ((1, 3), 2.5), ((2, 1), 0.5)]


def sinusoid_units(grid=8):
  """16 units: SINUSOIDS[k] is unit 2k, its exact negative unit 2k + 1."""
  y, x = np.meshgrid(np.arange(grid), np.arange(grid), indexing='ij')
  units = []
  for (ky, kx), phase in SINUSOIDS:
    u = np.cos(2 * np.pi * (ky * y + kx * x) / grid + phase)
    units += [u, -u]
  return np.array(units)


def test_pairing_finds_exact_negatives_and_sorts_by_frequency():
  units = sinusoid_units()
  perm = np.random.default_rng(0).permutation(len(units))
  result = ui.analyse(units[perm])  # Shuffled: pairs are not neighbours.
  pairs = [(int(perm[i]), int(perm[j])) for i, j, _, _ in result['pairs']]
  assert sorted(tuple(sorted(p)) for p in pairs) == [
      (2 * k, 2 * k + 1) for k in range(len(SINUSOIDS))]
  np.testing.assert_allclose([p[2] for p in result['pairs']], -1.0,
                             atol=1e-12)
  assert result['opposite_pairs'] == 8 and result['unpaired'] == []
  # Ordered by the known frequencies, lowest first.
  known = [np.hypot(ky, kx) / 8 for (ky, kx), _ in SINUSOIDS]
  by_pair = [known[min(p) // 2] for p in pairs]
  np.testing.assert_allclose([p[3] for p in result['pairs']], by_pair,
                             atol=1e-12)
  assert by_pair == sorted(known)
  np.testing.assert_allclose(ui.radial_frequency(units), np.repeat(known, 2),
                             atol=1e-12)
  # Drawing order: the sorted pairs, the unit whose largest weight is
  # positive first.
  order = result['order']
  assert [perm[u] for u in order] == [u for p in pairs for u in p]
  for first in order[::2]:
    flat = units[perm[first]].reshape(-1)
    assert flat[np.argmax(np.abs(flat))] > 0


def test_pairing_is_greedy_and_leaves_an_odd_unit():
  rng = np.random.default_rng(1)
  a = rng.standard_normal((6, 6))
  near = -a + 0.3 * rng.standard_normal((6, 6))  # Opposite, not exactly.
  other = rng.standard_normal((6, 6))
  pairs, corr, unpaired = ui.opposite_pairs(np.array([near, a, -a, other,
                                                      -other]))
  # The two exact negatives first; `near` is left without a partner.
  assert sorted(sorted(p) for p in pairs) == [[1, 2], [3, 4]]
  np.testing.assert_allclose(corr, -1.0)
  assert unpaired == [0]
  assert ui.correlations(np.array([a, np.zeros((6, 6))]))[0, 1] == 0.0


def test_spatial_extent_separates_local_from_global():
  y, x = np.meshgrid(np.arange(8), np.arange(8), indexing='ij')
  delta = np.zeros((8, 8))
  delta[5, 2] = -3.0
  blob = np.exp(-((y - 3) ** 2 + (x - 4) ** 2) / (2 * 1.0 ** 2))
  corner = np.exp(-((y - 0) ** 2 + (x - 7) ** 2) / (2 * 1.0 ** 2))
  wave = np.cos(2 * np.pi * (y + 2 * x) / 8)
  extent = ui.spatial_extent(np.array([delta, blob, corner, wave]))
  assert extent[0] == 0.0
  assert 0 < extent[1] < ui.LOCAL_EXTENT and 0 < extent[2] < ui.LOCAL_EXTENT
  assert extent[3] > 0.9
  noise = np.random.default_rng(0).standard_normal((200, 8, 8))
  assert ui.spatial_extent(noise).min() > ui.LOCAL_EXTENT
  result = ui.analyse(np.array([delta, -delta, blob, wave, 0 * wave]))
  assert (result['local'], result['global']) == (3, 1)  # A zero unit: none.
  assert np.isnan(result['extent'][4]) and result['frequency'][4] == 0


def test_units_and_grids_have_the_drawn_shapes():
  kernel = np.arange(15 * 4, dtype=np.float32).reshape(15, 4)  # S = 3 x 5.
  units = ui.token_units(kernel, (3, 5))
  assert units.shape == (4, 3, 5)
  assert units[2, 1, 4] == kernel[1 * 5 + 4, 2]  # Row-major token order.
  with pytest.raises(ValueError, match='S = 4 x 4 = 16 tokens'):
    ui.token_units(kernel, (4, 4))

  stem = np.random.default_rng(0).standard_normal((4, 2, 3, 5))
  tiles = ui.stem_units(stem)
  assert tiles.shape == (5, 4, 2, 3)
  np.testing.assert_allclose(tiles.min(axis=(1, 2, 3)), 0.0)
  np.testing.assert_allclose(tiles.max(axis=(1, 2, 3)), 1.0)
  np.testing.assert_allclose(tiles[3], (stem[..., 3] - stem[..., 3].min()) /
                             np.ptp(stem[..., 3]))

  # 7 tiles of 2 x 3, 4 per row in groups of 2: gaps 1 / 5 pixels.
  grid = ui.mosaic(np.arange(7 * 6.).reshape(7, 2, 3), 4, gap=1, group=2,
                   group_gap=5)
  assert grid.shape == (2 + 5 + 2, 3 + 1 + 3 + 5 + 3 + 1 + 3)
  assert grid.shape == ui.mosaic_shape(7, (2, 3), 4, 1, 2, 5)
  np.testing.assert_array_equal(grid[7:9, 4:7], np.arange(30, 36.).reshape(
      2, 3))  # Tile 5: row 1, column 1.
  assert np.isnan(grid[0, 3]) and np.isnan(grid[7, 16])  # Gap; no tile 7.
  assert grid[7, 12] == 36.0  # Tile 6: row 1, column 2, after a group gap.
  assert ui.upscale(np.ones((2, 3, 5)), 4).shape == (2, 12, 20)

  # One block of 64 units of 8 x 8 at 6 pixels per weight: 8 tiles of 48
  # pixels per row (4 pairs), 8 rows.
  figure = visualize.token_mixing_figure(units=np.random.default_rng(0)
                                         .standard_normal((64, 8, 8)),
                                         result={'order': list(range(64))},
                                         scale=6)
  assert figure.shape == (8 * 48 + 7 * 8, 8 * 48 + 4 * 2 + 3 * 8, 3)
  assert figure.dtype == np.uint8
  grey = visualize.stem_figure(np.ones((4, 4, 1, 10)), scale=2)
  assert grey.shape == (3 * 8 + 2 * 2, 4 * 8 + 3 * 2)  # 4 columns, 3 rows.
  np.testing.assert_array_equal(ui.diverging_rgb(np.array([-1, 0, 1, np.nan]
                                                          )),
                                [[33, 102, 171], [255] * 3, [178, 23, 43],
                                 [255] * 3])


def small_b16_config():
  """configs/mixer_b16.py with 4 blocks and D_C = 64: the B/16 stem, token
  grid and token-mixing MLPs, at a fraction of the file size."""
  config = mixer_b16.get_config()
  config.model.num_blocks = 4
  config.model.channels_mlp_dim = 64
  return config


@pytest.fixture(scope='module')
def b16_npz(tmp_path_factory):
  """A random-weights `.npz` in the official layout, with block 0's units
  planted as 192 Gaussian units and their exact negatives (unit u + 192 =
  -unit u)."""
  config = small_b16_config()
  model = models.build_model(config.model)
  shapes = jax.eval_shape(lambda: model.init(
      jax.random.PRNGKey(0), jnp.zeros((1, 224, 224, 3)), train=False)
                          )['params']
  rng = np.random.default_rng(0)
  params = jax.tree_util.tree_map(
      lambda l: rng.standard_normal(l.shape).astype(np.float32), shapes)
  half = rng.standard_normal((196, 192)).astype(np.float32)
  params['MixerBlock_0']['token_mixing']['Dense_0']['kernel'] = (
      np.concatenate([half, -half], axis=1))
  path = tmp_path_factory.mktemp('official') / 'Mixer-B_16.npz'
  pretrained.save_npz(params, str(path))
  with np.load(path) as f:
    assert f['stem/kernel'].shape == (16, 16, 3, 768)
    assert f['MixerBlock_0/token_mixing/Dense_0/kernel'].shape == (196, 384)
    assert f['head/kernel'].shape == (768, 1000)
  return path


def run_cli(*args):
  return subprocess.run(
      [sys.executable, '-m', 'mixer.visualize', *args], cwd=REPO,
      capture_output=True, text=True, timeout=300)


def test_cli_draws_an_official_b16_npz(b16_npz, tmp_path):
  out = tmp_path / 'units'
  result = run_cli('--config=configs/mixer_b16.py',
                   '--config.model.num_blocks=4',
                   '--config.model.channels_mlp_dim=64',
                   f'--checkpoint={b16_npz}', f'--out={out}')
  assert result.returncode == 0, result.stderr[-3000:]
  assert not result.stderr.strip(), result.stderr
  report = json.loads((out / 'units.json').read_text())
  assert report['grid'] == [14, 14] and report['patch'] == [16, 16]
  assert [b['block'] for b in report['blocks']] == [0, 1, 2]  # First three.
  first = report['blocks'][0]
  assert first['units'] == 384 and len(first['frequency']) == 384
  assert sorted(sorted(p[:2]) for p in first['pairs']) == [
      [u, u + 192] for u in range(192)]
  assert all(p[2] == -1.0 for p in first['pairs'])
  assert first['opposite_pairs'] == 192
  freqs = [p[3] for p in first['pairs']]
  assert freqs == sorted(freqs)
  assert report['blocks'][1]['opposite_pairs'] == 0  # Random weights.
  assert report['stem'] == {'units': 768, 'patch': [16, 16, 3]}
  rows = [l.split() for l in result.stdout.splitlines()]
  assert [r[:5] for r in rows if r and r[0] in '012'] == [
      ['0', '384', '0', '384', '192'], ['1', '384', '0', '384', '0'],
      ['2', '384', '0', '384', '0']]

  # 3 pixels per weight: 42-pixel tiles, 20 per row (10 pairs), 20 rows.
  block = np.asarray(Image.open(out / 'token_mixing_block_0.png'))
  assert block.shape == (20 * 42 + 19 * 8, 20 * 42 + 10 * 2 + 9 * 8, 3)
  both = Image.open(out / 'token_mixing.png')
  assert both.size == (3 * block.shape[1] + 2 * 24, block.shape[0])
  # The first tile is the lowest-frequency pair's first unit, scaled by the
  # pair's largest weight.
  with np.load(b16_npz) as f:
    kernel = f['MixerBlock_0/token_mixing/Dense_0/kernel'].astype(np.float64)
  i, j = first['pairs'][0][:2]
  unit = kernel[:, i].reshape(14, 14)
  expected = ui.diverging_rgb(unit / max(np.abs(kernel[:, [i, j]]).max(),
                                         1e-30))
  np.testing.assert_array_equal(block[0:42:3, 0:42:3], expected)
  stem = Image.open(out / 'stem.png')  # 768 units of 48 pixels, 28 x 28.
  assert stem.size == (28 * 48 + 27 * 2, 28 * 48 + 27 * 2)
  assert stem.mode == 'RGB'


def test_cli_bad_checkpoint_is_one_error_line(tmp_path):
  missing = tmp_path / 'nowhere' / 'Mixer-B_16.npz'
  result = run_cli('--config=configs/mixer_b16.py', f'--checkpoint={missing}',
                   f'--out={tmp_path / "out"}')
  assert result.returncode == 1
  errors = [l for l in result.stderr.splitlines() if l.strip()]
  assert len(errors) == 1 and errors[0].startswith('error: checkpoint '), (
      result.stderr)
  assert str(missing) in errors[0] and 'does not exist' in errors[0]
  assert not result.stdout and not (tmp_path / 'out').exists()


def test_blocks_must_exist(tmp_path):
  params = {'stem': {'kernel': np.zeros((4, 4, 3, 8))},
            'MixerBlock_0': {'token_mixing': {'Dense_0': {
                'kernel': np.ones((4, 6))}}}}
  with pytest.raises(ValueError, match=r'^--blocks=2, but the model has 1 '
                     'blocks: give 1 to 1$'):
    visualize.visualize(params, (2, 2), (4, 4), str(tmp_path), blocks=2)
  report = visualize.visualize(params, (2, 2), (4, 4), str(tmp_path))
  assert [b['block'] for b in report['blocks']] == [0]  # Default: up to 3.
  assert sorted(p.name for p in tmp_path.iterdir()) == [
      'stem.png', 'token_mixing.png', 'token_mixing_block_0.png',
      'units.json']


@pytest.fixture(scope='module')
def two_step_run(tmp_path_factory):
  """A tiny run of 2 steps, warmup 1: step 0's learning rate is 0, so its
  checkpoint at step 1 holds exactly the initial weights."""
  from tests.conftest import shared_data_dir  # pylint: disable=g-import-not-at-top
  from tests.conftest import tiny_config  # pylint: disable=g-import-not-at-top
  from mixer import train  # pylint: disable=g-import-not-at-top
  data = shared_data_dir()
  if not (data / 'cifar10' / 'test.npz').exists():
    pytest.skip(f'real data not found in {data}')
  workdir = tmp_path_factory.mktemp('run') / 'w'
  config = tiny_config(num_train_steps=2, warmup_steps=1,
                       checkpoint_every_steps=1, eval_split='test[:32]',
                       eval_batch_size=32, data_dir=str(data), seed=7)
  train.train_and_evaluate(config, str(workdir))
  return workdir


def test_minus_init_recomputes_the_runs_initial_weights(two_step_run,
                                                         b16_npz):
  step1 = str(two_step_run / checkpoints.CHECKPOINT_SUBDIR / '1')
  init = visualize.initial_params(step1)
  assert 'head' not in init and set(init) == {'stem', 'MixerBlock_0',
                                              'pre_head_layer_norm'}
  params = {k: v for k, v in pretrained.load_params(step1).items()
            if k != 'head'}
  zero = visualize.minus(params, init)
  for leaf in jax.tree_util.tree_leaves(zero):
    assert not leaf.any()
  assert visualize.init_cosines(params, init) == {'stem': 1.0,
                                                  'MixerBlock_0': 1.0}
  # One step later the token-mixing weights have moved.
  trained = pretrained.load_params(str(two_step_run))
  trained.pop('head')
  moved = visualize.minus(trained, visualize.initial_params(
      str(two_step_run)))
  assert np.abs(moved['MixerBlock_0']['token_mixing']['Dense_0']['kernel']
                ).max() > 0
  with pytest.raises(ValueError, match=r'--minus_init needs one of this '
                     r"project's runs: .*Mixer-B_16.npz has no config.json"):
    visualize.initial_params(str(b16_npz))
