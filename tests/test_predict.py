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


# -- a run's workdir: its config.json, damaged orbax checkpoints ------------


@pytest.fixture(scope='module')
def trained_run(tmp_path_factory):
  """A tiny run trained for 2 steps: its workdir (config.json beside an
  orbax checkpoint of a model unlike any shipped config's)."""
  from tests.conftest import shared_data_dir  # pylint: disable=g-import-not-at-top
  from tests.conftest import tiny_config as tiny_run_config  # pylint: disable=g-import-not-at-top
  from mixer import train  # pylint: disable=g-import-not-at-top
  data = shared_data_dir()
  if not (data / 'cifar10' / 'test.npz').exists():
    pytest.skip(f'real data not found in {data}')
  workdir = tmp_path_factory.mktemp('run') / 'w'
  config = tiny_run_config(num_train_steps=2, warmup_steps=1,
                           checkpoint_every_steps=2, eval_split='test[:250]',
                           data_dir=str(data))
  train.train_and_evaluate(config, str(workdir))
  image = workdir.parent / 'img.png'
  Image.fromarray(np.random.default_rng(0).integers(
      0, 256, (32, 32, 3), dtype=np.uint8)).save(image)
  return workdir, str(image)


def _top(stdout):
  return [l.split(maxsplit=1)[1] for l in stdout.splitlines()[1:]]


def test_cli_predicts_from_a_workdir_without_config(trained_run):
  workdir, image = trained_run
  out = run_cli(f'--checkpoint={workdir}', image)
  assert out.returncode == 0, out.stderr[-3000:]
  lines = out.stdout.strip().splitlines()
  assert lines[0] == image and len(lines) == 6
  assert set(_top(out.stdout)) <= set(
      input_pipeline.KNOWN_CLASS_NAMES['cifar10'])
  assert not out.stderr.strip()
  # A step folder inside the workdir finds the same config.json.
  step = run_cli(f'--checkpoint={workdir}/checkpoints/2', image)
  assert step.returncode == 0, step.stderr[-3000:]
  assert step.stdout == out.stdout
  # A --config whose model differs: the run's config.json wins, one warning.
  both = run_cli('--config=configs/cifar10_baseline.py',
                 f'--checkpoint={workdir}', image)
  assert both.returncode == 0, both.stderr[-3000:]
  assert both.stdout == out.stdout
  warnings = both.stderr.strip().splitlines()
  assert len(warnings) == 1 and warnings[0].startswith(
      "warning: --config's model differs from the config.json of the run")
  assert 'model.hidden_dim (256 -> 32)' in warnings[0]
  assert "using the run's config.json" in warnings[0]


def test_resolve_config(setup, tmp_path):
  _, ckpt, _ = setup
  config = tiny_config()
  assert predict.resolve_config(config, ckpt) == (config, None)
  with pytest.raises(ValueError, match=r'^--config is required: .*tiny.npz '
                     'is an .npz file, which holds no config'):
    predict.resolve_config(None, ckpt)
  with pytest.raises(ValueError, match='is not an .npz archive'):
    predict.resolve_config(None, __file__)
  with pytest.raises(ValueError, match='no checkpoint found in'):
    predict.resolve_config(None, str(tmp_path))


def test_cli_damaged_orbax_checkpoint_is_one_error_line(trained_run,
                                                        tmp_path):
  """Truncated array files: orbax's concurrent reads fail; one error line,
  no 'Event loop is closed' tracebacks nor asyncio's 'exception was never
  retrieved' lines from the reads still in flight."""
  import shutil  # pylint: disable=g-import-not-at-top
  workdir, image = trained_run
  damaged = tmp_path / 'damaged'
  shutil.copytree(workdir, damaged)
  state = damaged / 'checkpoints' / '2' / 'state'
  data_files = [p for p in state.rglob('*') if p.is_file() and
                p.parent.name == 'd']
  assert data_files
  for p in data_files:
    with open(p, 'r+b') as f:
      f.truncate(10)
  out = run_cli(f'--checkpoint={damaged}', image)
  assert out.returncode == 1
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1, out.stderr[-3000:]
  assert lines[0].startswith(
      f'error: cannot read the orbax checkpoint {state.parent}: it is '
      'damaged or incomplete (')
  assert lines[0].endswith('pass another step folder or a good copy of it')
  assert not out.stdout
