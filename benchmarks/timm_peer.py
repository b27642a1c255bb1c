r"""The PyTorch peer: timm's MlpMixer trained on synthetic data, same JSON fields.

Builds timm's `MlpMixer` with this project's config (same image size, patch,
hidden width, depth, D_S and D_C via timm's `mlp_ratio=(D_S/C, D_C/C)`,
classes, the tanh GELU of the reference code, LayerNorm eps 1e-6), trains it
with AdamW + global-norm clipping on synthetic data already on the device
and prints one JSON line with the fields `python -m mixer.benchmark` prints
(img_per_s, step_ms, train_tflops_per_s from the same analytic FLOP count,
peak_tflops measured with a torch matmul, mfu).

On CUDA (`--device=auto` finds it) it runs bf16 autocast and `torch.compile`
with fused AdamW; on a CPU, float32 and eager PyTorch (`--compile=yes` to
try torch.compile there too). `benchmarks/side_by_side.py` runs it as one of
its workers (`--worker`).

torch and timm are not project requirements. Install them apart from the
project's environment (docs/benchmarks.md), e.g.

    python -m venv .bench-venv
    .bench-venv/bin/pip install torch torchvision timm ml_collections
    .bench-venv/bin/python benchmarks/timm_peer.py \
        --config=configs/cifar10_baseline.py --batch_size=512 --steps=50

Without them it prints that as one `error:` line and exits with status 1.
"""

import argparse
import functools
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top
from benchmarks import side_by_side  # No JAX: only its protocol and loader.
from mixer.flops import train_flops_per_image  # pure Python, no JAX

INSTALL_HINT = (
    'benchmarks/timm_peer.py needs torch and timm, which are not project '
    'requirements: install them in a separate environment, e.g. '
    f'`{side_by_side.INSTALL}`, and run it with that Python '
    '(docs/benchmarks.md)')


def import_torch():
  """(torch, timm's mlp_mixer module), or one error line and exit 1."""
  try:
    import torch
    import timm.models.mlp_mixer as timm_mixer
  except ImportError as e:
    print(f'error: {INSTALL_HINT} ({e})', file=sys.stderr)
    sys.exit(1)
  return torch, timm_mixer


def build_timm(config, torch, timm_mixer):
  m = config.model
  size = config.image_size
  h, w = (size, size) if isinstance(size, int) else tuple(size)
  ph, pw = tuple(m.patches.size)
  if ph != pw or h != w:
    raise ValueError('timm MlpMixer supports square images and patches only')
  act = {'gelu': functools.partial(torch.nn.GELU, approximate='tanh'),
         'gelu_exact': torch.nn.GELU, 'relu': torch.nn.ReLU}[m.activation]
  return timm_mixer.MlpMixer(
      num_classes=m.num_classes, img_size=h, in_chans=config.channels,
      patch_size=ph, num_blocks=m.num_blocks, embed_dim=m.hidden_dim,
      mlp_ratio=(m.tokens_mlp_dim / m.hidden_dim,
                 m.channels_mlp_dim / m.hidden_dim),
      act_layer=act, drop_rate=0.0, drop_path_rate=0.0,
      stem_norm=False, global_pool='avg')


class TimmBench:
  """timm's MlpMixer, its optimizer step and synthetic data on one device."""

  def __init__(self, config, *, batch_size, device, dtype, compile_step):
    torch, timm_mixer = import_torch()
    self.torch = torch
    if device == 'auto':
      device = 'cuda' if torch.cuda.is_available() else 'cpu'
    self.device, self.dtype = device, dtype
    cuda = device == 'cuda'
    if cuda:
      torch.backends.cuda.matmul.allow_tf32 = True
      torch.backends.cudnn.allow_tf32 = True
    model = build_timm(config, torch, timm_mixer).to(device)
    if cuda:
      model = model.to(memory_format=torch.channels_last)
    self.num_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=config.learning_rate,
                            betas=(config.b1, config.b2),
                            weight_decay=config.weight_decay,
                            **({'fused': True} if cuda else {}))
    loss_fn = torch.nn.CrossEntropyLoss(
        label_smoothing=config.label_smoothing)
    clip = config.grad_clip_norm
    autocast = dtype == 'bfloat16'

    def step(x, y):
      with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
        loss = loss_fn(model(x), y)
      loss.backward()
      if clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
      opt.step()
      opt.zero_grad(set_to_none=True)
      return loss

    if compile_step == 'yes' or (compile_step == 'auto' and cuda):
      step = torch.compile(step)
      self.impl = f'timm+torch.compile {torch.__version__}'
    else:
      self.impl = f'timm eager {torch.__version__}'
    self.step = step
    size = config.image_size
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    self.image_size = [h, w, config.channels]
    self.x = torch.randn(batch_size, config.channels, h, w, device=device)
    if cuda:
      self.x = self.x.to(memory_format=torch.channels_last)
    self.y = torch.randint(0, config.model.num_classes, (batch_size,),
                           device=device)
    self.loss = None

  def sync(self):
    if self.device == 'cuda':
      self.torch.cuda.synchronize()

  def run(self, steps: int) -> float:
    t = time.perf_counter()
    for _ in range(steps):
      self.loss = self.step(self.x, self.y)
    self.sync()
    return time.perf_counter() - t

  def setup(self):
    """The first step (compiles with torch.compile) and a second one."""
    t = time.perf_counter()
    self.run(1)
    first = time.perf_counter() - t
    self.run(1)
    return {'first_step_s': first, 'impl': self.impl}

  def finish(self):
    return {'final_loss': self.loss.item()}

  def peak_tflops(self) -> float:
    torch = self.torch
    n = 8192 if self.device == 'cuda' else 1024
    dtype = torch.bfloat16 if self.device == 'cuda' else torch.float32
    a = torch.randn(n, n, device=self.device, dtype=dtype)
    b = torch.randn(n, n, device=self.device, dtype=dtype)
    iters = 50 if self.device == 'cuda' else 3
    a @ b
    self.sync()
    times = []
    for _ in range(3):
      t = time.perf_counter()
      for _ in range(iters):
        a @ b
      self.sync()
      times.append((time.perf_counter() - t) / iters)
    return 2 * n ** 3 / statistics.median(times) / 1e12


def parse_args():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--config', required=True)
  p.add_argument('--batch_size', type=int, default=None)
  p.add_argument('--steps', type=int, default=20)
  p.add_argument('--repeats', type=int, default=5)
  p.add_argument('--device', default='auto', choices=('auto', 'cuda', 'cpu'))
  p.add_argument('--dtype', default=None, choices=('bfloat16', 'float32'),
                 help='default: bfloat16 autocast on CUDA, float32 on a CPU')
  p.add_argument('--compile', default='auto', choices=('auto', 'yes', 'no'),
                 help='torch.compile the step (auto: on CUDA only)')
  p.add_argument('--no_compile', action='store_true',
                 help='the same as --compile=no')
  p.add_argument('--worker', action='store_true',
                 help='serve benchmarks/side_by_side.py on stdin/stdout')
  p.add_argument('--config_json', default=None, help=argparse.SUPPRESS)
  return p.parse_args()


def main():
  args = parse_args()
  config = side_by_side.load_config(args.config, args.config_json)
  batch = args.batch_size or config.batch_size
  torch, _ = import_torch()
  device = args.device
  if device == 'auto':
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
  dtype = args.dtype or ('bfloat16' if device == 'cuda' else 'float32')
  bench = TimmBench(config, batch_size=batch, device=device, dtype=dtype,
                    compile_step='no' if args.no_compile else args.compile)
  if args.worker:
    side_by_side.serve(bench)
    return
  bench.setup()
  bench.run(max(1, args.steps))  # Warm-up.
  times = [bench.run(args.steps) / args.steps for _ in range(args.repeats)]
  step_s = statistics.median(times)
  flops = train_flops_per_image(config)
  tflops = flops * batch / step_s / 1e12
  peak = bench.peak_tflops()
  print(json.dumps({
      'impl': bench.impl,
      'model': config.model.model_name,
      'batch_size': batch,
      'image_size': bench.image_size,
      'dtype': dtype,
      'img_per_s': batch / step_s,
      'step_ms': step_s * 1e3,
      'train_tflops_per_s': tflops,
      'flops_per_image': flops,
      'peak_tflops': peak,
      'mfu': tflops / peak,
      'num_params': bench.num_params,
      'devices': 1,
      'device': (torch.cuda.get_device_name() if device == 'cuda'
                 else 'cpu'),
      'final_loss_finite': bool(torch.isfinite(bench.loss).item()),
  }))


if __name__ == '__main__':
  main()
