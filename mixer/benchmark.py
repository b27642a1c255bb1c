r"""Train-step throughput and MFU: `python -m mixer.benchmark --config=...`.

Times the real training step of this project -- the function `train.py`
runs (`mixer.step.make_train_step` under `jax.pmap`, augmentation,
optimizer, clipping and weight decay included) -- on synthetic uint8 data
already on device, after warm-up, as the median of several repeats. Prints
one JSON line:

  img_per_s, step_ms, train_tflops_per_s (FLOPs counted analytically from the
  config: 3 x 2 x MACs of the forward pass), peak_tflops (this device's
  measured bf16 matmul rate), mfu = train_tflops_per_s / peak_tflops.

    python -m mixer.benchmark --config=configs/cifar10_baseline.py \
        --batch_size=2048 --dtype=bfloat16 --steps=50
    python -m mixer.benchmark --config=configs/mixer_b16.py --batch_size=256

`benchmarks/timm_peer.py` prints the same fields for timm's MlpMixer.
Errors follow the CLI contract of `mixer.cli`: one `error:` line naming the
input and the fix, exit status 1 (`--debug` shows the traceback).
"""

if __name__ == '__main__':
  # The CLI contract: imported before JAX (quiet C++ start-up logging).
  from mixer import cli  # pylint: disable=g-import-not-at-top

import json
import statistics
import time
from typing import Any, Dict

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np

from mixer import flops as flops_lib
from mixer import models
from mixer import optim
from mixer import devices
from mixer import step as step_lib

DTYPES = ('bfloat16', 'float32', 'float16')

_CONFIG = None
_BATCH = None
_DTYPE = None
_STEPS = None
_REPEATS = None
_PER_DISPATCH = None
_PEAK_N = None


def define_flags():
  """Defines the command-line flags (only when run as a program, so that
  importing this module next to other CLIs never redefines a flag)."""
  global _CONFIG, _BATCH, _DTYPE, _STEPS, _REPEATS, _PER_DISPATCH, _PEAK_N
  _CONFIG = config_flags.DEFINE_config_file(
      'config', None, 'Experiment config file.', lock_config=False)
  _BATCH = flags.DEFINE_integer('batch_size', None,
                                'Global batch (default: the config).')
  _DTYPE = flags.DEFINE_string('dtype', 'bfloat16',
                               "Compute dtype: 'bfloat16' or 'float32'.")
  _STEPS = flags.DEFINE_integer('steps', 20, 'Train steps per timed repeat.')
  _REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed repeats (median).')
  _PER_DISPATCH = flags.DEFINE_integer(
      'steps_per_dispatch', 1, 'Steps fused per dispatch (lax.scan).')
  _PEAK_N = flags.DEFINE_integer(
      'peak_matmul_size', 0, 'Side of the square bf16 matmul used to measure '
      'the peak (0: 8192 on accelerators, 1024 on CPU).')


def measure_peak_tflops(n: int = 0) -> float:
  """bf16 n x n matmul rate of the first local device, TFLOP/s (median)."""
  device = jax.local_devices()[0]
  if not n:
    n = 1024 if device.platform == 'cpu' else 8192
  key = jax.random.PRNGKey(0)
  a = jax.device_put(jax.random.normal(key, (n, n), jnp.bfloat16), device)
  b = jax.device_put(jax.random.normal(key, (n, n), jnp.bfloat16), device)
  f = jax.jit(lambda a, b: a @ b)
  f(a, b).block_until_ready()
  iters = 3 if device.platform == 'cpu' else 50
  times = []
  for _ in range(3):
    t = time.perf_counter()
    for _ in range(iters):
      out = f(a, b)
    out.block_until_ready()
    times.append((time.perf_counter() - t) / iters)
  return 2 * n ** 3 / statistics.median(times) / 1e12


def run(config, *, batch_size: int, dtype: str, steps: int, repeats: int,
        steps_per_dispatch: int = 1, peak_matmul_size: int = 0
        ) -> Dict[str, Any]:
  """Benchmarks the train step; returns the JSON record.

  Raises:
    ValueError: one line naming the argument (flag) that cannot be used.
  """
  for name, value, least in (('batch_size', batch_size, 1),
                             ('steps', steps, 1), ('repeats', repeats, 1),
                             ('steps_per_dispatch', steps_per_dispatch, 1),
                             ('peak_matmul_size', peak_matmul_size, 0)):
    if int(value) < least:
      raise ValueError(f'--{name} must be at least {least}, got {value}')
  if dtype not in DTYPES:
    raise ValueError(f'--dtype must be one of {", ".join(DTYPES)}, got '
                     f'{dtype!r}')
  config = config.copy_and_resolve_references()
  config.model.dtype = dtype
  n_dev = jax.local_device_count()
  accum = int(config.grad_accum_steps)
  if batch_size % (n_dev * accum):
    raise ValueError(f'batch_size {batch_size} must be a multiple of '
                     f'devices x grad_accum_steps = {n_dev * accum}')
  model = models.build_model(config.model)
  shape = models.input_shape(config)
  model.check(shape)
  total = max(steps * (repeats + 1), 2)
  # The real optimizer, without a warmup (its length in a run is irrelevant
  # to the step's speed, and a recipe's may not fit the benchmark's steps).
  config = _no_warmup(config)
  schedule = optim.learning_rate_schedule(config, total)
  tx = optim.make_optimizer(config, total)
  step = step_lib.make_train_step(config, model, tx, schedule,
                                   config.model.num_classes)
  p_multi = jax.pmap(step_lib.make_multi_step(step), axis_name='batch',
                     donate_argnums=(0,))
  state = step_lib.create_train_state(
      _without_init_checkpoint(config), model, tx, jax.random.PRNGKey(0))
  num_params = sum(int(np.prod(p.shape))
                   for p in jax.tree_util.tree_leaves(state.params))
  pstate = devices.replicate(state)

  k = max(1, steps_per_dispatch)
  micro = batch_size // (n_dev * accum)
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (n_dev, k, accum, micro) + shape, np.uint8)
  labels = rng.integers(0, config.model.num_classes,
                        (n_dev, k, accum, micro)).astype(np.int32)
  images, labels = devices.shard(images), devices.shard(labels)

  dispatches = max(1, steps // k)
  pstate, m = p_multi(pstate, images, labels)  # compile + warm-up
  jax.block_until_ready(m)
  for _ in range(dispatches):
    pstate, m = p_multi(pstate, images, labels)
  jax.block_until_ready(m)
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    for _ in range(dispatches):
      pstate, m = p_multi(pstate, images, labels)
    jax.block_until_ready(m)
    times.append((time.perf_counter() - t) / (dispatches * k))
  step_s = statistics.median(times)
  flops = flops_lib.train_flops_per_image(config) * batch_size
  tflops = flops / step_s / 1e12
  peak = measure_peak_tflops(peak_matmul_size)
  loss = float(np.asarray(m['train_loss'])[0, -1])
  return {
      'impl': 'mixer-jax',
      'model': config.model.model_name,
      'batch_size': batch_size,
      'image_size': list(shape),
      'dtype': dtype,
      'steps_per_dispatch': k,
      'img_per_s': batch_size / step_s,
      'step_ms': step_s * 1e3,
      'train_tflops_per_s': tflops,
      'flops_per_image': flops_lib.train_flops_per_image(config),
      'peak_tflops': peak,
      'mfu': tflops / peak,
      'num_params': num_params,
      'devices': n_dev,
      'device': jax.devices()[0].device_kind,
      'final_loss_finite': bool(np.isfinite(loss)),
  }


def _no_warmup(config):
  c = config.copy_and_resolve_references()
  c.warmup_steps = 0
  return c


def _without_init_checkpoint(config):
  c = config.copy_and_resolve_references()
  c.init_checkpoint = ''
  return c


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])} '
                         '(mixer.benchmark takes only flags)')
  config = _CONFIG.value
  batch_size = (config.batch_size if _BATCH.value is None else _BATCH.value)
  record = run(config, batch_size=batch_size,
               dtype=_DTYPE.value, steps=_STEPS.value,
               repeats=_REPEATS.value,
               steps_per_dispatch=_PER_DISPATCH.value,
               peak_matmul_size=_PEAK_N.value)
  print(json.dumps(record))


if __name__ == '__main__':
  define_flags()
  flags.mark_flags_as_required(['config'])
  cli.run(main)
