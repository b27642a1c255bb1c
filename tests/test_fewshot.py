"""Few-shot linear evaluation (`mixer.evaluators.fewshot`, and the CLI
`python -m mixer.fewshot`) on the real CIFAR-10.

big_vision's `fewshot_lsr`: whitened pre-logits plus a bias feature of 100,
{-1, +1} targets, closed-form ridge regression (l2 2^10), N shots per class
drawn per seed. Tiny models (hidden 32, one block), the first 1000 test
images and shots (1, 5) keep the file to a few tens of seconds on 2 cores.
"""

import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mixer import data
from mixer.evaluators import fewshot
from mixer import models
from mixer import pretrained
from tests.conftest import tiny_config

REPO = pathlib.Path(__file__).resolve().parents[1]
NUM_TEST = 1000
SHOTS = (1, 5)


@pytest.fixture(autouse=True)
def _data_env(monkeypatch):
  """The real data through $MIXER_DATA_DIR, as the CLI reads it."""
  from tests.conftest import shared_data_dir  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv(data.ENV_DATA_DIR, str(shared_data_dir()))


def _config(data_dir, **overrides):
  del data_dir  # Read through $MIXER_DATA_DIR (`_data_env`).
  return tiny_config(**overrides)


def _cifar(data_dir):
  config = _config(data_dir)
  train_x, train_y = data.load_split(config, 'train')
  test_x, test_y = data.load_split(config, f'test[:{NUM_TEST}]')
  return config, train_x, train_y, test_x, test_y


def _tiny_model(config, key=0):
  model = models.build_model(config.model)
  params = model.init(jax.random.PRNGKey(key), jnp.zeros((1, 32, 32, 3)),
                      train=False)['params']
  return model, params


def test_default_config_is_big_vision():
  c = fewshot.default_config()
  assert c.every_steps == 0
  assert tuple(c.shots) == (1, 5, 10, 25)
  assert c.l2_reg == 2.0 ** 10
  assert c.num_seeds == 3
  assert tuple(c.datasets['cifar10']) == ('cifar10', 'train', 'test')


def test_classifier_is_ridge_regression_in_both_forms():
  """Both eigendecomposition branches give (X^T X + l2 I)^-1 X^T Y."""
  rng = np.random.default_rng(0)
  for n, d in ((200, 8), (20, 64)):  # N >= D and N < D.
    x = rng.standard_normal((n, d))
    y = rng.integers(0, 4, n)
    xt = rng.standard_normal((300, d))
    acc = fewshot.fit_and_score(x, y, xt, np.zeros(300, int), 4, 1024.0)
    xw = (x - x.mean(0)) / (x.std(0) + 1e-5)
    xw = np.concatenate([xw, np.full((n, 1), 100.0)], 1)
    w = np.linalg.solve(xw.T @ xw + 1024.0 * np.eye(d + 1),
                        xw.T @ (2.0 * np.eye(4)[y] - 1.0))
    xtw = (xt - x.mean(0)) / (x.std(0) + 1e-5)
    xtw = np.concatenate([xtw, np.full((300, 1), 100.0)], 1)
    assert acc == np.mean(np.argmax(xtw @ w, 1) == 0)


def test_separable_features_give_100_percent(data_dir):
  """One-hot features of the real labels (plus noise): every shot count is
  perfect."""
  _, _, train_y, _, test_y = _cifar(data_dir)
  rng = np.random.default_rng(0)
  noisy = lambda y: np.eye(10)[y] + 0.05 * rng.standard_normal((len(y), 10))
  test_f = noisy(test_y)
  for shots in SHOTS:
    for seed in range(3):
      idx = fewshot.sample_shots(train_y, shots, seed)
      acc = fewshot.fit_and_score(noisy(train_y[idx]), train_y[idx], test_f,
                                  test_y, 10)
      assert acc == 1.0, (shots, seed)


def test_shot_sampling(data_dir):
  _, _, train_y, _, _ = _cifar(data_dir)
  a = fewshot.sample_shots(train_y, 5, seed=0)
  assert np.array_equal(a, fewshot.sample_shots(train_y, 5, seed=0))
  assert len(a) == 50 and len(set(a.tolist())) == 50
  assert np.array_equal(np.bincount(train_y[a], minlength=10), [5] * 10)
  # Class-major, class 0 first, as big_vision concatenates them.
  assert np.array_equal(train_y[a], np.repeat(np.arange(10), 5))
  # Another seed, another draw; a seed's 1-shot set is in its 5-shot set.
  assert not np.array_equal(a, fewshot.sample_shots(train_y, 5, seed=1))
  one = fewshot.sample_shots(train_y, 1, seed=0)
  assert np.array_equal(one, a.reshape(10, 5)[:, 0])
  # Exactly big_vision's draw: one Generator per seed, a permutation per
  # class.
  rng = np.random.default_rng(0)
  expected = [rng.permutation(np.flatnonzero(train_y == c))[:5]
              for c in range(10)]
  assert np.array_equal(a, np.concatenate(expected))
  # A class with fewer examples than shots gives all it has (big_vision).
  few = fewshot.sample_shots(np.array([0, 0, 0, 1, 1, 1, 1]), 4, seed=0)
  assert sorted(few[:3]) == [0, 1, 2] and sorted(few[3:]) == [3, 4, 5, 6]


def test_random_tiny_model_beats_chance_and_is_deterministic(data_dir):
  """A randomly initialised tiny Mixer's pre-logits carry some class
  information: measured 13.0 % (1-shot) and 19.0 % (5-shot) mean over
  big_vision's 3 seeds on the first 1000 test images; asserted: 5-shot at
  least 13 % (chance is 10 %), 1-shot above 11 %, 5-shot above 1-shot."""
  config = _config(data_dir)
  model, params = _tiny_model(config)
  ev = fewshot.FewShotEvaluator(config, model,
                                {'shots': SHOTS, 'num_test': NUM_TEST})
  first = ev.evaluate(params)
  # Each seed, as big_vision reports them, and their mean.
  assert set(first) == {f'fewshot/cifar10_{n}shot{s}' for n in (1, 5) for s
                        in ('', '-seed-0', '-seed-1', '-seed-2')}
  for n in (1, 5):
    assert first[f'fewshot/cifar10_{n}shot'] == pytest.approx(np.mean(
        [first[f'fewshot/cifar10_{n}shot-seed-{s}'] for s in range(3)]))
  assert first['fewshot/cifar10_5shot'] >= 0.13, first
  assert first['fewshot/cifar10_1shot'] > 0.11, first
  assert first['fewshot/cifar10_5shot'] > first['fewshot/cifar10_1shot']
  # The same seed gives identical numbers, in a fresh evaluator too; the
  # head (present in training params) is ignored.
  again = fewshot.FewShotEvaluator(config, model,
                                   {'shots': SHOTS, 'num_test': NUM_TEST})
  assert again.evaluate(params) == first
  with_head = dict(params, head={'kernel': jnp.ones((32, 10)),
                                 'bias': jnp.ones((10,))})
  assert ev.evaluate(with_head) == first
  # Replicated params (the training loop's pmapped state) are read too.
  replicated = jax.tree_util.tree_map(lambda a: jnp.stack([a]), params)
  assert ev.evaluate(replicated) == first
  # Other seeds, other draws.
  other = fewshot.FewShotEvaluator(
      config, model, {'shots': SHOTS, 'num_test': NUM_TEST, 'seed': 3})
  assert other.evaluate(params) != first


def test_features_are_the_headless_model_and_resize(data_dir):
  """Pre-logits of the num_classes=0 model on big_vision's few-shot input:
  stored 32x32 images squashed to 18x18 (round(16 / 0.875)), bilinear and
  truncated, their central 16x16, -1 + 2 x / 255."""
  config = tiny_config(image_size=16)
  model = models.build_model(config.model)
  params = model.init(jax.random.PRNGKey(1), jnp.zeros((1, 16, 16, 3)),
                      train=False)['params']
  params = fewshot.strip_head(params)
  _, _, _, test_x, _ = _cifar(data_dir)
  images = np.asarray(test_x[:7])
  feats = fewshot.extract_features(model, params, images, batch_size=4,
                                   image_size=(16, 16))
  tf = pytest.importorskip('tensorflow')
  x = tf.image.resize(images, (18, 18), 'bilinear', antialias=False)
  x = tf.cast(tf.clip_by_value(x, 0, 255), tf.uint8).numpy()[:, 1:17, 1:17]
  x = -1 + 2 * (x.astype(np.float32) / 255)
  want = model.clone(num_classes=0).apply({'params': params}, x, train=False)
  assert feats.shape == (7, 32)
  np.testing.assert_allclose(feats, np.asarray(want), rtol=1e-5, atol=1e-5)


def test_config_defaults_and_partial_fewshot_field():
  config = tiny_config()
  assert tuple(config.fewshot.shots) == (1, 5, 10, 25)
  with config.unlocked():  # A config from before the field existed.
    del config['fewshot']
  ev = fewshot.FewShotEvaluator(config, models.build_model(config.model))
  assert tuple(ev.fs.shots) == (1, 5, 10, 25) and ev.seeds == (0, 1, 2)
  # A partial `fewshot` field (e.g. from an older config.json) keeps the
  # defaults of the fields it lacks; an unknown field is one error.
  with config.unlocked():
    config.fewshot = {'shots': [1], 'seed': 4}
  fs = fewshot.fewshot_config(config)
  assert tuple(fs.shots) == (1,) and fs.seed == 4 and fs.num_seeds == 3
  with config.unlocked():
    config.fewshot = {'shot': [1]}
  with pytest.raises(ValueError, match='fewshot.shot'):
    fewshot.fewshot_config(config)


def _run_cli(*args, data_dir):
  env = dict(os.environ, MIXER_DATA_DIR=str(data_dir))
  return subprocess.run([sys.executable, '-m', 'mixer.fewshot', *args],
                        cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=180)


def test_cli_on_orbax_workdir_and_bad_checkpoint(data_dir, tmp_path):
  from mixer import train  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / 'run'
  config = _config(data_dir, num_train_steps=2, checkpoint_every_steps=2,
                   log_every_steps=2, warmup_steps=1,
                   eval_split='test[:250]')
  train.train_and_evaluate(config, str(workdir))
  assert json.loads((workdir / 'config.json').read_text())['model'][
      'hidden_dim'] == 32
  # No --config: the workdir's config.json is used.
  out = _run_cli(f'--checkpoint={workdir}', '--datasets=cifar10',
                 '--shots=1,5', '--num_test=500', data_dir=data_dir)
  assert out.returncode == 0, out.stderr
  lines = out.stdout.strip().splitlines()
  header = next(l for l in lines if l.startswith('dataset'))
  assert header.split() == ['dataset', '1-shot', '5-shot']
  row = next(l for l in lines if l.startswith('cifar10')).split()
  assert len(row) == 3 and all(0.0 <= float(v) <= 100.0 for v in row[1:])
  assert lines[-1].startswith('took ') and lines[-1].endswith(' s')

  bad = _run_cli(f'--checkpoint={tmp_path / "missing"}', data_dir=data_dir)
  assert bad.returncode == 1
  assert bad.stdout == ''
  err = bad.stderr.strip().splitlines()
  assert len(err) == 1 and err[0].startswith('error: '), bad.stderr
  assert 'missing' in err[0]


def test_cli_npz_needs_a_config_that_fits(data_dir, tmp_path):
  """An official-style `.npz` with a config that does not fit is one error
  line naming the parameter."""
  config = tiny_config()
  model, params = _tiny_model(config)
  ckpt = tmp_path / 'tiny.npz'
  pretrained.save_npz(params, str(ckpt))
  out = _run_cli('--config=configs/cifar10_baseline.py',
                 f'--checkpoint={ckpt}', data_dir=data_dir)
  assert out.returncode == 1
  err = out.stderr.strip().splitlines()
  assert len(err) == 1 and err[0].startswith('error: checkpoint '), out.stderr
  assert 'MixerBlock' in err[0] or 'stem' in err[0]
