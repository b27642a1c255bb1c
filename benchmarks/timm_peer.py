r"""The PyTorch peer: timm's MlpMixer with torch.compile, same JSON fields.

Builds timm's `MlpMixer` with this project's config (same image size, patch,
hidden width, depth, D_S and D_C via timm's `mlp_ratio=(D_S/C, D_C/C)`,
classes), trains it with bf16 autocast, `torch.compile`, AdamW + global-norm
clipping on synthetic data already on the GPU, and prints one JSON line with
the fields `python -m mixer.benchmark` prints (img_per_s, step_ms,
train_tflops_per_s from the same analytic FLOP count, peak_tflops measured
with a bf16 torch matmul, mfu). torch and timm are not project requirements;
they are on the GPU machine.

    python benchmarks/timm_peer.py --config=configs/cifar10_baseline.py \
        --batch_size=512 --steps=50
"""

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top
import importlib.util

import torch
import timm.models.mlp_mixer as timm_mixer

from mixer.flops import train_flops_per_image  # pure Python, no JAX


def load_config(path):
  spec = importlib.util.spec_from_file_location('experiment_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def build_timm(config):
  m = config.model
  size = config.image_size
  h, w = (size, size) if isinstance(size, int) else tuple(size)
  ph, pw = tuple(m.patches.size)
  if ph != pw or h != w:
    raise ValueError('timm MlpMixer supports square images and patches only')
  act = {'gelu': torch.nn.GELU, 'relu': torch.nn.ReLU}[
      m.activation.replace('_exact', '')]
  return timm_mixer.MlpMixer(
      num_classes=m.num_classes, img_size=h, in_chans=config.channels,
      patch_size=ph, num_blocks=m.num_blocks, embed_dim=m.hidden_dim,
      mlp_ratio=(m.tokens_mlp_dim / m.hidden_dim,
                 m.channels_mlp_dim / m.hidden_dim),
      act_layer=act, drop_rate=0.0, drop_path_rate=0.0,
      stem_norm=False, global_pool='avg')


def measure_peak_tflops(n=8192):
  a = torch.randn(n, n, device='cuda', dtype=torch.bfloat16)
  b = torch.randn(n, n, device='cuda', dtype=torch.bfloat16)
  for _ in range(3):
    a @ b
  torch.cuda.synchronize()
  times = []
  for _ in range(3):
    t = time.perf_counter()
    for _ in range(50):
      a @ b
    torch.cuda.synchronize()
    times.append((time.perf_counter() - t) / 50)
  return 2 * n ** 3 / statistics.median(times) / 1e12


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--config', required=True)
  p.add_argument('--batch_size', type=int, default=None)
  p.add_argument('--steps', type=int, default=20)
  p.add_argument('--repeats', type=int, default=5)
  p.add_argument('--no_compile', action='store_true')
  args = p.parse_args()
  config = load_config(args.config)
  batch = args.batch_size or config.batch_size
  torch.backends.cuda.matmul.allow_tf32 = True
  torch.backends.cudnn.allow_tf32 = True
  model = build_timm(config).cuda().to(memory_format=torch.channels_last)
  num_params = sum(p.numel() for p in model.parameters())
  opt = torch.optim.AdamW(model.parameters(), lr=config.learning_rate,
                          betas=(config.b1, config.b2),
                          weight_decay=config.weight_decay, fused=True)
  loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
  clip = config.grad_clip_norm

  def step(x, y):
    with torch.autocast('cuda', dtype=torch.bfloat16):
      loss = loss_fn(model(x), y)
    loss.backward()
    if clip:
      torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss

  if not args.no_compile:
    step = torch.compile(step)
  size = config.image_size
  h, w = (size, size) if isinstance(size, int) else tuple(size)
  x = torch.randn(batch, config.channels, h, w, device='cuda').to(
      memory_format=torch.channels_last)
  y = torch.randint(0, config.model.num_classes, (batch,), device='cuda')
  for _ in range(max(3, args.steps)):  # compile + warm-up
    loss = step(x, y)
  torch.cuda.synchronize()
  times = []
  for _ in range(args.repeats):
    t = time.perf_counter()
    for _ in range(args.steps):
      loss = step(x, y)
    torch.cuda.synchronize()
    times.append((time.perf_counter() - t) / args.steps)
  step_s = statistics.median(times)
  flops = train_flops_per_image(config)
  tflops = flops * batch / step_s / 1e12
  peak = measure_peak_tflops()
  print(json.dumps({
      'impl': 'timm+torch.compile' if not args.no_compile else 'timm',
      'model': config.model.model_name,
      'batch_size': batch,
      'image_size': [h, w, config.channels],
      'dtype': 'bfloat16',
      'img_per_s': batch / step_s,
      'step_ms': step_s * 1e3,
      'train_tflops_per_s': tflops,
      'flops_per_image': flops,
      'peak_tflops': peak,
      'mfu': tflops / peak,
      'num_params': num_params,
      'devices': 1,
      'device': torch.cuda.get_device_name(),
      'final_loss_finite': bool(torch.isfinite(loss).item()),
  }))


if __name__ == '__main__':
  main()
