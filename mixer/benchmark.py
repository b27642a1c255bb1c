r"""Train-step throughput and MFU, or the paper's inference throughput.

`--mode=train` (the default) times the real training step of this project
-- the function `train.py` runs (`mixer.step.make_train_step` under
`jax.pmap`, augmentation, optimizer, clipping and weight decay included) --
on synthetic uint8 data already on device, after warm-up, as the median of
several repeats. Prints one JSON line:

  img_per_s, step_ms, train_tflops_per_s (FLOPs counted analytically from the
  config: 3 x 2 x MACs of the forward pass), peak_tflops (this device's
  measured bf16 matmul rate), mfu = train_tflops_per_s / peak_tflops,
  compile_s and first_dispatch_s (the time to the first step),
  xla_temp_bytes (XLA's temporary buffers of the compiled step) and
  peak_rss_mb (this process's peak resident memory).

    python -m mixer.benchmark --config=configs/cifar10_baseline.py \
        --batch_size=2048 --dtype=bfloat16 --steps=50
    python -m mixer.benchmark --config=configs/mixer_b16.py --batch_size=256

`--mode=inference` times the jit'd forward pass of every paper Table 1 model
(`--models`, or the model of `--config`) at `--image_size` (224) and prints
one JSON line per model and then a table with the paper's images / second /
core beside the measured ones (`mixer.throughput`); on a CPU it runs a
small batch.

Both modes say on stderr what they are doing (compiling, each repeat).
`benchmarks/timm_peer.py` prints the training fields for timm's MlpMixer;
`benchmarks/side_by_side.py` times this step beside a minimal one and timm.
Errors follow the CLI contract of `mixer.cli`: one `error:` line naming the
input and the fix, exit status 1 (`--debug` shows the traceback).
"""

if __name__ == '__main__':
  # The CLI contract: imported before JAX (quiet C++ start-up logging).
  from mixer import cli  # pylint: disable=g-import-not-at-top

import json
import resource
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Optional

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np

from mixer import devices
from mixer import flops as flops_lib
from mixer import models
from mixer import optim
from mixer import step as step_lib
from mixer import throughput

DTYPES = ('bfloat16', 'float32', 'float16')

_CONFIG = None
_BATCH = None
_DTYPE = None
_STEPS = None
_REPEATS = None
_PER_DISPATCH = None
_PEAK_N = None
_MODE = None
_MODELS = None
_IMAGE_SIZE = None
MODES = ('train', 'inference')


def define_flags():
  """Defines the command-line flags (only when run as a program, so that
  importing this module next to other CLIs never redefines a flag)."""
  global _CONFIG, _BATCH, _DTYPE, _STEPS, _REPEATS, _PER_DISPATCH, _PEAK_N
  global _MODE, _MODELS, _IMAGE_SIZE
  _CONFIG = config_flags.DEFINE_config_file(
      'config', None, 'Experiment config file (train mode: required; '
      'inference mode: its model instead of --models).', lock_config=False)
  _MODE = flags.DEFINE_string(
      'mode', 'train', "'train': the train step; 'inference': the paper's "
      'inference throughput (Tables 2/3).')
  _MODELS = flags.DEFINE_string(
      'models', 'all', 'Inference mode: paper Table 1 models, comma '
      "separated (e.g. 'S/32,B/16'), or 'all'.")
  _IMAGE_SIZE = flags.DEFINE_integer(
      'image_size', 224, 'Inference mode: resolution (the paper: 224, and '
      '448 for L/16 and H/14).')
  _BATCH = flags.DEFINE_integer(
      'batch_size', None, 'Global batch (default: train: the config; '
      'inference: 256, 4 on a CPU).')
  _DTYPE = flags.DEFINE_string(
      'dtype', None, "Compute dtype: 'bfloat16', 'float32' or 'float16' "
      '(default: train: bfloat16; inference: bfloat16, float32 on a CPU).')
  _STEPS = flags.DEFINE_integer(
      'steps', None, 'Steps per timed repeat (default: train: 20; '
      'inference: 10, 1 on a CPU).')
  _REPEATS = flags.DEFINE_integer(
      'repeats', None, 'Timed repeats, median (default: 5; inference on a '
      'CPU: 3).')
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


def memory_stats(compiled) -> Dict[str, int]:
  """XLA's own byte counts of a compiled function (`memory_analysis()`):
  temporaries (activations kept for the backward pass, workspace),
  arguments, outputs and the part of the outputs aliased to donated
  arguments."""
  m = compiled.memory_analysis()
  m = m[0] if isinstance(m, (list, tuple)) else m
  return {'xla_temp_bytes': int(m.temp_size_in_bytes),
          'xla_argument_bytes': int(m.argument_size_in_bytes),
          'xla_output_bytes': int(m.output_size_in_bytes),
          'xla_alias_bytes': int(m.alias_size_in_bytes)}


def peak_rss_mb() -> float:
  """This process's peak resident memory so far, MiB (Linux ru_maxrss)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class TrainBench:
  """This project's train step, ready to time on synthetic data.

  The function `train.py` runs: `mixer.step.make_train_step` in
  `make_multi_step`, pmapped over the local devices with the state donated
  (as `mixer.trainer.Trainer` builds it), the config's augmentation and
  optimizer (its warmup dropped: its length does not change a step's cost).
  uint8 images and labels are drawn once and stay on the devices.
  `compile()` compiles it ahead of the first call (timed, with XLA's memory
  figures); `run(n)` runs n dispatches and returns their wall seconds.
  """

  def __init__(self, config, *, batch_size: int, dtype: str,
               steps_per_dispatch: int = 1, total_steps: int = 1000):
    if dtype not in DTYPES:
      raise ValueError(f'--dtype must be one of {", ".join(DTYPES)}, got '
                       f'{dtype!r}')
    config = _no_warmup(config)
    config.model.dtype = dtype
    n_dev = jax.local_device_count()
    accum = int(config.grad_accum_steps)
    if batch_size % (n_dev * accum):
      raise ValueError(f'batch_size {batch_size} must be a multiple of '
                       f'devices x grad_accum_steps = {n_dev * accum}')
    self.config, self.batch_size, self.dtype = config, batch_size, dtype
    self.model = models.build_model(config.model)
    shape = models.input_shape(config)
    self.model.check(shape)
    self.image_shape = shape
    schedule = optim.learning_rate_schedule(config, total_steps)
    tx = optim.make_optimizer(config, total_steps)
    step = step_lib.make_train_step(config, self.model, tx, schedule,
                                     config.model.num_classes)
    self.fn = jax.pmap(step_lib.make_multi_step(step), axis_name='batch',
                       donate_argnums=(0,))
    state = step_lib.create_train_state(
        _without_init_checkpoint(config), self.model, tx,
        jax.random.PRNGKey(0))
    self.num_params = sum(int(np.prod(p.shape))
                          for p in jax.tree_util.tree_leaves(state.params))
    self.state = devices.replicate(state)
    self.k = max(1, steps_per_dispatch)
    micro = batch_size // (n_dev * accum)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n_dev, self.k, accum, micro) + shape,
                          np.uint8)
    labels = rng.integers(0, config.model.num_classes,
                          (n_dev, self.k, accum, micro)).astype(np.int32)
    self.images, self.labels = devices.shard(images), devices.shard(labels)
    self.devices = n_dev
    self.compiled = None
    self.metrics = None

  def compile(self) -> Dict[str, Any]:
    """Compiles the step; returns compile seconds and XLA's memory figures."""
    t = time.perf_counter()
    self.compiled = self.fn.lower(self.state, self.images,
                                  self.labels).compile()
    return dict(compile_s=time.perf_counter() - t,
                **memory_stats(self.compiled))

  def run(self, dispatches: int = 1) -> float:
    """Runs `dispatches` dispatches (of `k` steps each); wall seconds."""
    if self.compiled is None:
      self.compile()
    t = time.perf_counter()
    for _ in range(dispatches):
      self.state, self.metrics = self.compiled(self.state, self.images,
                                               self.labels)
    jax.block_until_ready(self.metrics)
    return time.perf_counter() - t

  def last_loss(self) -> float:
    return float(np.asarray(self.metrics['train_loss'])[0, -1])


def run(config, *, batch_size: int, dtype: str, steps: int, repeats: int,
        steps_per_dispatch: int = 1, peak_matmul_size: int = 0,
        progress: Callable[[str], None] = lambda line: None
        ) -> Dict[str, Any]:
  """Benchmarks the train step; returns the JSON record.

  `progress` receives one line per stage (compile, first step, each
  repeat), so a slow run says what it is doing.

  Raises:
    ValueError: one line naming the argument (flag) that cannot be used.
  """
  for name, value, least in (('batch_size', batch_size, 1),
                             ('steps', steps, 1), ('repeats', repeats, 1),
                             ('steps_per_dispatch', steps_per_dispatch, 1),
                             ('peak_matmul_size', peak_matmul_size, 0)):
    if int(value) < least:
      raise ValueError(f'--{name} must be at least {least}, got {value}')
  total = max(steps * (repeats + 1), 2)
  bench = TrainBench(config, batch_size=batch_size, dtype=dtype,
                     steps_per_dispatch=steps_per_dispatch,
                     total_steps=total)
  config, k = bench.config, bench.k
  progress(f'{config.model.model_name}: batch {batch_size}, {dtype}, '
           f'{k} step(s) per dispatch on {bench.devices} '
           f'{jax.devices()[0].platform} device(s); compiling the step')
  compiled = bench.compile()
  progress(f'compiled in {compiled["compile_s"]:.1f} s (XLA temporaries '
           f'{compiled["xla_temp_bytes"] / 2**20:.0f} MiB); first step')
  first = bench.run(1)
  progress(f'first dispatch {first:.2f} s; warm-up')
  dispatches = max(1, steps // k)
  bench.run(dispatches)
  times = []
  for i in range(repeats):
    seconds = bench.run(dispatches) / (dispatches * k)
    times.append(seconds)
    progress(f'repeat {i + 1}/{repeats}: {batch_size / seconds:.1f} img/s '
             f'({seconds * 1e3:.0f} ms per step)')
  step_s = statistics.median(times)
  flops = flops_lib.train_flops_per_image(config) * batch_size
  tflops = flops / step_s / 1e12
  peak = measure_peak_tflops(peak_matmul_size)
  return {
      'impl': 'mixer-jax',
      'model': config.model.model_name,
      'batch_size': batch_size,
      'image_size': list(bench.image_shape),
      'dtype': dtype,
      'steps_per_dispatch': k,
      'img_per_s': batch_size / step_s,
      'step_ms': step_s * 1e3,
      'train_tflops_per_s': tflops,
      'flops_per_image': flops_lib.train_flops_per_image(config),
      'peak_tflops': peak,
      'mfu': tflops / peak,
      'num_params': bench.num_params,
      'devices': bench.devices,
      'device': jax.devices()[0].device_kind,
      'compile_s': compiled['compile_s'],
      'first_dispatch_s': first,
      'xla_temp_bytes': compiled['xla_temp_bytes'],
      'peak_rss_mb': peak_rss_mb(),
      'final_loss_finite': bool(np.isfinite(bench.last_loss())),
  }


def _no_warmup(config):
  c = config.copy_and_resolve_references()
  c.warmup_steps = 0
  return c


def _without_init_checkpoint(config):
  c = config.copy_and_resolve_references()
  c.init_checkpoint = ''
  return c


def _progress(line: str) -> None:
  print(f'mixer.benchmark: {line}', file=sys.stderr, flush=True)


def run_inference(config, *, variants: str, image_size: int,
                  batch_size: Optional[int], dtype: Optional[str],
                  steps: Optional[int], repeats: Optional[int],
                  progress: Callable[[str], None] = lambda line: None
                  ) -> List[Dict[str, Any]]:
  """`--mode=inference`: one record per model (`mixer.throughput`).

  Raises:
    ValueError: one line naming the flag that cannot be used.
  """
  cpu = jax.devices()[0].platform == 'cpu'
  batch_size = batch_size or (4 if cpu else 256)
  steps = steps or (1 if cpu else 10)
  repeats = repeats or (3 if cpu else 5)
  dtype = dtype or throughput.default_dtype()
  for name, value in (('batch_size', batch_size), ('steps', steps),
                      ('repeats', repeats), ('image_size', image_size)):
    if int(value) < 1:
      raise ValueError(f'--{name} must be at least 1, got {value}')
  if dtype not in DTYPES:
    raise ValueError(f'--dtype must be one of {", ".join(DTYPES)}, got '
                     f'{dtype!r}')
  if config is not None:
    jobs = [(config, None)]
  else:
    jobs = [(throughput.variant_config(v, image_size),
             throughput.paper_value(v, image_size))
            for v in throughput.parse_variants(variants)]
  return [throughput.measure(c, batch_size=batch_size, dtype=dtype,
                             steps=steps, repeats=repeats, paper=paper,
                             progress=progress) for c, paper in jobs]


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])} '
                         '(mixer.benchmark takes only flags)')
  config = _CONFIG.value
  if _MODE.value not in MODES:
    raise ValueError(f'--mode must be one of {", ".join(MODES)}, got '
                     f'{_MODE.value!r}')
  if _MODE.value == 'inference':
    records = run_inference(
        config, variants=_MODELS.value, image_size=_IMAGE_SIZE.value,
        batch_size=_BATCH.value, dtype=_DTYPE.value, steps=_STEPS.value,
        repeats=_REPEATS.value, progress=_progress)
    for record in records:
      print(json.dumps(record))
    print(throughput.table(records))
    return
  if config is None:
    raise app.UsageError('--config is required in train mode, e.g. '
                         '--config=configs/cifar10_baseline.py')
  batch_size = (config.batch_size if _BATCH.value is None else _BATCH.value)
  record = run(config, batch_size=batch_size,
               dtype=_DTYPE.value or 'bfloat16',
               steps=20 if _STEPS.value is None else _STEPS.value,
               repeats=5 if _REPEATS.value is None else _REPEATS.value,
               steps_per_dispatch=_PER_DISPATCH.value,
               peak_matmul_size=_PEAK_N.value, progress=_progress)
  print(json.dumps(record))


if __name__ == '__main__':
  define_flags()
  cli.run(main)
