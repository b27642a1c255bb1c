"""Multi-host training on one machine: two CPU processes joined by
`jax.distributed` (gloo collectives), started through train.py's
--coordinator_address/--num_processes/--process_id flags, each feeding its
own half of every global batch, match one process with the same global
batch; only process 0 writes metrics and results; the checkpoint restores.
"""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np

from mixer import checkpoints
from mixer import metrics
from mixer import train
from mixer import workdir as workdir_lib
from tests.conftest import REPO
from tests.conftest import tiny_config

# Augmentation off: the random crops and flips depend on the device index.
RUN = {'num_train_steps': 4, 'augment.crop': 'none', 'augment.flip': False}


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _flags(config) -> list:
  """--config.<field>=<value> for every leaf of `config` (same config)."""
  flat = workdir_lib._flat(workdir_lib.config_json(config))  # pylint: disable=protected-access
  out = []
  for key, value in flat.items():
    if isinstance(value, (list, tuple)) and any(isinstance(v, str)
                                                for v in value):
      value = repr(tuple(value))  # ('cifar10', 'train', 'test')
    elif isinstance(value, (list, tuple)):
      value = ','.join(str(v) for v in value)
    out.append(f'--config.{key}={value}')
  return out


def test_two_processes_match_one(tmp_path, data_dir):
  config = tiny_config(**RUN)
  one = tmp_path / 'one'
  train.train_and_evaluate(config, str(one))

  two = tmp_path / 'two'
  port = _free_port()
  env = dict(os.environ, MIXER_DATA_DIR=str(data_dir), JAX_PLATFORMS='cpu')
  env.pop('XLA_FLAGS', None)
  procs, logs = [], []
  for i in range(2):
    logs.append(tmp_path / f'process{i}.txt')
    with open(logs[-1], 'w') as f:
      procs.append(subprocess.Popen(
          [sys.executable, 'train.py', '--config=configs/cifar10_baseline.py',
           f'--workdir={two}', f'--coordinator_address=127.0.0.1:{port}',
           '--num_processes=2', f'--process_id={i}', *_flags(config)],
          cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=f))
  try:
    for p in procs:
      p.wait(timeout=400)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  text = [log.read_text() for log in logs]
  for p, t in zip(procs, text):
    assert p.returncode == 0, t[-3000:]
  assert 'Process 0 of 2 feeds examples [0, 16) of every global batch' in \
      text[0]
  assert 'Process 1 of 2 feeds examples [16, 32) of every global batch' in \
      text[1]

  # The same config, only the number of processes differs.
  assert json.loads((two / 'config.json').read_text()) == json.loads(
      (one / 'config.json').read_text())
  # Process 0 alone wrote metrics (one record per log step) and results.
  r1, r2 = metrics.read_records(str(one)), metrics.read_records(str(two))
  assert [r['step'] for r in r2] == [r['step'] for r in r1] == [2, 4]
  for a, b in zip(r1, r2):
    for key in ('train_loss', 'train_accuracy', 'grad_norm', 'learning_rate'):
      np.testing.assert_allclose(b[key], a[key], rtol=1e-5, err_msg=key)
  res1 = json.loads((one / 'results.json').read_text())
  res2 = json.loads((two / 'results.json').read_text())
  assert res2['num_devices'] == 2 and res1['num_devices'] == 1
  assert res2['eval_examples'] == res1['eval_examples'] == 500
  np.testing.assert_allclose(res2['final_eval_loss'], res1['final_eval_loss'],
                             rtol=1e-5)
  # The checkpoint both processes saved restores to (nearly) the same params.
  assert checkpoints.complete_steps(checkpoints.checkpoint_dir(str(two))) == [4]
  p1 = checkpoints.restore_params(str(one))
  p2 = checkpoints.restore_params(str(two))
  for (path, a), (_, b) in zip(jax.tree_util.tree_leaves_with_path(p1),
                               jax.tree_util.tree_leaves_with_path(p2)):
    np.testing.assert_allclose(b, a, atol=1e-5, rtol=0, err_msg=str(path))
