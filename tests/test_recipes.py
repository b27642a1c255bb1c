"""The paper's Table 4 pre-training recipes, end to end on a stand-in ImageNet.

ImageNet cannot be downloaded here (nor in CI), so a tiny `imagenet2012` is
prepared by tfds's own ImageNet builder from fake ILSVRC2012 tars, and a tiny
`imagenet21k` in big_vision's layout, both in a temporary TFDS data dir
(`benchmarks/input_pipeline.py` builds them; nothing is downloaded). Each
Table 4 config then trains a few steps through `mixer.train` with only its
model shrunk and its batch, splits and step count cut; everything the recipe
sets (augmentation, regularisation, optimiser, schedule) stays as configured.
"""

import importlib
import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs import common
from configs import models as model_specs
from mixer import augment
from mixer import data as ip
from mixer.data import stream as data_stream
from mixer.data import tfds as data_tfds
from mixer import models
from mixer import optim
from mixer import train

tfds = pytest.importorskip('tensorflow_datasets')
tf = pytest.importorskip('tensorflow')
# pylint: disable=g-import-not-at-top,wrong-import-position

# config file -> (variant, dataset, RandAugment magnitude, mixup alpha).
TABLE4_CONFIGS = {
    'imagenet2012_mixer_b16': ('B/16', 'imagenet2012', 15, 0.5),
    'imagenet2012_mixer_l16': ('L/16', 'imagenet2012', 15, 0.5),
    'imagenet21k_mixer_b16': ('B/16', 'imagenet21k', 10, 0.2),
    'imagenet21k_mixer_l16': ('L/16', 'imagenet21k', 20, 0.5),
}
NAMES = sorted(TABLE4_CONFIGS)
B = 8  # Test batch.


def _config(name, arg=None):
  return importlib.import_module(f'configs.{name}').get_config(arg)


@pytest.fixture
def tfds_dir(imagenet_standin):
  """The session's stand-in `imagenet2012` and `imagenet21k` TFDS data dir."""
  return imagenet_standin


def _run_and_warmup(c):
  """(train steps, warmup steps) of the full run of `c` on its dataset:
  streamed, so big_vision's count round(epochs * N / B)."""
  n = common.PRETRAIN_TRAIN_EXAMPLES[c.dataset]
  total = common.streamed_steps(n, c.num_epochs, c.batch_size)
  return total, optim.resolve_warmup(c, total, n / c.batch_size)[0]


def _paper_warmup(c):
  return _run_and_warmup(c)[1]


def _shrink(config, data_dir):
  """Tiny model, batch and run; the recipe fields are left alone."""
  config.model.hidden_dim = 16
  config.model.num_blocks = 2
  config.model.tokens_mlp_dim = 8
  config.model.channels_mlp_dim = 32
  config.data_dir = data_dir
  config.batch_size = B
  config.eval_batch_size = B
  config.num_train_steps = 2
  config.warmup_steps = 1  # The real 10k are checked below, without training.
  config.log_every_steps = 1
  config.eval_every_steps = 0
  config.checkpoint_every_steps = 0
  config.shuffle_buffer = 16
  # Few-shot on the real CIFAR-10 ($MIXER_DATA_DIR) instead of big_vision's
  # datasets, which would need downloads: small but real.
  config.fewshot.datasets = {'cifar10': ('cifar10', 'train[:1000]',
                                         'test[:100]')}
  config.fewshot.shots = (1, 2)
  config.fewshot.num_seeds = 1
  if config.dataset == 'imagenet21k':
    config.train_split, config.eval_split = 'full[16:]', 'full[:8]'
    config.minival_split = 'full[8:16]'
    config.extra_evals.train25k = ('', 'full[16:24]')
  else:
    config.eval_split = 'validation[:8]'
  return config


# -- the configs --------------------------------------------------------------


@pytest.mark.parametrize('name', NAMES)
def test_config_is_its_table4_row(name):
  variant, dataset, magnitude, mixup = TABLE4_CONFIGS[name]
  c = _config(name)
  paper = model_specs.paper(variant)
  for field in ('patches', 'num_blocks', 'hidden_dim', 'tokens_mlp_dim',
                'channels_mlp_dim', 'activation', 'use_pre_head_norm'):
    assert c.model[field] == paper[field], field
  assert c.model.num_classes == (1000 if dataset == 'imagenet2012' else 21843)
  assert (c.model.dropout_rate, c.model.stoch_depth) == (0.0, 0.1)
  assert c.dataset == dataset and c.image_size == 224
  assert (c.num_epochs, c.batch_size, c.learning_rate, c.weight_decay) == (
      300, 4096, 1e-3, 0.1)
  assert (c.optimizer, c.b1, c.b2, c.grad_clip_norm) == ('adamw', 0.9, 0.999,
                                                         1.0)
  assert (c.lr_schedule, c.label_smoothing) == ('linear', 0.0)
  # The paper's 10k warmup steps, stated as a share of the run.
  assert _paper_warmup(c) == 10_000
  a = c.augment
  assert (a.randaugment_layers, a.randaugment_magnitude,
          a.randaugment_ops) == (2, magnitude, 'big_vision')
  assert (a.mixup_alpha, a.cutmix_alpha) == (mixup, 0.0)
  assert (a.crop, a.flip, a.eval_crop) == ('inception', True, 'center')
  assert a.inception_area_min == 0.05


@pytest.mark.parametrize('name', NAMES)
def test_gpu8_variant_is_big_vision_gpu_variant(name):
  """big_vision's mlp_mixer_i1k.py:gpu8: batch 512 and 60 epochs, every
  other field as in the paper's recipe (lr, weight decay, the 10k warmup
  steps, evaluations); ImageNet-21k, without a big_vision variant, the same
  at 30 epochs. The numbers are checked against big_vision's in
  tests/test_big_vision.py."""
  paper, small = _config(name), _config(name, 'gpu8')
  epochs = common.GPU8_EPOCHS[paper.dataset]
  assert (small.batch_size, small.num_epochs) == (512, epochs)
  assert epochs == (60 if paper.dataset == 'imagenet2012' else 30)
  assert small.learning_rate == paper.learning_rate == 1e-3
  assert _run_and_warmup(small)[1] == 10_000
  changed = {'batch_size', 'num_epochs', 'eval_batch_size',
             'checkpoint_every_steps', 'warmup_percent'}
  p, s = paper.to_dict(), small.to_dict()
  assert {k: v for k, v in p.items() if k not in changed} == {
      k: v for k, v in s.items() if k not in changed}
  assert small.batch_size % 8 == 0 and small.eval_batch_size % 8 == 0
  with pytest.raises(ValueError, match='gpu8'):
    _config(name, 'tpu')


def test_table4_has_no_row_for_other_sizes():
  with pytest.raises(ValueError, match='no row for Mixer-S'):
    common.paper_table4('S/16', 'imagenet2012')
  with pytest.raises(ValueError, match='unknown pre-training dataset'):
    common.paper_table4('B/16', 'jft300m')


@pytest.mark.parametrize('name', NAMES)
def test_schedule_matches_table4_at_key_steps(name, monkeypatch):
  # The Trainer the run uses, on ImageNet's real size (metadata only).
  c = _config(name)
  n = common.PRETRAIN_TRAIN_EXAMPLES[c.dataset]
  info = ip.DatasetInfo(
      name=c.dataset, num_classes=c.model.num_classes, num_train=n,
      num_eval=50_000, image_shape=(224, 224, 3),
      class_names=tuple(map(str, range(c.model.num_classes))),
      in_memory=False)
  monkeypatch.setattr(ip, 'dataset_info', lambda config: info)
  monkeypatch.setattr(ip, 'check_eval_split', lambda *a, **k: None)
  trainer = train.Trainer(c)
  total = round(300 * n / 4096)  # big_vision's count.
  assert trainer.total_steps == total
  assert trainer.stream_train and trainer.stream_eval
  lr = lambda step: float(trainer.schedule(step))
  assert lr(0) == 0.0
  assert lr(5_000) == pytest.approx(0.5e-3)
  assert lr(10_000) == pytest.approx(1e-3)
  # Linear decay to big_vision's linear_end, 1e-5 of the peak, at the end.
  assert c.lr_end == 1e-5
  assert lr(10_000 + (total - 10_000) // 2) == pytest.approx(
      (1e-3 + 1e-8) / 2, rel=1e-4)
  assert lr(total) == pytest.approx(1e-8, rel=1e-5)


def test_optimizer_decays_kernels_only():
  # The same optimizer for every row (lr 1e-3, wd 0.1); checked on one.
  optimizer_fields = ('optimizer', 'learning_rate', 'weight_decay', 'b1', 'b2',
                      'grad_clip_norm', 'lr_schedule')
  rows = [_config(name) for name in NAMES]
  assert len({tuple(r[f] for f in optimizer_fields) + (_paper_warmup(r),)
              for r in rows}) == 1
  c = rows[0]
  c.warmup_steps = 10_000  # The paper's warmup in a 100k-step schedule.
  c.model.hidden_dim, c.model.num_blocks = 8, 1
  c.model.tokens_mlp_dim, c.model.channels_mlp_dim = 4, 8
  model = models.build_model(c.model)
  shapes = jax.eval_shape(lambda: model.init(
      jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), train=False))
  params = jax.tree_util.tree_map(  # The model's tree; values need no init.
      lambda s: jnp.full(s.shape, 1.5, s.dtype), shapes['params'])
  tx = optim.make_optimizer(c, total_steps=100_000)
  state = optax.tree_utils.tree_set(tx.init(params),
                                    count=jnp.asarray(10_000, jnp.int32))
  zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
  # Decay only (no gradient), at the end of the warmup (lr 1e-3).
  updates, _ = jax.jit(tx.update)(zeros, state, params)
  flat = jax.tree_util.tree_flatten_with_path(updates)[0]
  flat_params = dict(jax.tree_util.tree_flatten_with_path(params)[0])
  kinds = set()
  for path, update in flat:
    leaf = path[-1].key
    kinds.add(leaf)
    if leaf == 'kernel':  # lr(10k) * wd = 1e-3 * 0.1, decoupled from Adam.
      np.testing.assert_allclose(update, -1e-4 * flat_params[path], rtol=1e-5)
    else:
      assert not np.any(update), path
  assert kinds == {'kernel', 'bias', 'scale'}


@pytest.mark.parametrize('name', ['imagenet2012_mixer_b16',
                                  'imagenet2012_mixer_l16'])
def test_stochastic_depth_per_block_and_per_example(name, monkeypatch):
  c = _config(name)
  depth = c.model.num_blocks  # Kept: the ramp is over the recipe's depth.
  c.model.hidden_dim, c.model.tokens_mlp_dim, c.model.channels_mlp_dim = (
      8, 4, 8)
  model = models.build_model(c.model)
  calls = []
  original = models.drop_path

  def record(x, rate, deterministic, rng, scale=True):
    y = original(x, rate, deterministic, rng, scale)
    if not deterministic:
      calls.append((rate, np.asarray(x), np.asarray(y)))
    return y

  monkeypatch.setattr(models, 'drop_path', record)
  x = np.random.default_rng(0).normal(size=(64, 32, 32, 3)).astype(np.float32)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(1), x,
                                             train=False))
  assert not calls  # Inference never drops.
  gen = np.random.default_rng(1)
  params = jax.tree_util.tree_map(
      lambda s: gen.normal(size=s.shape).astype(s.dtype), shapes)
  model.apply(params, x, train=True, rngs={'dropout': jax.random.PRNGKey(2)})
  # Two residual branches per block, block i at rate 0.1 * i / (depth - 1).
  expected = [0.1 * i / (depth - 1) for i in range(depth) for _ in (0, 1)]
  assert [r for r, _, _ in calls] == pytest.approx(expected)
  dropped = []
  for rate, before, after in calls:
    if rate == 0:
      np.testing.assert_array_equal(after, before)
      continue
    # big_vision's mask: kept branches are not rescaled.
    assert c.model.stoch_depth_scale is False
    kept = np.all(after == before, axis=(1, 2))
    gone = np.all(after == 0, axis=(1, 2))
    assert np.all(kept ^ gone)  # Whole examples, each kept or dropped.
    dropped.append(gone.mean())
  assert 0 < np.mean(dropped) < 0.2  # About the mean rate 0.05.


# -- the data path ------------------------------------------------------------


def test_missing_imagenet_is_a_clear_error(tmp_path):
  for name, words in (('imagenet2012', 'ILSVRC2012_img_train.tar'),
                      ('imagenet21k', 'not in the public TFDS catalogue')):
    c = _config(f'{name}_mixer_b16')
    c.data_dir = str(tmp_path)
    with pytest.raises(ip.DataError) as e:
      ip.dataset_info(c)
    message = str(e.value)
    assert '\n' not in message and words in message, message
    assert 'docs/imagenet.md' in message and str(tmp_path) in message


def test_missing_evaluation_dataset_is_a_clear_error(tfds_dir, tmp_path):
  """Each of big_vision's evaluations must be there when the run starts:
  one line naming what is missing, never a silently skipped evaluation."""
  c = _shrink(_config('imagenet2012_mixer_b16'), tfds_dir)
  c.extra_evals.sketch = ('imagenet_sketch', 'test')  # Not prepared.
  with pytest.raises(ip.DataError) as e:
    train.Trainer(c)
  message = str(e.value)
  assert '\n' not in message and "evaluation 'sketch'" in message
  assert "'imagenet_sketch'" in message and tfds_dir in message
  c.extra_evals.sketch = ('imagenet_v2', 'train')  # No such split.
  with pytest.raises(ip.DataError, match="'imagenet_v2' has no split 'train'"):
    train.Trainer(c)
  # ReaL needs ImageNet's validation tar: the error says how to prepare it.
  real = _config('imagenet2012_mixer_b16')
  real.dataset, real.data_dir = 'imagenet2012_real', str(tmp_path)
  with pytest.raises(ip.DataError) as e:
    ip.check_eval_split(real, 'validation', 'real_label', 1000,
                        purpose="evaluation 'real'")
  message = str(e.value)
  assert '\n' not in message and "evaluation 'real'" in message
  assert 'ILSVRC2012_img_val.tar' in message and str(tmp_path) in message


def test_data_dir_may_be_a_tfds_data_dir(tmp_path, monkeypatch):
  monkeypatch.delenv('MIXER_DATA_DIR', raising=False)
  c = _config('imagenet2012_mixer_b16')
  prepared = tmp_path / 'tfds' / 'imagenet2012' / '5.1.0'
  prepared.mkdir(parents=True)
  (prepared / 'dataset_info.json').write_text('{}')
  c.data_dir = str(tmp_path / 'tfds')
  assert ip.tfds_data_dir(c) == c.data_dir and ip.local_dir(c) is None
  monkeypatch.setenv('MIXER_DATA_DIR', c.data_dir)  # Same via the variable.
  c.data_dir = ''
  assert ip.tfds_data_dir(c) == str(tmp_path / 'tfds')
  assert ip.local_dir(c) is None
  # Local arrays named like the dataset stay local arrays.
  local = tmp_path / 'arrays' / 'imagenet2012'
  local.mkdir(parents=True)
  np.savez(local / 'train.npz', images=np.zeros((2, 8, 8, 3), np.uint8),
           labels=np.zeros(2, np.int64))
  c.data_dir = str(tmp_path / 'arrays')
  assert ip.tfds_data_dir(c) is None and ip.local_dir(c) == str(local)
  # Other datasets are not affected by a TFDS dir holding only ImageNet.
  c.dataset, c.data_dir = 'cifar10', str(tmp_path / 'tfds')
  assert ip.tfds_data_dir(c) is None


def test_standin_reads_through_tfds_split_per_process(tfds_dir):
  c = _shrink(_config('imagenet2012_mixer_b16'), tfds_dir)
  assert ip.tfds_data_dir(c) == tfds_dir and ip.local_dir(c) is None
  info = ip.dataset_info(c)
  # train[:99%] of the 64 stand-in images; train[99%:] is the minival.
  assert c.train_split == 'train[:99%]' and c.minival_split == 'train[99%:]'
  assert (info.num_train, info.num_classes) == (63, 1000)
  assert len(ip.load_split(c, c.minival_split)[1]) == 1
  # Each process reads its own disjoint share; together, the whole split.
  names = []
  for p in range(2):
    source = data_stream._streaming_source(c, 'train', process_index=p,
                                  process_count=2, shuffle_seed=None)
    assert source.encoded and source.jpeg
    names.append({ex['file_name'] for ex in source.ds.as_numpy_iterator()})
  assert not names[0] & names[1] and len(names[0] | names[1]) == 64
  # Training batches: Inception crops at 224, per process B / 2.
  batch = next(ip.tfds_train_dataset(c, process_index=1, process_count=2))
  assert batch['image'].shape == (B // 2, 224, 224, 3)
  assert batch['image'].dtype == np.uint8
  # Evaluation covers every example once over both processes.
  c.eval_split = 'validation'
  masks = [np.concatenate([b['mask'] for b in ip.tfds_eval_dataset(
      c, process_index=p, process_count=2)]) for p in range(2)]
  assert sum(m.sum() for m in masks) == 24


def _big_vision_eval(image):
  """big_vision's `decode|resize_small(256)|central_crop(224)`, as written."""
  h, w = tf.shape(image)[0], tf.shape(image)[1]
  factor = 256.0 / tf.cast(tf.minimum(h, w), tf.float32)
  size = (tf.cast(tf.round(tf.cast(h, tf.float32) * factor), tf.int32),
          tf.cast(tf.round(tf.cast(w, tf.float32) * factor), tf.int32))
  image = tf.image.resize(image, size, method='area', antialias=False)
  image = tf.cast(tf.clip_by_value(image, 0, 255), tf.uint8)
  dy = (tf.shape(image)[0] - 224) // 2
  dx = (tf.shape(image)[1] - 224) // 2
  return tf.image.crop_to_bounding_box(image, dy, dx, 224, 224).numpy()


def test_eval_center_crop_is_big_vision_resize_small_central_crop(tfds_dir):
  c = _shrink(_config('imagenet2012_mixer_b16'), tfds_dir)
  got = next(ip.tfds_eval_dataset(c))
  raw = tfds.builder('imagenet2012', data_dir=tfds_dir).as_dataset(
      split='validation[:8]', shuffle_files=False)
  shapes = set()
  for i, ex in enumerate(raw.as_numpy_iterator()):
    shapes.add(ex['image'].shape[:2])
    np.testing.assert_array_equal(got['image'][i],
                                  _big_vision_eval(ex['image']))
    assert got['label'][i] == ex['label']
  assert len(shapes) > 1 and any(h != w for h, w in shapes)  # Non-square.


@pytest.mark.parametrize('name', NAMES)
def test_augmentations_are_applied(name, tfds_dir):
  _, _, magnitude, alpha = TABLE4_CONFIGS[name]
  c = _shrink(_config(name), tfds_dir)
  k = c.model.num_classes
  images = next(ip.tfds_train_dataset(c))['image']
  labels = (np.arange(B) * 7 + 3) % k  # Neighbours differ.
  rng = jax.random.PRNGKey(4)
  x, y = augment.make_train_augment(c.augment, k)(rng, images, labels)
  assert x.shape == (B, 224, 224, 3) and x.dtype == jnp.float32
  assert y.shape == (B, k)
  # Mixup: every row mixes its label with its neighbour's, weights lam and
  # 1 - lam, one lam >= 0.5 for the batch.
  y = np.asarray(y)
  lam = y[0, labels[0]]
  assert 0.5 <= lam <= 1.0
  for i in range(B):
    np.testing.assert_allclose(y[i, labels[i]], lam, rtol=1e-6)
    np.testing.assert_allclose(y[i, labels[i - 1]], 1 - lam, atol=1e-6)
    assert np.sum(y[i] > 0) <= 2 and y[i].sum() == pytest.approx(1.0)
  # ... and the images with the same weight (same key, no RandAugment/flip).
  plain = ml_collections.ConfigDict(c.augment.to_dict())
  plain.randaugment_layers, plain.flip = 0, False
  x0, _ = augment.make_train_augment(plain, k)(rng, images, labels)
  norm = augment.normalize(images)
  np.testing.assert_allclose(
      x0, lam * norm + (1 - lam) * jnp.roll(norm, 1, axis=0), atol=1e-5)
  # RandAugment(2, M) changes pixels (every selected op is applied): the
  # recipe's output against the same flips and mixing without it.
  no_ra = ml_collections.ConfigDict(c.augment.to_dict())
  no_ra.randaugment_layers = 0
  x1, _ = augment.make_train_augment(no_ra, k)(rng, images, labels)
  changed = np.mean(np.abs(np.asarray(x) - np.asarray(x1)), axis=(1, 2, 3))
  assert np.mean(changed > 0.02) >= 0.5, changed
  assert abs(float(jnp.std(x)) - float(jnp.std(x1))) > 1e-3
  assert c.augment.randaugment_magnitude == magnitude and alpha > 0


def _same_shrunk_run(name, tfds_dir):
  """An earlier config of NAMES that shrinks to the same run as `name`
  (Table 4's B and L rows on ImageNet-1k differ only in the model)."""
  mine = _shrink(_config(name), tfds_dir)
  for other in NAMES[:NAMES.index(name)]:
    theirs = _shrink(_config(other), tfds_dir)
    theirs.model.model_name = mine.model.model_name
    if theirs.to_json_best_effort() == mine.to_json_best_effort():
      return other
  return None


@pytest.mark.parametrize('name', NAMES)
def test_recipe_trains_end_to_end(name, tfds_dir, tmp_path, monkeypatch):
  same = _same_shrunk_run(name, tfds_dir)
  if same:
    pytest.skip(f'shrunk, {name} is the same run as {same}')
  # As for the real ImageNet, the stand-in does not count as fitting in host
  # memory, so training and evaluation stream through tf.data.
  monkeypatch.setattr(data_tfds, 'MAX_IN_MEMORY_BYTES', 0)
  shapes = []

  def spy(source):
    def wrapped(*args, **kwargs):
      for batch in source(*args, **kwargs):
        shapes.append((source.__name__, batch['image'].shape,
                       batch['image'].dtype))
        yield batch
    return wrapped

  monkeypatch.setattr(ip, 'tfds_train_dataset', spy(ip.tfds_train_dataset))
  monkeypatch.setattr(ip, 'tfds_eval_dataset', spy(ip.tfds_eval_dataset))
  c = _shrink(_config(name), tfds_dir)
  result = train.train_and_evaluate(c, str(tmp_path))
  assert result['steps'] == 2 and result['eval_examples'] == 8
  assert np.isfinite(result['final_eval_loss'])
  # The sigmoid loss of a head still near its init (kernel 0, bias b): each
  # example pays -log sigmoid(b) for its class and -log(1 - sigmoid(b)) for
  # each of the other K - 1.
  assert c.loss == 'sigmoid' and not c.model.stoch_depth_scale
  b, k = c.model.head_bias_init, c.model.num_classes
  at_init = -np.log(1 / (1 + np.exp(-b))) - (k - 1) * np.log(
      1 - 1 / (1 + np.exp(-b)))
  assert result['final_eval_loss'] == pytest.approx(at_init, rel=0.05)
  assert 0 <= result['final_minival_accuracy'] <= 1
  assert set(result['fewshot']) == {
      f'fewshot/cifar10_{n}shot{s}' for n in (1, 2) for s in ('', '-seed-0')}
  assert ('tfds_train_dataset', (B, 224, 224, 3), np.uint8) in shapes
  assert ('tfds_eval_dataset', (B, 224, 224, 3), np.uint8) in shapes
  saved = json.loads((tmp_path / 'config.json').read_text())
  assert saved['augment'] == c.augment.to_dict()
  assert saved['model']['stoch_depth'] == 0.1
  assert saved['learning_rate'] == 1e-3 and saved['weight_decay'] == 0.1
  logged = [json.loads(line) for line in
            (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  lrs = [r['learning_rate'] for r in logged if 'learning_rate' in r]
  assert lrs and all(np.isfinite(lrs))
  # Minival beside val, and the few-shot accuracies, in the log.
  last = logged[-1]
  assert {'eval_accuracy', 'minival_accuracy', 'minival_loss',
          'fewshot/cifar10_1shot', 'fewshot/cifar10_2shot'} <= set(last)
  assert last['minival_examples'] == (1 if c.dataset == 'imagenet2012' else 8)
  # big_vision's other evaluations, on the stand-ins: train[:2%] (1 of the
  # 64), ImageNet-V2 (12) and ReaL (8 of 12 images have real labels).
  extra = ({'train2pct': 1, 'v2': 12, 'real': 8}
           if c.dataset == 'imagenet2012' else {'train25k': 8})
  for name, count in extra.items():
    assert last[f'{name}_examples'] == count, name
    assert 0 <= last[f'{name}_accuracy'] <= 1
    assert np.isfinite(last[f'{name}_loss'])
