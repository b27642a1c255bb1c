"""Inference throughput as the paper reports it: images per second per core.

Paper Tables 2 and 3 give, for every Table 1 model, the inference throughput
in images per second per TPU-v3 core at resolution 224 (Table 3) and, for
the two largest, at 448 (Table 2, the models fine-tuned at 448). `measure`
times this project's model the same way: a jit'd forward pass
(`train=False`) on one device, on a batch already on the device, after a
warm-up, the median of several repeats; bfloat16 activations where the
device has fast bfloat16 (GPU, TPU), float32 on a CPU. A "core" is one
accelerator device, or on a CPU one of the CPU cores this process may use
(so a CPU's figure is comparable per core, not per chip).

`python -m mixer.benchmark --mode=inference` runs it for every Table 1 model
and prints the paper's column beside the measured one.
"""

import os
import statistics
import time
from typing import Any, Callable, Dict, List, Optional

import jax
import ml_collections

from configs import models as model_configs
from mixer import flops as flops_lib
from mixer import models

# Paper Table 3 (224 px) and Table 2 (448 px, the models fine-tuned at 448):
# inference images / second / TPU-v3 core.
PAPER_IMG_PER_S_PER_CORE = {
    224: {'S/32': 11489, 'B/32': 4208, 'S/16': 3994, 'B/16': 1384,
          'L/32': 1314, 'L/16': 419, 'H/14': 194},
    448: {'L/16': 105, 'H/14': 40},
}
PAPER_DEVICE = 'TPU-v3 core'


def default_dtype(platform: Optional[str] = None) -> str:
  """bfloat16 on accelerators, float32 on a CPU (no fast bfloat16 there)."""
  platform = platform or jax.devices()[0].platform
  return 'float32' if platform == 'cpu' else 'bfloat16'


def cores(platform: Optional[str] = None) -> int:
  """The cores one device's figure is divided by (module docstring)."""
  platform = platform or jax.devices()[0].platform
  if platform != 'cpu':
    return 1
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # Not Linux.
    return os.cpu_count() or 1


def variant_config(variant: str, image_size: int = 224
                   ) -> ml_collections.ConfigDict:
  """A Table 1 model at `image_size` as an experiment-config stand-in
  (model, image_size, channels): at a resolution other than 224 the
  token-mixing width grows as for the paper's fine-tuned models
  (`configs.models.finetune_model_config`)."""
  c = ml_collections.ConfigDict()
  model = model_configs.paper(variant, num_classes=1000)
  c.model = model_configs.finetune_model_config(model, 224, image_size)
  c.image_size = image_size
  c.channels = 3
  return c


def measure(config, *, batch_size: int, dtype: str, steps: int,
            repeats: int, paper: Optional[float] = None,
            progress: Callable[[str], None] = lambda line: None
            ) -> Dict[str, Any]:
  """Times the jit'd forward pass of `config.model`; returns one record."""
  model = models.build_model(config.model, dtype=dtype)
  shape = models.input_shape(config)
  model.check(shape)
  device = jax.local_devices()[0]
  x = jax.device_put(
      jax.random.normal(jax.random.PRNGKey(1), (batch_size,) + shape), device)
  params = jax.jit(lambda r: model.init(r, x[:1], train=False)['params'])(
      jax.random.PRNGKey(0))
  name = config.model.model_name
  progress(f'{name} at {shape[0]}x{shape[1]}: batch {batch_size}, {dtype}; '
           'compiling the forward pass')
  t = time.perf_counter()
  forward = jax.jit(lambda p, x: model.apply({'params': p}, x, train=False)
                    ).lower(params, x).compile()
  compile_s = time.perf_counter() - t
  forward(params, x).block_until_ready()  # Warm-up.
  times = []
  for i in range(repeats):
    t = time.perf_counter()
    for _ in range(steps):
      out = forward(params, x)
    out.block_until_ready()
    times.append((time.perf_counter() - t) / steps)
    progress(f'{name}: repeat {i + 1}/{repeats}: '
             f'{batch_size / times[-1]:.1f} img/s')
  img_per_s = batch_size / statistics.median(times)
  per_core = img_per_s / cores(device.platform)
  return {
      'mode': 'inference',
      'model': name,
      'image_size': list(shape),
      'batch_size': batch_size,
      'dtype': dtype,
      'img_per_s': img_per_s,
      'img_per_s_per_core': per_core,
      'cores': cores(device.platform),
      'paper_img_per_s_per_core': paper,
      'ratio_to_paper': per_core / paper if paper else None,
      'forward_gflop_per_image': 2 * flops_lib.forward_macs_per_image(
          config) / 1e9,
      'compile_s': compile_s,
      'device': device.device_kind,
  }


def table(records: List[Dict[str, Any]]) -> str:
  """The records as a markdown table, the paper's column beside ours."""
  rows = ['| model | image | batch | dtype | GFLOP/img | img/s | img/s/core '
          f'| paper img/s/core ({PAPER_DEVICE}) | ratio |',
          '| --- | --- | --- | --- | --- | --- | --- | --- | --- |']
  for r in records:
    paper = r['paper_img_per_s_per_core']
    rows.append(
        f'| {r["model"]} | {r["image_size"][0]} | {r["batch_size"]} | '
        f'{r["dtype"]} | {r["forward_gflop_per_image"]:.1f} | '
        f'{r["img_per_s"]:.1f} | {r["img_per_s_per_core"]:.1f} | '
        + (f'{paper:,} | {r["ratio_to_paper"]:.4f} |' if paper else '— | — |'))
  return '\n'.join(rows)


def parse_variants(spec: str) -> List[str]:
  """'all' or comma-separated Table 1 names -> the names; ValueError naming
  the unknown ones."""
  if spec.strip() == 'all':
    return list(model_configs.PAPER_VARIANTS)
  names = [v.strip() for v in spec.split(',') if v.strip()]
  unknown = [v for v in names if v not in model_configs.PAPER_VARIANTS]
  if unknown or not names:
    shown = ', '.join(unknown) or repr(spec)
    raise ValueError(f'--models: unknown model(s) {shown}; use paper Table 1 '
                     f'names '
                     f'({", ".join(model_configs.PAPER_VARIANTS)}) or all')
  return names


def paper_value(variant: str, image_size: int) -> Optional[float]:
  return PAPER_IMG_PER_S_PER_CORE.get(image_size, {}).get(variant)
