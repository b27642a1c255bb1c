"""uint8 image ops in pure jnp, with TF's arithmetic: RandAugment's pixels.

Each op maps uint8 [..., H, W, C] (C = 1 or 3; one image or a batch, with
per-image arguments carrying the same leading dims) to uint8 of the same
shape, repeating what big_vision's TF code computes (`pp/archive/
autoaugment.py` on tfa's image ops): float32 arithmetic with each product
rounded as TF's separate ops round it (`_mul`, `_fma`, also where XLA would
fuse a multiply-add), truncation to uint8, tfa's nearest resampling with
std::round and fill 128, rgb_to_grayscale's x / 255 * 255.5.
`mixer.randaugment` builds RandAugment from them; nothing here draws random
numbers or reads a config.
"""

from typing import Tuple

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

FILL_VALUE = 128  # big_vision's `replace` for pixels uncovered by an op.
GRAY_WEIGHTS = (0.2989, 0.5870, 0.1140)  # tf.image.rgb_to_grayscale.

Array = jax.Array


def grayscale(image: Array) -> Array:
  """tf.image.rgb_to_grayscale: uint8 [..., H, W, 1] (1 channel: as is).

  As TF computes it: x / 255 in float32, the weighted sum, then
  `convert_image_dtype` back, i.e. truncation of gray * 255.5.
  """
  if image.shape[-1] == 1:
    return image
  x = image.astype(jnp.float32) * jnp.float32(1 / 255)
  w = [jnp.float32(v) for v in GRAY_WEIGHTS]
  gray = x[..., 0] * w[0] + x[..., 1] * w[1] + x[..., 2] * w[2]
  gray = gray * jnp.float32(255.5)
  return jnp.clip(gray, 0, 255).astype(jnp.uint8)[..., None]


# TF rounds each product of these ops to float32 before adding (Sharpness's
# conv: a fused multiply-add chain); XLA may or may not fuse a * b + c into
# an FMA, per backend. Splitting the float32 factor c into two halves of 12
# significant bits makes every product with a small integer exact, so the
# results below are TF's whatever XLA fuses.


def _split(c) -> Tuple[Array, Array]:
  """float32 c = hi + lo exactly, each with at most 12 significant bits."""
  c = jnp.asarray(c, jnp.float32)
  hi = lax.bitcast_convert_type(
      lax.bitcast_convert_type(c, jnp.int32) & jnp.int32(-4096), jnp.float32)
  return hi, c - hi


def _mul(c, x: Array) -> Array:
  """float32(c * x), rounded once, for integer-valued |x| < 4096."""
  hi, lo = _split(c)
  return hi * x + lo * x


def _fma(c, x: Array, acc: Array) -> Array:
  """float32(c * x + acc), rounded once (to within a double rounding in
  rare ties), for integer-valued |x| < 4096."""
  hi, lo = _split(c)
  p = hi * x
  s = acc + p  # TwoSum: s + e == acc + p exactly.
  bb = s - acc
  e = (acc - (s - bb)) + (p - bb)
  return s + (e + lo * x)


def blend(image1: Array, image2: Array, factor) -> Array:
  """image1 + factor * (image2 - image1), clipped to [0, 255] and truncated.

  factor 0 gives image1, 1 gives image2; above 1 extrapolates (PIL/big_vision).
  """
  a = image1.astype(jnp.float32)
  b = image2.astype(jnp.float32)
  return jnp.clip(a + _mul(factor, b - a), 0.0, 255.0).astype(jnp.uint8)


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


def contrast(image: Array, factor, grey: str = 'mean') -> Array:
  """ImageEnhance.Contrast: blends from a grey level (0) to the image (1).

  grey='mean': the image's mean grey level (of PIL's rounded luma).
  'pixels/256': what big_vision's TF code computes, sum(histogram of the
  grey image) / 256 = H * W / 256 truncated (196 at 224x224), whatever the
  image.
  """
  if grey == 'pixels/256':
    h, w = image.shape[-3:-1]
    level = min(int(np.float32(h * w) / np.float32(256.0)), 255)
    degenerate = jnp.full(image.shape, level, jnp.uint8)
  else:  # PIL's luma, rounded, then its mean.
    luma = (jnp.round(jnp.tensordot(image.astype(jnp.float32), jnp.asarray(
        GRAY_WEIGHTS, jnp.float32), axes=1)) if image.shape[-1] == 3
            else image[..., 0].astype(jnp.float32))
    mean = jnp.mean(luma, axis=(-2, -1), keepdims=True)[..., None]
    degenerate = jnp.broadcast_to(jnp.floor(mean + 0.5), image.shape)
  return blend(degenerate, image, factor)


def brightness(image: Array, factor) -> Array:
  """PIL ImageEnhance.Brightness: blends from black (0) to the image (1)."""
  return blend(jnp.zeros_like(image), image, factor)


def sharpness(image: Array, factor) -> Array:
  """PIL ImageEnhance.Sharpness: blends from a smoothed image (0).

  The smoothing is PIL's SMOOTH kernel [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13
  in float32, truncated (TF's depthwise conv as big_vision runs it) on the
  interior; the one-pixel border keeps the original values.
  """
  h, w, _ = image.shape[-3:]
  if h < 3 or w < 3:
    return image
  x = image.astype(jnp.float32)
  one, five = np.float32(1) / np.float32(13), np.float32(5) / np.float32(13)
  total = None  # The first product, then FMAs in row-major order (TF's).
  for dy in range(3):
    for dx in range(3):
      tap = x[..., dy:h - 2 + dy, dx:w - 2 + dx, :]
      k = five if (dy, dx) == (1, 1) else one
      total = _mul(k, tap) if total is None else _fma(k, tap, total)
  smooth = jnp.clip(total, 0, 255).astype(jnp.uint8)
  degenerate = image.at[..., 1:-1, 1:-1, :].set(smooth)
  return blend(degenerate, image, factor)


def autocontrast(image: Array) -> Array:
  """PIL ImageOps.autocontrast (no cutoff): stretches each channel to [0, 255].

  As big_vision's TF code: x * s - lo * s with s = 255 / (hi - lo) in
  float32, truncated. A constant channel is left unchanged.
  """
  x = image.astype(jnp.float32)
  lo = jnp.min(x, axis=(-3, -2), keepdims=True)
  hi = jnp.max(x, axis=(-3, -2), keepdims=True)
  scale = jnp.float32(255.0) / jnp.where(hi > lo, hi - lo, 1.0)
  scaled = jnp.clip(_mul(scale, x) + _mul(scale, -lo), 0.0,
                    255.0).astype(jnp.uint8)
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
  reads, as tfa.image.transform (which big_vision uses) does, rounding it
  to the nearest pixel as TF's kernel does.
  """
  *lead, h, w, c = image.shape
  flat = image.reshape(-1, h * w, c)
  n = flat.shape[0]
  m = jnp.broadcast_to(jnp.asarray(matrix, jnp.float32),
                       tuple(lead) + (2, 3)).reshape(n, 2, 3)
  ys, xs = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32),
                        jnp.arange(w, dtype=jnp.float32), indexing='ij')
  coeff = lambda r, k: m[:, r, k, None, None]
  # Each product rounded, then summed left to right, as TF's kernel.
  src_x = _mul(coeff(0, 0), xs) + _mul(coeff(0, 1), ys) + coeff(0, 2)
  src_y = _mul(coeff(1, 0), xs) + _mul(coeff(1, 1), ys) + coeff(1, 2)
  # std::round (halves away from zero), as TF's nearest interpolation.
  near = lambda v: (jnp.sign(v) * jnp.floor(jnp.abs(v) + 0.5)).astype(jnp.int32)
  ix, iy = near(src_x), near(src_y)
  inside = (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)
  # A flat gather over the whole batch (fast on CPU, fine on accelerators).
  source = (jnp.arange(n)[:, None, None] * h + jnp.clip(iy, 0, h - 1)) * w + (
      jnp.clip(ix, 0, w - 1))
  out = flat.reshape(n * h * w, c)[source]  # [n, h, w, c]
  out = jnp.where(inside[..., None], out, jnp.asarray(fill, image.dtype))
  return out.reshape(image.shape)


def rotate_matrix(degrees: float, height: int, width: int) -> np.ndarray:
  """Counter-clockwise rotation about the image centre, tfa.image.rotate's
  matrix computed as tfa does (float32 radians, cos, sin and offsets)."""
  f = np.float32
  t = f(degrees * (np.pi / 180.0))
  cos, sin = np.cos(t), np.sin(t)
  w1, h1 = f(width) - f(1), f(height) - f(1)
  x_off = (w1 - (cos * w1 - sin * h1)) / f(2)
  y_off = (h1 - (sin * w1 + cos * h1)) / f(2)
  return np.array([[cos, -sin, x_off], [sin, cos, y_off]], np.float32)


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
