"""Hardening guarantees of the training loop (docs/guarantees.md).

* A run killed with SIGKILL at random steps (also during an asynchronous
  checkpoint write) and restarted ends with the same params, bit for bit on
  CPU, and the same metrics.jsonl (except wall-clock fields) as an
  uninterrupted run; unfinished and incomplete checkpoints are ignored.
* Same config and seed: identical metrics.jsonl and params.
* A non-finite loss stops the run naming the step, before anything of it is
  saved; `skip_nonfinite_steps` drops such updates and counts them.
* Bad input: one clear line (and, through train.py, exit status 1 without a
  traceback), nothing already written lost.
"""

import asyncio
import errno
import json
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mixer import checkpoints
from mixer import data as input_pipeline
from mixer import metrics
from mixer import models
from mixer import optim
from mixer import step as step_lib
from mixer import train
from mixer import workdir as workdir_lib
from tests.conftest import REPO
from tests.conftest import shared_data_dir
from tests.conftest import tiny_config

# Warmup then cosine decay over 12 steps; a checkpoint every step, so kills
# land in (or between) asynchronous writes; logs every 2 steps, so a resume
# between two logs must carry the unlogged per-step metrics.
KILL_RUN = {'num_train_steps': 12, 'warmup_steps': 3,
            'checkpoint_every_steps': 1, 'log_every_steps': 2,
            'eval_every_steps': 4}


def _env(data_dir):
  return dict(os.environ, MIXER_DATA_DIR=str(data_dir), JAX_PLATFORMS='cpu')


def _assert_same_params(a, b):
  flat_a = jax.tree_util.tree_leaves_with_path(a)
  flat_b = jax.tree_util.tree_leaves_with_path(b)
  assert [p for p, _ in flat_a] == [p for p, _ in flat_b]
  for (path, x), (_, y) in zip(flat_a, flat_b):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y),
                                  err_msg=str(path))


def _one_line(e):
  text = str(e.value if hasattr(e, 'value') else e)
  assert '\n' not in text, text
  return text


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  """An uninterrupted run of KILL_RUN (in this process)."""
  if not (shared_data_dir() / 'cifar10' / 'test.npz').exists():
    pytest.skip('real data not found')
  workdir = tmp_path_factory.mktemp('reference')
  train.train_and_evaluate(tiny_config(**KILL_RUN), str(workdir))
  return workdir


# -- kill and resume -----------------------------------------------------------

_KILLABLE = textwrap.dedent("""
    import asyncio, json, sys
    sys.path.insert(0, sys.argv[3])
    # Faster start (metrics.jsonl does not depend on TensorBoard).
    sys.modules['tensorflow'] = None
    try:  # Slower commits: more kills land inside an asynchronous write.
      from orbax.checkpoint._src.path import atomicity
      _finalize = atomicity.AtomicRenameTemporaryPath.finalize
      async def finalize(self, *args, **kwargs):
        await asyncio.sleep(0.05)
        return await _finalize(self, *args, **kwargs)
      atomicity.AtomicRenameTemporaryPath.finalize = finalize
    except (ImportError, AttributeError):
      pass
    from tests.conftest import tiny_config
    from mixer import train
    train.train_and_evaluate(tiny_config(**json.loads(sys.argv[2])),
                             sys.argv[1])
""")


def _tmp_dirs(ckpt_dir):
  return [n for n in os.listdir(ckpt_dir) if 'orbax-checkpoint-tmp' in n]


def test_sigkill_at_random_steps_resumes_bit_for_bit(tmp_path, data_dir,
                                                      reference):
  seed = int(os.environ.get('MIXER_KILL_SEED', time.time_ns() % 10_000))
  rng = random.Random(seed)
  workdir = tmp_path / 'killed'
  ckpt_dir = checkpoints.checkpoint_dir(str(workdir))
  cmd = [sys.executable, '-c', _KILLABLE, str(workdir), json.dumps(KILL_RUN),
         str(REPO)]
  kills, in_write = 0, 0
  log = tmp_path / 'stderr.txt'
  for n, target in enumerate(sorted(rng.sample(range(1, 11), 3))):
    with open(log, 'w') as f:
      proc = subprocess.Popen(cmd, env=_env(data_dir),
                              stdout=subprocess.DEVNULL, stderr=f)
    deadline = time.time() + 240
    while proc.poll() is None and time.time() < deadline:
      done = checkpoints.complete_steps(ckpt_dir)
      # The first kill waits for a write in progress; the others land at a
      # random moment after the target step.
      if done and done[-1] >= target and (n or _tmp_dirs(ckpt_dir)):
        break
      time.sleep(0.002)
    time.sleep(rng.uniform(0.0, 0.1) if n else 0.0)
    if proc.poll() is None:
      proc.send_signal(signal.SIGKILL)
      kills += 1
    proc.wait(timeout=60)
    assert proc.returncode in (0, -signal.SIGKILL), log.read_text()[-3000:]
    in_write += bool(_tmp_dirs(ckpt_dir))
  assert kills >= 2 and in_write >= 1, (
      f'seed {seed}: {kills} kills, {in_write} during a checkpoint write')

  # Damage a killed run could not produce on a local disk, but a copy or a
  # file system without atomic renames could: a newer step folder without
  # its commit metadata, and a stale temporary folder.
  latest = checkpoints.complete_steps(ckpt_dir)[-1]
  fake = None
  if latest < KILL_RUN['num_train_steps']:
    fake = os.path.join(ckpt_dir, str(latest + 1))
    shutil.copytree(os.path.join(ckpt_dir, str(latest)), fake)
    os.remove(os.path.join(fake, '_CHECKPOINT_METADATA'))
  os.makedirs(os.path.join(ckpt_dir, '99.orbax-checkpoint-tmp-1'))

  out = subprocess.run(cmd, env=_env(data_dir), capture_output=True, text=True,
                       timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  if fake:
    assert 'Ignoring checkpoint' in out.stderr
    assert os.listdir(workdir / checkpoints.INCOMPLETE_SUBDIR) == [
        str(latest + 1)]
  assert not _tmp_dirs(ckpt_dir)
  results = json.loads((workdir / 'results.json').read_text())
  assert results['steps'] == 12 and results['resumed_from_step'] > 0

  context = f'kill seed {seed}, {kills} kills, {in_write} during a write'
  print(context)  # Shown with -s; the seed reproduces the kill steps.
  _assert_same_params(checkpoints.restore_params(str(reference)),
                      checkpoints.restore_params(str(workdir)))
  assert (metrics.read_records(str(workdir), drop_timing=True) ==
          metrics.read_records(str(reference), drop_timing=True)), context
  assert [r['step'] for r in metrics.read_records(str(workdir))] == [
      2, 4, 6, 8, 10, 12]


def test_same_config_and_seed_give_identical_metrics(tmp_path, data_dir,
                                                     reference):
  train.train_and_evaluate(tiny_config(**KILL_RUN), str(tmp_path))
  again = metrics.read_records(str(tmp_path))
  assert again[-1]['step'] == 12 and 'eval_accuracy' in again[-1]
  assert metrics.read_records(str(tmp_path), drop_timing=True) == \
      metrics.read_records(str(reference), drop_timing=True)
  assert all('images_per_sec' in r for r in again)
  _assert_same_params(checkpoints.restore_params(str(reference)),
                      checkpoints.restore_params(str(tmp_path)))


def test_incomplete_step_folder_is_set_aside(tmp_path, reference):
  workdir = tmp_path / 'w'
  shutil.copytree(reference, workdir)
  ckpt_dir = checkpoints.checkpoint_dir(str(workdir))
  steps = checkpoints.complete_steps(ckpt_dir)
  assert steps == [10, 11, 12]  # keep_checkpoints=3
  bad = os.path.join(ckpt_dir, '13')
  shutil.copytree(os.path.join(ckpt_dir, '12'), bad)
  shutil.rmtree(os.path.join(bad, 'state'))
  mgr = checkpoints.manager(str(workdir))
  config = tiny_config(**KILL_RUN)
  target = step_lib.state_dict(step_lib.create_train_state(  # pylint: disable=protected-access
      config, models.build_model(config.model),
      optim.make_optimizer(config, 12), jax.random.PRNGKey(0)))
  step, _, meta = checkpoints.restore(mgr, target)
  mgr.close()
  assert step == 12 and meta['step'] == 12
  assert not os.path.exists(bad)
  assert os.listdir(workdir / checkpoints.INCOMPLETE_SUBDIR) == ['13']


# -- non-finite steps ------------------------------------------------------------

POISONED_STEP = 5  # 1-based, as metrics.jsonl counts steps.


@pytest.fixture
def poison(monkeypatch):
  """Makes the loss (hence the gradients) of step POISONED_STEP NaN: its
  labels become -1 (one-hot all zeros), which the patched loss turns into
  NaN. Only the test changes; the loop is the real one."""
  cross_entropy = step_lib.cross_entropy

  def poisoned_cross_entropy(logits, soft_labels, label_smoothing=0.0):
    loss = cross_entropy(logits, soft_labels, label_smoothing)
    bad = jnp.any(jnp.sum(soft_labels, axis=-1) == 0)
    return loss * jnp.where(bad, jnp.nan, 1.0)

  train_batches = input_pipeline.train_batches

  def poisoned_batches(config, *, start_step=0, **kwargs):
    for step, batch in enumerate(train_batches(config, start_step=start_step,
                                               **kwargs), start_step + 1):
      if step == POISONED_STEP:
        batch = dict(batch, label=np.full_like(batch['label'], -1))
      yield batch

  monkeypatch.setattr(step_lib, 'cross_entropy', poisoned_cross_entropy)
  monkeypatch.setattr(input_pipeline, 'train_batches', poisoned_batches)


NAN_RUN = {'num_train_steps': 8, 'warmup_steps': 2, 'log_every_steps': 100,
           'checkpoint_every_steps': 2, 'eval_every_steps': 0}


def test_nonfinite_loss_stops_before_saving(tmp_path, data_dir, poison):
  # No log step before the end: the check before each save catches it.
  with pytest.raises(train.NonFiniteError) as e:
    train.train_and_evaluate(tiny_config(**NAN_RUN), str(tmp_path))
  text = _one_line(e)
  assert f'at step {POISONED_STEP} ' in text
  assert 'the last checkpoint, step 4,' in text
  assert 'skip_nonfinite_steps' in text
  assert checkpoints.complete_steps(
      checkpoints.checkpoint_dir(str(tmp_path))) == [2, 4]
  params = checkpoints.restore_params(str(tmp_path))
  assert all(np.all(np.isfinite(p)) for p in jax.tree_util.tree_leaves(params))
  assert not (tmp_path / 'results.json').exists()


def test_skip_nonfinite_steps(tmp_path, data_dir, poison):
  config = tiny_config(skip_nonfinite_steps=True,
                       **dict(NAN_RUN, log_every_steps=2))
  results = train.train_and_evaluate(config, str(tmp_path))
  assert results['steps'] == 8 and results['skipped_steps'] == 1
  records = metrics.read_records(str(tmp_path))
  assert [r['skipped_steps'] for r in records] == [0, 0, 1, 0]
  assert all(np.isfinite(r['train_loss']) for r in records)
  params = checkpoints.restore_params(str(tmp_path))
  assert all(np.all(np.isfinite(p)) for p in jax.tree_util.tree_leaves(params))


# -- bad input -------------------------------------------------------------------


def test_patch_size_not_dividing_the_image(tmp_path, data_dir):
  with pytest.raises(ValueError) as e:
    train.train_and_evaluate(tiny_config(**{'model.patches.size': (5, 5)}),
                             str(tmp_path / 'w'))
  assert 'model.patches.size (5, 5) does not divide the image size (32, 32)' \
      in _one_line(e)
  assert not (tmp_path / 'w').exists()


def test_batch_size_not_divisible_by_devices(tmp_path, data_dir, monkeypatch):
  monkeypatch.setattr(jax, 'local_device_count', lambda: 3)
  with pytest.raises(ValueError) as e:
    train.train_and_evaluate(tiny_config(), str(tmp_path))
  assert ('batch_size 32 must be a positive multiple of devices x processes x '
          'grad_accum_steps = 3 x 1 x 1 = 3') in _one_line(e)


def _write_npz(path, images, labels):
  np.savez(path, images=images, labels=labels)


@pytest.mark.parametrize('damage,match', [
    ('missing', r'no dataset found'),
    ('corrupt', r'test.npz: cannot read the .npz archive'),
    ('shape', r'train.npz: 20 images but 19 labels'),
])
def test_missing_or_corrupt_data(tmp_path, damage, match):
  folder = tmp_path / 'toy'
  folder.mkdir()
  images = np.zeros((20, 32, 32, 3), np.uint8)
  labels = np.arange(20) % 10
  if damage != 'missing':
    _write_npz(folder / 'train.npz', images,
               labels[:19] if damage == 'shape' else labels)
    if damage == 'corrupt':
      (folder / 'test.npz').write_bytes(b'PK\x03\x04 truncated')
    else:
      _write_npz(folder / 'test.npz', images, labels)
  with pytest.raises(input_pipeline.DataError, match=match) as e:
    train.train_and_evaluate(tiny_config(data_dir=str(folder)),
                             str(tmp_path / 'w'))
  _one_line(e)


def test_checkpoint_of_another_model_or_class_count(tmp_path, data_dir,
                                                    reference):
  # Fine-tuning from a checkpoint whose body does not fit: one line.
  config = tiny_config(init_checkpoint=str(reference),
                       **{'model.hidden_dim': 48})
  with pytest.raises(ValueError) as e:
    train.train_and_evaluate(config, str(tmp_path / 'ft'))
  assert 'stem/kernel has shape (4, 4, 3, 32) but the model expects ' \
      '(4, 4, 3, 48) (and ' in _one_line(e)
  # A dataset with 5 classes: the 10-class head is re-initialised (zeros, as
  # the paper fine-tunes), the rest comes from the checkpoint.
  folder = tmp_path / 'toy5'
  folder.mkdir()
  rs = np.random.RandomState(0)
  for split in ('train', 'test'):
    _write_npz(folder / f'{split}.npz',
               rs.randint(0, 256, (64, 32, 32, 3)).astype(np.uint8),
               np.arange(64) % 5)
  config = tiny_config(dataset='toy5', data_dir=str(folder), eval_split='test',
                       init_checkpoint=str(reference),
                       **{'model.num_classes': 5})
  trainer = train.Trainer(config)
  state = step_lib.create_train_state(config, trainer.model, trainer.tx,
                                   jax.random.PRNGKey(0))
  assert state.params['head']['kernel'].shape == (32, 5)
  assert not np.any(state.params['head']['kernel'])
  _assert_same_params(state.params['stem'],
                      checkpoints.restore_params(str(reference))['stem'])
  # Resuming the 10-class run's workdir with it: refused, fields listed.
  workdir = tmp_path / 'copy'
  shutil.copytree(reference, workdir)
  with pytest.raises(workdir_lib.WorkdirError) as e:
    train.train_and_evaluate(config, str(workdir))
  text = _one_line(e)
  assert 'dataset ("cifar10" -> "toy5")' in text
  assert 'model.num_classes (10 -> 5)' in text
  # Restoring a checkpoint into a model it does not fit: one line.
  mgr = checkpoints.manager(str(workdir), read_only=True)
  with pytest.raises(ValueError) as e:
    checkpoints.restore(mgr, step_lib.state_dict(state))
  mgr.close()
  assert 'head/kernel has shape (32, 10) but the model expects (32, 5)' in \
      _one_line(e)


def test_workdir_not_writable(tmp_path, data_dir):
  locked = tmp_path / 'locked'
  locked.mkdir()
  locked.chmod(0o500)
  candidates = [locked / 'run']
  if os.access(locked, os.W_OK):  # root ignores permissions
    candidates = [pathlib.Path('/sys/mixer-test-run'),
                  pathlib.Path('/proc/mixer-test-run')]
  for workdir in candidates:
    try:
      os.makedirs(workdir)
    except OSError:
      break
    shutil.rmtree(workdir)
  else:
    pytest.skip('no unwritable folder available')
  try:
    with pytest.raises(workdir_lib.WorkdirError) as e:
      train.train_and_evaluate(tiny_config(), str(workdir))
  finally:
    locked.chmod(0o700)
  assert f'cannot create workdir {workdir}: ' in _one_line(e)
  if not os.access(locked, os.W_OK):  # An existing workdir, not writable.
    locked.chmod(0o500)
    try:
      with pytest.raises(workdir_lib.WorkdirError) as e:
        train.train_and_evaluate(tiny_config(), str(locked))
    finally:
      locked.chmod(0o700)
    assert f'workdir {locked} is not writable: ' in _one_line(e)
  # A file where the workdir should be.
  (tmp_path / 'file').write_text('x')
  with pytest.raises(workdir_lib.WorkdirError, match='cannot create workdir'):
    train.train_and_evaluate(tiny_config(), str(tmp_path / 'file'))
  assert (tmp_path / 'file').read_text() == 'x'


def test_disk_full_while_checkpointing(tmp_path, data_dir, monkeypatch):
  from orbax.checkpoint._src.path import atomicity  # pylint: disable=g-import-not-at-top
  finalize = atomicity.AtomicRenameTemporaryPath.finalize

  async def disk_full_at_step_4(self, *args, **kwargs):
    if os.path.basename(str(self.get_final())) == '4':
      await asyncio.sleep(0)
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return await finalize(self, *args, **kwargs)

  monkeypatch.setattr(atomicity.AtomicRenameTemporaryPath, 'finalize',
                      disk_full_at_step_4)
  config = tiny_config(num_train_steps=6, checkpoint_every_steps=2)
  with pytest.raises(checkpoints.CheckpointWriteError) as e:
    train.train_and_evaluate(config, str(tmp_path))
  text = _one_line(e)
  assert 'cannot write checkpoint step 4 to ' in text
  assert 'No space left on device' in text
  assert 'the latest complete checkpoint, step 2, is intact' in text
  ckpt_dir = checkpoints.checkpoint_dir(str(tmp_path))
  assert checkpoints.complete_steps(ckpt_dir) == [2]
  before = checkpoints.restore_params(str(tmp_path))
  # Space again: the same command resumes from step 2.
  monkeypatch.setattr(atomicity.AtomicRenameTemporaryPath, 'finalize',
                      finalize)
  results = train.train_and_evaluate(config, str(tmp_path))
  assert results['resumed_from_step'] == 2 and results['steps'] == 6
  assert checkpoints.complete_steps(ckpt_dir) == [2, 4, 6]
  assert jax.tree_util.tree_structure(before) == jax.tree_util.tree_structure(
      checkpoints.restore_params(str(tmp_path)))


def test_workdir_of_another_run_is_refused_unless_overwrite(tmp_path,
                                                            data_dir):
  base = {'num_train_steps': 2, 'warmup_steps': 0, 'checkpoint_every_steps': 2}
  train.train_and_evaluate(tiny_config(**base), str(tmp_path))
  before = {p: (tmp_path / p).read_bytes()
            for p in ('metrics.jsonl', 'config.json', 'results.json')}
  other = tiny_config(seed=1, learning_rate=0.01, **base)
  with pytest.raises(workdir_lib.WorkdirError) as e:
    train.train_and_evaluate(other, str(tmp_path))
  text = _one_line(e)
  assert 'holds a run with another config (checkpoint step 2): ' in text
  assert 'learning_rate (0.001 -> 0.01); seed (0 -> 1)' in text
  assert '--overwrite' in text
  assert {p: (tmp_path / p).read_bytes() for p in before} == before
  # Fields a resume may change are not differences.
  assert workdir_lib.config_differences(
      json.loads(before['config.json']),
      workdir_lib.config_json(tiny_config(num_train_steps=4, warmup_steps=0,
                                     log_every_steps=1,
                                     data_dir='/elsewhere'))) == []
  results = train.train_and_evaluate(other, str(tmp_path), overwrite=True)
  assert results['resumed_from_step'] == 0
  assert json.loads((tmp_path / 'config.json').read_text())['seed'] == 1


# -- train.py: one line on stderr, exit status 1 --------------------------------


def _cli(args, data_dir, **kwargs):
  return subprocess.run([sys.executable, 'train.py', *args], cwd=REPO,
                        env=dict(_env(data_dir), **kwargs),
                        capture_output=True, text=True, timeout=300)


def _error_lines(stderr):
  return [l for l in stderr.splitlines() if l.startswith('error: ')]


def test_cli_unknown_config_field(tmp_path):
  base = ['--config=configs/cifar10_baseline.py', f'--workdir={tmp_path}']
  out = _cli(base + ['--config.model.hiden_dim=3'], tmp_path)
  assert out.returncode == 1 and 'Traceback' not in out.stderr
  assert _error_lines(out.stderr) == [
      "error: unknown config field 'model.hiden_dim' in "
      "--config.model.hiden_dim=3; did you mean 'hidden_dim'?"]
  out = _cli(base + ['--config.foo=1'], tmp_path)
  assert _error_lines(out.stderr) == [
      "error: unknown config field 'foo' in --config.foo=1"]
  out = _cli(base + ['--config.batch_size=abc'], tmp_path)
  assert out.returncode == 1 and len(_error_lines(out.stderr)) == 1
  assert 'Traceback' not in out.stderr
  out = _cli(base + ['--config.foo=1', '--debug'], tmp_path)
  assert out.returncode != 0 and 'Traceback' in out.stderr
  assert os.listdir(tmp_path) == []


def test_cli_reports_run_errors_in_one_line(tmp_path, data_dir):
  train.train_and_evaluate(
      tiny_config(num_train_steps=2, warmup_steps=0), str(tmp_path))
  before = sorted(p.name for p in tmp_path.rglob('*'))
  flags = ['--config=configs/cifar10_baseline.py', f'--workdir={tmp_path}',
           '--config.model.hidden_dim=32', '--config.model.num_blocks=1',
           '--config.model.tokens_mlp_dim=16',
           '--config.model.channels_mlp_dim=64', '--config.batch_size=64',
           '--config.num_train_steps=2', '--config.warmup_steps=0']
  out = _cli(flags, data_dir)
  assert out.returncode == 1, out.stderr[-3000:]
  assert 'Traceback' not in out.stderr
  lines = _error_lines(out.stderr)
  assert len(lines) == 1 and 'holds a run with another config' in lines[0]
  assert 'batch_size (32 -> 64)' in lines[0]
  assert sorted(p.name for p in tmp_path.rglob('*')) == before


def test_mostly_skipped_steps_stop_the_run(tmp_path, data_dir, monkeypatch):
  # Every step from 3 on is non-finite: with skip_nonfinite_steps the run
  # must not end "done" with 9 of 12 updates skipped.
  train_batches = input_pipeline.train_batches
  cross_entropy = step_lib.cross_entropy

  def poisoned_cross_entropy(logits, soft_labels, label_smoothing=0.0):
    loss = cross_entropy(logits, soft_labels, label_smoothing)
    bad = jnp.any(jnp.sum(soft_labels, axis=-1) == 0)
    return loss * jnp.where(bad, jnp.nan, 1.0)

  def from_step_3(config, *, start_step=0, **kwargs):
    for step, batch in enumerate(train_batches(config, start_step=start_step,
                                               **kwargs), start_step + 1):
      if step >= 3:
        batch = dict(batch, label=np.full_like(batch['label'], -1))
      yield batch

  monkeypatch.setattr(step_lib, 'cross_entropy', poisoned_cross_entropy)
  monkeypatch.setattr(input_pipeline, 'train_batches', from_step_3)
  config = tiny_config(skip_nonfinite_steps=True, num_train_steps=40,
                       log_every_steps=4, checkpoint_every_steps=2)
  with pytest.raises(train.NonFiniteError) as e:
    train.train_and_evaluate(config, str(tmp_path))
  text = _one_line(e)
  # Judged once 10 steps are in the window (checked at every collection,
  # here each checkpoint, every 2 steps): steps 3 to 10 were skipped.
  assert text.startswith('8 of the last 10 steps (up to step 10) were '
                         'non-finite and skipped, more than '
                         'config.skip_nonfinite_limit=0.5 of them')
  assert 'the last checkpoint, step 8, is intact' in text
  assert 'the run is diverging' in text and 'lower the learning rate' in text
  assert not (tmp_path / 'results.json').exists()


def test_results_and_metrics_are_strict_json(tmp_path, data_dir, monkeypatch):
  # A NaN eval loss (a model whose weights are fine but whose eval is not)
  # must still give files any JSON reader loads: null plus a note.
  from mixer.evaluators import classification  # pylint: disable=g-import-not-at-top
  evaluate = classification.Evaluator.evaluate

  def nan_loss(self, params, stop=None):
    return dict(evaluate(self, params, stop=stop), eval_loss=float('nan'))

  monkeypatch.setattr(classification.Evaluator, 'evaluate', nan_loss)
  results = train.train_and_evaluate(
      tiny_config(num_train_steps=2, warmup_steps=1, log_every_steps=1),
      str(tmp_path))
  assert results['usable'] is False

  def refuse(constant):
    raise AssertionError(f'non-strict JSON constant {constant}')

  saved = json.loads((tmp_path / 'results.json').read_text(),
                     parse_constant=refuse)
  assert saved['final_eval_loss'] is None and saved['usable'] is False
  assert saved['nonfinite'] == ['final_eval_loss']
  last = [json.loads(line, parse_constant=refuse) for line in
          (tmp_path / 'metrics.jsonl').read_text().splitlines()][-1]
  assert last['eval_loss'] is None and last['nonfinite'] == ['eval_loss']
  assert metrics.dumps({'a': float('inf'), 'b': [1.0, float('nan')]}) == (
      '{"a": null, "b": [1.0, null], "nonfinite": ["a", "b[1]"]}')


def test_nonfinite_first_step_after_a_resume_blames_the_checkpoint(
    tmp_path, data_dir):
  # A checkpoint holding NaN params with matching digests (written by an
  # older version that saved a diverged state): it verifies, and the first
  # step after resuming from it is non-finite. The error must point at the
  # checkpoint, not advise a lower learning rate.
  config = tiny_config(num_train_steps=4, checkpoint_every_steps=2,
                       log_every_steps=2)
  train.train_and_evaluate(config, str(tmp_path))
  mgr = checkpoints.manager(str(tmp_path))
  target = step_lib.state_dict(step_lib.create_train_state(
      config, models.build_model(config.model),
      optim.make_optimizer(config, 4), jax.random.PRNGKey(0)))
  _, state, meta = checkpoints.restore(mgr, target, step=2)
  state = jax.tree_util.tree_map(np.asarray, state)
  state['params']['head']['bias'] = np.full_like(
      state['params']['head']['bias'], np.nan)
  shutil.rmtree(tmp_path / 'checkpoints')
  mgr.close()
  mgr = checkpoints.manager(str(tmp_path))
  checkpoints.save(mgr, 2, state, meta)
  checkpoints.wait_until_finished(mgr)
  mgr.close()
  with pytest.raises(train.NonFiniteError) as e:
    train.train_and_evaluate(config, str(tmp_path))
  text = _one_line(e)
  assert 'at step 3, the first step after resuming from checkpoint 2' in text
  assert 'that checkpoint may be damaged' in text
  assert 'lower the learning rate' not in text


def test_data_stored_at_another_size_is_said(data_dir):
  # Fashion-MNIST is stored at 28x28; a 32x32 config resizes it on the host,
  # which the run's first lines say.
  config = tiny_config('fashion_mnist_seed002', image_size=32,
                       **{'model.patches.size': (4, 4)})
  trainer = train.Trainer(config)
  assert trainer.resized and trainer.stream_train
  assert ('fashion_mnist images are stored at 28x28 but the model takes '
          '32x32: they are resized on the host (tf.data) for training and '
          'evaluation') in trainer.describe()
