"""The benchmark times the real step (and the paper's inference throughput)
and counts FLOPs right (CPU smoke)."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from mixer import benchmark
from mixer import flops
from mixer import models
from tests.conftest import REPO
from tests.conftest import tiny_config


def test_baseline_flops_by_hand():
  config = tiny_config()  # only the model is shrunk; restore seed-000 sizes
  config.model.hidden_dim, config.model.num_blocks = 256, 4
  config.model.tokens_mlp_dim, config.model.channels_mlp_dim = 128, 1024
  stem = 64 * (4 * 4 * 3) * 256  # 64 tokens, 48 values each, C=256
  block = 2 * 256 * 64 * 128 + 2 * 64 * 256 * 1024
  head = 256 * 10
  assert flops.forward_macs_per_image(config) == stem + 4 * block + head
  assert flops.train_flops_per_image(config) == 6 * (stem + 4 * block + head)


@pytest.mark.parametrize('patches,image', [((4, 4), 32), ((4, 8), 32)])
def test_analytic_flops_match_xla_cost_analysis(patches, image):
  config = tiny_config(image_size=image, **{'model.patches.size': patches})
  model = models.build_model(config.model)
  x = jnp.zeros((1, image, image, 3))
  params = model.init(jax.random.PRNGKey(0), x, train=False)
  compiled = jax.jit(lambda p, x: model.apply(p, x, train=False)).lower(
      params, x).compile()
  analysis = compiled.cost_analysis()
  if isinstance(analysis, list):
    analysis = analysis[0]
  xla = analysis['flops']
  analytic = 2 * flops.forward_macs_per_image(config)
  # XLA also counts LayerNorm, GELU, bias adds and the mean: a few % more.
  assert analytic <= xla <= 1.25 * analytic


def test_cli_prints_one_json_line(tmp_path):
  out = subprocess.run(
      [sys.executable, '-m', 'mixer.benchmark',
       '--config=configs/cifar10_baseline.py', '--config.model.hidden_dim=32',
       '--config.model.num_blocks=1', '--config.model.tokens_mlp_dim=16',
       '--config.model.channels_mlp_dim=64', '--batch_size=16', '--steps=2',
       '--repeats=2', '--dtype=float32', '--peak_matmul_size=256'],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  lines = [l for l in out.stdout.splitlines() if l.strip()]
  assert len(lines) == 1
  r = json.loads(lines[0])
  for key in ('img_per_s', 'step_ms', 'train_tflops_per_s', 'peak_tflops',
              'mfu', 'flops_per_image', 'num_params'):
    assert r[key] > 0, key
  assert r['batch_size'] == 16 and r['dtype'] == 'float32'
  assert r['img_per_s'] * r['step_ms'] / 1e3 == pytest.approx(16, rel=1e-6)
  assert r['mfu'] == pytest.approx(r['train_tflops_per_s'] / r['peak_tflops'])
  assert r['train_tflops_per_s'] == pytest.approx(
      r['flops_per_image'] * r['img_per_s'] / 1e12, rel=1e-6)
  assert r['final_loss_finite']
  # Time to the first step and memory, for docs/benchmarks.md's tables.
  assert r['compile_s'] > 0 and r['first_dispatch_s'] > 0
  assert r['xla_temp_bytes'] > 0 and r['peak_rss_mb'] > 100
  # Progress while it runs (stderr), one line per stage.
  progress = [l for l in out.stderr.splitlines()
              if l.startswith('mixer.benchmark: ')]
  assert any('compiling the step' in l for l in progress)
  assert any('repeat 2/2' in l for l in progress)


def test_inference_mode_prints_the_papers_column_beside_ours():
  out = subprocess.run(
      [sys.executable, '-m', 'mixer.benchmark', '--mode=inference',
       '--models=S/32', '--batch_size=1', '--steps=1', '--repeats=1'],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  lines = out.stdout.strip().splitlines()
  r = json.loads(lines[0])
  assert r['model'] == 'Mixer-S/32' and r['image_size'] == [224, 224, 3]
  assert r['dtype'] == 'float32'  # A CPU has no fast bfloat16.
  assert r['paper_img_per_s_per_core'] == 11489
  assert r['img_per_s_per_core'] * r['cores'] == pytest.approx(r['img_per_s'])
  assert r['ratio_to_paper'] == pytest.approx(
      r['img_per_s_per_core'] / 11489)
  assert r['forward_gflop_per_image'] == pytest.approx(
      2 * flops.forward_macs_per_image(_table1_config('S/32')) / 1e9)
  assert lines[-1].startswith('| Mixer-S/32 | 224 | 1 | float32 |')
  assert '11,489' in lines[-1]
  assert 'compiling the forward pass' in out.stderr


def _table1_config(variant):
  from mixer import throughput  # pylint: disable=g-import-not-at-top
  return throughput.variant_config(variant)


def test_inference_mode_at_448_grows_the_token_mixing_width():
  from mixer import throughput  # pylint: disable=g-import-not-at-top
  c = throughput.variant_config('L/16', 448)
  assert c.model.tokens_mlp_dim == 4 * 512 and c.image_size == 448
  assert throughput.paper_value('L/16', 448) == 105
  assert throughput.paper_value('S/32', 448) is None


@pytest.mark.parametrize('args,message', [
    (['--mode=inference', '--models=B/8'], '--models: unknown model(s) B/8'),
    (['--mode=serve'], "--mode must be one of train, inference, got 'serve'"),
    ([], '--config is required in train mode'),
])
def test_bad_mode_or_model_is_one_clear_error(args, message):
  out = subprocess.run([sys.executable, '-m', 'mixer.benchmark', *args],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
  assert out.returncode == 1
  assert out.stderr.strip().splitlines()[-1].startswith(f'error: {message}')


def test_cli_bad_batch_is_one_clear_error():
  out = subprocess.run(
      [sys.executable, '-m', 'mixer.benchmark',
       '--config=configs/cifar10_baseline.py', '--config.grad_accum_steps=3',
       '--batch_size=16', '--steps=1', '--repeats=1'],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert out.returncode == 1
  assert out.stderr.strip().splitlines()[-1].startswith(
      'error: batch_size 16 must be a multiple of')


@pytest.mark.parametrize('kwargs,message', [
    ({'steps': 0}, '--steps must be at least 1, got 0'),
    ({'repeats': -1}, '--repeats must be at least 1, got -1'),
    ({'batch_size': 0}, '--batch_size must be at least 1, got 0'),
    ({'steps_per_dispatch': 0}, '--steps_per_dispatch must be at least 1'),
    ({'peak_matmul_size': -1}, '--peak_matmul_size must be at least 0'),
    ({'dtype': 'float8'}, "--dtype must be one of bfloat16, float32, "
                          "float16, got 'float8'"),
])
def test_run_checks_its_arguments_first(kwargs, message):
  """Bad arguments are one ValueError naming the flag, before any work."""
  args = dict(batch_size=16, dtype='float32', steps=2, repeats=2)
  args.update(kwargs)
  with pytest.raises(ValueError) as e:
    benchmark.run(tiny_config(), **args)
  assert str(e.value) == message or str(e.value).startswith(message)
