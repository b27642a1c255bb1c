"""The main job trains, checkpoints, evaluates and resumes for real."""

import json
import os
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest

from mixer import checkpoints
from mixer import data as input_pipeline
from mixer import loop
from mixer import train
from tests.conftest import REPO
from tests.conftest import tiny_config

NO_AUG = {'augment.crop': 'none', 'augment.flip': False}


def _params(workdir):
  return checkpoints.restore_params(str(workdir))


def _records(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


def _assert_trees_equal(a, b, atol=0.0):
  flat_a = jax.tree_util.tree_leaves_with_path(a)
  flat_b = jax.tree_util.tree_leaves_with_path(b)
  assert [p for p, _ in flat_a] == [p for p, _ in flat_b]
  for (path, x), (_, y) in zip(flat_a, flat_b):
    if atol:
      np.testing.assert_allclose(x, y, atol=atol, rtol=0, err_msg=str(path))
    else:
      np.testing.assert_array_equal(x, y, err_msg=str(path))


def test_cli_trains_checkpoints_evaluates_and_resumes(tmp_path, data_dir):
  workdir = tmp_path / 'run'
  flags = ['--config=configs/cifar10_baseline.py', f'--workdir={workdir}',
           '--config.model.hidden_dim=32', '--config.model.num_blocks=1',
           '--config.model.tokens_mlp_dim=16',
           '--config.model.channels_mlp_dim=64', '--config.batch_size=64',
           '--config.learning_rate=0.003', '--config.warmup_steps=2',
           '--config.log_every_steps=5', '--config.eval_every_steps=0',
           '--config.checkpoint_every_steps=10',
           '--config.eval_split=test[:1000]']
  env = dict(os.environ, MIXER_DATA_DIR=str(data_dir), MIXER_TENSORBOARD='1')
  run = lambda steps: subprocess.run(
      [sys.executable, 'train.py', *flags, f'--config.num_train_steps={steps}'],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  out = run(30)
  assert out.returncode == 0, out.stderr[-3000:]
  records = _records(workdir)
  assert [r['step'] for r in records] == [5, 10, 15, 20, 25, 30]
  assert records[-1]['train_loss'] < records[0]['train_loss']
  assert {'train_loss', 'train_accuracy', 'learning_rate'} <= set(records[0])
  assert 'eval_accuracy' in records[-1]
  results = json.loads((workdir / 'results.json').read_text())
  assert results['steps'] == 30 and results['eval_examples'] == 1000
  assert results['num_params'] > 0 and results['images_per_second'] > 0
  assert results['config']['model']['hidden_dim'] == 32
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['10', '20', '30']
  assert 'ETA' in out.stderr
  events = [n for n in os.listdir(workdir) if n.startswith('events.out.')]
  assert len(events) == 1 and (workdir / events[0]).stat().st_size > 0

  out = run(40)  # More steps: resumes from 30.
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'Resuming from step 30' in out.stderr
  results = json.loads((workdir / 'results.json').read_text())
  assert results['resumed_from_step'] == 30 and results['steps'] == 40
  assert [r['step'] for r in _records(workdir)] == [5, 10, 15, 20, 25, 30,
                                                    35, 40]


def test_resume_gives_the_same_params(tmp_path, data_dir):
  # Constant schedule, so a run that ends at N and is extended to 2N follows
  # the same trajectory as a 2N run; augmentation and dropout stay on so the
  # RNG must resume too.
  common = dict(lr_schedule='constant', warmup_steps=0,
                checkpoint_every_steps=3, **{'model.dropout_rate': 0.1})
  full = tiny_config(num_train_steps=6, **common)
  train.train_and_evaluate(full, str(tmp_path / 'full'))
  half = tiny_config(num_train_steps=3, **common)
  train.train_and_evaluate(half, str(tmp_path / 'resumed'))
  res = train.train_and_evaluate(full, str(tmp_path / 'resumed'))
  assert res['resumed_from_step'] == 3
  _assert_trees_equal(_params(tmp_path / 'full'), _params(tmp_path / 'resumed'))


def test_device_resident_input_equals_host_input(tmp_path, data_dir):
  # Same data order and the same on-device augmentation: identical params.
  host = tiny_config(num_train_steps=4, input_pipeline='host')
  device = tiny_config(num_train_steps=4, input_pipeline='device')
  train.train_and_evaluate(host, str(tmp_path / 'host'))
  train.train_and_evaluate(device, str(tmp_path / 'device'))
  _assert_trees_equal(_params(tmp_path / 'host'), _params(tmp_path / 'device'))


def test_fused_steps_and_grad_accumulation(tmp_path, data_dir):
  base = tiny_config(num_train_steps=4, **NO_AUG)
  train.train_and_evaluate(base, str(tmp_path / 'base'))
  fused = tiny_config(num_train_steps=4, steps_per_dispatch=4,
                      log_every_steps=4, **NO_AUG)
  train.train_and_evaluate(fused, str(tmp_path / 'fused'))
  accum = tiny_config(num_train_steps=4, grad_accum_steps=2, **NO_AUG)
  train.train_and_evaluate(accum, str(tmp_path / 'accum'))
  p = _params(tmp_path / 'base')
  _assert_trees_equal(p, _params(tmp_path / 'fused'), atol=1e-6)
  _assert_trees_equal(p, _params(tmp_path / 'accum'), atol=1e-5)


def test_two_devices_match_one_device(tmp_path, data_dir):
  script = textwrap.dedent(f"""
      import sys
      sys.path.insert(0, {str(REPO)!r})
      import jax
      from tests.conftest import tiny_config
      from mixer import train
      assert jax.local_device_count() == int(sys.argv[2])
      c = tiny_config(num_train_steps=4, **{{'augment.crop': 'none',
                                               'augment.flip': False}})
      train.train_and_evaluate(c, sys.argv[1])
  """)
  for n in (1, 2):
    env = dict(os.environ, MIXER_DATA_DIR=str(data_dir),
               XLA_FLAGS=f'--xla_force_host_platform_device_count={n}',
               JAX_PLATFORMS='cpu')
    out = subprocess.run([sys.executable, '-c', script,
                          str(tmp_path / f'd{n}'), str(n)],
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
  _assert_trees_equal(_params(tmp_path / 'd1'), _params(tmp_path / 'd2'),
                      atol=1e-5)
  r1 = json.loads((tmp_path / 'd1' / 'results.json').read_text())
  r2 = json.loads((tmp_path / 'd2' / 'results.json').read_text())
  assert r2['num_devices'] == 2 and r1['num_devices'] == 1
  assert r1['final_eval_accuracy'] == pytest.approx(
      r2['final_eval_accuracy'], abs=0.005)


def test_trains_without_tensorflow(tmp_path, data_dir):
  script = textwrap.dedent(f"""
      import sys
      sys.modules['tensorflow'] = None  # any import of it now fails
      sys.path.insert(0, {str(REPO)!r})
      from tests.conftest import tiny_config
      from mixer import train
      train.train_and_evaluate(tiny_config(num_train_steps=2, warmup_steps=0), sys.argv[1])
      assert 'tensorflow' not in sys.modules or sys.modules['tensorflow'] is None
  """)
  env = dict(os.environ, MIXER_DATA_DIR=str(data_dir))
  out = subprocess.run([sys.executable, '-c', script, str(tmp_path)],
                       env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert (tmp_path / 'results.json').exists()
  assert len(_records(tmp_path)) == 1


@pytest.mark.parametrize('overrides,match', [
    ({'batch_size': 30, 'grad_accum_steps': 4},
     r'batch_size 30 must be a positive multiple of .* grad_accum_steps'),
    ({'model.num_classes': 100}, r'model.num_classes is 100 but dataset'),
    ({'input_pipeline': 'disk'}, r"input_pipeline must be 'host' or 'device'"),
])
def test_bad_config_is_a_clear_error(tmp_path, data_dir, overrides, match):
  with pytest.raises(ValueError, match=match):
    train.train_and_evaluate(tiny_config(**overrides), str(tmp_path))


def test_resized_inception_crop_input_streams_through_tf_data(tmp_path,
                                                              data_dir):
  # CIFAR stored at 32x32, model at 48x48 with Inception crops (the paper's
  # fine-tuning input): the loop streams through tf.data and still evaluates
  # every example of the eval split.
  config = tiny_config(image_size=48, num_train_steps=2, warmup_steps=0,
                       shuffle_buffer=256, **{'augment.crop': 'inception',
                                              'augment.eval_crop': 'resize'})
  res = train.train_and_evaluate(config, str(tmp_path))
  assert res['eval_examples'] == 500 and res['steps'] == 2
  params = _params(tmp_path)
  # 48x48 with 4x4 patches: 144 tokens in the token-mixing MLP.
  assert params['MixerBlock_0']['token_mixing']['Dense_0']['kernel'].shape == (
      144, 16)
  with pytest.raises(ValueError, match="input_pipeline='device' needs"):
    train.train_and_evaluate(
        tiny_config(image_size=48, input_pipeline='device'), str(tmp_path / 'd'))


@pytest.mark.parametrize('fixed_size,eval_crop,streams', [
    (True, 'center', False), (False, 'resize', False), (False, 'center', True)])
def test_variable_size_in_memory_data_streams_a_center_eval_crop(
    monkeypatch, fixed_size, eval_crop, streams):
  # Pets/Flowers-like tfds data small enough for memory: load_split resizes
  # whole images, which is right for a 'resize' eval only.
  info = input_pipeline.DatasetInfo(
      name='pets', num_classes=10, num_train=1000, num_eval=100,
      image_shape=(32, 32, 3), class_names=tuple(map(str, range(10))),
      in_memory=True, fixed_size=fixed_size)
  monkeypatch.setattr(input_pipeline, 'dataset_info', lambda config: info)
  trainer = train.Trainer(tiny_config(**{'augment.eval_crop': eval_crop}))
  assert trainer.stream_eval == streams
  assert not trainer.stream_train


def test_feedback_within_seconds_and_honest_throughput(tmp_path, data_dir,
                                                       monkeypatch, caplog):
  # A progress line right after the first (compiled) step, then one per
  # PROGRESS_EVERY_SECONDS even between log steps (0 here: every dispatch);
  # the run's size and its projected time; and an images/s that leaves
  # evaluation out even when evaluation is slow.
  from mixer.evaluators import classification  # pylint: disable=g-import-not-at-top
  evaluate = classification.Evaluator.evaluate

  def slow_eval(self, params, stop=None):
    time.sleep(1.5)
    return evaluate(self, params, stop=stop)

  monkeypatch.setattr(classification.Evaluator, 'evaluate', slow_eval)
  monkeypatch.setattr(loop, 'PROGRESS_EVERY_SECONDS', 0.0)
  caplog.set_level('INFO')
  results = train.train_and_evaluate(
      tiny_config(num_train_steps=8, log_every_steps=100, eval_every_steps=4,
                  checkpoint_every_steps=0, checkpoint_every_minutes=0),
      str(tmp_path))
  lines = [r.getMessage() for r in caplog.records]
  run = [l for l in lines if l.startswith('Run: 8 steps')]
  assert run and '(256 images) at global batch 32' in run[0]
  first = [i for i, l in enumerate(lines) if
           l.startswith('step 1/8: the first step done in ')]
  assert first and 'compilation included' in lines[first[0]]
  progress = [l for l in lines if l.startswith('step ') and 'img/s, ETA' in l]
  # Steps 2..8 each get a line although log_every_steps is 100.
  assert [l.split()[1] for l in progress] == [f'{s}/8' for s in range(2, 9)]
  assert any(l.startswith('Projected wall time on this device') for l in
             lines)
  assert sum(1 for l in lines if 'eval loss' in l) == 2
  assert results['eval_seconds'] >= 3.0
  # Training seconds exclude both 1.5 s evaluations.
  assert results['train_seconds'] < results['wall_seconds'] - 3.0
  assert results['images_per_second'] == pytest.approx(
      7 * 32 / results['train_seconds'], rel=1e-6)


def test_shortened_run_says_what_its_evaluation_costs(data_dir):
  from mixer import trainer  # pylint: disable=g-import-not-at-top
  short = trainer.Trainer(tiny_config(num_train_steps=2, warmup_steps=1,
                                              eval_split='test'))
  line = short.evaluation_cost()
  assert line == ("Evaluation: 1 evaluation of 10,000 images at 32x32 cost "
                  "about 52x the training of this run (64 images); "
                  "--config.eval_split='test[:500]' evaluates 500 of them")
  assert line in short.describe()
  # The shipped CPU job trains far more images than it evaluates: no line.
  from configs import cifar10_cpu  # pylint: disable=g-import-not-at-top
  assert trainer.Trainer(cifar10_cpu.get_config()).evaluation_cost() == ''


def test_eval_batch_is_not_padded_beyond_a_small_split(data_dir):
  from mixer.evaluators import classification  # pylint: disable=g-import-not-at-top
  config = tiny_config(eval_split='test[:500]', eval_batch_size=1000)
  fitted = classification.fit_eval_batch(config, 500, 1)
  assert fitted.eval_batch_size == 500 and config.eval_batch_size == 1000
  batches = list(input_pipeline.eval_batches(fitted))
  assert len(batches) == 1 and batches[0]['mask'].tolist() == [1.0] * 500
  # Rounded up to a multiple of the devices; a larger split keeps its batch.
  assert classification.fit_eval_batch(config, 500, 3).eval_batch_size == 501
  assert classification.fit_eval_batch(config, 5000, 1) is config
  from mixer import trainer  # pylint: disable=g-import-not-at-top
  assert trainer.Trainer(config).evaluator.config.eval_batch_size == 500
