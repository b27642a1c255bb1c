r"""Top-5 predictions of a trained or official Mixer for image files.

    python -m mixer.predict --config=configs/finetune.py:B_16,cifar10 \
        --checkpoint=workdirs/b16_cifar10 cat.jpg dog.png

    python -m mixer.predict --checkpoint=workdirs/baseline cat.jpg

`--checkpoint` is an official `.npz` or one of this project's orbax
checkpoints (workdir, its `checkpoints/` folder or a step folder); its
parameters must fit `config.model` exactly (no head re-initialisation here:
that would make the predictions meaningless). For an orbax checkpoint the
run's own `config.json` (in the workdir) is used, so `--config` is needed
only for an `.npz`; given both, a `--config` whose model differs from the
run's is ignored with one warning line. Each image is read with PIL,
converted to `config.channels`, brought to `config.image_size` (see
`load_image`) and normalised like the training loop's evaluation (`mixer.augment.normalize`,
x / 127.5 - 1), then permuted by the run's fixed input permutation if it was
trained with one (`config.input_permutation`). Class names come from the input pipeline's metadata (never
loading or downloading a dataset), else 'class N'. Output, per image::

    cat.jpg
      0.9731  cat
      0.0112  dog
      ...

Any bad input (checkpoint, image, config) prints one `error: ...` line on
stderr and exits with status 1 (the CLI contract of `mixer.cli`; `--debug`
shows the traceback).
"""

if __name__ == '__main__':
  # The CLI contract: imported before JAX (quiet C++ start-up logging).
  from mixer import cli  # pylint: disable=g-import-not-at-top

import os
from typing import List, Sequence, Tuple

from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np

from mixer import data
from mixer import input_permutation
from mixer import models
from mixer import pretrained
from mixer import workdir as workdir_lib
from mixer.augment import normalize

_CONFIG = None
_CHECKPOINT = None
_TOP_K = None


def define_flags():
  """Defines the command-line flags (only when run as a program, so that
  importing this module next to other CLIs never redefines a flag)."""
  global _CONFIG, _CHECKPOINT, _TOP_K
  _CONFIG = config_flags.DEFINE_config_file(
      'config', None, 'Config file the checkpoint was trained with (default '
      'for an orbax checkpoint: the config.json of its run).',
      lock_config=False)
  _CHECKPOINT = flags.DEFINE_string(
      'checkpoint', None, 'Official .npz file or orbax workdir/checkpoint dir.')
  _TOP_K = flags.DEFINE_integer('top_k', 5, 'Classes printed per image.')


def _pipeline_class_names(config):
  """Class names the input pipeline knows, without loading or downloading
  data: its table of known names, `dataset_info` for a local dataset folder,
  else the tfds builder's metadata (part of tfds's code, no download)."""
  name = str(config.dataset).split(':')[0]
  known = data.KNOWN_CLASS_NAMES.get(name)
  if known:
    return known
  try:
    folder = data.local_dir(config)
  except data.DataError:  # Not where the data would be read: metadata only.
    folder = None
  if folder is not None:
    return data.dataset_info(config).class_names
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return tfds.builder(str(config.dataset)).info.features['label'].names


def class_names(config, num_classes: int) -> List[str]:
  """The dataset's class names (see `_pipeline_class_names`), else
  'class N'."""
  names = []
  try:
    names = list(_pipeline_class_names(config) or ())
  except Exception as e:  # pylint: disable=broad-except
    logging.info('No class names from the input pipeline: %s', e)
  if len(names) != num_classes:
    names = [f'class {i}' for i in range(num_classes)]
  return [str(n) for n in names]


def load_image(path: str, config) -> np.ndarray:
  """uint8 [H, W, C] of `config.image_size` and `config.channels`.

  As the input pipeline's evaluation: an image already at the model's size
  is used as is (in-memory datasets such as CIFAR feed stored pixels);
  otherwise `augment.eval_crop == 'resize'` resizes the whole image, and
  'center' resizes the short side to size / 0.875 and takes the central
  crop. Bilinear (PIL's filter, which antialiases when shrinking, where
  tf.image.resize does not: pixels can differ slightly from the pipeline's).
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top
  h, w, _ = models.input_shape(config)
  try:
    with Image.open(path) as im:
      im = im.convert('L' if config.channels == 1 else 'RGB')
      augment = config.get('augment') or {}
      if im.size != (w, h):
        if augment.get('eval_crop', 'center') == 'center':
          iw, ih = im.size
          scale = max(h, w) / data.CENTER_CROP_FRACTION / min(iw, ih)
          nw, nh = max(round(iw * scale), w), max(round(ih * scale), h)
          im = im.resize((nw, nh), Image.BILINEAR)
          left, top = (nw - w) // 2, (nh - h) // 2
          im = im.crop((left, top, left + w, top + h))
        else:
          im = im.resize((w, h), Image.BILINEAR)
      x = np.asarray(im, np.uint8)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f'cannot read image {path}: {type(e).__name__}: {e}'
                    ) from e
  return x.reshape(h, w, int(config.channels))


def load_model_params(config, checkpoint: str):
  """(model, params), checking the checkpoint fits `config.model` exactly."""
  return pretrained.load_for_model(config, checkpoint)


def predict(config, checkpoint: str, image_paths: Sequence[str],
            top_k: int = 5) -> List[Tuple[str, List[Tuple[str, float]]]]:
  """[(image path, [(class name, probability)] * top_k)] per image."""
  if not image_paths:
    raise ValueError('no image given: pass one or more image files after '
                     'the flags, e.g. python -m mixer.predict '
                     '--checkpoint=WORKDIR cat.jpg')
  if int(top_k) < 1:
    raise ValueError(f'--top_k must be at least 1, got {top_k}')
  images = np.stack([load_image(p, config) for p in image_paths])
  model, params = load_model_params(config, checkpoint)
  if not config.model.num_classes:
    raise ValueError('model.num_classes is 0: a headless model has no classes')
  permute = input_permutation.from_config(config)  # As in training.
  logits = jax.jit(lambda p, x: model.apply({'params': p},
                                            permute(normalize(x)),
                                            train=False))(params, images)
  probs = np.asarray(jax.nn.softmax(logits.astype(jnp.float32), axis=-1))
  names = class_names(config, probs.shape[-1])
  k = max(1, min(int(top_k), probs.shape[-1]))
  results = []
  for path, p in zip(image_paths, probs):
    top = np.argsort(-p, kind='stable')[:k]
    results.append((path, [(names[i], float(p[i])) for i in top]))
  return results


def _model_json(config):
  model = workdir_lib.config_json(config).get('model') or {}
  return {k: v for k, v in model.items() if k != 'model_name'}


def resolve_config(config, checkpoint: str):
  """(config to use, warning or None) for `--config` (may be None) and
  `--checkpoint`.

  An orbax checkpoint's run has its `config.json` (`workdir.run_config`):
  without `--config` it is used; with a `--config` whose model fields differ
  from it, it is used as well (the parameters were trained with it) and the
  warning says so. An `.npz` needs `--config`.
  """
  run = workdir_lib.run_config(checkpoint) if os.path.isdir(
      checkpoint) else None
  if run is None:
    if config is None:
      pretrained.check_checkpoint(checkpoint)
      what = ('has no config.json beside it' if os.path.isdir(checkpoint)
              else 'is an .npz file, which holds no config')
      raise ValueError(f'--config is required: {checkpoint} {what}; pass '
                       '--config=configs/<name>.py, the config the '
                       'checkpoint was trained with')
    return config, None
  if config is None:
    return run, None
  diffs = workdir_lib.config_differences({'model': _model_json(config)},
                                         {'model': _model_json(run)})
  if not diffs:
    return config, None
  shown = ', '.join(diffs[:5]) + (f' and {len(diffs) - 5} more'
                                  if len(diffs) > 5 else '')
  return run, (f"--config's model differs from the config.json of the run "
               f'{checkpoint} belongs to ({shown}); using the run\'s '
               'config.json')


def main(argv):
  logging.set_verbosity(logging.WARNING)
  if not _CHECKPOINT.value:
    raise ValueError('--checkpoint is required: ' + pretrained.EXPECTED)
  config, warning = resolve_config(_CONFIG.value, _CHECKPOINT.value)
  if warning:
    cli.warn(warning)
  results = predict(config, _CHECKPOINT.value, argv[1:], _TOP_K.value)
  for path, top in results:
    print(path)
    for name, prob in top:
      print(f'  {prob:.4f}  {name}')


if __name__ == '__main__':
  define_flags()
  cli.run(main)
