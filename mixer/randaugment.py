"""RandAugment on device: its image ops, their magnitude table, and the batch op.

RandAugment follows big_vision's `pp/autoaugment.py` (itself the TF TPU
EfficientNet code the RandAugment authors released): every selected op is
always applied, a shared magnitude M is read relative to _MAX_LEVEL = 10 and
may exceed it (the Mixer paper uses M = 10, 15, 20), geometric ops get a
random sign, and pixels uncovered by a geometric op or Cutout are filled with
128. Op definitions and magnitude->argument maps are big_vision's, with these
deliberate differences:

* Translate and Cutout sizes are fractions of the image (0.45 and 40/224):
  big_vision uses 100 and 40 pixels, tuned for 224x224, which would wipe out
  a 32x32 image. At 224 the two agree to within a pixel.
* Contrast blends towards the mean grey level (PIL's definition). The TF code
  takes sum(histogram) / 256, i.e. num_pixels / 256, a constant that depends
  on the image size, not on the image.
* Smoothing (Sharpness) and greyscale are rounded, not truncated, so a flat
  image stays flat.

Quirks kept from big_vision because they are what its users trained with:
Solarize's threshold is 256 * M / 10 (a no-op for M >= 10), Posterize keeps
int(4 * M / 10) bits (clipped to [0, 8]; weaker as M grows, identity from
M = 20, black at M < 2.5), and the enhance ops use the factor 0.1 + 1.8 M / 10
without a random sign.

Two op lists are available: 'paper' (the RandAugment paper's 14: Identity,
AutoContrast, Equalize, Rotate, Solarize, Color, Posterize, Contrast,
Brightness, Sharpness, ShearX/Y, TranslateX/Y) and 'big_vision' (its 16: no
Identity; adds Invert, Cutout and SolarizeAdd).

Owns the per-image ops (uint8 in, uint8 out, pure jnp) and `randaugment`,
the batch-level RandAugment(N, M) that `mixer.augment` calls; no crops, no
mixing, no config reading.
"""

from typing import Any, Sequence, Tuple

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

_MAX_LEVEL = 10.0
FILL_VALUE = 128  # big_vision's `replace` for pixels uncovered by an op.
TRANSLATE_FRAC = 0.45  # Max shift at M = 10, fraction of the side (timm 0.45).
CUTOUT_FRAC = 40 / 224  # Max Cutout half-size at M = 10, fraction of the side.
GRAY_WEIGHTS = (0.2989, 0.5870, 0.1140)  # tf.image.rgb_to_grayscale.

RANDAUGMENT_OPS = {
    'paper': ('Identity', 'AutoContrast', 'Equalize', 'Rotate', 'Solarize',
              'Color', 'Posterize', 'Contrast', 'Brightness', 'Sharpness',
              'ShearX', 'ShearY', 'TranslateX', 'TranslateY'),
    'big_vision': ('AutoContrast', 'Equalize', 'Invert', 'Rotate',
                   'Posterize', 'Solarize', 'Color', 'Contrast', 'Brightness',
                   'Sharpness', 'ShearX', 'ShearY', 'TranslateX',
                   'TranslateY', 'Cutout', 'SolarizeAdd'),
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
      names, float(magnitude), h, w)
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
# Image ops: uint8 [..., H, W, C] -> uint8 [..., H, W, C], C = 1 or 3, for one
# image or a batch (per-image arguments then carry the same leading dims).
# ---------------------------------------------------------------------------


def grayscale(image: Array) -> Array:
  """Luma as uint8 [..., H, W, 1] (a 1-channel image is returned as is)."""
  if image.shape[-1] == 1:
    return image
  gray = jnp.tensordot(image.astype(jnp.float32),
                       jnp.asarray(GRAY_WEIGHTS, jnp.float32), axes=1)
  return jnp.clip(jnp.round(gray), 0, 255).astype(jnp.uint8)[..., None]


def blend(image1: Array, image2: Array, factor) -> Array:
  """image1 + factor * (image2 - image1), clipped to [0, 255] and truncated.

  factor 0 gives image1, 1 gives image2; above 1 extrapolates (PIL/big_vision).
  """
  a = image1.astype(jnp.float32)
  b = image2.astype(jnp.float32)
  return jnp.clip(a + factor * (b - a), 0.0, 255.0).astype(jnp.uint8)


def identity(image: Array) -> Array:
  return image


def invert(image: Array) -> Array:
  return 255 - image


def solarize(image: Array, threshold) -> Array:
  """Inverts pixels >= threshold (256 or more: no-op; 0: `invert`)."""
  return jnp.where(image.astype(jnp.int32) < threshold, image, 255 - image)


def solarize_add(image: Array, addition, threshold=128) -> Array:
  """Adds `addition` (clipped to [0, 255]) to pixels below `threshold`."""
  added = jnp.clip(image.astype(jnp.int32) + addition, 0, 255)
  return jnp.where(image.astype(jnp.int32) < threshold, added.astype(jnp.uint8),
                   image)


def posterize(image: Array, bits) -> Array:
  """Keeps the top `bits` bits of each value (8: no-op, 0: black)."""
  shift = 8 - jnp.clip(jnp.asarray(bits, jnp.int32), 0, 8)
  x = image.astype(jnp.int32)
  return ((x >> shift) << shift).astype(jnp.uint8)


def color(image: Array, factor) -> Array:
  """PIL ImageEnhance.Color: blends from greyscale (0) to the image (1)."""
  return blend(jnp.broadcast_to(grayscale(image), image.shape), image, factor)


def contrast(image: Array, factor) -> Array:
  """PIL ImageEnhance.Contrast: blends from the mean grey level (0)."""
  mean = jnp.mean(grayscale(image).astype(jnp.float32), axis=(-3, -2, -1),
                  keepdims=True)
  degenerate = jnp.broadcast_to(jnp.floor(mean + 0.5), image.shape)
  return blend(degenerate, image, factor)


def brightness(image: Array, factor) -> Array:
  """PIL ImageEnhance.Brightness: blends from black (0) to the image (1)."""
  return blend(jnp.zeros_like(image), image, factor)


def sharpness(image: Array, factor) -> Array:
  """PIL ImageEnhance.Sharpness: blends from a smoothed image (0).

  The smoothing is PIL's SMOOTH kernel [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13
  on the interior; the one-pixel border keeps the original values.
  """
  h, w, _ = image.shape[-3:]
  if h < 3 or w < 3:
    return image
  x = image.astype(jnp.int32)
  # Centre weight 5 = 4 + the 1 in the loop below.
  total = 4 * x[..., 1:-1, 1:-1, :]
  for dy in range(3):
    for dx in range(3):
      total = total + x[..., dy:h - 2 + dy, dx:w - 2 + dx, :]
  smooth = jnp.clip(jnp.round(total / 13.0), 0, 255).astype(jnp.uint8)
  degenerate = image.at[..., 1:-1, 1:-1, :].set(smooth)
  return blend(degenerate, image, factor)


def autocontrast(image: Array) -> Array:
  """PIL ImageOps.autocontrast (no cutoff): stretches each channel to [0, 255].

  A constant channel is left unchanged.
  """
  x = image.astype(jnp.float32)
  lo = jnp.min(x, axis=(-3, -2), keepdims=True)
  hi = jnp.max(x, axis=(-3, -2), keepdims=True)
  span = jnp.where(hi > lo, hi - lo, 1.0)
  scaled = jnp.clip((x - lo) * 255.0 / span, 0.0, 255.0).astype(jnp.uint8)
  return jnp.where(hi > lo, scaled, image)


def equalize(image: Array) -> Array:
  """PIL ImageOps.equalize, per channel (histogram equalisation)."""
  h, w, c = image.shape[-3:]
  x = image.reshape(-1, h * w, c).astype(jnp.int32)
  n = x.shape[0]
  # One flat histogram of n * c * 256 bins and one flat LUT gather: plain 1-D
  # scatter/gather are much faster on CPU than batched ones.
  index = (jnp.arange(n)[:, None, None] * c + jnp.arange(c)) * 256 + x
  hist = jnp.zeros(n * c * 256, jnp.int32).at[index.reshape(-1)].add(1)
  hist = hist.reshape(n, c, 256)
  # PIL: step = (count of all pixels but those in the last non-empty bin)
  # // 255, the last non-empty bin being the channel's maximum; value v maps
  # to (step // 2 + count of pixels below v) // step, or to v if step is 0.
  top = jnp.max(x, axis=1)  # [n, c]
  step = (h * w - jnp.take_along_axis(hist, top[..., None], -1)[..., 0]) // 255
  below = jnp.cumsum(hist, axis=-1) - hist + step[..., None] // 2
  # XLA fuses the LUT into the gather, i.e. recomputes it per pixel, so keep
  # it cheap: a float multiply instead of an integer division. It is exact:
  # (below + 0.5) / step is at least 0.5 / step >= 127 / (h * w) away from
  # any integer, far more than float32's error on these small quotients.
  inv_step = 1.0 / jnp.maximum(step, 1).astype(jnp.float32)
  lut = jnp.floor((below.astype(jnp.float32) + 0.5) * inv_step[..., None])
  lut = jnp.where(step[..., None] == 0, jnp.arange(256, dtype=jnp.float32),
                  jnp.clip(lut, 0, 255)).astype(jnp.uint8)
  return lut.reshape(-1)[index].reshape(image.shape)


def affine_transform(image: Array, matrix: Array,
                     fill: int = FILL_VALUE) -> Array:
  """Resamples with nearest neighbour; uncovered pixels get `fill`.

  `matrix` [..., 2, 3] maps each output pixel's (x, y, 1) (column, row, in
  pixel units with the origin at the top-left pixel) to the input point it
  reads, as tfa.image.transform (which big_vision uses) does.
  """
  *lead, h, w, c = image.shape
  flat = image.reshape(-1, h * w, c)
  n = flat.shape[0]
  m = jnp.broadcast_to(jnp.asarray(matrix, jnp.float32),
                       tuple(lead) + (2, 3)).reshape(n, 2, 3)
  ys, xs = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32),
                        jnp.arange(w, dtype=jnp.float32), indexing='ij')
  coeff = lambda r, k: m[:, r, k, None, None]
  src_x = coeff(0, 0) * xs + coeff(0, 1) * ys + coeff(0, 2)
  src_y = coeff(1, 0) * xs + coeff(1, 1) * ys + coeff(1, 2)
  ix = jnp.floor(src_x + 0.5).astype(jnp.int32)
  iy = jnp.floor(src_y + 0.5).astype(jnp.int32)
  inside = (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)
  # A flat gather over the whole batch (fast on CPU, fine on accelerators).
  source = (jnp.arange(n)[:, None, None] * h + jnp.clip(iy, 0, h - 1)) * w + (
      jnp.clip(ix, 0, w - 1))
  out = flat.reshape(n * h * w, c)[source]  # [n, h, w, c]
  out = jnp.where(inside[..., None], out, jnp.asarray(fill, image.dtype))
  return out.reshape(image.shape)


def rotate_matrix(degrees: float, height: int, width: int) -> np.ndarray:
  """Counter-clockwise rotation about the image centre (tfa.image.rotate)."""
  t = np.deg2rad(degrees)
  cos, sin = np.cos(t), np.sin(t)
  cx, cy = (width - 1) / 2, (height - 1) / 2
  return np.array([[cos, -sin, cx - cos * cx + sin * cy],
                   [sin, cos, cy - sin * cx - cos * cy]], np.float32)


def shear_x_matrix(level: float) -> np.ndarray:
  """Output (x, y) reads input (x + level * y, y), as big_vision's shear_x."""
  return np.array([[1, level, 0], [0, 1, 0]], np.float32)


def shear_y_matrix(level: float) -> np.ndarray:
  return np.array([[1, 0, 0], [level, 1, 0]], np.float32)


def translate_matrix(dx: float, dy: float) -> np.ndarray:
  """Output (x, y) reads input (x + dx, y + dy): content moves by (-dx, -dy)."""
  return np.array([[1, 0, dx], [0, 1, dy]], np.float32)


def cutout(image: Array, center: Array, half_size: int,
           fill: int = FILL_VALUE) -> Array:
  """Fills rows [cy - s, cy + s) x cols [cx - s, cx + s) (clipped) with fill.

  `center` is (cy, cx), shape [..., 2] like the image's leading dims.
  """
  h, w, _ = image.shape[-3:]
  cy = jnp.asarray(center)[..., 0, None, None]
  cx = jnp.asarray(center)[..., 1, None, None]
  rows = jnp.arange(h)[:, None]
  cols = jnp.arange(w)[None, :]
  box = ((rows >= cy - half_size) & (rows < cy + half_size) &
         (cols >= cx - half_size) & (cols < cx + half_size))
  return jnp.where(box[..., None], jnp.asarray(fill, image.dtype), image)


# ---------------------------------------------------------------------------
# RandAugment's op table.
# ---------------------------------------------------------------------------


def level_to_args(name: str, magnitude: float, height: int,
                  width: int) -> Tuple[Any, ...]:
  """big_vision's magnitude -> op argument map (before the random sign)."""
  m = magnitude / _MAX_LEVEL
  enhance = m * 1.8 + 0.1
  return {
      'Identity': (),
      'AutoContrast': (),
      'Equalize': (),
      'Invert': (),
      'Rotate': (m * 30.0,),
      'Posterize': (min(int(m * 4), 8),),
      'Solarize': (int(m * 256),),
      'SolarizeAdd': (int(m * 110),),
      'Color': (enhance,),
      'Contrast': (enhance,),
      'Brightness': (enhance,),
      'Sharpness': (enhance,),
      'ShearX': (m * 0.3,),
      'ShearY': (m * 0.3,),
      'TranslateX': (m * TRANSLATE_FRAC * width,),
      'TranslateY': (m * TRANSLATE_FRAC * height,),
      'Cutout': (int(m * CUTOUT_FRAC * min(height, width)),),
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
                       width: int):
  """Builds RandAugment's branches for the ops in `names`.

  Returns (branches, branch_of_op, matrices): each branch maps
  (images, matrices, centers) to images; all geometric ops share the affine
  branch and differ only in their matrix, `matrices[negate, op]`.
  """
  pixel = {
      'Identity': lambda img, c: img,
      'AutoContrast': lambda img, c: autocontrast(img),
      'Equalize': lambda img, c: equalize(img),
      'Invert': lambda img, c: invert(img),
      'Posterize': lambda img, c, bits: posterize(img, bits),
      'Solarize': lambda img, c, threshold: solarize(img, threshold),
      'SolarizeAdd': lambda img, c, add: solarize_add(img, add),
      'Color': lambda img, c, f: color(img, f),
      'Contrast': lambda img, c, f: contrast(img, f),
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
    args = level_to_args(name, magnitude, height, width)
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
