"""On-device training augmentation in pure JAX: crop, flip, RandAugment, mixup.

Everything here runs inside the jitted (or pmapped) train step, on whatever
batch the step receives: a slice of a device-resident dataset or a host batch.
There is one implementation of each op, so both input pipelines augment
identically. Randomness is per example (crop offset, flip, RandAugment ops)
except mixup/cutmix, which draw one mixing weight per batch as big_vision and
timm do. ImageNet's Inception crop needs variable-size decoded images and runs
in tf.data on the host; it is not here.

Images enter as uint8 [B, H, W, C] with C = 1 or 3 and stay uint8 through the
geometric and colour ops (their definitions are in uint8 arithmetic); only
`normalize` turns them into float32 in [-1, 1], as vit_jax does
(x / 127.5 - 1), which is also the whole eval preprocessing.

RandAugment's image ops and magnitude table are `mixer.randaugment`; this
module owns the batch-level pipeline (`make_train_augment`) and the crop,
flip and mixing ops, and reads `config.augment`.
"""

from typing import Any, Callable, Dict, Sequence, Tuple

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from mixer.randaugment import RANDAUGMENT_OPS
from mixer.randaugment import check_batch
from mixer.randaugment import randaugment

CROPS = ('pad', 'inception', 'none')

Array = jax.Array



# ---------------------------------------------------------------------------
# Batch ops.
# ---------------------------------------------------------------------------


def normalize(images: Array) -> Array:
  """Maps pixel values [0, 255] to float32 [-1, 1] (vit_jax: x / 127.5 - 1)."""
  return jnp.asarray(images).astype(jnp.float32) / 127.5 - 1.0


def random_pad_crop(rng: Array, images: Array, padding: int) -> Array:
  """Zero-pads each side by `padding`, then crops back to H x W at a random
  offset drawn per example (torchvision's RandomCrop(size, padding)).

  Output pixel (i, j) is input pixel (i + dy, j + dx) with dy, dx uniform in
  [-padding, padding], or 0 where that falls outside the image.
  """
  check_batch(images)
  if padding == 0:
    return images
  b, h, w, c = images.shape
  p = padding
  padded = jnp.pad(images, ((0, 0), (p, p), (p, p), (0, 0)))
  offsets = jax.random.randint(rng, (b, 2), 0, 2 * p + 1)
  crop = lambda image, o: lax.dynamic_slice(image, (o[0], o[1], 0), (h, w, c))
  return jax.vmap(crop)(padded, offsets)


def random_flip(rng: Array, images: Array) -> Array:
  """Mirrors each example left-right with probability 0.5."""
  check_batch(images)
  flip = jax.random.bernoulli(rng, 0.5, (images.shape[0], 1, 1, 1))
  return jnp.where(flip, images[:, :, ::-1], images)



def mixup(rng: Array, images: Array, labels: Array,
          alpha: float) -> Tuple[Array, Array]:
  """Mixes each example with its neighbour in the batch (big_vision's mixup).

  One weight lam ~ Beta(alpha, alpha) per batch, folded to max(lam, 1 - lam)
  so the original example dominates; the partner is the batch rolled by one.

  Args:
    rng: PRNG key.
    images: float [B, H, W, C].
    labels: float [B, K] one-hot or soft labels.
    alpha: Beta concentration, > 0.

  Returns:
    (lam * x + (1 - lam) * roll(x), same for labels).
  """
  return _mixup(beta_symmetric(rng, [alpha])[0], images, labels)


def _mixup(lam, images, labels):
  lam = jnp.maximum(lam, 1.0 - lam)
  mix = lambda x: lam * x + (1.0 - lam) * jnp.roll(x, 1, axis=0)
  return mix(images), mix(labels)


def cutmix(rng: Array, images: Array, labels: Array,
           alpha: float) -> Tuple[Array, Array]:
  """Pastes one box from each example's batch neighbour (CutMix, as timm).

  lam ~ Beta(alpha, alpha) sets the box side to sqrt(1 - lam) of the image's;
  its centre is uniform and the box is clipped at the border, so the labels
  use the area actually pasted: (1 - a) * y + a * roll(y), a = box / image.
  One box per batch; the partner is the batch rolled by one, as in `mixup`.

  Args:
    rng: PRNG key.
    images: [B, H, W, C] (any dtype).
    labels: float [B, K].
    alpha: Beta concentration, > 0.

  Returns:
    (images with the box pasted, mixed labels).
  """
  k_lam, k_box = jax.random.split(rng)
  return _cutmix(k_box, beta_symmetric(k_lam, [alpha])[0], images, labels)


def _cutmix(rng, lam, images, labels):
  check_batch(images)
  _, h, w, _ = images.shape
  k_y, k_x = jax.random.split(rng)
  ratio = jnp.sqrt(1.0 - lam)
  cut_h = (h * ratio).astype(jnp.int32)
  cut_w = (w * ratio).astype(jnp.int32)
  cy = jax.random.randint(k_y, (), 0, h)
  cx = jax.random.randint(k_x, (), 0, w)
  y0, y1 = jnp.clip(cy - cut_h // 2, 0, h), jnp.clip(cy + cut_h // 2, 0, h)
  x0, x1 = jnp.clip(cx - cut_w // 2, 0, w), jnp.clip(cx + cut_w // 2, 0, w)
  rows = jnp.arange(h)[:, None]
  cols = jnp.arange(w)[None, :]
  box = (rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1)
  area = ((y1 - y0) * (x1 - x0)).astype(jnp.float32) / (h * w)
  images = jnp.where(box[None, :, :, None], jnp.roll(images, 1, axis=0), images)
  labels = (1.0 - area) * labels + area * jnp.roll(labels, 1, axis=0)
  return images, labels


def beta_symmetric(rng: Array, alphas: Sequence[float]) -> Array:
  """One draw from Beta(a, a) for each a in `alphas`, float32 [len(alphas)].

  Beta(a, b) = G_a / (G_a + G_b) for independent Gammas, in log space. All
  draws share one `loggamma` sampler: each sampler is a rejection loop that
  takes about a second to compile on CPU (`jax.random.beta` uses two).
  """
  alphas = jnp.repeat(jnp.asarray(alphas, jnp.float32), 2)
  log_g = jax.random.loggamma(rng, alphas).reshape(-1, 2)
  return jnp.exp(log_g[:, 0] - jnp.logaddexp(log_g[:, 0], log_g[:, 1]))


def make_train_augment(
    augment_config: Any, num_classes: int
) -> Callable[[Array, Array, Array], Tuple[Array, Array]]:
  """Returns `augment(rng, images, labels) -> (images, soft_labels)`.

  The returned function takes uint8 [B, H, W, C] images and int [B] labels
  (or already soft [B, num_classes] labels) and applies, in order: the crop
  ('pad' -> `random_pad_crop`; 'inception' and 'none' do nothing here), the
  flip, RandAugment (if `randaugment_layers > 0`), `normalize`, one-hot, then
  mixup and/or cutmix (if their alpha > 0; with both, one of them is picked
  per batch with probability 0.5, as timm). Label smoothing is the loss's job.

  Config values are read and validated now, once, and closed over as Python
  constants, so the function jits and pmaps with only arrays as arguments.

  Args:
    augment_config: `config.augment` (a ConfigDict or a mapping).
    num_classes: label space size, for the one-hot encoding.

  Raises:
    ValueError: naming the first bad `augment.*` field.
  """
  cfg = _read_augment_config(augment_config)
  if not isinstance(num_classes, int) or num_classes <= 0:
    raise ValueError(f'num_classes must be a positive integer, got '
                     f'{num_classes!r}')

  def augment(rng, images, labels):
    check_batch(images)
    k_crop, k_flip, k_ra, k_pick, k_lam, k_box = jax.random.split(rng, 6)
    if cfg['crop'] == 'pad':
      images = random_pad_crop(k_crop, images, cfg['crop_padding'])
    if cfg['flip']:
      images = random_flip(k_flip, images)
    if cfg['randaugment_layers'] > 0:
      images = randaugment(k_ra, images, cfg['randaugment_layers'],
                           cfg['randaugment_magnitude'],
                           cfg['randaugment_ops'])
    images = normalize(images)
    labels = jnp.asarray(labels)
    if labels.ndim == 1:
      labels = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
    else:
      labels = labels.astype(jnp.float32)
    mixup_alpha, cutmix_alpha = cfg['mixup_alpha'], cfg['cutmix_alpha']
    if mixup_alpha > 0 and cutmix_alpha > 0:
      lam = beta_symmetric(k_lam, [mixup_alpha, cutmix_alpha])
      images, labels = lax.cond(
          jax.random.bernoulli(k_pick, 0.5),
          lambda x, y: _mixup(lam[0], x, y),
          lambda x, y: _cutmix(k_box, lam[1], x, y),
          images, labels)
    elif mixup_alpha > 0:
      images, labels = _mixup(beta_symmetric(k_lam, [mixup_alpha])[0], images,
                              labels)
    elif cutmix_alpha > 0:
      images, labels = _cutmix(k_box, beta_symmetric(k_lam, [cutmix_alpha])[0],
                               images, labels)
    return images, labels

  return augment


def make_eval_preprocess() -> Callable[[Array], Array]:
  """Returns the eval-time transform: `normalize` only (crops are on host)."""
  return normalize


def _read_augment_config(augment_config: Any) -> Dict[str, Any]:
  """Reads `config.augment` into plain Python values, validating each."""
  get = lambda name, default: (augment_config.get(name, default)
                               if hasattr(augment_config, 'get') else
                               getattr(augment_config, name, default))
  is_int = lambda v: isinstance(v, (int, np.integer)) and not isinstance(
      v, bool)
  is_num = lambda v: isinstance(v, (int, float, np.integer, np.floating)) and (
      not isinstance(v, bool))
  cfg = {}
  crop = get('crop', 'pad')
  if crop not in CROPS:
    raise ValueError(f'augment.crop must be one of {CROPS}, got {crop!r}')
  cfg['crop'] = crop
  padding = get('crop_padding', 4)
  if crop == 'pad' and (not is_int(padding) or padding < 0):
    raise ValueError(f'augment.crop_padding must be an integer >= 0, got '
                     f'{padding!r}')
  cfg['crop_padding'] = int(padding) if is_int(padding) else 0
  flip = get('flip', True)
  if not isinstance(flip, (bool, np.bool_)):
    raise ValueError(f'augment.flip must be a bool, got {flip!r}')
  cfg['flip'] = bool(flip)
  layers = get('randaugment_layers', 0)
  if not is_int(layers) or layers < 0:
    raise ValueError(f'augment.randaugment_layers must be an integer >= 0, '
                     f'got {layers!r}')
  cfg['randaugment_layers'] = int(layers)
  magnitude = get('randaugment_magnitude', 0)
  if not is_num(magnitude) or not 0 <= magnitude < float('inf'):
    raise ValueError(f'augment.randaugment_magnitude must be a number >= 0, '
                     f'got {magnitude!r}')
  cfg['randaugment_magnitude'] = float(magnitude)
  ops = get('randaugment_ops', 'paper')
  if ops not in RANDAUGMENT_OPS:
    raise ValueError(f'augment.randaugment_ops must be one of '
                     f'{tuple(RANDAUGMENT_OPS)}, got {ops!r}')
  cfg['randaugment_ops'] = ops
  for name in ('mixup_alpha', 'cutmix_alpha'):
    alpha = get(name, 0.0)
    if not is_num(alpha) or not 0 <= alpha < float('inf'):
      raise ValueError(f'augment.{name} must be a number >= 0 (0 = off), got '
                       f'{alpha!r}')
    cfg[name] = float(alpha)
  return cfg

