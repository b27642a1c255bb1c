"""One fixed pixel permutation for every image of a run (paper §3.4, Fig. 4).

The paper trains Mixer-B/16 and a BiT ResNet-50 on images whose pixels are
shuffled by one permutation shared by all images, train and test alike:

* `none`: the images as they are;
* `patch_pixel`: the order of the patches on the model's patch grid is
  shuffled, and the pixels inside every patch by one permutation shared by
  all patches (the patch grid being the Mixer's, a patch stays a patch);
* `global`: all pixels of the image are shuffled.

The three colour channels of a pixel move together. `config.input_permutation`
says which (`kind`), from what seed (`seed`, numpy's `default_rng`: the same
config gives the same permutation on every machine), and on which patch grid
(`patch_size`; (0, 0) = the model's patch). The permutation is applied on
device after augmentation and before the stem, in the train step, the
evaluator, few-shot feature extraction and `mixer.predict`, by calling the
`InputPermutation` that `from_config` returns.

A Mixer is exactly invariant to `patch_pixel`: `map_mixer_params` gives the
weights for which the Mixer on permuted images computes the same function as
the given weights on the original images (stem kernel rows permuted within a
patch; token-mixing `Dense_0` kernel rows and `Dense_1` kernel columns and
bias permuted along the tokens). With `input_permutation.align_init` a
`patch_pixel` run starts from the initial weights of the same run without
permutation mapped so (`align_initial_state`): the two runs then follow the
same trajectory, up to float rounding (sums taken in another order).

Owns the permutations and that weight map; no training, no I/O.
"""

import dataclasses
from typing import Any, Optional, Tuple

import jax.numpy as jnp
import ml_collections
import numpy as np

from configs import common

KINDS = ('none', 'patch_pixel', 'global')


def defaults() -> ml_collections.ConfigDict:
  """`config.input_permutation`'s fields with their defaults (kind 'none'),
  defined once in `configs.common.input_permutation_defaults`."""
  return common.input_permutation_defaults()


def _pair(value: Any) -> Tuple[int, int]:
  if isinstance(value, int):
    return (value, value)
  value = tuple(int(v) for v in value)
  if len(value) != 2:
    raise ValueError(f'input_permutation.patch_size must be an int or (h, w), '
                     f'got {value}')
  return value


@dataclasses.dataclass(frozen=True, eq=False)
class InputPermutation:
  """A fixed permutation of the pixel positions of [..., H, W, C] images.

  Calling it on images returns `out` with `out[..., k, :] = in[...,
  indices[k], :]` over the H * W positions flattened row-major (channels
  move with their pixel); kind 'none' returns the images untouched.
  `patch_order` (sigma) and `pixel_order` (tau) are set for 'patch_pixel':
  patch p of the output is patch sigma[p] of the input, and pixel q inside
  it is pixel tau[q] of that patch (patches and pixels numbered row-major).
  """
  kind: str
  seed: int
  image_hw: Tuple[int, int]
  patch_hw: Optional[Tuple[int, int]]
  indices: Optional[np.ndarray]
  patch_order: Optional[np.ndarray] = None
  pixel_order: Optional[np.ndarray] = None

  @property
  def key(self) -> Tuple[Any, ...]:
    """What determines the permutation (for caches of jitted functions)."""
    return (self.kind, self.seed, self.image_hw, self.patch_hw)

  def __hash__(self):
    return hash(self.key)

  def __eq__(self, other):
    return isinstance(other, InputPermutation) and self.key == other.key

  def __call__(self, images):
    if self.indices is None:
      return images
    *lead, h, w, c = images.shape
    if (h, w) != self.image_hw:
      raise ValueError(f'input_permutation was made for {self.image_hw} '
                       f'images, got {(h, w)}')
    flat = jnp.reshape(images, tuple(lead) + (h * w, c))
    out = jnp.take(flat, jnp.asarray(self.indices), axis=-2)
    return jnp.reshape(out, images.shape)


def make(kind: str, seed: int, image_hw, patch_hw=None) -> InputPermutation:
  """The permutation of `kind` for images of `image_hw`, drawn from
  `np.random.default_rng(seed)` (patch_pixel: first the patch order, then
  the pixel order inside a patch, on the grid of `patch_hw`)."""
  if kind not in KINDS:
    raise ValueError(f'input_permutation.kind must be one of '
                     f'{", ".join(KINDS)}, got {kind!r}')
  h, w = _pair(image_hw)
  if kind == 'none':
    return InputPermutation(kind, int(seed), (h, w), None, None)
  rng = np.random.default_rng(int(seed))
  if kind == 'global':
    return InputPermutation(kind, int(seed), (h, w), None,
                            rng.permutation(h * w).astype(np.int32))
  if patch_hw is None:
    raise ValueError('a patch_pixel permutation needs a patch size')
  ph, pw = _pair(patch_hw)
  if ph <= 0 or pw <= 0 or h % ph or w % pw:
    raise ValueError(f'input_permutation.patch_size {(ph, pw)} must divide '
                     f'the image size {(h, w)}')
  gh, gw = h // ph, w // pw
  sigma = rng.permutation(gh * gw)
  tau = rng.permutation(ph * pw)
  # Flat position of pixel q of patch p, both row-major: [patch, pixel].
  a, b = np.divmod(np.arange(gh * gw), gw)
  u, v = np.divmod(np.arange(ph * pw), pw)
  position = (a[:, None] * ph + u[None, :]) * w + (b[:, None] * pw + v[None, :])
  indices = np.empty(h * w, np.int64)
  indices[position] = position[sigma][:, tau]
  return InputPermutation(kind, int(seed), (h, w), (ph, pw),
                          indices.astype(np.int32), sigma.astype(np.int32),
                          tau.astype(np.int32))


def settings(config) -> ml_collections.ConfigDict:
  """`config.input_permutation` over the defaults (a config without the
  field is 'none'); unknown fields raise one ValueError naming them."""
  out = defaults()
  given = config.get('input_permutation') if config is not None else None
  if given is None:
    return out
  given = given.to_dict() if hasattr(given, 'to_dict') else dict(given)
  unknown = sorted(set(given) - set(out))
  if unknown:
    raise ValueError(f'unknown config field(s) '
                     f'{", ".join("input_permutation." + u for u in unknown)};'
                     f' the fields are {", ".join(sorted(out))}')
  for key, value in given.items():
    out[key] = tuple(value) if isinstance(value, list) else value
  return out


def _model_patch(config) -> Optional[Tuple[int, int]]:
  model = config.get('model')
  if model is None or 'patches' not in model:
    return None
  size = model.patches
  size = size.get('size') if hasattr(size, 'get') else size
  return _pair(size)


def from_config(config) -> InputPermutation:
  """The run's permutation, for images of the model's input size.

  Raises:
    ValueError: one line naming the field: an unknown kind, a patch size
      that does not divide the image, patch_pixel on a model without a
      patch grid and no `patch_size`, or `align_init` where no weight map
      exists (not patch_pixel, not a Mixer, another grid than the Mixer's).
  """
  s = settings(config)
  size = config.image_size
  image_hw = _pair(size)
  patch = _pair(s.patch_size)
  model_patch = _model_patch(config)
  if patch == (0, 0):
    patch = model_patch
    if s.kind == 'patch_pixel' and patch is None:
      raise ValueError(
          'input_permutation.kind is patch_pixel but the model '
          f'({config.model.get("arch", "mixer")}) has no patch grid: set '
          'input_permutation.patch_size, e.g. (4, 4) as the Mixer it is '
          'compared with')
  if s.align_init:
    if s.kind != 'patch_pixel' or model_patch is None or patch != model_patch:
      raise ValueError(
          'input_permutation.align_init needs kind patch_pixel on a Mixer '
          f'with the Mixer\'s own patch grid (got kind {s.kind!r}, patch '
          f'{patch}, model patch {model_patch}): only then is there a weight '
          'map to the unpermuted run')
  return make(s.kind, s.seed, image_hw, patch)


def map_mixer_params(params: Any, perm: InputPermutation) -> Any:
  """Mixer params `p'` with mixer(perm(x); p') == mixer(x; params).

  For a patch_pixel permutation on the Mixer's own patch grid: the stem
  kernel [ph, pw, C, D] takes row tau[q] at row q of each patch; every
  block's token-mixing `Dense_0` kernel [S, D_S] takes row sigma[p] at row
  p, `Dense_1` kernel [D_S, S] and bias [S] column/entry sigma[p] at p. The
  other parameters act per token or on pooled features and are unchanged.
  """
  if perm.kind != 'patch_pixel':
    raise ValueError(f'only a patch_pixel permutation has a Mixer weight map, '
                     f'not {perm.kind!r}')
  sigma, tau = np.asarray(perm.patch_order), np.asarray(perm.pixel_order)
  out = dict(params)
  stem = dict(out['stem'])
  kernel = stem['kernel']
  ph, pw = kernel.shape[:2]
  if (ph, pw) != perm.patch_hw:
    raise ValueError(f'the stem has {(ph, pw)} patches but the permutation '
                     f'was made on {perm.patch_hw} patches')
  flat = jnp.reshape(kernel, (ph * pw,) + kernel.shape[2:])
  stem['kernel'] = jnp.reshape(flat[tau], kernel.shape)
  out['stem'] = stem
  for name, block in params.items():
    if not name.startswith('MixerBlock_'):
      continue
    block = dict(block)
    tm = dict(block['token_mixing'])
    d0, d1 = dict(tm['Dense_0']), dict(tm['Dense_1'])
    d0['kernel'] = d0['kernel'][sigma]
    d1['kernel'] = d1['kernel'][:, sigma]
    d1['bias'] = d1['bias'][sigma]
    tm['Dense_0'], tm['Dense_1'] = d0, d1
    block['token_mixing'] = tm
    out[name] = block
  return out


def align_initial_state(config, state, tx):
  """`state` with its params mapped by the run's permutation when
  `input_permutation.align_init` (and its optimizer state re-initialised
  for them); else `state` unchanged. Called on a fresh run's state: with
  the same seed, its params are those of the run without permutation."""
  if not settings(config).align_init:
    return state
  params = map_mixer_params(state.params, from_config(config))
  return state.replace(params=params, opt_state=tx.init(params))
