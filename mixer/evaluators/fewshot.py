r"""Few-shot linear evaluation of a frozen Mixer: the paper's "linear 5-shot".

The MLP-Mixer paper plots its scaling studies in linear few-shot accuracy,
measured with big_vision's `fewshot_lsr` evaluator; this module reproduces
that evaluator:

1. Features: the frozen model's pre-logits, i.e. the pooled representation
   the `num_classes=0` model returns (everything but `head`), on
   big_vision's few-shot input `resize(R)|central_crop(T)|value_range(-1, 1)`
   (common_fewshot.py): the image squashed to R x R (bilinear, no
   antialiasing, truncated to uint8), its central T x T kept, then
   -1 + 2 x / 255 in float32; T is the model's input size and R =
   round(T / 0.875), big_vision's 256 for 224 (`preprocess`, `value_range`:
   on the host, bit for bit big_vision's).
   Images stored at varying sizes (tfds's Pets, Caltech, ...) are read from
   tfds squashed to R x R the same way.
   Then the run's fixed input permutation, if it has one
   (`config.input_permutation`, mixer/input_permutation.py), as in training.
2. Shots: for seed s, a numpy Generator `np.random.default_rng(s)` draws one
   permutation of each class's training indices, class 0 first; the N-shot
   training set is the first N indices of every class (`sample_shots`), so
   the 1-shot set is inside the 5-shot set of the same seed; a class with
   fewer than N takes all it has (none: none). Classes are the dataset's
   declared count (tfds's `ClassLabel`), not the largest label seen.
3. Classifier (`fit_and_score`): the N x classes training features are
   whitened with their own per-dimension mean and std (+1e-5); a constant
   feature of 100 is appended (a bias that the L2 penalty barely touches);
   targets are one-hot vectors rescaled to {-1, +1}; the weights are the
   closed-form ridge-regression solution with penalty `l2_reg` (2^10),
   computed through an eigendecomposition of X^T X (or of X X^T when there are
   fewer examples than dimensions); the predicted class is the argmax of the
   test features (whitened with the training statistics) times the weights.
4. Seeds: seeds `seed`, ..., `seed + num_seeds - 1` (big_vision: 0, 1, 2) give
   independent draws; `FewShotEvaluator.evaluate` reports each, as big_vision
   does, as `fewshot/<dataset>_<shots>shot-seed-<s>`, and their mean as
   `fewshot/<dataset>_<shots>shot`.

Differences from big_vision: only the sampled training examples are passed
through the model (big_vision extracts the whole training split and then
indexes it; the features are the same), and the least squares run in float64
numpy on the host (big_vision: float32 jax on the CPU; the formulas are the
same). Measured on random 768-d features, 13,500 test predictions (3 seeds x
4 shot counts x 1,125): 0 differ with 10 independent classes, 5 with 10
correlated ones, 25-38 (0.2-0.3 %) with 100 classes (docs/fewshot.md).

Owns the few-shot metric: feature extraction, shot sampling, the closed-form
classifier and the evaluator the training loop calls (the command line is
`python -m mixer.fewshot`, in mixer/fewshot.py). It never trains, never writes files and never changes the params it is given;
data comes only through `mixer.data.load_split`, weights only through
`mixer.pretrained.load_params`.
"""

from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from configs import common
from mixer import data
from mixer import input_permutation
from mixer import models
from mixer import params as params_lib
from mixer.evaluators import EvaluationStopped

# big_vision's constants: the appended bias feature and the whitening epsilon.
BIAS_CONSTANT = 100.0
WHITEN_EPS = 1e-5


def default_config() -> ml_collections.ConfigDict:
  """The few-shot fields (`config.fewshot`) with big_vision's defaults,
  defined once in `configs.common.fewshot_defaults`."""
  return common.fewshot_defaults()


def fewshot_config(config) -> ml_collections.ConfigDict:
  """`default_config()` updated with whatever `config.fewshot` sets (a run
  config without a `fewshot` field, or with only some of its fields, gets
  the defaults)."""
  out = default_config()
  given = config.get('fewshot') if config is not None else None
  if given is None:
    return out
  given = given.to_dict() if hasattr(given, 'to_dict') else dict(given)
  unknown = sorted(set(given) - set(out))
  if unknown:
    raise ValueError(f'unknown config field(s) '
                     f'{", ".join("fewshot." + u for u in unknown)}; the '
                     f'fields are {", ".join(sorted(out))}')
  for key, value in given.items():
    if key == 'datasets':
      out.datasets = ml_collections.ConfigDict(
          {k: tuple(v) for k, v in dict(value).items()})
    elif key == 'shots':
      out.shots = tuple(value)
    else:
      out[key] = value
  return out


# ---------------------------------------------------------------------------
# Features.
# ---------------------------------------------------------------------------

_FEATURE_FNS = {}


def resize_size(image_size: Sequence[int]) -> Tuple[int, int]:
  """big_vision's few-shot resize R for input T: round(T / 0.875) per side
  (256 for 224, as its `get_fewshot_lsr` defaults)."""
  return tuple(int(round(int(t) / data.CENTER_CROP_FRACTION))
               for t in image_size)


def value_range(images_uint8: np.ndarray) -> np.ndarray:
  """big_vision's `value_range(-1, 1)`: -1 + 2 * (x / 255) in float32, as
  numpy (and TF) compute it (XLA's division is 1 ulp off for some values)."""
  x = np.asarray(images_uint8).astype(np.float32) / np.float32(255)
  return np.float32(-1) + x * np.float32(2)


def preprocess(images_uint8: np.ndarray,
               image_size: Sequence[int]) -> np.ndarray:
  """big_vision's few-shot `resize(R)|central_crop(T)` on the host: uint8
  [N, T_h, T_w, C] from uint8 [N, H, W, C] (then `value_range`)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  t = tuple(int(v) for v in image_size)
  r = resize_size(t)
  x = tf.image.resize(tf.constant(images_uint8), r, method='bilinear',
                      antialias=False)
  x = tf.cast(tf.clip_by_value(x, 0, 255), tf.uint8)
  dy, dx = (r[0] - t[0]) // 2, (r[1] - t[1]) // 2
  return x[:, dy:dy + t[0], dx:dx + t[1]].numpy()


def _feature_fn(model: models.MlpMixer,
                permute: Optional[input_permutation.InputPermutation] = None):
  """The jitted `(params, float32 [-1, 1] images) -> float32 pre-logits`,
  one per (model, permutation): params are an argument, so new params never
  recompile."""
  key = (model, permute)
  if key not in _FEATURE_FNS:

    def features(params, images):
      if permute is not None:  # The run's input permutation, as in training.
        images = permute(images)
      out = model.apply({'params': params}, images, train=False)
      return out.astype(jnp.float32)

    _FEATURE_FNS[key] = jax.jit(features)
  return _FEATURE_FNS[key]


def headless(model: models.MlpMixer) -> models.MlpMixer:
  """The same model with `num_classes=0` (returns the pooled features)."""
  return model.clone(num_classes=0) if model.num_classes else model


def extract_features(model: models.MlpMixer, params: Any,
                     images_uint8: np.ndarray, batch_size: int,
                     image_size: Optional[Sequence[int]] = None,
                     permute: Optional[input_permutation.InputPermutation]
                     = None) -> np.ndarray:
  """Pre-logits of the frozen model: float32 [N, hidden_dim] on the host.

  Args:
    model: an `MlpMixer`; a model with a head is used headless
      (`num_classes=0`), so `params` must not hold `head` (see `strip_head`).
    params: the headless model's params (without the 'params' key).
    images_uint8: uint8 [N, H, W, C] stored pixels.
    batch_size: images per jitted call; the last batch is zero-padded to the
      same shape (its padding rows are dropped), so there is one compile per
      (model, input shape).
    image_size: (h, w) of the model's input: images go through big_vision's
      few-shot `preprocess` to it. None: used as stored.
    permute: the run's input permutation (`mixer.input_permutation`),
      applied to the model-sized images; None: none.
  """
  images = np.asarray(images_uint8)
  if images.ndim == 3:
    images = images[..., None]
  if images.ndim != 4:
    raise ValueError(f'images must be [N, H, W, C], got shape {images.shape}')
  batch_size = int(batch_size)
  if batch_size <= 0:
    raise ValueError(f'fewshot.batch_size must be positive, got {batch_size}')
  fn = _feature_fn(headless(model), permute)
  n = images.shape[0]
  if n == 0:
    dim = model.hidden_dim
    return np.zeros((0, dim), np.float32)
  out = []
  for start in range(0, n, batch_size):
    batch = images[start:start + batch_size]
    if image_size is not None:
      batch = preprocess(batch, image_size)
    batch = value_range(batch)
    real = batch.shape[0]
    if real < batch_size:
      pad = np.zeros((batch_size - real,) + batch.shape[1:], batch.dtype)
      batch = np.concatenate([batch, pad])
    out.append(np.asarray(fn(params, batch))[:real])
  return np.concatenate(out)


def strip_head(params: Any) -> Dict[str, Any]:
  """The params without `head` (a shallow copy; arrays are shared)."""
  params = dict(params_lib.unfreeze(params))
  params.pop('head', None)
  return params


# ---------------------------------------------------------------------------
# Shots.
# ---------------------------------------------------------------------------


def class_permutations(labels: np.ndarray, seed: int,
                       num_classes: Optional[int] = None):
  """[per class c = 0, 1, ...: a random order of the indices with label c].

  One `np.random.default_rng(seed)` draws `rng.permutation` of each class's
  indices (ascending indices in, class 0 first), as big_vision does; the
  order depends on (labels, seed) only.
  """
  labels = np.asarray(labels).reshape(-1)
  if num_classes is None:
    num_classes = int(labels.max(initial=-1)) + 1
  rng = np.random.default_rng(int(seed))
  return [rng.permutation(np.flatnonzero(labels == c))
          for c in range(int(num_classes))]


def sample_shots(labels: np.ndarray, shots: int, seed: int,
                 num_classes: Optional[int] = None) -> np.ndarray:
  """Indices of `shots` training examples of every class (int64 [C * shots]).

  Deterministic: the first `shots` entries of each class's permutation from
  `class_permutations(labels, seed)` (a numpy Generator seeded with `seed`
  alone, one permutation per class in class order), class 0's first. The
  same seed gives the same indices in every run and for every `shots`, so a
  seed's 1-shot set is part of its 5-shot set; another seed gives another
  draw. Classes are 0 .. num_classes - 1 (default: max label + 1); a class
  with fewer than `shots` examples gives all it has, as in big_vision.
  """
  shots = int(shots)
  if shots <= 0:
    raise ValueError(f'shots must be positive, got {shots}')
  perms = class_permutations(labels, seed, num_classes)
  return np.concatenate([perm[:shots] for perm in perms]).astype(np.int64)


# ---------------------------------------------------------------------------
# The closed-form classifier.
# ---------------------------------------------------------------------------


def fit_and_score(train_features: np.ndarray, train_labels: np.ndarray,
                  test_features: np.ndarray, test_labels: np.ndarray,
                  num_classes: int, l2_reg: float = 2.0 ** 10) -> float:
  """Accuracy on the test features of big_vision's L2-regularised least
  squares fitted on the training features (see the module docstring).

  With X the whitened training features plus the constant column 100 (N x D)
  and Y the {-1, +1} one-hot targets (N x C), the weights are
  W = (X^T X + l2 I)^-1 X^T Y, computed as Q diag(1 / (e + l2)) Q^T X^T Y
  from X^T X = Q diag(e) Q^T when N >= D, and as the equal
  X^T (X X^T + l2 I)^-1 Y = X^T Q diag(1 / (e + l2)) Q^T Y from
  X X^T = Q diag(e) Q^T when N < D. The bias column is penalised like the
  others, but at 100 it needs only a tiny weight.
  """
  x = np.asarray(train_features, np.float64)
  y = np.asarray(train_labels).reshape(-1).astype(np.int64)
  xt = np.asarray(test_features, np.float64)
  yt = np.asarray(test_labels).reshape(-1).astype(np.int64)
  if x.ndim != 2 or xt.ndim != 2 or x.shape[1] != xt.shape[1]:
    raise ValueError(f'train features {x.shape} and test features {xt.shape} '
                     'must be [N, D] with the same D')
  if len(y) != len(x) or len(yt) != len(xt):
    raise ValueError('features and labels must have the same length')
  if len(yt) == 0:
    raise ValueError('no test examples')
  mean = x.mean(axis=0, keepdims=True)
  std = x.std(axis=0, keepdims=True) + WHITEN_EPS

  def design(f):
    f = (f - mean) / std
    return np.concatenate([f, np.full((len(f), 1), BIAS_CONSTANT)], axis=1)

  x = design(x)
  targets = 2.0 * np.eye(int(num_classes))[y] - 1.0
  n, d = x.shape
  if n >= d:
    eigs, q = np.linalg.eigh(x.T @ x)
    lhs, rhs = q, q.T @ (x.T @ targets)
  else:
    eigs, q = np.linalg.eigh(x @ x.T)
    lhs, rhs = x.T @ q, q.T @ targets
  w = (lhs / (eigs + float(l2_reg))[None, :]) @ rhs
  preds = np.argmax(design(xt) @ w, axis=1)
  return float(np.mean(preds == yt))


# ---------------------------------------------------------------------------
# The evaluator.
# ---------------------------------------------------------------------------


def _dataset_config(config, dataset: str, data_dir: str):
  """A copy of the run config reading `dataset` (model headless, so that
  the run's class count never validates another dataset's labels), with
  images of varying sizes loaded at big_vision's few-shot resize R x R."""
  out = config.copy_and_resolve_references()
  with out.unlocked():
    r = resize_size(models.input_shape(config)[:2])
    out.image_size = r[0] if isinstance(config.image_size, int) else r
    same = str(dataset).split(':')[0] == str(out.get('dataset', '')).split(
        ':')[0]
    out.dataset = dataset
    if data_dir:
      out.data_dir = data_dir
    elif not same:  # The run's data_dir holds the run's dataset, not this.
      out.data_dir = ''
    if out.get('model') is not None and 'num_classes' in out.model:
      out.model.num_classes = 0
  return out


def _unreplicate(params: Any, expected: Any) -> Any:
  """`params` as the model expects them: drops `head` and, for params
  replicated over local devices (the training loop's pmapped state, every
  leaf with an extra leading device axis), takes the first copy."""
  params = strip_head(params)
  flat = params_lib.flatten_params_shapes(params)
  want = params_lib.flatten_params_shapes(expected)
  shape = lambda tree, k: tuple(np.shape(tree[k]))
  if set(flat) == set(want) and all(
      len(shape(flat, k)) == len(shape(want, k)) + 1 and
      shape(flat, k)[1:] == shape(want, k) for k in want):
    params = jax.tree_util.tree_map(lambda a: a[0], params)
  return params


class FewShotEvaluator:
  """big_vision's few-shot linear evaluation of a model on `config.fewshot`'s
  datasets (defaults when the config has no `fewshot` field).

  Args:
    config: the run config (`model`, `image_size`, `channels`, `dataset`,
      `data_dir`, and optionally `fewshot`).
    model: the run's model (with or without a head); it is used headless.
    fewshot: overrides of `config.fewshot` (a ConfigDict or dict of its
      fields), e.g. from the command line.
  """

  def __init__(self, config, model: Optional[models.MlpMixer] = None,
               fewshot: Optional[Dict[str, Any]] = None):
    self.config = config
    self.fs = fewshot_config(config)
    for key, value in dict(fewshot or {}).items():
      if key not in self.fs:
        raise ValueError(f'unknown few-shot field {key!r}')
      if key == 'datasets':
        value = ml_collections.ConfigDict(
            {k: tuple(v) for k, v in dict(value).items()})
      self.fs[key] = tuple(value) if key == 'shots' else value
    self._check()
    model = model if model is not None else models.build_model(config.model)
    self.model = headless(model)
    self.input_shape = models.input_shape(config)
    self.model.check(self.input_shape)
    self.permute = input_permutation.from_config(config)
    self.expected = jax.eval_shape(
        lambda: self.model.init(jax.random.PRNGKey(0),
                                jnp.zeros((1,) + self.input_shape),
                                train=False))['params']
    self._data = {}  # name -> (train images, train labels, test ..., C).
    self._samples = {}  # name -> {(seed, shots): indices}.

  def _check(self):
    fs = self.fs
    shots = tuple(int(s) for s in fs.shots)
    if not shots or min(shots) <= 0:
      raise ValueError(f'fewshot.shots must be positive integers, got '
                       f'{tuple(fs.shots)}')
    if int(fs.num_seeds) <= 0:
      raise ValueError(f'fewshot.num_seeds must be positive, got '
                       f'{fs.num_seeds}')
    if not float(fs.l2_reg) > 0:
      raise ValueError(f'fewshot.l2_reg must be positive, got {fs.l2_reg}')
    if int(fs.batch_size) <= 0:
      raise ValueError(f'fewshot.batch_size must be positive, got '
                       f'{fs.batch_size}')
    if not fs.datasets:
      raise ValueError('fewshot.datasets is empty')
    for name, spec in fs.datasets.items():
      if len(tuple(spec)) != 3:
        raise ValueError(f'fewshot.datasets[{name!r}] must be (dataset, train '
                         f'split, test split), got {tuple(spec)}')

  @property
  def seeds(self) -> Tuple[int, ...]:
    return tuple(int(self.fs.seed) + i for i in range(int(self.fs.num_seeds)))

  def _load(self, name: str):
    """(train images, train labels, test images, test labels, classes) of
    one few-shot dataset, loaded once per evaluator."""
    if name not in self._data:
      dataset, train_split, test_split = tuple(self.fs.datasets[name])
      cfg = _dataset_config(self.config, str(dataset),
                            str(self.fs.get('data_dir', '') or ''))
      train_x, train_y = data.load_split(cfg, str(train_split), 'bilinear')
      test_x, test_y = data.load_split(cfg, str(test_split), 'bilinear')
      num_test = int(self.fs.num_test)
      if num_test > 0:
        test_x, test_y = test_x[:num_test], test_y[:num_test]
      channels = self.input_shape[2]
      for split, x in ((train_split, train_x), (test_split, test_x)):
        c = x.shape[3] if x.ndim == 4 else 1
        if c != channels:
          raise ValueError(
              f'few-shot dataset {dataset!r} split {split!r} has {c}-channel '
              f'images but the model takes {channels}; pick a dataset with '
              f'{channels} channel(s) in fewshot.datasets')
      # The dataset's declared classes (big_vision: tfds's ClassLabel).
      with cfg.unlocked():
        cfg.train_split, cfg.eval_split = str(train_split), str(test_split)
      num_classes = max(data.dataset_info(cfg).num_classes, int(max(
          train_y.max(initial=-1), test_y.max(initial=-1))) + 1)
      self._data[name] = (train_x, np.asarray(train_y), test_x,
                          np.asarray(test_y), num_classes)
      logging.info('Few-shot %s: %s %r (%d examples), %r (%d examples), %d '
                   'classes', name, dataset, train_split, len(train_y),
                   test_split, len(test_y), num_classes)
    return self._data[name]

  def _sample(self, name: str, labels: np.ndarray, num_classes: int):
    """{(seed, shots): indices into the train split}, drawn once."""
    if name not in self._samples:
      out = {}
      for seed in self.seeds:
        for shots in self.fs.shots:
          out[(seed, int(shots))] = sample_shots(labels, int(shots), seed,
                                                 num_classes)
      self._samples[name] = out
    return self._samples[name]

  def params_for_model(self, params: Any) -> Any:
    """`params` without head (first copy if replicated), checked against the
    headless model."""
    params = _unreplicate(params, self.expected)
    params_lib.check_params(params, self.expected, source='the params')
    return params

  def _features(self, params, images):
    return extract_features(self.model, params, images,
                            int(self.fs.batch_size), self.input_shape[:2],
                            self.permute)

  def evaluate_dataset_seeds(self, params, name: str
                             ) -> Dict[int, Dict[int, float]]:
    """{shots: {seed: accuracy}} on one dataset (big_vision reports these)."""
    train_x, train_y, test_x, test_y, num_classes = self._load(name)
    samples = self._sample(name, train_y, num_classes)
    used = np.unique(np.concatenate(list(samples.values())))
    feats = self._features(params, train_x[used])
    row = {int(i): r for r, i in enumerate(used)}
    test_f = self._features(params, test_x)
    accs = {}
    for shots in self.fs.shots:
      accs[int(shots)] = {}
      for seed in self.seeds:
        idx = samples[(seed, int(shots))]
        x = feats[[row[int(i)] for i in idx]]
        accs[int(shots)][seed] = fit_and_score(
            x, train_y[idx], test_f, test_y, num_classes,
            float(self.fs.l2_reg))
    return accs

  def evaluate_dataset(self, params, name: str) -> Dict[int, float]:
    """{shots: accuracy averaged over the seeds} on one dataset."""
    return {shots: float(np.mean(list(per_seed.values()))) for shots, per_seed
            in self.evaluate_dataset_seeds(params, name).items()}

  def evaluate(self, params, stop: Optional[Callable[[], bool]] = None
               ) -> Dict[str, float]:
    """{'fewshot/<dataset>_<shots>shot': mean accuracy over the seeds, and
    'fewshot/<dataset>_<shots>shot-seed-<s>': each seed's, as big_vision}.

    `params` are the model's (a `head` is ignored; params replicated over
    the local devices are read from the first device). Test features are
    extracted afresh on every call, since the params change between calls.
    `stop()` is checked before every dataset (`EvaluationStopped`).
    """
    params = self.params_for_model(params)
    out = {}
    for name in self.fs.datasets:
      if stop is not None and stop():
        raise EvaluationStopped()
      for shots, per_seed in self.evaluate_dataset_seeds(params, name).items():
        out[f'fewshot/{name}_{shots}shot'] = float(
            np.mean(list(per_seed.values())))
        for seed, acc in per_seed.items():
          out[f'fewshot/{name}_{shots}shot-seed-{seed}'] = acc
    return out
