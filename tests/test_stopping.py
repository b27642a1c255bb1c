"""Ctrl-C and `stop`: the run ends saving its last finished step, saying so.

Real `train.py` processes get a real SIGINT: between quick steps the current
step is saved and the run exits (status 130, not an `error:`); a step that
takes longer than the grace (a sleep injected into the step) is finished,
said while waiting, then saved, and the rerun resumes there; only a hung
step makes the watchdog exit without saving, naming the last checkpoint.
The notebook's path, a `stop` event set from another thread, saves the same
way, also during an evaluation (the rerun evaluates that step first and
writes the same metrics as a run never stopped). The first time-based
checkpoint comes early.
"""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from mixer import checkpoints
from mixer import loop
from mixer import metrics
from mixer import stopping
from mixer import train
from mixer.evaluators import classification
from tests.conftest import REPO
from tests.conftest import tiny_config

_TINY = ['--config.model.hidden_dim=32', '--config.model.num_blocks=1',
         '--config.model.tokens_mlp_dim=16', '--config.model.channels_mlp_dim=64',
         '--config.batch_size=32', '--config.eval_split=test[:250]',
         '--config.eval_batch_size=250', '--config.log_every_steps=5']

# train.py's main, with the two ways the loop waits for a step
# (jax.block_until_ready, and jax.device_get of its metrics) made to hang, as
# a long device step does, once the test creates the file named by argv[1].
_STUCK = """
import os, sys, time
sys.path.insert(0, {repo!r})
flag = sys.argv.pop(1)
import jax
def _hanging(wait):
  def hang_then_wait(x):
    if os.path.exists(flag):
      time.sleep(300)
    return wait(x)
  return hang_then_wait
jax.block_until_ready = _hanging(jax.block_until_ready)
jax.device_get = _hanging(jax.device_get)
sys.argv[0] = os.path.join({repo!r}, 'train.py')
import runpy
runpy.run_path(sys.argv[0], run_name='__main__')
"""


# train.py's main, every train step made `seconds` longer by a sleep inside
# it (a host callback the step's result depends on), and the stop grace
# shortened to `grace` seconds.
_SLOW = """
import os, sys, time
sys.path.insert(0, {repo!r})
import numpy as np
import jax
import jax.numpy as jnp
from jax.experimental import io_callback
from mixer import step as step_lib
from mixer import stopping
stopping.STOP_GRACE_SECONDS = {grace}
_make = step_lib.make_train_step
def _sleep():
  time.sleep({seconds})
  return np.int32(0)
def make_train_step(*args, **kwargs):
  step = _make(*args, **kwargs)
  def slow(state, images, labels):
    late = io_callback(_sleep, jax.ShapeDtypeStruct((), jnp.int32))
    return step(state.replace(step=state.step + late), images, labels)
  return slow
step_lib.make_train_step = make_train_step
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


def test_ctrl_c_during_a_step_longer_than_the_grace_saves_it(tmp_path,
                                                             data_dir):
  workdir = tmp_path / 'w'
  grace, seconds = 1.0, 3.0
  args = ['--config=configs/cifar10_baseline.py', f'--workdir={workdir}',
          '--config.num_train_steps=100000', '--config.warmup_steps=2',
          '--config.checkpoint_every_steps=0',
          '--config.checkpoint_every_minutes=0', *_TINY,
          '--config.log_every_steps=1']
  proc = _start(args, data_dir,
                _SLOW.format(repo=str(REPO), grace=grace, seconds=seconds))
  _wait_for(proc, 'step 2/')  # Step 3 starts now and runs for 3 s.
  time.sleep(1.0)
  t0 = time.time()
  proc.send_signal(signal.SIGINT)
  _, err = proc.communicate(timeout=60)
  waited = time.time() - t0
  assert proc.returncode == 130, err[-2000:]
  lines = err.strip().splitlines()
  notice = [l for l in lines if l.startswith('stopping: ')]
  assert notice and re.match(
      r'stopping: finishing step 3 \(a step takes ~\d+ s here\), then saving '
      r'step 3; Ctrl-C again to quit at once', notice[0]), lines[-5:]
  assert lines[-1].startswith(
      f'stopped at step 3 of 100,000: checkpoint 3 is in {workdir}/'
      'checkpoints'), lines[-1]
  assert grace < waited < 20, waited  # It waited past the grace for step 3.
  assert checkpoints.complete_steps(
      checkpoints.checkpoint_dir(str(workdir))) == [3]
  config = json.loads((workdir / 'config.json').read_text())
  resumed = tiny_config(num_train_steps=5, warmup_steps=2,
                        checkpoint_every_steps=0, checkpoint_every_minutes=0,
                        eval_split='test[:250]', log_every_steps=1,
                        **{'model.model_name': config['model']['model_name']})
  results = train.train_and_evaluate(resumed, str(workdir))
  assert results['resumed_from_step'] == 3
  assert results['steps'] == 5


def _stop_at_evaluation(monkeypatch, event, call):
  """Sets `event` as the `call`-th classification evaluation starts."""
  calls = []
  original = classification.Evaluator.evaluate

  def evaluate(self, params, stop=None):
    calls.append(1)
    if len(calls) == call:
      event.set()
    return original(self, params, stop=stop)

  monkeypatch.setattr(classification.Evaluator, 'evaluate', evaluate)


@pytest.mark.parametrize('call', [1, 2], ids=['periodic', 'final'])
def test_stop_during_an_evaluation_keeps_the_step(tmp_path, data_dir,
                                                  monkeypatch, call):
  config = tiny_config(num_train_steps=4, eval_every_steps=2,
                       checkpoint_every_steps=0, checkpoint_every_minutes=0)
  whole = train.train_and_evaluate(config, str(tmp_path / 'whole'))
  workdir = str(tmp_path / 'stopped')
  stop = threading.Event()
  with monkeypatch.context() as m:
    _stop_at_evaluation(m, stop, call)
    with pytest.raises(stopping.Interrupted) as info:
      train.train_and_evaluate(config, workdir, stop=stop)
  step = 2 * call
  assert str(info.value).startswith(
      f'stopped at step {step} of 4 during its evaluation: checkpoint {step} '
      f'is in {workdir}/checkpoints'), str(info.value)
  assert 'its evaluation runs first when resumed' in str(info.value)
  assert checkpoints.complete_steps(
      checkpoints.checkpoint_dir(workdir))[-1] == step
  assert not os.path.exists(os.path.join(workdir, 'results.json'))
  results = train.train_and_evaluate(config, workdir)
  assert results['resumed_from_step'] == step
  assert results['final_eval_accuracy'] == whole['final_eval_accuracy']
  assert (metrics.read_records(workdir, drop_timing=True) ==
          metrics.read_records(str(tmp_path / 'whole'), drop_timing=True))


def test_first_time_based_checkpoint_comes_early(tmp_path, data_dir,
                                                 monkeypatch):
  monkeypatch.setattr(loop, 'FIRST_CHECKPOINT_SECONDS', 1.0)
  stop = threading.Event()
  config = tiny_config(num_train_steps=100_000, log_every_steps=1000,
                       checkpoint_every_steps=0, checkpoint_every_minutes=10)
  outcome = {}

  def run():
    try:
      train.train_and_evaluate(config, str(tmp_path), stop=stop)
    except stopping.Interrupted as e:
      outcome['stopped'] = str(e)

  thread = threading.Thread(target=run)
  t0 = time.time()
  thread.start()
  ckpt_dir = checkpoints.checkpoint_dir(str(tmp_path))
  while not checkpoints.complete_steps(ckpt_dir) and time.time() - t0 < 120:
    time.sleep(0.1)
  first = checkpoints.complete_steps(ckpt_dir)
  stop.set()
  thread.join(timeout=120)
  assert first and first[0] > 1, first  # Long before the 10 minutes.
  assert time.time() - t0 < 120
  assert outcome['stopped'].startswith('stopped at step ')
