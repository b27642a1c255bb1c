"""`python -m mixer.predict`: top-5 classes of image files from a checkpoint."""

import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from configs import common
from configs import models as model_configs
from mixer import models
from mixer import data as input_pipeline
from mixer import predict
from mixer import pretrained

REPO = pathlib.Path(__file__).resolve().parents[1]

CONFIG_FILE = '''
from configs import common
from configs import models


def get_config():
  model = models.mixer(patch=4, hidden_dim=32, num_blocks=2,
                       tokens_mlp_dim=16, channels_mlp_dim=32, num_classes=10)
  return common.base(model, dataset='cifar10', image_size=16)
'''


def tiny_config():
  model = model_configs.mixer(patch=4, hidden_dim=32, num_blocks=2,
                              tokens_mlp_dim=16, channels_mlp_dim=32,
                              num_classes=10)
  return common.base(model, dataset='cifar10', image_size=16)


@pytest.fixture
def setup(tmp_path):
  """A config file, a random-weights `.npz` and two PNGs in tmp_path."""
  config_path = tmp_path / 'tiny_config.py'
  config_path.write_text(CONFIG_FILE)
  model = models.build_model(tiny_config().model)
  shapes = jax.eval_shape(lambda: model.init(
      jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)), train=False))['params']
  rng = np.random.default_rng(1)
  params = jax.tree_util.tree_map(
      lambda l: rng.standard_normal(l.shape).astype(np.float32), shapes)
  ckpt = tmp_path / 'tiny.npz'
  pretrained.save_npz(params, str(ckpt))
  rng = np.random.default_rng(0)
  images = []
  for name, size in (('a.png', (40, 30)), ('b.png', (16, 16))):
    path = tmp_path / name
    Image.fromarray(rng.integers(0, 256, size + (3,), dtype=np.uint8)).save(
        path)
    images.append(str(path))
  return str(config_path), str(ckpt), images


def run_cli(*args):
  return subprocess.run(
      [sys.executable, '-m', 'mixer.predict', *args], cwd=REPO,
      capture_output=True, text=True, timeout=120)


def test_cli_prints_top5_per_image(setup):
  config_path, ckpt, images = setup
  out = run_cli(f'--config={config_path}', f'--checkpoint={ckpt}', *images)
  assert out.returncode == 0, out.stderr
  lines = out.stdout.strip().splitlines()
  assert len(lines) == 2 * 6, out.stdout
  cifar10 = set(input_pipeline.KNOWN_CLASS_NAMES['cifar10'])
  for i, image in enumerate(images):
    block = lines[6 * i:6 * i + 6]
    assert block[0] == image
    probs = []
    for line in block[1:]:
      prob, name = line.split(maxsplit=1)
      assert name in cifar10
      probs.append(float(prob))
    assert probs == sorted(probs, reverse=True)
    assert 0 < sum(probs) <= 1.0 + 1e-3


def test_cli_bad_checkpoint_is_one_error_line(setup, tmp_path):
  config_path, _, images = setup
  bad = tmp_path / 'bad.npz'
  bad.write_bytes(b'garbage')
  out = run_cli(f'--config={config_path}', f'--checkpoint={bad}', *images)
  assert out.returncode == 1
  errors = [l for l in out.stderr.splitlines() if l.startswith('error:')]
  assert len(errors) == 1 and 'bad.npz' in errors[0], out.stderr
  assert not out.stdout


def test_predict_matches_model_and_checks_inputs(setup, tmp_path):
  _, ckpt, images = setup
  config = tiny_config()
  results = predict.predict(config, ckpt, images)
  # Same probabilities as the model applied by hand to the preprocessed image.
  model, params = predict.load_model_params(config, ckpt)
  x = predict.normalize(predict.load_image(images[1], config)[None])
  probs = np.asarray(jax.nn.softmax(model.apply({'params': params}, x,
                                                train=False)))[0]
  top = [(input_pipeline.KNOWN_CLASS_NAMES['cifar10'][i], probs[i])
         for i in np.argsort(-probs)[:5]]
  assert [n for n, _ in results[1][1]] == [n for n, _ in top]
  np.testing.assert_allclose([p for _, p in results[1][1]],
                             [p for _, p in top], rtol=1e-5)

  not_image = tmp_path / 'notes.png'
  not_image.write_text('hello')
  with pytest.raises(ValueError, match='cannot read image .*notes.png'):
    predict.predict(config, ckpt, [str(not_image)])
  config.model.channels_mlp_dim = 48  # Not the checkpoint's model.
  with pytest.raises(ValueError, match='channel_mixing/Dense_0/kernel'):
    predict.predict(config, ckpt, images)


def test_class_names_never_need_the_data():
  config = tiny_config()
  assert predict.class_names(config, 10)[3] == 'cat'
  config.dataset = 'oxford_iiit_pet'  # Not downloaded: tfds metadata only.
  assert predict.class_names(config, 37)[0] == 'Abyssinian'
  config.dataset = 'no_such_dataset'
  assert predict.class_names(config, 3) == ['class 0', 'class 1', 'class 2']


def test_load_image_matches_eval_preprocessing(tmp_path):
  config = tiny_config()  # 16x16, eval_crop 'center'.
  rng = np.random.default_rng(2)
  pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
  Image.fromarray(pixels).save(tmp_path / 'same.png')
  # Already at the model's size: the stored pixels, as in-memory eval feeds.
  np.testing.assert_array_equal(
      predict.load_image(str(tmp_path / 'same.png'), config), pixels)
  wide = np.zeros((20, 40, 3), np.uint8)
  wide[:, 15:25] = 255  # A white vertical band in the middle.
  Image.fromarray(wide).save(tmp_path / 'wide.png')
  center = predict.load_image(str(tmp_path / 'wide.png'), config)
  assert center.shape == (16, 16, 3)
  assert center[:, 8].min() > 200 and center[:, 0].max() < 50  # Cropped.
  config.augment.eval_crop = 'resize'
  resized = predict.load_image(str(tmp_path / 'wide.png'), config)
  assert resized[:, 8].min() > 200 and resized[:, 0].max() < 50
  assert (resized > 200).all(axis=(0, 2)).sum() < (center > 200).all(
      axis=(0, 2)).sum()  # The whole width squeezed: a narrower band.
  config.channels = 1
  assert predict.load_image(str(tmp_path / 'wide.png'), config).shape == (
      16, 16, 1)
