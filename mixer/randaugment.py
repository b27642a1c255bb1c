"""RandAugment on device: its image ops, their magnitude table, and the batch op.

RandAugment follows big_vision's `pp/archive/autoaugment.py` (the TF TPU
EfficientNet code the RandAugment authors released, on tfa's image ops), the
code the Mixer paper's models were trained with: every selected op is always
applied, a shared magnitude M is read relative to _MAX_LEVEL = 10 and may
exceed it (the Mixer paper uses M = 10, 15, 20), geometric ops get a random
sign, and pixels uncovered by a geometric op or Cutout are filled with 128.
The ops repeat TF's arithmetic (float32, truncation to uint8, tfa's nearest
resampling with std::round, rgb_to_grayscale's x / 255 * 255.5), so that
with the 'big_vision' op list each op gives big_vision's pixels;
tests/test_big_vision.py checks every op at M = 10, 15, 20 against them.

Two op lists (`OP_LISTS`):

* 'big_vision': its 16 (no Identity; Invert, Cutout and SolarizeAdd), with
  its constants and quirks as they run: Translate moves 100 px and Cutout's
  half-size is 40 px at M = 10 whatever the image size; Contrast blends
  towards sum(histogram) / 256 = pixels / 256 (196 at 224x224), not the mean
  grey level; Solarize's threshold int(256 M / 10) is converted to uint8 by
  TF, i.e. taken mod 256 (M = 10 and 20: threshold 0, the op inverts every
  pixel; M = 15: 128, the usual solarize); Posterize keeps int(4 M / 10)
  bits (M = 20: all 8); the enhance ops use 0.1 + 1.8 M / 10 unsigned.
* 'paper': the RandAugment paper's 14 (Identity, AutoContrast, Equalize,
  Rotate, Solarize, Color, Posterize, Contrast, Brightness, Sharpness,
  ShearX/Y, TranslateX/Y), with sizes that scale with the image (Translate
  0.45 of the side, Cutout 40/224 of it: big_vision's pixels would wipe out
  a 32x32 image), Contrast towards the mean grey level (PIL's definition)
  and Solarize's threshold not wrapped (no-op from M = 10), for small images.

Measured against big_vision's ops on a 224x224 image at M = 10, 15, 20, both
signs (tests/test_big_vision.py): all 16 give big_vision's pixels exactly,
on CPU. That needs each product rounded as TF's separate ops round it, also
where XLA fuses a * b + c into one FMA (which moved 0.02-0.5 % of the
values, by up to 255 for a resampled pixel): `_mul` and `_fma`. What
remains is forced by running inside the jitted step: the op, sign and
Cutout-centre draws come from JAX's PRNG, not TF's (same distributions), and
the grey level of Color (three float products summed) could still move by
one level on a backend that fuses them (measured on CPU: matches TF for
200,000 random pixels; fused, 1 would differ).

Owns the op lists, the magnitude table and `randaugment`, the batch-level
RandAugment(N, M) that `mixer.augment` calls; the per-image ops are
`mixer.image_ops`. No crops, no mixing, no config reading.
"""

from typing import Any, Sequence, Tuple

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

# The image ops, also reachable from here (tests, callers).
from mixer.image_ops import FILL_VALUE  # pylint: disable=unused-import
from mixer.image_ops import affine_transform
from mixer.image_ops import autocontrast
from mixer.image_ops import blend  # pylint: disable=unused-import
from mixer.image_ops import brightness
from mixer.image_ops import color
from mixer.image_ops import contrast
from mixer.image_ops import cutout
from mixer.image_ops import equalize
from mixer.image_ops import grayscale  # pylint: disable=unused-import
from mixer.image_ops import identity  # pylint: disable=unused-import
from mixer.image_ops import invert
from mixer.image_ops import posterize
from mixer.image_ops import rotate_matrix
from mixer.image_ops import sharpness
from mixer.image_ops import shear_x_matrix
from mixer.image_ops import shear_y_matrix
from mixer.image_ops import solarize
from mixer.image_ops import solarize_add
from mixer.image_ops import translate_matrix

_MAX_LEVEL = 10.0

RANDAUGMENT_OPS = {
    'paper': ('Identity', 'AutoContrast', 'Equalize', 'Rotate', 'Solarize',
              'Color', 'Posterize', 'Contrast', 'Brightness', 'Sharpness',
              'ShearX', 'ShearY', 'TranslateX', 'TranslateY'),
    'big_vision': ('AutoContrast', 'Equalize', 'Invert', 'Rotate',
                   'Posterize', 'Solarize', 'Color', 'Contrast', 'Brightness',
                   'Sharpness', 'ShearX', 'ShearY', 'TranslateX',
                   'TranslateY', 'Cutout', 'SolarizeAdd'),
}
# Per op list: Translate's and Cutout's sizes at M = 10 ('px': pixels, as
# big_vision's translate_const / cutout_const; 'frac': a fraction of the
# side), Contrast's grey level ('pixels/256' as TF computes it, or PIL's
# 'mean'), and whether Solarize's threshold wraps mod 256 (TF's uint8).
OP_LISTS = {
    'big_vision': dict(translate=('px', 100.0), cutout=('px', 40),
                       contrast='pixels/256', solarize_wraps=True),
    'paper': dict(translate=('frac', 0.45), cutout=('frac', 40 / 224),
                  contrast='mean', solarize_wraps=False),
}
GEOMETRIC_OPS = ('Rotate', 'ShearX', 'ShearY', 'TranslateX', 'TranslateY')

Array = jax.Array


def check_batch(images: Array) -> None:
  if images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise ValueError('images must be [B, H, W, C] with C = 1 or 3, got shape '
                     f'{tuple(images.shape)}')


def randaugment(rng: Array, images: Array, num_layers: int,
                magnitude: float, ops: str = 'paper') -> Array:
  """RandAugment(N=num_layers, M=magnitude): N random ops per example.

  Each layer draws, independently per example, one op uniformly from
  RANDAUGMENT_OPS[ops] and a sign for the geometric ones, and applies it at
  the fixed magnitude (see the module docstring for the scale).

  As with `vmap` of a per-example `lax.switch`, every op is computed for the
  whole batch and each example selects its own; the ops are written for
  batches (flat scatter/gather, fast on CPU too) and the geometric ones share
  one affine-sampling pass with a per-example matrix.

  Args:
    rng: PRNG key.
    images: uint8 [B, H, W, C], C = 1 or 3.
    num_layers: N, a Python int >= 0.
    magnitude: M, a Python number >= 0 (10 = big_vision's _MAX_LEVEL).
    ops: 'paper' or 'big_vision'.

  Returns:
    uint8 images of the same shape.
  """
  check_batch(images)
  if images.dtype != jnp.uint8:
    raise TypeError(f'randaugment needs uint8 images, got {images.dtype}')
  if ops not in RANDAUGMENT_OPS:
    raise ValueError(f'RandAugment ops must be one of {sorted(RANDAUGMENT_OPS)}'
                     f', got {ops!r}')
  names = RANDAUGMENT_OPS[ops]
  b, h, w, _ = images.shape
  branches, branch_of_op, matrices = _randaugment_table(
      names, float(magnitude), h, w, ops)
  branch_of_op = jnp.asarray(branch_of_op, jnp.int32)
  matrices = jnp.asarray(matrices, jnp.float32)  # [2 signs, num_ops, 2, 3]

  def layer(images, key):
    k_op, k_sign, k_y, k_x = jax.random.split(key, 4)
    op = jax.random.randint(k_op, (b,), 0, len(names))
    negate = jax.random.bernoulli(k_sign, 0.5, (b,)).astype(jnp.int32)
    center = jnp.stack([jax.random.randint(k_y, (b,), 0, h),
                        jax.random.randint(k_x, (b,), 0, w)], axis=-1)
    outputs = [branch(images, matrices[negate, op], center)
               for branch in branches]
    if len(outputs) == 1:
      return outputs[0], None
    which = jnp.broadcast_to(branch_of_op[op][:, None, None, None],
                             images.shape)
    return lax.select_n(which, *outputs), None

  if num_layers == 0:
    return images
  # A scan, not a Python loop, so compile time does not grow with N.
  images, _ = lax.scan(layer, images, jax.random.split(rng, num_layers))
  return images


# ---------------------------------------------------------------------------
# RandAugment's op table.
# ---------------------------------------------------------------------------


def level_to_args(name: str, magnitude: float, height: int, width: int,
                  ops: str = 'paper') -> Tuple[Any, ...]:
  """big_vision's magnitude -> op argument map (before the random sign), with
  the sizes and Solarize threshold of op list `ops` (`OP_LISTS`)."""
  m = magnitude / _MAX_LEVEL
  enhance = m * 1.8 + 0.1
  kind = OP_LISTS[ops]
  size = lambda key, side: (kind[key][1] if kind[key][0] == 'px' else
                            kind[key][1] * side)
  threshold = int(m * 256)
  if kind['solarize_wraps']:
    threshold %= 256  # TF converts the Python int to the image's uint8.
  return {
      'Identity': (),
      'AutoContrast': (),
      'Equalize': (),
      'Invert': (),
      'Rotate': (m * 30.0,),
      'Posterize': (min(int(m * 4), 8),),
      'Solarize': (threshold,),
      'SolarizeAdd': (int(m * 110),),
      'Color': (enhance,),
      'Contrast': (enhance,),
      'Brightness': (enhance,),
      'Sharpness': (enhance,),
      'ShearX': (m * 0.3,),
      'ShearY': (m * 0.3,),
      'TranslateX': (m * size('translate', width),),
      'TranslateY': (m * size('translate', height),),
      'Cutout': (int(m * size('cutout', min(height, width))),),
  }[name]


def _geometric_matrix(name: str, arg: float, height: int,
                      width: int) -> np.ndarray:
  if name == 'Rotate':
    return rotate_matrix(arg, height, width)
  if name == 'ShearX':
    return shear_x_matrix(arg)
  if name == 'ShearY':
    return shear_y_matrix(arg)
  if name == 'TranslateX':
    return translate_matrix(arg, 0.0)
  if name == 'TranslateY':
    return translate_matrix(0.0, arg)
  return translate_matrix(0.0, 0.0)


def _randaugment_table(names: Sequence[str], magnitude: float, height: int,
                       width: int, ops: str = 'paper'):
  """Builds RandAugment's branches for the ops in `names`.

  Returns (branches, branch_of_op, matrices): each branch maps
  (images, matrices, centers) to images; all geometric ops share the affine
  branch and differ only in their matrix, `matrices[negate, op]`.
  """
  grey = OP_LISTS[ops]['contrast']
  pixel = {
      'Identity': lambda img, c: img,
      'AutoContrast': lambda img, c: autocontrast(img),
      'Equalize': lambda img, c: equalize(img),
      'Invert': lambda img, c: invert(img),
      'Posterize': lambda img, c, bits: posterize(img, bits),
      'Solarize': lambda img, c, threshold: solarize(img, threshold),
      'SolarizeAdd': lambda img, c, add: solarize_add(img, add),
      'Color': lambda img, c, f: color(img, f),
      'Contrast': lambda img, c, f: contrast(img, f, grey),
      'Brightness': lambda img, c, f: brightness(img, f),
      'Sharpness': lambda img, c, f: sharpness(img, f),
      'Cutout': lambda img, c, size: cutout(img, c, size),
  }
  branches = [lambda images, matrix, center: affine_transform(images, matrix)]
  branch_of_op = []
  matrices = np.zeros((2, len(names), 2, 3), np.float32)
  for i, name in enumerate(names):
    if name not in pixel and name not in GEOMETRIC_OPS:
      raise ValueError(f'unknown RandAugment op {name!r}')
    args = level_to_args(name, magnitude, height, width, ops)
    if name in GEOMETRIC_OPS:
      matrices[0, i] = _geometric_matrix(name, args[0], height, width)
      matrices[1, i] = _geometric_matrix(name, -args[0], height, width)
      branch_of_op.append(0)
    else:
      matrices[:, i] = translate_matrix(0.0, 0.0)
      fn = pixel[name]
      branches.append(lambda images, matrix, center, fn=fn, args=args: fn(
          images, center, *args))
      branch_of_op.append(len(branches) - 1)
  return branches, branch_of_op, matrices
