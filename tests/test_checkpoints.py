"""The run's orbax checkpoints prove their integrity, and a full disk is named.

Real orbax checkpoints of a tiny model: a step whose array bytes changed, a
truncated file and a zeroed file are each set aside (with one warning) and
the run resumes from the newest step that verifies.
"""

import errno
import os
import shutil
import subprocess

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from mixer import checkpoints
from mixer import models
from mixer import optim
from mixer import step as step_lib
from mixer import train
from tests.conftest import tiny_config

RUN = {'num_train_steps': 6, 'checkpoint_every_steps': 2, 'log_every_steps': 2,
       'checkpoint_every_minutes': 0}


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory, ):
  """A finished tiny run with checkpoints 2, 4 and 6."""
  from tests.conftest import shared_data_dir  # pylint: disable=g-import-not-at-top
  if not (shared_data_dir() / 'cifar10' / 'test.npz').exists():
    pytest.skip('real data not found')
  workdir = tmp_path_factory.mktemp('run')
  train.train_and_evaluate(tiny_config(**RUN), str(workdir))
  assert checkpoints.complete_steps(checkpoints.checkpoint_dir(
      str(workdir))) == [2, 4, 6]
  return workdir


def _copy(run_dir, tmp_path):
  workdir = tmp_path / 'w'
  shutil.copytree(run_dir, workdir)
  os.remove(workdir / 'results.json')
  return workdir


def _target():
  config = tiny_config(**RUN)
  return step_lib.state_dict(step_lib.create_train_state(
      config, models.build_model(config.model),
      optim.make_optimizer(config, 6), jax.random.PRNGKey(0)))


def _largest_file(step_dir):
  files = [os.path.join(d, f) for d, _, fs in os.walk(step_dir / 'state')
           for f in fs]
  return max(files, key=os.path.getsize)


def _alter_values(step_dir):
  """Rewrites the step with one parameter changed but its original meta
  (and digests): arrays that read fine yet are not what was saved."""
  abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct,
                                    _target())
  state = ocp.StandardCheckpointer().restore(str(step_dir / 'state'),
                                             abstract)
  state['params']['head']['bias'] = np.asarray(
      state['params']['head']['bias']) + np.float32(1e-3)
  shutil.rmtree(step_dir / 'state')
  ckptr = ocp.StandardCheckpointer()
  ckptr.save(str(step_dir / 'state'), state)
  ckptr.wait_until_finished()


def _truncate(step_dir):
  path = _largest_file(step_dir)
  with open(path, 'r+b') as f:
    f.truncate(os.path.getsize(path) // 2)


def _zero(step_dir):
  path = _largest_file(step_dir)
  size = os.path.getsize(path)
  with open(path, 'wb') as f:
    f.write(b'\0' * size)


@pytest.mark.parametrize('damage', [_alter_values, _truncate, _zero],
                         ids=['altered_values', 'truncated', 'zeroed'])
def test_damaged_step_is_set_aside_and_the_run_resumes_before_it(
    run_dir, tmp_path, damage, caplog):
  workdir = _copy(run_dir, tmp_path)
  ckpt_dir = checkpoints.checkpoint_dir(str(workdir))
  damage(workdir / 'checkpoints' / '6')
  mgr = checkpoints.manager(str(workdir))
  step, state, meta = checkpoints.restore(mgr, _target())
  mgr.close()
  assert step == 4 and meta['step'] == 4 and 'digests' not in meta
  assert int(state['step']) == 4
  assert checkpoints.complete_steps(ckpt_dir) == [2, 4]
  assert os.listdir(workdir / checkpoints.INCOMPLETE_SUBDIR) == ['6']
  warnings = [r.getMessage() for r in caplog.records
              if 'Ignoring checkpoint' in r.getMessage()]
  assert len(warnings) == 1 and '\n' not in warnings[0]
  expected = ('is damaged: 1 of ' if damage is _alter_values
              else 'cannot be read (')
  assert expected in warnings[0]
  # And a whole run resumes from step 4 to the end.
  results = train.train_and_evaluate(tiny_config(**RUN), str(workdir))
  assert results['resumed_from_step'] == 4 and results['steps'] == 6


def test_every_step_damaged_is_one_error(run_dir, tmp_path):
  workdir = _copy(run_dir, tmp_path)
  for step in (2, 4, 6):
    _zero(workdir / 'checkpoints' / str(step))
  with pytest.raises(ValueError) as e:
    train.train_and_evaluate(tiny_config(**RUN), str(workdir))
  text = str(e.value)
  assert '\n' not in text
  assert 'no checkpoint in ' in text and 'step 6, step 4, step 2 failed ' \
      'verification' in text
  assert sorted(os.listdir(workdir / checkpoints.INCOMPLETE_SUBDIR)) == [
      '2', '4', '6']
  # Nothing is lost: the next run starts from scratch beside them.
  results = train.train_and_evaluate(tiny_config(**RUN), str(workdir))
  assert results['resumed_from_step'] == 0


def test_digests_cover_dtype_shape_and_bytes():
  a = {'x': np.arange(6, dtype=np.float32).reshape(2, 3)}
  d = checkpoints.digests(a)
  assert set(d) == {"['x']"} and len(d["['x']"]) == 64
  assert checkpoints.digests({'x': a['x'].reshape(3, 2)}) != d
  assert checkpoints.digests({'x': a['x'].astype(np.int32)}) != d
  b = {'x': a['x'].copy()}
  b['x'][1, 2] = np.nextafter(b['x'][1, 2], np.float32(10))
  assert checkpoints.digests(b) != d
  assert checkpoints.digests({'x': a['x'].copy()}) == d


_TENSORSTORE_ENOSPC = (
    'RESOURCE_EXHAUSTED: Error writing "params.w/0.0" in OCDBT database at '
    'local file "/w/checkpoints/4.orbax-checkpoint-tmp/state.orbax-'
    'checkpoint-tmp/ocdbt.process_0/": Failed writing: "/w/d/ae5e": Failed to '
    'write 1684599 bytes to file 7: No space left on device '
    "[os_error_code='28']")


def test_disk_full_as_tensorstore_reports_it(tmp_path, data_dir, monkeypatch):
  # TensorStore (orbax's array writer) reports ENOSPC as a ValueError with
  # RESOURCE_EXHAUSTED, not an OSError: the text above is what it raised on
  # a full tmpfs (see test_disk_full_on_a_real_full_file_system).
  from orbax.checkpoint._src.path import atomicity  # pylint: disable=g-import-not-at-top
  finalize = atomicity.AtomicRenameTemporaryPath.finalize

  async def full_at_step_4(self, *args, **kwargs):
    if os.path.basename(str(self.get_final())) == '4':
      raise ValueError(_TENSORSTORE_ENOSPC)
    return await finalize(self, *args, **kwargs)

  monkeypatch.setattr(atomicity.AtomicRenameTemporaryPath, 'finalize',
                      full_at_step_4)
  with pytest.raises(checkpoints.CheckpointWriteError) as e:
    train.train_and_evaluate(tiny_config(**RUN), str(tmp_path))
  assert e.value.errno == errno.ENOSPC
  assert str(e.value) == (
      f'cannot write checkpoint step 4 to {tmp_path}/checkpoints: the disk is '
      'full (No space left on device); the latest complete checkpoint, step '
      '2, is intact; free some disk space and run the same command again to '
      'resume')


def _mount_tmpfs(path, size):
  if os.geteuid() != 0:
    return False
  path.mkdir()
  return subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}',
                         'tmpfs', str(path)], capture_output=True,
                        check=False).returncode == 0


def test_disk_full_on_a_real_full_file_system(tmp_path):
  fs = tmp_path / 'small_fs'
  if not _mount_tmpfs(fs, '2M'):
    pytest.skip('cannot mount a small tmpfs here (needs root and '
                'CAP_SYS_ADMIN)')
  try:
    mgr = checkpoints.manager(str(fs / 'w'))
    rng = np.random.default_rng(0)
    state = {'step': np.int32(1), 'params': {
        'w': rng.random((1024, 1024), np.float32)}, 'opt_state': {},
             'rng': np.zeros(2, np.uint32)}
    with pytest.raises(checkpoints.CheckpointWriteError) as e:
      checkpoints.save(mgr, 1, state, {'step': 1})
      checkpoints.wait_until_finished(mgr)
    assert 'the disk is full (No space left on device); no complete ' \
        'checkpoint exists yet; free some disk space' in str(e.value)
    mgr.close()
  finally:
    subprocess.run(['umount', str(fs)], check=False)
