"""The workdir: one run at a time (a real second process), odd paths, configs
that cannot work, and a fresh start that keeps what an earlier attempt wrote."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest

from mixer import train
from mixer import workdir as workdir_lib
from tests.conftest import REPO
from tests.conftest import tiny_config

# A run long enough to be caught holding its workdir (checkpoints off, so a
# SIGKILL leaves no checkpoint to resume from).
_HOLDER = """
import sys
sys.path.insert(0, sys.argv[2])
sys.modules['tensorflow'] = None  # Faster start; metrics need no TensorBoard.
from tests.conftest import tiny_config
from mixer import train
train.train_and_evaluate(tiny_config(
    num_train_steps=100_000, log_every_steps=1, checkpoint_every_steps=0,
    checkpoint_every_minutes=0), sys.argv[1])
"""


def _holder_info(lock_path, timeout=240):
  """The lock file's JSON once the holder has written it."""
  deadline = time.time() + timeout
  while time.time() < deadline:
    try:
      with open(lock_path) as f:
        info = json.load(f)
      if info.get('pid'):
        return info
    except (OSError, ValueError):
      pass
    time.sleep(0.2)
  raise AssertionError(f'no lock holder appeared in {lock_path}')


def test_second_run_is_refused_and_a_killed_runs_lock_is_not(tmp_path,
                                                             data_dir):
  workdir = tmp_path / 'w'
  env = dict(os.environ, MIXER_DATA_DIR=str(data_dir), JAX_PLATFORMS='cpu')
  holder = subprocess.Popen([sys.executable, '-c', _HOLDER, str(workdir),
                             str(REPO)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
  try:
    info = _holder_info(workdir / workdir_lib.LOCK_FILE)
    assert info['pid'] == holder.pid
    deadline = time.time() + 240
    while not (workdir / 'metrics.jsonl').exists() and time.time() < deadline:
      time.sleep(0.2)  # The holder is training now.
    # The same run again, in this (second, real) process: refused at once,
    # naming the holder, and nothing of the running run is touched.
    config_json = workdir / 'config.json'
    before = (config_json.read_bytes(), config_json.stat().st_mtime_ns)
    with pytest.raises(workdir_lib.WorkdirError) as e:
      train.train_and_evaluate(tiny_config(
          num_train_steps=100_000, log_every_steps=1,
          checkpoint_every_steps=0, checkpoint_every_minutes=0),
                               str(workdir))
    text = str(e.value)
    assert '\n' not in text
    assert f'workdir {workdir} is in use by another run (pid {holder.pid} ' \
        'on host ' in text
    assert 'started 20' in text and 'use another workdir' in text
    assert (config_json.read_bytes(), config_json.stat().st_mtime_ns) == before
    assert not (workdir / workdir_lib.PREVIOUS_ATTEMPTS).exists()
    assert not [n for n in os.listdir(workdir) if n.startswith('.write-test')]
    # Another config into the same workdir is refused the same way.
    with pytest.raises(workdir_lib.WorkdirError, match='in use by another'):
      train.train_and_evaluate(tiny_config(seed=3), str(workdir))
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=60)
  # The kernel released the killed process's lock: the restart trains.
  results = train.train_and_evaluate(
      tiny_config(num_train_steps=3, log_every_steps=1,
                  checkpoint_every_steps=0, checkpoint_every_minutes=0),
      str(workdir))
  assert results['steps'] == 3 and results['resumed_from_step'] == 0


def test_two_runs_in_one_process_conflict_too(tmp_path):
  # A notebook re-running its cell while the first run's thread is alive.
  first = workdir_lib.RunLock(str(tmp_path)).acquire()
  try:
    with pytest.raises(workdir_lib.WorkdirError,
                       match=f'pid {os.getpid()} on host'):
      workdir_lib.RunLock(str(tmp_path)).acquire()
  finally:
    first.release()
  workdir_lib.RunLock(str(tmp_path)).acquire().release()


@pytest.mark.parametrize('kind', ['file', 'devnull', 'empty', 'under_file'])
def test_odd_workdirs_say_what_is_wrong(tmp_path, data_dir, kind):
  path = {'file': tmp_path / 'a_file', 'devnull': '/dev/null', 'empty': '',
          'under_file': tmp_path / 'a_file' / 'run'}[kind]
  (tmp_path / 'a_file').write_text('x')
  with pytest.raises(workdir_lib.WorkdirError) as e:
    train.train_and_evaluate(tiny_config(), str(path))
  text = str(e.value)
  assert '\n' not in text
  expected = {
      'file': f'cannot create workdir {path}: it is a file, not a folder',
      'devnull': 'cannot create workdir /dev/null: it is a device or special '
                 'file, not a folder',
      'empty': 'the workdir is empty (--workdir="")',
      'under_file': f'{tmp_path / "a_file"} is a file, not a folder',
  }[kind]
  assert expected in text, text
  assert (tmp_path / 'a_file').read_text() == 'x'


@pytest.mark.parametrize('field,value', [
    ('learning_rate', math.nan), ('learning_rate', math.inf),
    ('weight_decay', -math.inf), ('model.dropout_rate', math.nan),
    ('augment.mixup_alpha', math.inf)])
def test_non_finite_config_values_are_refused(tmp_path, field, value):
  config = tiny_config(**{field: value})
  with pytest.raises(ValueError) as e:
    train.train_and_evaluate(config, str(tmp_path / 'w'))
  assert str(e.value) == (f'config field {field} is {value}: it must be a '
                          'finite number')
  assert not (tmp_path / 'w').exists()


def test_equal_configs_are_equal():
  same = workdir_lib.config_differences
  assert same({'a': math.nan, 'b': [1, 2]}, {'a': math.nan, 'b': (1, 2)}) == []
  assert same({'a': 1}, {'a': 1.0}) == []
  assert same({'a': 1e-3}, {'a': 2e-3}) == ['a (0.001 -> 0.002)']


def test_fresh_start_keeps_what_an_earlier_attempt_wrote(tmp_path, data_dir):
  # An attempt that was killed before its first checkpoint left metrics and
  # TensorBoard events; the rerun starts fresh and says so, and moves them
  # aside instead of emptying metrics.jsonl beside stale event files.
  workdir = tmp_path / 'w'
  workdir.mkdir()
  (workdir / 'metrics.jsonl').write_text('{"step": 50, "train_loss": 2.0}\n')
  (workdir / 'events.out.tfevents.1.old').write_text('old events')
  train.train_and_evaluate(tiny_config(num_train_steps=2, warmup_steps=1,
                                       log_every_steps=1), str(workdir))
  moved = list((workdir / workdir_lib.PREVIOUS_ATTEMPTS).iterdir())
  assert len(moved) == 1
  assert (moved[0] / 'metrics.jsonl').read_text() == (
      '{"step": 50, "train_loss": 2.0}\n')
  assert (moved[0] / 'events.out.tfevents.1.old').read_text() == 'old events'
  assert not (workdir / 'events.out.tfevents.1.old').exists()
  steps = [json.loads(l)['step'] for l in
           (workdir / 'metrics.jsonl').read_text().splitlines()]
  assert steps == [1, 2]
