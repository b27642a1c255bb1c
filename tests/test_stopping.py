"""Ctrl-C and `stop`: the run ends within seconds, saying what it saved.

Real `train.py` processes get a real SIGINT: between quick steps the current
step is saved and the run exits (status 130, not an `error:`); while the
main thread is stuck in a long step, the watchdog exits after its grace
period naming the last checkpoint. The notebook's path, a `stop` event set
from another thread, saves the same way.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time

from mixer import checkpoints
from mixer import stopping
from mixer import train
from tests.conftest import REPO
from tests.conftest import tiny_config

_TINY = ['--config.model.hidden_dim=32', '--config.model.num_blocks=1',
         '--config.model.tokens_mlp_dim=16', '--config.model.channels_mlp_dim=64',
         '--config.batch_size=32', '--config.eval_split=test[:250]',
         '--config.eval_batch_size=250', '--config.log_every_steps=5']

# train.py's main, with jax.block_until_ready made to hang (as a long device
# step does) once the test creates the file named by argv[1].
_STUCK = """
import os, sys, time
sys.path.insert(0, {repo!r})
flag = sys.argv.pop(1)
import jax
_wait = jax.block_until_ready
def block_until_ready(x):
  if os.path.exists(flag):
    time.sleep(300)
  return _wait(x)
jax.block_until_ready = block_until_ready
sys.argv[0] = os.path.join({repo!r}, 'train.py')
import runpy
runpy.run_path(sys.argv[0], run_name='__main__')
"""


def _start(args, data_dir, script=None):
  env = dict(os.environ, MIXER_DATA_DIR=str(data_dir), JAX_PLATFORMS='cpu')
  cmd = ([sys.executable, '-c', script] if script else
         [sys.executable, 'train.py'])
  return subprocess.Popen(cmd + args, cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)


def _wait_for(proc, text, timeout=240):
  """Reads stderr lines until one contains `text`; returns them all."""
  lines, deadline = [], time.time() + timeout
  while time.time() < deadline:
    line = proc.stderr.readline()
    if not line:
      break
    lines.append(line)
    if text in line:
      return lines
  proc.kill()
  raise AssertionError(f'{text!r} not seen; stderr:\n' + ''.join(lines))


def test_ctrl_c_saves_the_current_step_and_exits(tmp_path, data_dir):
  workdir = tmp_path / 'w'
  args = ['--config=configs/cifar10_baseline.py', f'--workdir={workdir}',
          '--config.num_train_steps=100000', '--config.warmup_steps=2',
          '--config.checkpoint_every_steps=0',
          '--config.checkpoint_every_minutes=0', *_TINY]
  proc = _start(args, data_dir)
  _wait_for(proc, 'img/s, ETA')  # Training, past the first progress line.
  t0 = time.time()
  proc.send_signal(signal.SIGINT)
  _, err = proc.communicate(timeout=60)
  seconds = time.time() - t0
  assert proc.returncode == 130, err[-2000:]
  assert seconds < 10, seconds
  last = err.strip().splitlines()[-1]
  assert last.startswith('stopped at step ') and 'error' not in last, last
  step = int(last.split()[3].replace(',', ''))
  assert f'checkpoint {step} is in {workdir}/checkpoints' in last
  assert last.endswith('run the same command again to resume')
  assert 'Traceback' not in err
  assert checkpoints.complete_steps(
      checkpoints.checkpoint_dir(str(workdir))) == [step]
  # The same run (shortened, which a resume may do) resumes there.
  config = json.loads((workdir / 'config.json').read_text())
  assert config['num_train_steps'] == 100_000
  resumed = tiny_config(num_train_steps=step + 2, warmup_steps=2,
                        checkpoint_every_steps=0, checkpoint_every_minutes=0,
                        eval_split='test[:250]', log_every_steps=5,
                        **{'model.model_name': config['model']['model_name']})
  results = train.train_and_evaluate(resumed, str(workdir))
  assert results['resumed_from_step'] == step
  assert results['steps'] == step + 2


def test_ctrl_c_during_a_long_step_exits_after_the_grace(tmp_path, data_dir):
  workdir = tmp_path / 'w'
  flag = tmp_path / 'hang'
  args = [str(flag), '--config=configs/cifar10_baseline.py',
          f'--workdir={workdir}', '--config.num_train_steps=100000',
          '--config.warmup_steps=2', '--config.checkpoint_every_steps=10',
          *_TINY]
  proc = _start(args, data_dir, _STUCK.format(repo=str(REPO)))
  _wait_for(proc, 'img/s, ETA')
  deadline = time.time() + 120
  while not checkpoints.complete_steps(
      checkpoints.checkpoint_dir(str(workdir))) and time.time() < deadline:
    time.sleep(0.2)
  flag.write_text('hang')  # The next wait on the device never returns.
  time.sleep(1.0)
  t0 = time.time()
  proc.send_signal(signal.SIGINT)
  _, err = proc.communicate(timeout=60)
  seconds = time.time() - t0
  assert proc.returncode == 130, err[-2000:]
  assert stopping.STOP_GRACE_SECONDS - 1 < seconds < \
      stopping.STOP_GRACE_SECONDS + 10, seconds
  last = err.strip().splitlines()[-1]
  assert last.startswith('stopped during step ') and 'without waiting for ' \
      'it: the last checkpoint is step ' in last, last
  saved = checkpoints.complete_steps(checkpoints.checkpoint_dir(str(workdir)))
  assert saved and f'step {saved[-1]} in {workdir}/checkpoints' in last
  assert last.endswith('run the same command again to resume from it')


def test_stop_event_from_another_thread(tmp_path, data_dir):
  stop = threading.Event()
  config = tiny_config(num_train_steps=100_000, log_every_steps=1,
                       checkpoint_every_steps=0, checkpoint_every_minutes=0)
  outcome = {}

  def run():
    try:
      train.train_and_evaluate(config, str(tmp_path), stop=stop)
    except stopping.Interrupted as e:
      outcome['message'] = str(e)

  thread = threading.Thread(target=run)
  thread.start()
  metrics = tmp_path / 'metrics.jsonl'
  deadline = time.time() + 240
  while (not metrics.exists() or metrics.read_text().count('\n') < 3) and \
      time.time() < deadline:
    time.sleep(0.1)
  stop.set()
  thread.join(timeout=120)
  assert not thread.is_alive()
  message = outcome['message']
  step = int(message.split()[3].replace(',', ''))
  assert step >= 3
  assert checkpoints.complete_steps(
      checkpoints.checkpoint_dir(str(tmp_path))) == [step]
  assert not (tmp_path / 'results.json').exists()
