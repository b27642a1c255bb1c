"""Official `.npz` weights, fine-tuning initialisation and the App. C resolution change.

Official checkpoints (the paper's, published at gs://mixer_models/) are flat
`.npz` files keyed by '/'-joined parameter paths, the same names this
project's model uses: `load_npz` / `save_npz` read and write them, and
`load_init_params` turns either kind (or a run's orbax checkpoint, read
through `mixer.checkpoints`) into the initial params of a fine-tuning run
(`config.init_checkpoint`): new zero head when the classes differ, and the
paper's Appendix C token-mixing initialisation (`change_resolution`) when
fine-tuning at a higher resolution.

Owns reading and writing weights outside a run; never writes into a workdir
(run checkpoints are `mixer.checkpoints`).
"""

import os
import zipfile
from typing import Any, Dict, Tuple

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from mixer import checkpoints
from mixer import models
from mixer.params import check_params
from mixer.params import flatten_params
from mixer.params import flatten_params_shapes
from mixer.params import raise_problems
from mixer.params import shape_problems
from mixer.params import unflatten_params
from mixer.params import unfreeze

# Where the paper's checkpoints are published (the README and the configs
# point here): gs://mixer_models/{imagenet1k,imagenet21k}/Mixer-{B,L}_16.npz,
# and SAM/GSAM-trained sizes in gs://mixer_models/{sam,gsam}/ (the list is in
# docs/pretrained.md).
OFFICIAL_CHECKPOINTS_URL = (
    'https://console.cloud.google.com/storage/mixer_models/')
TOKEN_GROUPINGS = ('strided', 'tiles')


def _open(path: str, mode: str):
  """Local files with `open`; URLs (gs://...) with tf.io.gfile, if installed."""
  if '://' in path:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    return tf.io.gfile.GFile(path, mode)
  return open(path, mode)


def load_npz(path: str) -> Dict[str, Any]:
  """Reads an official Mixer `.npz` into the nested params dict.

  The released files (gs://mixer_models/imagenet1k/Mixer-B_16.npz,
  .../imagenet21k/Mixer-L_16.npz, ...) hold one array per parameter under
  its '/'-joined path (`stem/kernel`, `MixerBlock_0/token_mixing/Dense_0/
  kernel`, `pre_head_layer_norm/scale`, `head/bias`, ...). Those are exactly
  this project's module names, so the result is `MlpMixer(...).init(...)
  ['params']` of the matching model: pass it as `{'params': load_npz(p)}`.
  Files in the older layout (`Mixer/encoderblock_<i>/...`) are converted as
  big_vision converts them (`_from_legacy`).

  Raises:
    ValueError: naming `path` if it is missing, not an `.npz` archive, or
      has keys that do not form a parameter tree.
  """
  try:
    with _open(path, 'rb') as f:
      with np.load(f, allow_pickle=False) as data:
        flat = {k: np.asarray(data[k]) for k in data.files}
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f'cannot read checkpoint {path}: {type(e).__name__}: '
                     f'{e}') from e
  if not flat:
    raise ValueError(f'checkpoint {path} holds no arrays')
  keys = sorted(flat)
  for a, b in zip(keys, keys[1:]):
    if b.startswith(a + '/'):
      raise ValueError(f'checkpoint {path} is not a parameter tree: {a!r} is '
                       f'both an array and a prefix of {b!r}')
  return _from_legacy(_renumber_pre_linen(unflatten_params(flat)))


def _from_legacy(tree: Dict[str, Any]) -> Dict[str, Any]:
  """The older official layout in this model's names, as big_vision's
  `mlp_mixer.load` converts it; other trees are returned as they are.

  Older files (some of gs://mixer_models/, e.g. the SAM/GSAM-trained ones)
  may wrap the params in `params/` or `opt/target/` (a training state) and
  name them `embedding` (the stem), `Mixer/encoderblock_<i>/` with
  `token_mixing_phase_0/` and `channel_mixing_phase_0/` holding `kernel1`,
  `bias1`, `kernel2`, `bias2` (squeezed of unit axes), and
  `Mixer/encoder_norm` (the pre-head LayerNorm).
  """
  if 'params' in tree and isinstance(tree['params'], dict):
    tree = tree['params']
  elif isinstance(tree.get('opt'), dict) and 'target' in tree['opt']:
    tree = tree['opt']['target']
  if 'Mixer' not in tree:
    return tree
  tree = dict(tree)
  mixer = dict(tree.pop('Mixer'))

  def mlp(d):
    return {f'Dense_{i}': {'kernel': np.squeeze(d[f'kernel{i + 1}']),
                           'bias': np.squeeze(d[f'bias{i + 1}'])}
            for i in (0, 1)}

  if 'encoder_norm' in mixer:
    tree['pre_head_layer_norm'] = mixer.pop('encoder_norm')
  if 'embedding' in tree:
    tree['stem'] = tree.pop('embedding')
  for key, block in mixer.items():
    if not key.startswith('encoderblock_'):
      raise ValueError(f'unexpected Mixer/{key} in an older-layout Mixer '
                       'checkpoint (expected Mixer/encoderblock_<i>)')
    block = dict(block)
    block['token_mixing'] = mlp(block.pop('token_mixing_phase_0'))
    block['channel_mixing'] = mlp(block.pop('channel_mixing_phase_0'))
    tree['MixerBlock_' + key[len('encoderblock_'):]] = block
  return tree


def _renumber_pre_linen(tree: Any) -> Any:
  """Numbers `<Class>_<i>` submodules per class, 0, 1, ..., in order.

  What vit_jax's `checkpoint.load` does with flax's `convert_pre_linen`:
  pre-Linen flax numbered auto-named submodules with one counter for all
  classes (LayerNorm_0, LayerNorm_2, ...). A no-op on Linen trees such as
  the released Mixer files and this project's own.
  """
  if not isinstance(tree, dict):
    return tree
  by_class = {}
  for key in tree:
    name, _, num = key.rpartition('_')
    if name and num.isdigit():
      by_class.setdefault(name, []).append((int(num), key))
  rename = {}
  for name, items in by_class.items():
    for i, (_, key) in enumerate(sorted(items)):
      rename[key] = f'{name}_{i}'
  return {rename.get(k, k): _renumber_pre_linen(v) for k, v in tree.items()}


def save_npz(params: Any, path: str) -> None:
  """Writes params in the official flat '/'-joined `.npz` format.

  Uncompressed, like the released files; `load_npz` gives back bitwise
  identical arrays (same dtypes, same bytes). `path` is used as given (numpy
  would otherwise append '.npz').
  """
  flat = flatten_params(params)
  tmp = path + '.tmp' if '://' not in path else path
  with _open(tmp, 'wb') as f:
    np.savez(f, **flat)
  if tmp != path:
    os.replace(tmp, path)


# What a checkpoint argument may be, for the errors that say it.
EXPECTED = ("pass an official .npz file (e.g. Mixer-B_16.npz) or a run's "
             'orbax checkpoint: its workdir, its checkpoints/ folder or one '
             'step folder')


def _orbax_step_dir(path: str) -> str:
  """The step folder an orbax `path` (workdir, checkpoints/ folder or step
  folder) stands for: its latest complete step."""
  path = os.path.abspath(path)
  if os.path.isdir(os.path.join(path, checkpoints.CHECKPOINT_SUBDIR)):
    path = os.path.join(path, checkpoints.CHECKPOINT_SUBDIR)
  if os.path.isdir(os.path.join(path, 'state')):
    return path
  steps = checkpoints.complete_steps(path)
  if not steps:
    raise ValueError(f'no checkpoint found in {path}: {EXPECTED} (a '
                     'folder holding checkpoints/<step>/ or state/)')
  return os.path.join(path, str(steps[-1]))


def check_checkpoint(checkpoint: str) -> None:
  """Raises one ValueError naming `checkpoint` when it is missing, a file
  that is not an `.npz` (zip) archive, or a folder without a checkpoint."""
  if '://' in checkpoint:
    return  # gs://...: read through tf.io.gfile by `pretrained`.
  if not os.path.exists(checkpoint):
    raise ValueError(f'checkpoint {checkpoint} does not exist; {EXPECTED}')
  if os.path.isdir(checkpoint):
    _orbax_step_dir(checkpoint)
  elif not zipfile.is_zipfile(checkpoint):
    size = os.path.getsize(checkpoint)
    raise ValueError(
        f'checkpoint {checkpoint} is not an .npz archive (a file of {size:,} '
        'bytes that is not a zip file) nor an orbax checkpoint folder; '
        f'{EXPECTED}')


def load_params(checkpoint: str) -> Dict[str, Any]:
  """The parameter tree (numpy arrays) of an official `.npz` or of one of
  this project's orbax checkpoints (a workdir, its `checkpoints/` folder or
  one step folder: its latest complete step).

  Raises:
    ValueError: one line naming `checkpoint`: missing, a file that is not
      an `.npz` archive, a folder without a checkpoint, or a step that
      cannot be read (damaged or truncated files).
  """
  check_checkpoint(checkpoint)
  if not os.path.isdir(checkpoint):
    return load_npz(checkpoint)
  step_dir = _orbax_step_dir(checkpoint)
  try:
    params = checkpoints.restore_params(step_dir)
  except Exception as e:  # pylint: disable=broad-except
    text = _cause_text(e)
    text = text if len(text) <= 240 else text[:237] + '...'
    raise ValueError(
        f'cannot read the orbax checkpoint {step_dir}: it is damaged or '
        f'incomplete ({text}); pass another step folder or a good copy of '
        'it') from e
  return jax.tree_util.tree_map(np.asarray, unfreeze(params))


def _cause_text(e: BaseException) -> str:
  """`e` as one line without the prefixes earlier wrappers added."""
  text = ' '.join(str(e).split())
  for prefix in ('cannot read orbax checkpoint ',):
    if text.startswith(prefix) and ': ' in text:
      text = text.split(': ', 1)[1]
  return text


def load_for_model(config, checkpoint: str, *, head: bool = True):
  """(model, params) from `checkpoint`, checked to fit `config.model`
  exactly; with `head=False`, the headless model (`num_classes=0`) and the
  params without their `head`.

  Raises:
    ValueError: one line naming the checkpoint and the first parameter that
      does not fit, or what is wrong with the checkpoint itself.
  """
  model = models.build_model(config.model,
                             **({} if head else {'num_classes': 0}))
  shape = models.input_shape(config)
  model.check(shape)
  expected = jax.eval_shape(
      lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1,) + shape),
                         train=False))['params']
  params = load_params(checkpoint)
  if not head:
    params = {k: v for k, v in params.items() if k != 'head'}
  try:
    check_params(params, expected, source=f'checkpoint {checkpoint}')
  except ValueError as e:
    raise ValueError(f'{e} (is --config the one {checkpoint} was trained '
                     'with?)') from e
  return model, jax.tree_util.tree_map(jnp.asarray, params)


def resolution_factor(old_grid: Tuple[int, int],
                      new_grid: Tuple[int, int]) -> Tuple[int, int]:
  """(k_h, k_w) with new_grid = (k_h h, k_w w); ValueError if not integers."""
  (h, w), (nh, nw) = tuple(old_grid), tuple(new_grid)
  if min(h, w, nh, nw) <= 0 or nh % h or nw % w:
    raise ValueError(
        f'cannot change the token grid from {(h, w)} to {(nh, nw)}: the '
        'paper\'s token-mixing initialisation (Appendix C) needs the new '
        'patch grid to be an integer multiple of the old one (same patch '
        'size, resolution scaled by an integer factor)')
  return nh // h, nw // w


def token_groups(old_grid: Tuple[int, int], new_grid: Tuple[int, int],
                 grouping: str = 'strided') -> np.ndarray:
  """Which tokens of the new grid form each of the k_h * k_w groups.

  Returns int [k_h * k_w, h * w]: row g lists, in the row-major order of an
  (h, w) grid, the indices (into the row-major flattened (H, W) token
  sequence the model uses) of the tokens that group g's copy of the
  pretrained token-mixing MLP sees; token t of group g plays the role of
  token t of the pretraining grid.

  grouping:
    'strided' (default): group (a, b) = tokens (k_h i + a, k_w j + b), i.e.
      the k_h x k_w interleaved sub-grids. Every group spans the whole image
      with the original grid's layout, as if the image had been seen at the
      pretraining resolution with a different sub-pixel offset.
    'tiles': group (a, b) = tokens (a h + i, b w + j), i.e. the image cut into
      k_h x k_w contiguous (h x w) tiles, each mixed on its own.
  """
  if grouping not in TOKEN_GROUPINGS:
    raise ValueError(f'token grouping must be one of {TOKEN_GROUPINGS}, got '
                     f'{grouping!r}')
  h, w = old_grid
  kh, kw = resolution_factor(old_grid, new_grid)
  nw = kw * w
  i, j = np.meshgrid(np.arange(h), np.arange(w), indexing='ij')
  groups = []
  for a in range(kh):
    for b in range(kw):
      if grouping == 'strided':
        rows, cols = kh * i + a, kw * j + b
      else:
        rows, cols = a * h + i, b * w + j
      groups.append((rows * nw + cols).reshape(-1))
  return np.stack(groups).astype(np.int32)


def _block_diagonal_token_mlp(mlp: Dict[str, Any], groups: np.ndarray
                              ) -> Dict[str, Any]:
  """token_mixing/{Dense_0,Dense_1} for S' tokens from the one for S."""
  k0 = np.asarray(mlp['Dense_0']['kernel'])  # [S, D_S]
  b0 = np.asarray(mlp['Dense_0']['bias'])  # [D_S]
  k1 = np.asarray(mlp['Dense_1']['kernel'])  # [D_S, S]
  b1 = np.asarray(mlp['Dense_1']['bias'])  # [S]
  n_groups, s = groups.shape
  if k0.shape[0] != s or k1.shape[1] != s:
    raise ValueError(f'token-mixing kernels {k0.shape} / {k1.shape} do not '
                     f'match the old grid of {s} tokens')
  d = k0.shape[1]
  s_new = n_groups * s
  new_k0 = np.zeros((s_new, n_groups * d), k0.dtype)
  new_k1 = np.zeros((n_groups * d, s_new), k1.dtype)
  new_b1 = np.zeros((s_new,), b1.dtype)
  for g, tokens in enumerate(groups):
    hidden = slice(g * d, (g + 1) * d)
    new_k0[tokens, hidden] = k0
    new_k1[hidden, tokens] = k1
    new_b1[tokens] = b1
  out = dict(mlp)
  out['Dense_0'] = {'kernel': new_k0, 'bias': np.tile(b0, n_groups)}
  out['Dense_1'] = {'kernel': new_k1, 'bias': new_b1}
  return out


def change_resolution(params: Any, old_grid: Tuple[int, int],
                      new_grid: Tuple[int, int],
                      grouping: str = 'strided') -> Any:
  """Token-mixing weights for fine-tuning at a higher resolution (App. C).

  With the patch size fixed, an image k times larger per side has S' =
  (k h)(k w) = k^2 S tokens instead of S = h w. As in the paper's Appendix C,
  the S' tokens are split into k^2 groups of S (`token_groups`), and every
  token-mixing MLP becomes block-diagonal: k^2 copies of the pretrained MLP,
  one per group, side by side. Hence

    Dense_0/kernel [S, D_S]  -> [S', k^2 D_S]   (block g: rows = group g's
                                                 tokens, cols g D_S.. )
    Dense_0/bias   [D_S]     -> [k^2 D_S]       (tiled)
    Dense_1/kernel [D_S, S]  -> [k^2 D_S, S']
    Dense_1/bias   [S]       -> [S']            (group g's entries = bias)

  and the model must be built with `tokens_mlp_dim = k^2 D_S`
  (`configs.models.finetune_model_config`). Every other parameter is
  unchanged. Since LayerNorm, the channel-mixing MLP and the stem act per
  token, the new network at initialisation is k^2 copies of the pretrained
  one, each applied to one group of tokens, with the pooled features
  averaged over groups; fine-tuning then learns to mix across groups.
  Different factors per axis (k_h, k_w) are handled the same way.

  Args:
    params: the pretrained params (nested dict, without the 'params' key).
    old_grid: (h, w) patch grid of pretraining (e.g. (14, 14) for B/16 at 224).
    new_grid: (H, W) patch grid of fine-tuning (e.g. (28, 28) at 448).
    grouping: 'strided' (default) or 'tiles', see `token_groups`.

  Returns:
    `params` itself if the grid does not change, else a new tree.
  """
  if tuple(old_grid) == tuple(new_grid):
    return params
  groups = token_groups(tuple(old_grid), tuple(new_grid), grouping)
  out = dict(unfreeze(params))
  blocks = [k for k in out if k.startswith('MixerBlock_')]
  if not blocks:
    raise ValueError('no MixerBlock_* parameters found to change resolution')
  for name in blocks:
    block = dict(out[name])
    block['token_mixing'] = _block_diagonal_token_mlp(
        block['token_mixing'], groups)
    out[name] = block
  return out


def _token_grid(config) -> Tuple[int, int]:
  size = config.image_size
  h, w = (size, size) if isinstance(size, int) else tuple(size)
  ph, pw = models.patch_hw(config.model.patches)
  return h // ph, w // pw


def load_init_params(config, init_params: Any) -> Any:
  """Initial params for fine-tuning from `config.init_checkpoint`.

  `config.init_checkpoint` is an official `.npz` (see
  OFFICIAL_CHECKPOINTS_URL) or one of this project's orbax checkpoints. The
  loaded params replace `init_params` (the freshly initialised model's)
  leaf by leaf, after checking that paths and shapes agree, except:

  * `head`: kept from `init_params` (zero-initialised, as the paper does for
    fine-tuning) when the number of classes differs or the checkpoint has
    no head; dropped when the model has none (`num_classes=0`).
  * token-mixing MLPs: when the number of tokens differs (fine-tuning at a
    higher resolution with the same patch size), converted with
    `change_resolution` (Appendix C); the old grid is (H / k, W / k) for the
    integer k with S' = k^2 S. `config.init_token_grouping` picks the token
    grouping ('strided' by default).

  Raises:
    ValueError: one error naming the (first) offending parameter path and
      both shapes, a `pre_head_layer_norm` present on one side only, a
      `tokens_mlp_dim` that does not fit the resolution change, or an
      unreadable checkpoint.
  """
  path = config.init_checkpoint
  loaded = unfreeze(load_params(path))
  init_params = unfreeze(init_params)
  source = f'checkpoint {os.path.basename(os.path.normpath(path))}'

  ln = 'pre_head_layer_norm'
  if (ln in loaded) != (ln in init_params):
    where = 'the checkpoint' if ln in loaded else 'the model'
    raise ValueError(
        f'{ln} is present in {where} only: the checkpoint {path} was trained '
        f'{"with" if ln in loaded else "without"} the LayerNorm before '
        'pooling; set model.use_pre_head_norm accordingly')

  loaded = dict(loaded)
  head = loaded.pop('head', None)
  if 'head' in init_params:
    if head is None:
      logging.info('%s has no head: keeping the zero-initialised head', path)
    elif shape_problems(flatten_params_shapes(head),
                         flatten_params_shapes(init_params['head']),
                         source=source):
      classes = np.shape(head['bias'])[-1] if 'bias' in head else '?'
      logging.info('Re-initialising the head (zeros, as the paper): %s has %s '
                   'classes, the model %d', path, classes,
                   np.shape(init_params['head']['bias'])[-1])
    else:
      loaded['head'] = head
  elif head is not None:
    logging.info('Dropping the head of %s (the model has num_classes=0)', path)

  # Resolution change: compare token counts in the first block.
  key = 'MixerBlock_0'
  if key in loaded and key in init_params:
    try:
      s_old, d_old = np.shape(loaded[key]['token_mixing']['Dense_0']['kernel'])
      s_new, d_new = np.shape(
          init_params[key]['token_mixing']['Dense_0']['kernel'])
    except (KeyError, TypeError, ValueError):
      s_old = s_new = None
    if s_old and s_new and s_old != s_new:
      new_grid = _token_grid(config)
      k = int(round(np.sqrt(s_new / s_old)))
      if (k * k * s_old != s_new or new_grid[0] % k or new_grid[1] % k
          or new_grid[0] * new_grid[1] != s_new):
        raise ValueError(
            f'{source} has {s_old} tokens but the model has {s_new} (patch '
            f'grid {new_grid}): fine-tuning at another resolution needs the '
            'grid to grow by the same integer factor k along both sides '
            '(paper Appendix C); use `pretrained.change_resolution` directly '
            'for other cases')
      old_grid = (new_grid[0] // k, new_grid[1] // k)
      if d_new != k * k * d_old:
        raise ValueError(
            f'model.tokens_mlp_dim is {d_new} but fine-tuning {source} '
            f'(token grid {old_grid}, tokens_mlp_dim {d_old}) on a grid '
            f'{new_grid} needs k^2 * {d_old} = {k * k * d_old} (paper '
            'Appendix C); build the model config with '
            'configs.models.finetune_model_config')
      grouping = config.get('init_token_grouping', 'strided') or 'strided'
      logging.info('Changing resolution of %s: token grid %s -> %s (k=%d, %s '
                   'groups), tokens_mlp_dim %d -> %d', path, old_grid,
                   new_grid, k, grouping, d_old, d_new)
      loaded = change_resolution(loaded, old_grid, new_grid, grouping)

  flat_loaded = flatten_params_shapes(loaded)
  flat_init = flatten_params_shapes(init_params)
  if 'head' not in loaded:
    flat_init = {k: v for k, v in flat_init.items()
                 if not k.startswith('head/')}
  raise_problems(shape_problems(flat_loaded, flat_init, source=source))

  merged = dict(flatten_params_shapes(init_params))
  for k, v in flat_loaded.items():
    merged[k] = jnp.asarray(np.asarray(v), dtype=merged[k].dtype)
  logging.info('Initialised %d of %d parameter arrays from %s',
               len(flat_loaded), len(merged), path)
  return unflatten_params(merged)
