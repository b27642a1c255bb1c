"""This project against big_vision's own numbers (issue 19).

Every reference value below was computed once by running big_vision's code,
google-research/big_vision at commit 0127fb6 (its `configs/mlp_mixer_i1k.py`
and the functions that config runs), with TensorFlow 2.21 and tfa 0.23's
image ops, and written down here, since CI has no network and nothing of
big_vision is in this repository:

* the run length and schedule: `big_vision.utils.steps('total', ...)` and
  the multiplier schedule `big_vision.optax.make` builds
  (`create_learning_rate_schedule(base=1, decay_type='linear',
  warmup_steps=10_000, linear_end=1e-5)`) for `mlp_mixer_i1k.get_config()`
  and `get_config('gpu8')` on train[:99%] (1,268,355 images), and the
  weight-decay update its optimizer makes for a kernel of ones and a zero
  gradient (`wd` 1e-4 times the multiplier);
* its evaluations (`config.evals`): names, datasets, splits, every 2,500;
* few-shot: `pp_builder.get_preprocess_fn('resize(R)|central_crop(T)|
  value_range(-1,1)')` (`common_fewshot.get_fewshot_lsr`) on fixed images,
  and `fewshot_lsr.Evaluator.compute_fewshot_metrics` (its shot sampling and
  float32 solver) on fixed features, its representation cache pre-filled;
* `decode_jpeg_and_inception_crop(224)` on the JPEG below, with its
  `tf.image.sample_distorted_bounding_box` replaced by the stateless sampler
  on a fixed seed (same arguments), so both draw the same box;
* RandAugment: each op of `pp/archive/autoaugment.py` with the argument
  `level_to_arg` gives it at M = 10, 15, 20 (both signs for the geometric
  ops; Cutout centred at (37, 190)), on the images `_images` builds;
* `models.mlp_mixer.load` on a file in the older official layout.

Images are compared by the first 16 hex digits of the SHA-256 of their bytes.
"""

import base64
import hashlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import common
from mixer import data as ip
from mixer import pretrained
from mixer import randaugment as ra
from mixer import train
from mixer.evaluators import classification
from mixer.evaluators import fewshot

tf = pytest.importorskip('tensorflow')
# pylint: disable=g-import-not-at-top,wrong-import-position
from configs import imagenet2012_mixer_b16
from configs import imagenet21k_mixer_b16
from mixer.data import stream


def _digest(a) -> str:
  return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]


# -- 1, 2, 4: run length, learning rate and weight decay ----------------------

# mode -> (batch, total steps, warmup steps, {step: schedule multiplier}).
BIG_VISION_SCHEDULE = {
    '': (4096, 92_897, 10_000, {
        0: 0.0, 1: 9.999999747378752e-05, 10_000: 1.0,
        51_448: 0.5000110268592834, 92_896: 2.2040017938707024e-05,
        92_897: 9.999999747378752e-06}),
    'gpu8': (512, 148_635, 10_000, {
        0: 0.0, 1: 9.999999747378752e-05, 10_000: 1.0,
        79_317: 0.5000085830688477, 148_634: 1.7212089005624875e-05,
        148_635: 9.999999747378752e-06}),
}
BIG_VISION_LR, BIG_VISION_WD = 0.001, 0.0001  # lr and wd of both modes.
IMAGENET_TRAIN_99 = 1_268_355  # train[:99%]: big_vision's ntrain_img.


def _trainer(config, monkeypatch, num_train):
  """The Trainer a run builds, on a dataset of ImageNet's real size (its
  metadata only; the extra evaluations' data are not needed to count)."""
  info = ip.DatasetInfo(
      name=config.dataset, num_classes=config.model.num_classes,
      num_train=num_train, num_eval=50_000, image_shape=(224, 224, 3),
      class_names=tuple(map(str, range(config.model.num_classes))),
      in_memory=False)
  monkeypatch.setattr(ip, 'dataset_info', lambda c: info)
  monkeypatch.setattr(ip, 'check_eval_split', lambda *a, **k: None,
                      raising=False)
  config.model.hidden_dim, config.model.num_blocks = 8, 1
  config.model.tokens_mlp_dim, config.model.channels_mlp_dim = 4, 8
  return train.Trainer(config)


@pytest.mark.parametrize('mode', sorted(BIG_VISION_SCHEDULE))
def test_run_length_schedule_and_weight_decay_are_big_vision_s(
    mode, monkeypatch):
  batch, total, warmup, mult = BIG_VISION_SCHEDULE[mode]
  c = imagenet2012_mixer_b16.get_config(mode)
  assert c.batch_size == batch
  t = _trainer(c, monkeypatch, IMAGENET_TRAIN_99)
  assert (t.total_steps, t.warmup_steps) == (total, warmup)
  for step, m in mult.items():
    assert float(t.schedule(step)) == pytest.approx(
        BIG_VISION_LR * m, rel=1e-5, abs=1e-15), step
  # The decoupled weight decay follows the schedule: wd * multiplier.
  params = {'k': {'kernel': jnp.ones((2, 2))}, 'b': {'bias': jnp.ones((2,))}}
  state = t.tx.init(params)
  zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
  for step, m in mult.items():
    at = optax.tree_utils.tree_set(state, count=jnp.asarray(step, jnp.int32))
    update, _ = t.tx.update(zeros, at, params)
    assert float(update['k']['kernel'][0, 0]) == pytest.approx(
        -BIG_VISION_WD * m, rel=1e-5, abs=1e-15), step
    assert float(update['b']['bias'][0]) == 0.0


def test_imagenet21k_gpu8_follows_the_same_rule(monkeypatch):
  """big_vision has no ImageNet-21k GPU variant: ours is its ImageNet-1k
  rule (batch 512; lr, weight decay, 10k warmup steps unchanged) at 30
  epochs, counted as big_vision counts."""
  c = imagenet21k_mixer_b16.get_config('gpu8')
  n = common.PRETRAIN_TRAIN_EXAMPLES['imagenet21k']
  t = _trainer(c, monkeypatch, n)
  assert (c.batch_size, c.num_epochs, c.learning_rate) == (512, 30, 1e-3)
  assert t.total_steps == round(30 * n / 512) == 828_863
  assert t.warmup_steps == 10_000
  assert c.eval_every_steps == 2500


# -- 5: the evaluations -------------------------------------------------------

# big_vision's config.evals: name -> (dataset, split, label key); all every
# 2,500 steps.
BIG_VISION_EVALS = {
    'minival': ('imagenet2012', 'train[99%:]', 'label'),
    'real': ('imagenet2012_real', 'validation', 'real_label'),
    'train': ('imagenet2012', 'train[:2%]', 'label'),
    'v2': ('imagenet_v2', 'test', 'label'),
    'val': ('imagenet2012', 'validation', 'label'),
}
BIG_VISION_EVAL_EVERY = 2500


@pytest.mark.parametrize('mode', ['', 'gpu8'])
def test_evaluations_are_big_vision_s(mode):
  c = imagenet2012_mixer_b16.get_config(mode)
  ours = {('imagenet2012', c.eval_split, 'label'),
          ('imagenet2012', c.minival_split, 'label')}
  for dataset, split, *label in c.extra_evals.values():
    ours.add((dataset or c.dataset, split, (label or ['label'])[0]))
  assert ours == set(BIG_VISION_EVALS.values())
  assert c.eval_every_steps == BIG_VISION_EVAL_EVERY


# big_vision's classification evaluator (`get_eval_fn`) on these logits and
# multi-hot labels (ReaL's form; row 2 has no label, row 5 is padding):
# (correct, summed loss, counted) for its sigmoid and softmax losses.
REAL_LOGITS = [[2, 0, 0, 0, 1], [0, 3, 0, 1, 0], [0, 0, 0, 0, 5],
               [1, 0, 2, 0, 0], [0, 0, 0, 4, 0], [1, 2, 3, 4, 5]]
REAL_LABELS = [[1, 0, 0, 0, 1], [1, 0, 0, 1, 0], [0, 0, 0, 0, 0],
               [0, 0, 1, 0, 0], [0, 1, 0, 0, 1], [0, 0, 0, 0, 1]]
REAL_MASK = [1, 1, 1, 1, 1, 0]
BIG_VISION_REAL = {'sigmoid': (2.0, 18.271291732788086, 4.0),
                   'softmax': (2.0, 16.361968994140625, 4.0)}


class _FixedLogits:
  """A stand-in model whose `apply` returns its params' logits."""

  def apply(self, variables, images, train):
    del images, train
    return variables['params']


@pytest.mark.parametrize('loss', sorted(BIG_VISION_REAL))
def test_real_accuracy_is_big_vision_s(loss):
  """ReaL: a top-1 prediction is correct when it is one of the image's
  real labels; images without any are left out."""
  step = jax.pmap(classification.make_eval_step(_FixedLogits(), 5, loss),
                  axis_name='batch')
  one = lambda x, dtype=np.float32: np.asarray(x, dtype)[None]
  out = step(one(REAL_LOGITS), one(np.zeros((6, 2, 2, 3)), np.uint8),
             one(REAL_LABELS), one(REAL_MASK))
  got = tuple(float(out[k][0]) for k in ('correct', 'loss', 'count'))
  assert got == pytest.approx(BIG_VISION_REAL[loss], rel=1e-6)


# -- 3: few-shot --------------------------------------------------------------

# (R, T) -> digest of big_vision's resize(R)|central_crop(T)|value_range(-1,1)
# on `_fewshot_images()` (RGB 32x32, grey 28x28).
BIG_VISION_FEWSHOT_PP = {
    (224, 'rgb'): '578a183a83e8c248', (224, 'gray'): '28278c990a3eaad6',
    (32, 'rgb'): '03dc19d616a63773', (32, 'gray'): 'f08bd3cdbf184cfe',
}


def _fewshot_images():
  rs = np.random.RandomState(1)
  return {'rgb': rs.randint(0, 256, (2, 32, 32, 3)).astype(np.uint8),
          'gray': rs.randint(0, 256, (2, 28, 28, 1)).astype(np.uint8)}


def test_fewshot_input_is_big_vision_s_bit_for_bit():
  for name, images in _fewshot_images().items():
    for t in (224, 32):
      x = fewshot.value_range(fewshot.preprocess(images, (t, t)))
      assert x.dtype == np.float32
      assert _digest(x) == BIG_VISION_FEWSHOT_PP[(t, name)], (t, name)
  assert fewshot.resize_size((224, 224)) == (256, 256)  # get_fewshot_lsr.


# compute_fewshot_metrics on `_fewshot_problem()`: 8 declared classes, class
# 7 without any training example, class 3 with 2 (< 5 shots): per seed, its
# accuracies at 1 and 5 shots and its 5-shot indices.
BIG_VISION_FEWSHOT = {
    0: ({1: 0.30000001192092896, 5: 0.6500000357627869},
        [30, 24, 37, 36, 9, 28, 34, 7, 17, 4, 20, 18, 2, 25, 21, 35, 13, 0,
         32, 29, 33, 5, 27, 26, 23, 1, 6, 12, 11, 14, 16, 10]),
    1: ({1: 0.32500001788139343, 5: 0.699999988079071},
        [36, 9, 24, 19, 37, 17, 22, 34, 28, 4, 3, 25, 21, 2, 18, 35, 13, 5,
         31, 0, 33, 32, 23, 27, 26, 6, 1, 10, 12, 16, 11, 14]),
    2: ({1: 0.5, 5: 0.699999988079071},
        [30, 37, 24, 36, 9, 17, 4, 28, 22, 7, 25, 3, 21, 20, 18, 13, 35, 31,
         0, 32, 33, 5, 23, 8, 26, 6, 27, 11, 15, 14, 16, 12]),
}


def _fewshot_problem():
  rs = np.random.RandomState(0)
  labels = rs.permutation(np.concatenate([np.repeat([0, 1, 2, 4, 5, 6], 6),
                                          [3, 3]]))
  centers = rs.randn(8, 16)
  train_x = (centers[labels] + 1.5 * rs.randn(len(labels), 16)).astype(
      np.float32)
  test_y = np.arange(40) % 7
  test_x = (centers[test_y] + 1.5 * rs.randn(40, 16)).astype(np.float32)
  return train_x, labels, test_x, test_y


def test_fewshot_shots_classes_and_seeds_are_big_vision_s():
  train_x, train_y, test_x, test_y = _fewshot_problem()
  for seed, (accs, idx5) in BIG_VISION_FEWSHOT.items():
    # A class with fewer examples than shots gives what it has; the class
    # count is the declared 8, not the largest label + 1.
    idx = fewshot.sample_shots(train_y, 5, seed, num_classes=8)
    assert idx.tolist() == idx5
    for shots, want in accs.items():
      idx = fewshot.sample_shots(train_y, shots, seed, num_classes=8)
      got = fewshot.fit_and_score(train_x[idx], train_y[idx], test_x, test_y,
                                  8, 2.0 ** 10)
      assert got == pytest.approx(want, abs=1e-6), (seed, shots)


# -- 6: Inception crop ----------------------------------------------------------

# A 64x48 JPEG (quality 75) of `coarse blocks + noise`, as tf.io.encode_jpeg
# wrote it; kept as bytes so that no encoder version changes it.
JPEG_B64 = (
    '/9j/4AAQSkZJRgABAQEBLAEsAAD/2wBDAAgGBgcGBQgHBwcJCQgKDBQNDAsLDBkSEw8UHRof'
    'Hh0aHBwgJC4nICIsIxwcKDcpLDAxNDQ0Hyc5PTgyPC4zNDL/2wBDAQkJCQwLDBgNDRgyIRwh'
    'MjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjL/wAAR'
    'CAAwAEADASIAAhEBAxEB/8QAHwAAAQUBAQEBAQEAAAAAAAAAAAECAwQFBgcICQoL/8QAtRAA'
    'AgEDAwIEAwUFBAQAAAF9AQIDAAQRBRIhMUEGE1FhByJxFDKBkaEII0KxwRVS0fAkM2JyggkK'
    'FhcYGRolJicoKSo0NTY3ODk6Q0RFRkdISUpTVFVWV1hZWmNkZWZnaGlqc3R1dnd4eXqDhIWG'
    'h4iJipKTlJWWl5iZmqKjpKWmp6ipqrKztLW2t7i5usLDxMXGx8jJytLT1NXW19jZ2uHi4+Tl'
    '5ufo6erx8vP09fb3+Pn6/8QAHwEAAwEBAQEBAQEBAQAAAAAAAAECAwQFBgcICQoL/8QAtREA'
    'AgECBAQDBAcFBAQAAQJ3AAECAxEEBSExBhJBUQdhcRMiMoEIFEKRobHBCSMzUvAVYnLRChYk'
    'NOEl8RcYGRomJygpKjU2Nzg5OkNERUZHSElKU1RVVldYWVpjZGVmZ2hpanN0dXZ3eHl6goOE'
    'hYaHiImKkpOUlZaXmJmaoqOkpaanqKmqsrO0tba3uLm6wsPExcbHyMnK0tPU1dbX2Nna4uPk'
    '5ebn6Onq8vP09fb3+Pn6/9oADAMBAAIRAxEAPwDmz7d/auiPBzXPfQfnXPDpxn6V7tKv9Svp'
    'zc3y2+/uejWzvlt7n4/8A7zn86zuOT+VHHQDNe+HGcgEmvEyer/Y3Ppz89vK1r+vcxwHFXte'
    'b9za1vtevkfMWeB39Peu+woycVab8+Kxsj0xTqr2Vutz2sHln9nX9/m5rdLbfN9zqcfMPavN'
    'CDg8817lwRnB9q8pB3Y/WvcWJ5eh+c18J/Z1ve5ub5bff3OhJ4NcHycdz9K9c5OB+ua8SPK/'
    'yrz8ny/+zef3ubmt0ta1/N9z1Mi4q5Pafue32vX+6Qjrx0zX0+eV5wT7V84kZBGR/Ol259OP'
    'evIznAfU+T3r3v0ttb/M9HN8Vfk07/ofRhHPXj615p347Ct7nqDgdM9q8C9emPQVFXK/r1vf'
    'ty+V9/mux87lcvrPP0tbz3udn7dPQVF3rnuOtb44P14Ga+mxGG9hbW9z6bC0f7Jvrz8/ytb7'
    '+5eYDvnB71sf0FXcHjI79q4geuDx2r5yjP6pfrf5bHn5dmn9p83ucvLbrfe/kux3/K8Hqawh'
    '8p9648DJ6fhmvYgQO+QK5czyv6hy+/zc1+ltreb7niVcp9vb37W8v+Ca/AHQDsK4f9RWKW9v'
    'rit0/h9K4sFm31bm9y9/P18j6uGG/sXrz8/ytb7+5U7YC9+ua9DyRgg9O1eHjJOO9XunQ8V7'
    'GKreztoehnmH+t+z1ta/nvb0P//Z'
)
# stateless seed -> (box offset, box size, digest of big_vision's crop).
BIG_VISION_INCEPTION = [
    ([0, 0], (4, 2), (34, 30), '57cf3ac7327a10ef'),
    ([0, 1], (7, 17), (39, 31), '371da74e840a1f63'),
    ([7, 3], (17, 3), (26, 34), '179928fc1e779bfd'),
    ([12345, 678], (18, 39), (18, 18), 'e84e4c5c66a4e8bd'),
    ([3, 99], (3, 36), (21, 16), 'a4ebcc195357ae5e'),
]


def test_inception_crop_is_big_vision_s_bit_for_bit():
  jpeg = base64.b64decode(''.join(JPEG_B64))
  source = stream._Source(None, 0, encoded=True, jpeg=True, channels=3)  # pylint: disable=protected-access
  for seed, begin, size, want in BIG_VISION_INCEPTION:
    seed = tf.constant(seed, tf.int64)
    box = tf.image.stateless_sample_distorted_bounding_box(
        tf.image.extract_jpeg_shape(jpeg), tf.zeros([0, 0, 4]), seed=seed,
        area_range=(0.05, 1.0),
        aspect_ratio_range=stream.INCEPTION_RATIO_RANGE,
        min_object_covered=0, use_image_if_no_bounding_boxes=True)
    assert tuple(box[0].numpy()[:2]) == begin
    assert tuple(box[1].numpy()[:2]) == size
    out = stream._inception_crop(source, tf.constant(jpeg), seed, (224, 224),  # pylint: disable=protected-access
                                 0.05).numpy()
    assert out.dtype == np.uint8 and out.shape == (224, 224, 3)
    assert _digest(out) == want, seed


# -- 7: RandAugment, op by op -------------------------------------------------

# (image, op, M, sign) -> digest of big_vision's op output.
BIG_VISION_RANDAUGMENT = {
    ('img', 'AutoContrast', 10, +1): '8c66d99f2ee66027',
    ('img', 'Equalize', 10, +1): '4f3896a132b48800',
    ('img', 'Invert', 10, +1): '502d2c9b98caff88',
    ('img', 'Rotate', 10, +1): 'efb649eb6a6f9f19',
    ('img', 'Rotate', 10, -1): 'e2518f1af0721f1a',
    ('img', 'Posterize', 10, +1): '66119b540724671b',
    ('img', 'Solarize', 10, +1): '502d2c9b98caff88',
    ('img', 'Color', 10, +1): '12d906c10b558b66',
    ('img', 'Contrast', 10, +1): 'df9239c58dfe1c8a',
    ('img', 'Brightness', 10, +1): 'aa2041dc56c30487',
    ('img', 'Sharpness', 10, +1): 'de8bd5274dda583d',
    ('img', 'ShearX', 10, +1): '37ab8f90ff67be68',
    ('img', 'ShearX', 10, -1): 'd03d0cb3c35617d6',
    ('img', 'ShearY', 10, +1): '8bcbdfef929498d5',
    ('img', 'ShearY', 10, -1): '54a31d984ee13a72',
    ('img', 'TranslateX', 10, +1): 'cc2823c771bf3f03',
    ('img', 'TranslateX', 10, -1): 'b55cf029a7bd2f68',
    ('img', 'TranslateY', 10, +1): 'cb76b2ef0824a06f',
    ('img', 'TranslateY', 10, -1): '42f915d01c26a5cb',
    ('img', 'Cutout', 10, +1): '06e10f2256d88aa0',
    ('img', 'SolarizeAdd', 10, +1): 'b81199a6ddf7ed2f',
    ('img', 'Rotate', 15, +1): '725064467bc2b30e',
    ('img', 'Rotate', 15, -1): 'bc329e72e6e7c725',
    ('img', 'Posterize', 15, +1): '318ca9c47d6f7a02',
    ('img', 'Solarize', 15, +1): 'd67080522756e2f0',
    ('img', 'Color', 15, +1): '20ee3a72a9142cbc',
    ('img', 'Contrast', 15, +1): '2b902623ea108975',
    ('img', 'Brightness', 15, +1): '5ad5239782b7eaac',
    ('img', 'Sharpness', 15, +1): 'b00ed2d44f6b5b9e',
    ('img', 'ShearX', 15, +1): '64931c9964cd5b3b',
    ('img', 'ShearX', 15, -1): '3c3cf4835c0627db',
    ('img', 'ShearY', 15, +1): '130ae5f0638880e0',
    ('img', 'ShearY', 15, -1): '4985fd14d56d0624',
    ('img', 'TranslateX', 15, +1): 'dd92b8dad6f39343',
    ('img', 'TranslateX', 15, -1): 'ae49f740934603e8',
    ('img', 'TranslateY', 15, +1): '5272458f4133955f',
    ('img', 'TranslateY', 15, -1): '65d6bb7880921f17',
    ('img', 'Cutout', 15, +1): 'fdddcaf399aa36ed',
    ('img', 'SolarizeAdd', 15, +1): '5543076cf42460d4',
    ('img', 'Rotate', 20, +1): '8cd50039dfc83d3a',
    ('img', 'Rotate', 20, -1): '5667bc3f85b402e4',
    ('img', 'Posterize', 20, +1): '8c66d99f2ee66027',
    ('img', 'Solarize', 20, +1): '502d2c9b98caff88',
    ('img', 'Color', 20, +1): '64660aae6e96c119',
    ('img', 'Contrast', 20, +1): 'a66638f2ba97833e',
    ('img', 'Brightness', 20, +1): '908c9d2698cbae50',
    ('img', 'Sharpness', 20, +1): '4ec0d3d96e7f6a8f',
    ('img', 'ShearX', 20, +1): '6cfe88069ef9440e',
    ('img', 'ShearX', 20, -1): '723a2aec3953cdfd',
    ('img', 'ShearY', 20, +1): '0c304a8e1f05167c',
    ('img', 'ShearY', 20, -1): '7bb991c22ada5014',
    ('img', 'TranslateX', 20, +1): '3b121f6e2107fa3f',
    ('img', 'TranslateX', 20, -1): '45da0c82bc0200bd',
    ('img', 'TranslateY', 20, +1): '88a88bf53517c8be',
    ('img', 'TranslateY', 20, -1): 'c515ee057990276f',
    ('img', 'Cutout', 20, +1): 'c1d29362404d1f86',
    ('img', 'SolarizeAdd', 20, +1): '386e2a02cc683569',
    ('low', 'AutoContrast', 15, +1): '5405f61ebaa47caf',
    ('low', 'Equalize', 15, +1): '3f27d63024de00fe',
    ('low', 'Contrast', 15, +1): '0a3f0ee9e3cbab26',
    ('low', 'Color', 15, +1): '2afeecb20acf5499',
    ('low', 'Sharpness', 15, +1): 'e99466c4e48db6b5',
}
CUTOUT_CENTER = (37, 190)


def _images():
  """'img': 224x224 blocks of random colour plus noise; 'low': the same at
  a quarter of the contrast (for AutoContrast and Equalize)."""
  rs = np.random.RandomState(0)
  img = np.kron(rs.randint(0, 256, (28, 28, 3)), np.ones((8, 8, 1), np.int64))
  img = np.clip(img + rs.randint(-12, 13, img.shape), 0, 255).astype(np.uint8)
  return {'img': img, 'low': (img // 4 + 60).astype(np.uint8)}


@pytest.mark.parametrize('magnitude', [10, 15, 20])
def test_randaugment_ops_are_big_vision_s_bit_for_bit(magnitude):
  images = _images()
  names = ra.RANDAUGMENT_OPS['big_vision']
  branches, branch_of_op, matrices = ra._randaugment_table(  # pylint: disable=protected-access
      names, float(magnitude), 224, 224, 'big_vision')
  cases = {k: v for k, v in BIG_VISION_RANDAUGMENT.items()
           if k[2] == magnitude}
  # Every op whose argument depends on M, at this M.
  assert {k[1] for k in cases} >= set(names) - {
      'AutoContrast', 'Equalize', 'Invert'}

  @jax.jit  # As in the train step: inside one jitted computation.
  def run(image_arrays):
    out = {}
    for (which, name, _, sign) in cases:
      i = names.index(name)
      out[(which, name, sign)] = branches[branch_of_op[i]](
          image_arrays[which], jnp.asarray(matrices[int(sign < 0), i]),
          jnp.asarray(CUTOUT_CENTER))
    return out

  out = run({k: jnp.asarray(v) for k, v in images.items()})
  got = {k: _digest(np.asarray(out[(k[0], k[1], k[3])])) for k in cases}
  assert got == cases


def test_randaugment_big_vision_constants():
  """big_vision's arguments as they act: Solarize's threshold taken mod 256
  by TF's uint8 conversion, pixel sizes for Translate and Cutout."""
  args = lambda name, m, size=224: ra.level_to_args(name, m, size, size,
                                                    'big_vision')
  assert [args('Solarize', m) for m in (5, 10, 15, 20)] == [
      (128,), (0,), (128,), (0,)]
  assert args('TranslateX', 15, 32) == (150.0,)
  assert args('Cutout', 15, 32) == (60,)
  assert args('Posterize', 15) == (6,) and args('Posterize', 20) == (8,)


# -- 8: the older official checkpoint layout ----------------------------------

# big_vision's mlp_mixer.load: older name -> (its name, shape), for a file
# with S = 4 tokens, D_S = 3, C = 5, D_C = 6, 7 classes (arrays of shape
# `_LEGACY_SHAPES`, some with unit axes it squeezes).
BIG_VISION_LEGACY = {
    'Mixer/encoder_norm/bias': ('pre_head_layer_norm/bias', (5,)),
    'Mixer/encoder_norm/scale': ('pre_head_layer_norm/scale', (5,)),
    'embedding/bias': ('stem/bias', (5,)),
    'embedding/kernel': ('stem/kernel', (2, 2, 3, 5)),
    'head/bias': ('head/bias', (7,)),
    'head/kernel': ('head/kernel', (5, 7)),
}
for _b, _lns in ((0, ('LayerNorm_0', 'LayerNorm_2')),
                 (1, ('LayerNorm_0', 'LayerNorm_1'))):
  for _i, _ln in enumerate(_lns):
    for _p in ('scale', 'bias'):
      BIG_VISION_LEGACY[f'Mixer/encoderblock_{_b}/{_ln}/{_p}'] = (
          f'MixerBlock_{_b}/LayerNorm_{_i}/{_p}', (5,))
  for _mlp, (_d0, _d1) in (('token_mixing', (4, 3)),
                           ('channel_mixing', (5, 6))):
    for _j, (_din, _dout) in enumerate(((_d0, _d1), (_d1, _d0))):
      _src = f'Mixer/encoderblock_{_b}/{_mlp}_phase_0/'
      _dst = f'MixerBlock_{_b}/{_mlp}/Dense_{_j}/'
      BIG_VISION_LEGACY[f'{_src}kernel{_j + 1}'] = (_dst + 'kernel',
                                                      (_din, _dout))
      BIG_VISION_LEGACY[f'{_src}bias{_j + 1}'] = (_dst + 'bias', (_dout,))
_LEGACY_UNIT_AXES = {  # Stored with a leading unit axis, as big_vision allows.
    'Mixer/encoderblock_0/token_mixing_phase_0/kernel1',
    'Mixer/encoderblock_0/token_mixing_phase_0/bias1',
    'Mixer/encoderblock_1/channel_mixing_phase_0/kernel2',
}


@pytest.mark.parametrize('prefix', ['', 'opt/target/'])
def test_older_checkpoint_layout_loads_as_big_vision_converts_it(
    prefix, tmp_path):
  names = sorted(BIG_VISION_LEGACY)
  arrays = {}
  for i, name in enumerate(names):
    shape = BIG_VISION_LEGACY[name][1]
    if name in _LEGACY_UNIT_AXES:
      shape = (1,) + shape
    arrays[prefix + name] = np.full(shape, i, np.float32)
  path = tmp_path / 'Mixer-legacy.npz'
  np.savez(path, **arrays)
  flat = pretrained.flatten_params(pretrained.load_npz(str(path)))
  assert set(flat) == {v[0] for v in BIG_VISION_LEGACY.values()}
  for i, name in enumerate(names):
    new, shape = BIG_VISION_LEGACY[name]
    assert flat[new].shape == shape and np.all(flat[new] == i), name
