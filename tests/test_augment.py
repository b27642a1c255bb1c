"""Tests for mixer/augment.py: shapes, the randomness each op promises, the
individual RandAugment ops against PIL, and the label bookkeeping of mixup and
cutmix. Images are tiny (or a few real CIFAR-10 test images when present)."""

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mixer import augment
from mixer import randaugment as ra

CIFAR_TEST = '/work/shared/data/cifar10/test.npz'


def _cifar(n):
  """First n CIFAR-10 test images (uint8 [n, 32, 32, 3]) and labels."""
  if not os.path.exists(CIFAR_TEST):
    pytest.skip(f'{CIFAR_TEST} not present')
  with np.load(CIFAR_TEST) as data:
    return data['images'][:n], data['labels'][:n].astype(np.int32)


def _random_images(seed, shape):
  return np.random.RandomState(seed).randint(0, 256, shape).astype(np.uint8)


def _augment_config(**overrides):
  c = ml_collections.ConfigDict(dict(
      crop='pad', crop_padding=4, flip=True, randaugment_layers=0,
      randaugment_magnitude=0, randaugment_ops='paper', mixup_alpha=0.0,
      cutmix_alpha=0.0, eval_crop='center'))
  c.update(overrides)
  return c


def test_normalize_range_and_dtype():
  x = jnp.array([0, 127, 255], jnp.uint8)
  y = augment.normalize(x)
  assert y.dtype == jnp.float32
  np.testing.assert_allclose(y, [-1.0, 127 / 127.5 - 1, 1.0], atol=1e-6)
  np.testing.assert_allclose(jax.jit(augment.normalize)(x), y, atol=1e-6)
  assert augment.make_eval_preprocess() is augment.normalize


@pytest.mark.parametrize('channels', [1, 3])
def test_shapes_and_dtypes(channels):
  images = jnp.asarray(_random_images(0, (6, 8, 8, channels)))
  labels = jnp.arange(6) % 5
  # RandAugment's shapes for C = 1 and 3: test_randaugment_224; the recipe
  # with it: test_train_augment_pmap_and_jit (compiling it costs seconds).
  cfg = _augment_config(crop_padding=2, mixup_alpha=0.2, cutmix_alpha=1.0)
  train = augment.make_train_augment(cfg, 5)

  @jax.jit  # One compile for everything.
  def run(rng, x, labels):
    return train(rng, x, labels), (
        augment.random_pad_crop(rng, x, 2), augment.random_flip(rng, x))

  (x, y), uint8_outputs = run(jax.random.key(0), images, labels)
  for out in uint8_outputs:
    assert out.shape == images.shape and out.dtype == jnp.uint8
  assert x.shape == images.shape and x.dtype == jnp.float32
  assert y.shape == (6, 5) and y.dtype == jnp.float32
  assert float(x.min()) >= -1 - 1e-6 and float(x.max()) <= 1 + 1e-6


def test_pad_crop_zero_padding_is_identity():
  images = jnp.asarray(_random_images(1, (4, 8, 8, 3)))
  out = augment.random_pad_crop(jax.random.key(0), images, 0)
  np.testing.assert_array_equal(out, images)


def _shifted(image, dy, dx):
  """image[i + dy, j + dx], zero outside: what a crop at offset (dy, dx) is."""
  h, w = image.shape[:2]
  padded = np.pad(image, ((h, h), (w, w), (0, 0)))
  return padded[h + dy:2 * h + dy, w + dx:2 * w + dx]


def test_pad_crop_is_a_shift_within_padding_on_real_images():
  images, _ = _cifar(8)
  p = 4
  out = np.asarray(augment.random_pad_crop(jax.random.key(3),
                                           jnp.asarray(images), p))
  for image, crop in zip(images, out):
    matches = [(dy, dx) for dy in range(-p, p + 1) for dx in range(-p, p + 1)
               if np.array_equal(_shifted(image, dy, dx), crop)]
    assert len(matches) == 1, matches


def test_pad_crop_offsets_cover_the_range():
  p, n = 2, 600
  # Pixel value = 1 + position, so the centre pixel names its source.
  base = (1 + np.arange(64, dtype=np.uint8).reshape(8, 8, 1))
  images = jnp.asarray(np.broadcast_to(base, (n, 8, 8, 1)))
  out = np.asarray(augment.random_pad_crop(jax.random.key(0), images, p))
  offsets = set()
  for crop in out:
    source = int(crop[4, 4, 0]) - 1
    dy, dx = source // 8 - 4, source % 8 - 4
    assert -p <= dy <= p and -p <= dx <= p
    np.testing.assert_array_equal(crop, _shifted(base, dy, dx))
    offsets.add((dy, dx))
  assert len(offsets) == (2 * p + 1) ** 2


def test_flip_half_and_mirrored():
  n = 4000
  images = jnp.asarray(_random_images(2, (n, 3, 4, 1)))
  out = np.asarray(augment.random_flip(jax.random.key(1), images))
  images = np.asarray(images)
  flipped = np.all(out == images[:, :, ::-1], axis=(1, 2, 3))
  same = np.all(out == images, axis=(1, 2, 3))
  assert np.all(flipped | same)
  # Random 3x4 images are never symmetric, so `flipped` is exact.
  assert not np.any(flipped & same)
  assert 0.46 < flipped.mean() < 0.54


def test_randaugment_changes_most_images_and_is_deterministic():
  images, _ = _cifar(64)
  images = jnp.asarray(images)
  fn = jax.jit(ra.randaugment, static_argnums=(2, 3, 4))
  for magnitude, ops in ((10, 'paper'), (15, 'big_vision')):
    a = np.asarray(fn(jax.random.key(0), images, 2, magnitude, ops))
    b = np.asarray(fn(jax.random.key(0), images, 2, magnitude, ops))
    c = np.asarray(fn(jax.random.key(1), images, 2, magnitude, ops))
    assert a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert np.mean(np.any(a != c, axis=(1, 2, 3))) > 0.8
    changed = np.any(a != np.asarray(images), axis=(1, 2, 3))
    assert changed.mean() > 0.8, (magnitude, ops, changed.mean())
  # N = 0 is the identity.
  np.testing.assert_array_equal(
      ra.randaugment(jax.random.key(0), images, 0, 10), images)


@pytest.mark.parametrize('channels,ops', [(3, 'paper'), (1, 'big_vision')])
def test_randaugment_224(channels, ops):
  images = jnp.asarray(_random_images(3, (2, 224, 224, channels)))
  out = jax.jit(ra.randaugment, static_argnums=(2, 3, 4))(
      jax.random.key(0), images, 2, 15, ops)
  assert out.shape == images.shape and out.dtype == jnp.uint8
  assert np.any(np.asarray(out) != np.asarray(images))


def test_randaugment_table_matches_the_ops():
  """Each RandAugment op, as dispatched, equals the op called directly."""
  image = jnp.asarray(_cifar(1)[0][0])
  h, w, _ = image.shape
  names = ra.RANDAUGMENT_OPS['big_vision'] + ('Identity',)
  branches, branch_of_op, matrices = ra._randaugment_table(
      names, 10.0, h, w)
  center = jnp.array([5, 20])
  direct = {'Identity': ra.identity, 'AutoContrast': ra.autocontrast,
            'Equalize': ra.equalize, 'Invert': ra.invert,
            'Posterize': ra.posterize, 'Solarize': ra.solarize,
            'SolarizeAdd': ra.solarize_add, 'Color': ra.color,
            'Contrast': ra.contrast, 'Brightness': ra.brightness,
            'Sharpness': ra.sharpness}

  @jax.jit
  def both_ways(image):
    pairs = {}
    for i, name in enumerate(names):
      for negate in (0, 1):
        got = branches[branch_of_op[i]](
            image, jnp.asarray(matrices[negate, i]), center)
        args = ra.level_to_args(name, 10.0, h, w)
        sign = -1 if negate else 1
        if name in ra.GEOMETRIC_OPS:
          matrix = ra._geometric_matrix(name, sign * args[0], h, w)
          want = ra.affine_transform(image, jnp.asarray(matrix))
        elif name == 'Cutout':
          want = ra.cutout(image, center, *args)
        else:
          want = direct[name](image, *args)
        pairs[f'{name}/{negate}'] = (got, want)
    return pairs

  for key, (got, want) in both_ways(image).items():
    np.testing.assert_array_equal(got, want, err_msg=key)
  # big_vision's magnitude map at M = 10.
  assert ra.level_to_args('Rotate', 10, h, w) == (30.0,)
  assert ra.level_to_args('Solarize', 10, h, w) == (256,)
  assert ra.level_to_args('Posterize', 10, h, w) == (4,)
  assert ra.level_to_args('Posterize', 30, h, w) == (8,)
  np.testing.assert_allclose(ra.level_to_args('Color', 10, h, w), 1.9)
  np.testing.assert_allclose(ra.level_to_args('TranslateX', 10, 224, 224),
                             100.8)


def test_pixel_ops_exact():
  image = jnp.asarray(_random_images(4, (5, 6, 3)))
  x = np.asarray(image).astype(np.int32)
  enhance = (ra.color, ra.contrast, ra.brightness,
             ra.sharpness)

  @jax.jit
  def ops(image, constant):
    return dict(
        identity=ra.identity(image), invert=ra.invert(image),
        sol0=ra.solarize(image, 0), sol256=ra.solarize(image, 256),
        sol128=ra.solarize(image, 128),
        soladd=ra.solarize_add(image, 50),
        post8=ra.posterize(image, 8), post0=ra.posterize(image, 0),
        post3=ra.posterize(image, 3),
        enhance1=[op(image, 1.0) for op in enhance],
        black=ra.brightness(image, 0.0), gray=ra.color(image, 0.0),
        flat=ra.contrast(image, 0.0),
        constant=[ra.autocontrast(constant), ra.equalize(constant),
                  ra.sharpness(constant, 0.0)],
        stretched=ra.autocontrast(image))

  constant = jnp.full((4, 4, 3), 77, jnp.uint8)
  out = jax.tree.map(np.asarray, ops(image, constant))
  np.testing.assert_array_equal(out['identity'], image)
  np.testing.assert_array_equal(out['invert'], 255 - x)
  np.testing.assert_array_equal(out['sol0'], 255 - x)
  np.testing.assert_array_equal(out['sol256'], image)
  np.testing.assert_array_equal(out['sol128'], np.where(x < 128, x, 255 - x))
  np.testing.assert_array_equal(out['soladd'],
                                np.where(x < 128, np.minimum(x + 50, 255), x))
  np.testing.assert_array_equal(out['post8'], image)
  np.testing.assert_array_equal(out['post0'], 0 * x)
  np.testing.assert_array_equal(out['post3'], x & 0b11100000)
  for result in out['enhance1']:
    np.testing.assert_array_equal(result, image)
  np.testing.assert_array_equal(out['black'], 0 * x)
  gray = out['gray']
  assert np.all(gray[..., 0] == gray[..., 1]) and np.all(
      gray[..., 1] == gray[..., 2])
  assert len(np.unique(out['flat'])) == 1
  for result in out['constant']:
    np.testing.assert_array_equal(result, constant)
  stretched = out['stretched']
  assert np.all(stretched.min(axis=(0, 1)) == 0)
  assert np.all(stretched.max(axis=(0, 1)) == 255)


def test_pixel_ops_match_pil():
  pil = pytest.importorskip('PIL.Image')
  from PIL import ImageEnhance, ImageOps  # pylint: disable=g-import-not-at-top
  images, _ = _cifar(4)
  enhance = {'Color': ra.color, 'Contrast': ra.contrast,
             'Brightness': ra.brightness, 'Sharpness': ra.sharpness}
  factors = (0.1, 0.6, 1.9)

  @jax.jit
  def ops(batch):  # The ops take a batch as well as one image.
    return dict(
        equalize=ra.equalize(batch),
        posterize=ra.posterize(batch, 4),
        solarize=ra.solarize(batch, 100),
        autocontrast=ra.autocontrast(batch),
        **{f'{name}/{f}': op(batch, f) for name, op in enhance.items()
           for f in factors})

  out = jax.tree.map(np.asarray, ops(jnp.asarray(images)))
  for i, image in enumerate(images):
    img = pil.fromarray(image)
    np.testing.assert_array_equal(out['equalize'][i], ImageOps.equalize(img))
    np.testing.assert_array_equal(out['posterize'][i],
                                  ImageOps.posterize(img, 4))
    np.testing.assert_array_equal(out['solarize'][i],
                                  ImageOps.solarize(img, 100))
    diff = np.abs(out['autocontrast'][i].astype(np.int32) -
                  np.asarray(ImageOps.autocontrast(img), np.int32))
    assert diff.max() <= 1
    for name in enhance:
      for f in factors:
        want = getattr(ImageEnhance, name)(img).enhance(f)
        diff = np.abs(out[f'{name}/{f}'][i].astype(np.int32) -
                      np.asarray(want, np.int32))
        assert diff.max() <= 3 and diff.mean() < 0.6, (name, f, diff.max(),
                                                       diff.mean())


def test_geometric_ops():
  image = jnp.asarray(_random_images(5, (7, 7, 3)))
  x = np.asarray(image)
  affine = jax.jit(ra.affine_transform)  # One compile for all matrices.
  eye = ra.translate_matrix(0.0, 0.0)
  np.testing.assert_array_equal(affine(image, eye), image)
  np.testing.assert_array_equal(
      affine(image, ra.rotate_matrix(0.0, 7, 7)), image)
  # tfa.image.rotate's convention: positive angles turn counter-clockwise.
  np.testing.assert_array_equal(
      affine(image, ra.rotate_matrix(90.0, 7, 7)),
      np.rot90(x, 1))
  np.testing.assert_array_equal(
      affine(image, ra.rotate_matrix(-90.0, 7, 7)),
      np.rot90(x, -1))
  # TranslateX by 2: content moves left, 128 fills the right.
  out = np.asarray(affine(
      image, ra.translate_matrix(2.0, 0.0)))
  np.testing.assert_array_equal(out[:, :5], x[:, 2:])
  assert np.all(out[:, 5:] == ra.FILL_VALUE)
  out = np.asarray(affine(
      image, ra.translate_matrix(0.0, -3.0)))
  np.testing.assert_array_equal(out[3:], x[:4])
  assert np.all(out[:3] == ra.FILL_VALUE)
  # ShearX by 1: row y reads input row y shifted by y.
  out = np.asarray(affine(image,
                                            ra.shear_x_matrix(1.0)))
  for y in range(7):
    np.testing.assert_array_equal(out[y, :7 - y], x[y, y:])
    assert np.all(out[y, 7 - y:] == ra.FILL_VALUE)
  out = np.asarray(affine(image,
                                            ra.shear_y_matrix(1.0)))
  np.testing.assert_array_equal(out[:, 0], x[:, 0])
  np.testing.assert_array_equal(out[:6, 1], x[1:, 1])
  # Cutout: rows [cy - s, cy + s) x cols [cx - s, cx + s), clipped.
  out = np.asarray(ra.cutout(image, jnp.array([1, 4]), 2))
  mask = np.zeros((7, 7), bool)
  mask[0:3, 2:6] = True
  assert np.all(out[mask] == ra.FILL_VALUE)
  np.testing.assert_array_equal(out[~mask], x[~mask])


def test_mixup_weight_matches_pixels():
  n, k = 6, 4
  images = jnp.asarray(_random_images(6, (n, 5, 5, 3))).astype(jnp.float32)
  labels = jax.nn.one_hot(jnp.arange(n) % k, k)
  partner_images = np.roll(np.asarray(images), 1, axis=0)
  mixup = jax.jit(augment.mixup, static_argnums=3)
  for seed in range(5):
    x, y = mixup(jax.random.key(seed), images, labels, 0.4)
    np.testing.assert_allclose(np.sum(y, axis=-1), 1.0, atol=1e-6)
    differs = np.abs(np.asarray(images) - partner_images) > 20
    lam = ((np.asarray(x) - partner_images)[differs] /
           (np.asarray(images) - partner_images)[differs])
    np.testing.assert_allclose(lam, lam.mean(), atol=1e-3)
    lam = lam.mean()
    assert lam >= 0.5 - 1e-6
    own = np.asarray(y)[np.arange(n), np.arange(n) % k]
    np.testing.assert_allclose(own, lam, atol=1e-4)


def test_cutmix_weight_is_pasted_area():
  n, k, h, w = 6, 6, 16, 12
  # Example i is constant i, so pasted pixels are those that changed.
  images = jnp.broadcast_to(jnp.arange(n, dtype=jnp.float32)[:, None, None,
                                                             None],
                            (n, h, w, 1))
  labels = jax.nn.one_hot(jnp.arange(n), k)
  areas = []
  cutmix = jax.jit(augment.cutmix, static_argnums=3)
  for seed in range(20):
    x, y = cutmix(jax.random.key(seed), images, labels, 1.0)
    changed = np.asarray(x)[..., 0] != np.asarray(images)[..., 0]
    area = changed[0].mean()
    assert np.all(changed.mean(axis=(1, 2)) == area)  # One box for the batch.
    np.testing.assert_array_equal(np.asarray(x)[changed],
                                  np.roll(np.asarray(images), 1, 0)[changed])
    y = np.asarray(y)
    np.testing.assert_allclose(y.sum(-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(y[np.arange(n), np.arange(n)], 1 - area,
                               atol=1e-6)
    np.testing.assert_allclose(y[np.arange(n), (np.arange(n) - 1) % n], area,
                               atol=1e-6)
    areas.append(area)
  assert 0 < np.mean(areas) < 1 and len(set(areas)) > 5


def test_train_augment_pmap_and_jit():
  images, labels = _cifar(8)
  images, labels = jnp.asarray(images), jnp.asarray(labels)
  cfg = _augment_config(randaugment_layers=2, randaugment_magnitude=10,
                        mixup_alpha=0.5, cutmix_alpha=1.0)
  fn = augment.make_train_augment(cfg, 10)
  x, y = jax.pmap(fn)(jax.random.split(jax.random.key(0), 1), images[None],
                      labels[None])
  assert x.shape == (1, 8, 32, 32, 3) and y.shape == (1, 8, 10)
  np.testing.assert_allclose(np.sum(y, -1), 1.0, atol=1e-5)
  assert float(x.min()) >= -1 - 1e-6 and float(x.max()) <= 1 + 1e-6
  # Plain recipe: crop + flip only, labels exactly one-hot.
  x, y = jax.jit(augment.make_train_augment(_augment_config(), 10))(
      jax.random.key(1), images, labels)
  np.testing.assert_array_equal(y, jax.nn.one_hot(labels, 10))
  # No augmentation at all: just normalize.
  cfg = _augment_config(crop='none', flip=False)
  x, _ = augment.make_train_augment(cfg, 10)(jax.random.key(1), images, labels)
  np.testing.assert_allclose(x, augment.normalize(images), atol=1e-6)


@pytest.mark.parametrize('field,value', [
    ('crop', 'random'), ('crop_padding', -1), ('crop_padding', 2.5),
    ('flip', 'yes'), ('randaugment_layers', 1.5), ('randaugment_layers', -1),
    ('randaugment_magnitude', -3), ('randaugment_ops', 'timm'),
    ('mixup_alpha', -0.1), ('cutmix_alpha', 'x')])
def test_bad_config_names_field(field, value):
  cfg = _augment_config().to_dict()  # A plain dict: no ConfigDict typing.
  cfg[field] = value
  with pytest.raises(ValueError, match=f'augment.{field}'):
    augment.make_train_augment(cfg, 10)


def test_config_defaults_are_valid():
  from configs import common, models  # pylint: disable=g-import-not-at-top
  cfg = common.base(models.seed000('baseline'), dataset='cifar10',
                    image_size=32)
  augment.make_train_augment(cfg.augment, 10)
