r"""This project's train step beside a minimal jit'd step and timm, in one run.

    python benchmarks/side_by_side.py --config=configs/cifar10_baseline.py \
        --batch_size=128

Each peer runs in its own worker process (started one after the other, so
compiles do not overlap), builds its step, compiles it and takes one step;
then the parent runs interleaved rounds -- in every round each peer runs
`--steps` steps while the others wait, the order rotating from round to
round -- and prints the median of the rounds and the ratios. Peers:

  project          `mixer.benchmark.TrainBench`: the step `train.py` runs
                   (`mixer.step` under pmap), augmentation off
  project_augment  the same with the config's own augmentation (its cost)
  minimal          `benchmarks/minimal_step.py`: the same MlpMixer and optax
                   chain in one plain `jax.jit` step
  timm             `benchmarks/timm_peer.py`: timm's MlpMixer, eager PyTorch
                   on a CPU (torch.compile on CUDA), AdamW + clipping

"x minimal" is the median over rounds of the peer's rate divided by the
minimal step's rate in the same round (neighbouring in time, so a load
change on a shared machine hits both). Each worker also reports its compile
time, its first step, XLA's temporary bytes and its peak resident memory.
Output: progress on stderr, then a markdown table and one JSON line. The
project's step uses every local device (pmap), the minimal one a single
device: compare on a machine with one (or CUDA_VISIBLE_DEVICES=0).

timm and torch are not project requirements; the timm worker runs with
`--timm_python` (default $MIXER_TIMM_PYTHON, else `.bench-venv/bin/python`
when present, else this Python). Without them the timm row says how to
install them (docs/benchmarks.md) and the other peers run. Bad arguments
are one `error:` line and exit status 1.
"""

import argparse
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

PEERS = ('project', 'project_augment', 'minimal', 'timm')
BENCH_VENV = os.path.join(REPO, '.bench-venv', 'bin', 'python')
INSTALL = ('python -m venv .bench-venv && .bench-venv/bin/pip install '
           'torch torchvision timm ml_collections')


class Error(ValueError):
  """A bad argument: one line."""


# -- the worker side (also used by benchmarks/timm_peer.py) -------------------


def serve(bench) -> None:
  """Answers the parent's commands on stdin with JSON lines on stdout.

  `bench.setup()` -> dict (compile time, first step, memory), then for each
  `run N` line `bench.run(N)` -> wall seconds, and on `quit`
  `bench.finish()` -> dict. Anything else the worker prints must go to
  stderr.
  """
  out = sys.stdout
  sys.stdout = sys.stderr  # Library chatter never mixes into the protocol.

  def send(obj):
    out.write(json.dumps(obj) + '\n')
    out.flush()

  send(dict(ready=True, **bench.setup()))
  for line in sys.stdin:
    words = line.split()
    if words and words[0] == 'run':
      cpu = time.process_time()
      seconds = bench.run(int(words[1]))
      send({'seconds': seconds, 'cpu_seconds': time.process_time() - cpu})
    elif words and words[0] == 'quit':
      send(dict(bench.finish(), peak_rss_mb=peak_rss_mb()))
      return


def peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_config(path: str, config_json: Optional[str] = None):
  """The experiment config of `path` (`file.py` or `file.py:arg`), or the
  already resolved one the parent wrote to `config_json`."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  if config_json:
    with open(config_json) as f:
      return ml_collections.ConfigDict(json.load(f))
  file, _, arg = path.partition(':')
  if not os.path.isfile(file):
    raise Error(f'--config: no such file {file}')
  spec = importlib.util.spec_from_file_location('experiment_config', file)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def without_augmentation(config):
  """`config` with every training augmentation off (crop, flip,
  RandAugment, mixup, cutmix)."""
  config = config.copy_and_resolve_references()
  a = config.augment
  a.crop, a.flip, a.randaugment_layers = 'none', False, 0
  a.mixup_alpha, a.cutmix_alpha = 0.0, 0.0
  return config


class ProjectBench:
  """`mixer.benchmark.TrainBench`: the step train.py runs."""

  def __init__(self, config, batch_size: int, dtype: str):
    from mixer import benchmark  # pylint: disable=g-import-not-at-top
    self.bench = benchmark.TrainBench(config, batch_size=batch_size,
                                      dtype=dtype)

  def setup(self) -> Dict[str, Any]:
    info = self.bench.compile()
    info['first_step_s'] = self.bench.run(1)
    return info

  def run(self, steps: int) -> float:
    return self.bench.run(steps)

  def finish(self) -> Dict[str, Any]:
    return {'final_loss': self.bench.last_loss()}


class MinimalBench:
  """`benchmarks/minimal_step.py` under one jax.jit."""

  def __init__(self, config, batch_size: int, dtype: str):
    import jax  # pylint: disable=g-import-not-at-top
    import numpy as np  # pylint: disable=g-import-not-at-top
    from benchmarks import minimal_step  # pylint: disable=g-import-not-at-top
    from mixer import models, optim  # pylint: disable=g-import-not-at-top
    config = config.copy_and_resolve_references()
    config.warmup_steps = 0  # As TrainBench: same chain, no warmup.
    config.model.dtype = dtype
    model = models.build_model(config.model)
    shape = models.input_shape(config)
    tx = optim.make_optimizer(config, 1000)
    self.step = minimal_step.make_minimal_step(config, model, tx)
    self.params, self.opt_state = minimal_step.init(
        model, tx, shape, jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    self.images = jax.device_put(
        rng.integers(0, 256, (batch_size,) + shape, np.uint8))
    self.labels = jax.device_put(rng.integers(
        0, config.model.num_classes, (batch_size,)).astype(np.int32))
    self.jax = jax
    self.compiled, self.loss = None, None

  def setup(self) -> Dict[str, Any]:
    from mixer import benchmark  # pylint: disable=g-import-not-at-top
    t = time.perf_counter()
    self.compiled = self.step.lower(self.params, self.opt_state, self.images,
                                    self.labels).compile()
    info = dict(compile_s=time.perf_counter() - t,
                **benchmark.memory_stats(self.compiled))
    info['first_step_s'] = self.run(1)
    return info

  def run(self, steps: int) -> float:
    t = time.perf_counter()
    for _ in range(steps):
      self.params, self.opt_state, self.loss = self.compiled(
          self.params, self.opt_state, self.images, self.labels)
    self.jax.block_until_ready(self.loss)
    return time.perf_counter() - t

  def finish(self) -> Dict[str, Any]:
    return {'final_loss': float(self.loss)}


def worker_main(args) -> None:
  config = load_config(args.config, args.config_json)
  if args.worker == 'project':
    bench = ProjectBench(without_augmentation(config), args.batch_size,
                         args.dtype)
  elif args.worker == 'project_augment':
    bench = ProjectBench(config, args.batch_size, args.dtype)
  else:
    bench = MinimalBench(without_augmentation(config), args.batch_size,
                         args.dtype)
  serve(bench)


# -- the parent -----------------------------------------------------------------


class Worker:
  """One peer's process and its protocol."""

  def __init__(self, name: str, command: List[str]):
    self.name = name
    self.proc = subprocess.Popen(command, cwd=REPO, stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)
    self.info = self._receive()
    self.seconds, self.cpu_seconds = [], []

  def _receive(self) -> Dict[str, Any]:
    line = self.proc.stdout.readline()
    if not line:
      code = self.proc.wait()
      raise RuntimeError(f'the {self.name} worker stopped (exit status '
                         f'{code}); its error is above')
    return json.loads(line)

  def run(self, steps: int) -> float:
    self.proc.stdin.write(f'run {steps}\n')
    self.proc.stdin.flush()
    r = self._receive()
    self.seconds.append(r['seconds'] / steps)
    self.cpu_seconds.append(r['cpu_seconds'] / steps)
    return self.seconds[-1]

  def finish(self) -> None:
    self.proc.stdin.write('quit\n')
    self.proc.stdin.flush()
    self.info.update(self._receive())
    self.proc.wait()


def timm_python(requested: Optional[str]) -> str:
  if requested:
    return requested
  if os.environ.get('MIXER_TIMM_PYTHON'):
    return os.environ['MIXER_TIMM_PYTHON']
  return BENCH_VENV if os.path.exists(BENCH_VENV) else sys.executable


def has_timm(python: str) -> bool:
  probe = subprocess.run([python, '-c', 'import torch, timm'], cwd=REPO,
                         capture_output=True)
  return probe.returncode == 0


def load_average() -> str:
  try:
    return ' '.join(f'{x:.2f}' for x in os.getloadavg())
  except OSError:
    return '?'


def progress(line: str) -> None:
  print(f'side_by_side: {line}', file=sys.stderr, flush=True)


def compare(args) -> Dict[str, Any]:
  """Runs the peers' rounds; returns the record the table is made from."""
  peers = [p.strip() for p in args.peers.split(',') if p.strip()]
  unknown = [p for p in peers if p not in PEERS]
  if unknown or not peers:
    raise Error(f'--peers: unknown peer(s) {", ".join(unknown) or "none"}; '
                f'choose from {", ".join(PEERS)}')
  for name in ('batch_size', 'rounds', 'steps'):
    if getattr(args, name) < 1:
      raise Error(f'--{name} must be at least 1, got {getattr(args, name)}')
  if args.dtype not in ('float32', 'bfloat16'):
    raise Error(f"--dtype must be 'float32' or 'bfloat16', got "
                f'{args.dtype!r}')
  from mixer import sweeps  # pylint: disable=g-import-not-at-top
  try:
    config = load_config(args.config)
    config = sweeps.apply_overrides(config, sweeps.parse_assignments(args.set))
  except (sweeps.SweepError, KeyError, ValueError) as e:
    raise Error(str(e).strip('"')) from e
  notes = []
  python = timm_python(args.timm_python)
  if 'timm' in peers and not has_timm(python):
    peers.remove('timm')
    notes.append(f'timm: not run, torch and timm are not importable by '
                 f'{python}; install them apart from the project: {INSTALL} '
                 '(docs/benchmarks.md)')
  fd, config_json = tempfile.mkstemp(suffix='.json')
  with os.fdopen(fd, 'w') as f:
    json.dump(config.to_dict(), f)
  common = [f'--config={args.config}', f'--config_json={config_json}',
            f'--batch_size={args.batch_size}', f'--dtype={args.dtype}']
  load_before = load_average()
  workers = []
  try:
    for peer in peers:
      if peer == 'timm':
        command = [python, os.path.join(REPO, 'benchmarks', 'timm_peer.py'),
                   '--worker', '--device=cpu' if args.cpu else '--device=auto']
      else:
        command = [sys.executable, os.path.abspath(__file__),
                   f'--worker={peer}']
      progress(f'starting {peer}: build, compile, first step')
      workers.append(Worker(peer, command + common))
      info = workers[-1].info
      progress(f'{peer}: ' + (f'compiled in {info["compile_s"]:.1f} s, '
                              if 'compile_s' in info else '')
               + f'first step {info["first_step_s"]:.2f} s')
    for r in range(args.rounds):
      shift = r % len(workers)
      for w in workers[shift:] + workers[:shift]:
        w.run(args.steps)
      progress(f'round {r + 1}/{args.rounds}: ' + ', '.join(
          f'{w.name} {args.batch_size / w.seconds[-1]:.1f} img/s'
          for w in workers))
    for w in workers:
      w.finish()
  finally:
    for w in workers:
      if w.proc.poll() is None:
        w.proc.kill()
    os.remove(config_json)
  return summarize(args, config, workers, notes, load_before)


def summarize(args, config, workers, notes, load_before) -> Dict[str, Any]:
  base = next((w for w in workers if w.name == 'minimal'), None)
  rows = []
  for w in workers:
    row = {'peer': w.name,
           'img_per_s': args.batch_size / statistics.median(w.seconds),
           'step_ms': statistics.median(w.seconds) * 1e3,
           'cpu_ms': statistics.median(w.cpu_seconds) * 1e3,
           'rounds_ms': [round(s * 1e3, 1) for s in w.seconds]}
    if base is not None:
      row['x_minimal'] = statistics.median(
          b / s for b, s in zip(base.seconds, w.seconds))
    for key in ('compile_s', 'first_step_s', 'xla_temp_bytes', 'peak_rss_mb',
                'final_loss', 'impl'):
      if key in w.info:
        row[key] = w.info[key]
    rows.append(row)
  return {'config': args.config, 'set': args.set,
          'model': config.model.model_name, 'batch_size': args.batch_size,
          'dtype': args.dtype, 'rounds': args.rounds, 'steps': args.steps,
          'cpu_count': os.cpu_count(), 'load_before': load_before,
          'load_after': load_average(), 'rows': rows, 'notes': notes}


def table(record: Dict[str, Any]) -> str:
  fmt = lambda v, f: '—' if v is None else format(v, f)
  lines = [
      f'{record["model"]} ({record["config"]}'
      + ''.join(f' --set={s}' for s in record['set'])
      + f'), batch {record["batch_size"]}, {record["dtype"]}, '
      f'{record["rounds"]} rounds x {record["steps"]} steps, '
      f'{record["cpu_count"]} CPUs, load {record["load_before"]} -> '
      f'{record["load_after"]}', '',
      '| peer | img/s | ms/step | CPU ms/step | x minimal | compile s | '
      'first step s | XLA temp MiB | peak RSS MiB |',
      '| --- | --- | --- | --- | --- | --- | --- | --- | --- |']
  for r in record['rows']:
    temp = r.get('xla_temp_bytes')
    lines.append(
        f'| {r["peer"]} | {r["img_per_s"]:.1f} | {r["step_ms"]:.0f} | '
        f'{r["cpu_ms"]:.0f} | {fmt(r.get("x_minimal"), ".3f")} | '
        f'{fmt(r.get("compile_s"), ".1f")} | '
        f'{fmt(r.get("first_step_s"), ".2f")} | '
        f'{fmt(None if temp is None else temp / 2**20, ".0f")} | '
        f'{fmt(r.get("peak_rss_mb"), ".0f")} |')
  lines += [''] + record['notes'] if record['notes'] else []
  return '\n'.join(lines)


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--config', required=True,
                 help='experiment config file (file.py or file.py:arg)')
  p.add_argument('--batch_size', type=int, default=128)
  p.add_argument('--dtype', default='float32')
  p.add_argument('--rounds', type=int, default=7)
  p.add_argument('--steps', type=int, default=2, help='steps per round')
  p.add_argument('--peers', default='project,minimal,timm',
                 help=f'comma-separated, of {", ".join(PEERS)}')
  p.add_argument('--set', action='append', default=[],
                 help='key=value config override for every peer, e.g. '
                 '--set=model.remat_activation=true (repeatable)')
  p.add_argument('--timm_python', default=None,
                 help='the Python with torch and timm for the timm peer')
  p.add_argument('--cpu', action='store_true',
                 help='run the timm peer on the CPU even with CUDA present')
  p.add_argument('--worker', choices=PEERS[:3], help=argparse.SUPPRESS)
  p.add_argument('--config_json', help=argparse.SUPPRESS)
  return p.parse_args(argv)


def main() -> None:
  args = parse_args()
  if args.worker:
    worker_main(args)
    return
  try:
    record = compare(args)
  except (Error, RuntimeError) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(1)
  print(table(record))
  print(json.dumps(record))


if __name__ == '__main__':
  main()
