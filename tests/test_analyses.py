"""The analyses' tables and figures (mixer.analyses, the report's few-shot
columns) on synthetic sweep folders, and the sweep files behind them."""

import json
import os
import subprocess
import sys

import pytest

from configs.sweeps import data_scale
from configs.sweeps import permutation
from mixer import analyses
from mixer import models
from mixer import report
from mixer import sweeps
from mixer import train
from tests.conftest import REPO


def _run(root, name, fields, acc, fewshot5, evals=(), losses=()):
  """A finished run folder: results.json with few-shot, metrics.jsonl."""
  path = os.path.join(root, name)
  os.makedirs(path)
  with open(os.path.join(path, 'metrics.jsonl'), 'w') as f:
    for i, a in enumerate(evals):
      f.write(json.dumps({'step': 10 * (i + 1), 'epoch': 0.1 * (i + 1),
                          'eval_accuracy': a}) + '\n')
    for i, l in enumerate(losses):
      f.write(json.dumps({'step': 10 * (i + 1), 'epoch': 0.1 * (i + 1),
                          'train_loss': l}) + '\n')
  with open(os.path.join(path, 'results.json'), 'w') as f:
    json.dump({'status': 'done', 'final_eval_accuracy': acc,
               'best_eval_accuracy': acc, 'final_eval_loss': 1.0,
               'steps': 390, 'epochs': 1.0, 'wall_seconds': 200.0,
               'num_params': 569_994,
               'fewshot': {'fewshot/cifar10_1shot': fewshot5 / 2,
                           'fewshot/cifar10_5shot': fewshot5}}, f)
  return name, fields


def _sweep_json(root, runs):
  with open(os.path.join(root, 'sweep.json'), 'w') as f:
    json.dump({'sweep': 'configs/sweeps/x.py',
               'runs': [{'name': n, 'fields': fl} for n, fl in runs]}, f)


def test_permutation_table_drops_and_coincidence(tmp_path):
  root = str(tmp_path)
  kind = lambda k: {'input_permutation.kind': k}
  _sweep_json(root, [
      _run(root, 'Mixer_none', kind('none'), 0.40, 0.30, (0.2, 0.4),
           (2.0, 1.5)),
      _run(root, 'Mixer_patch_pixel', kind('patch_pixel'), 0.40, 0.30,
           (0.2, 0.4), (2.0, 1.5004)),
      _run(root, 'Mixer_global', kind('global'), 0.30, 0.15),
      _run(root, 'ResNet_none', kind('none'), 0.50, 0.40),
      _run(root, 'ResNet_patch_pixel', kind('patch_pixel'), 0.25, 0.20),
      _run(root, 'ResNet_global', kind('global'), 0.20, 0.10)])
  md, png = analyses.write('permutation', root)
  text = open(md).read()
  rows = {l.split(' | ')[0][2:] + '_' + l.split(' | ')[1]: l
          for l in text.splitlines() if l.startswith('| Mixer') or
          l.startswith('| ResNet')}
  assert '| 30.00 | 10.00 pp (25%) | 15.00 | 15.00 pp (50%) | ~45% |' in rows[
      'Mixer_global']
  assert '| 20.00 | 30.00 pp (60%) | 10.00 | 30.00 pp (75%) | ~75% |' in rows[
      'ResNet_global']
  assert '| 0.00 pp (0%) |' in rows['Mixer_patch_pixel']
  assert ('test accuracy 0 pp, train loss 0.0004' in text)
  assert '| drop | 5-shot cifar10 % | drop |' in text
  assert os.path.getsize(png) > 10_000
  # The sweep's own summary shows the final few-shot accuracies.
  summary = open(report.write_report(root)['markdown']).read()
  assert '| 1-shot cifar10 % | 5-shot cifar10 % |' in summary
  assert '| 15.00 | 30.00 |' in summary


def test_data_scale_table_and_gains(tmp_path):
  root = str(tmp_path)
  split = lambda s: {'train_split': s}
  _sweep_json(root, [
      _run(root, 'Mixer_10pct', split('train[:10%]'), 0.30, 0.20),
      _run(root, 'Mixer_100pct', split('train'), 0.45, 0.35),
      _run(root, 'ResNet_10pct', split('train[:10%]'), 0.35, 0.25),
      _run(root, 'ResNet_100pct', split('train'), 0.42, 0.30)])
  md, png = analyses.write('data_scale', root)
  text = open(md).read()
  assert ('Mixer: train[:10%] -> train: test accuracy +15.00 pp, 5-shot '
          'cifar10 +15.00 pp.') in text
  assert ('ResNet: train[:10%] -> train: test accuracy +7.00 pp, 5-shot '
          'cifar10 +5.00 pp.') in text
  assert os.path.getsize(png) > 10_000
  assert analyses.subset_percent('train[:30%]') == 30.0
  assert analyses.subset_percent('train[10%:40%]') == 30.0
  assert analyses.subset_percent('train') == 100.0
  assert analyses.subset_percent('train[:500]') is None


def test_cli_errors_are_one_line(tmp_path):
  for args, message in ((['nope', str(tmp_path)], 'unknown analysis'),
                        (['permutation', str(tmp_path / 'x')],
                         'does not exist'),
                        (['data_scale', str(tmp_path)], 'holds no runs')):
    out = subprocess.run([sys.executable, '-m', 'mixer.analyses'] + args,
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert out.stderr.strip().startswith('error:') and message in out.stderr
    assert 'Traceback' not in out.stderr


def test_cpu_sweeps_compare_like_with_like():
  perm = sweeps.load_sweep(str(REPO / 'configs/sweeps/permutation.py'))
  assert [r.name for r in perm] == [f'{m}_{k}' for m in ('Mixer', 'ResNet')
                                    for k in permutation.KINDS]
  for r in perm:
    p = r.config.input_permutation
    assert (p.seed, tuple(p.patch_size)) == (0, (4, 4))
    assert p.align_init == (r.name == 'Mixer_patch_pixel')
    assert r.config.num_train_steps == 390 and r.config.batch_size == 128
  scale = sweeps.load_sweep(str(REPO / 'configs/sweeps/data_scale.py'))
  assert {r.config.train_split for r in scale} == {
      'train[:10%]', 'train[:30%]', 'train'}
  assert {r.config.num_train_steps for r in scale} == {390}
  for runs in (perm, scale):  # Mixer and ResNet differ only in the model.
    mixer, resnet = runs[0].config.to_dict(), runs[len(runs) // 2].config
    resnet = resnet.to_dict()
    assert resnet.pop('model') != mixer.pop('model')
    assert resnet == mixer


def test_paper_size_sweeps():
  perm = sweeps.load_sweep(str(REPO / 'configs/sweeps/permutation.py:paper'))
  assert {r.config.model.model_name for r in perm} == {'Mixer-B/16',
                                                       'BiT-R50x1'}
  scale = sweeps.load_sweep(str(REPO / 'configs/sweeps/data_scale.py:paper'))
  assert {r.config.model.model_name for r in scale} == {'Mixer-L/16',
                                                        'BiT-R152x2'}
  assert len({r.config.num_train_steps for r in scale}) == 1
  for r in perm + scale:
    c = r.config
    assert (c.dataset, c.image_size) == ('imagenet2012', 224)
    models.build_model(c.model).check(models.input_shape(c))
  assert {tuple(r.config.input_permutation.patch_size) for r in perm} == {
      (16, 16)}
  with pytest.raises(sweeps.SweepError, match="must be 'paper' or 'cpu'"):
    sweeps.load_sweep(str(REPO / 'configs/sweeps/permutation.py:big'))


def test_paper_size_resnet_takes_a_short_run(tmp_path, imagenet_standin):
  """The paper sweeps' BiT-R50x1 with a global permutation on the 16x16
  grid, shrunk (one unit per stage, width 8) for 3 steps on the stand-in
  ImageNet: the streamed input pipeline at 224 with the permutation."""
  r = sweeps.load_sweep(
      str(REPO / 'configs/sweeps/permutation.py:paper'))[-1]
  config = r.config.copy_and_resolve_references()
  assert config.input_permutation.kind == 'global'
  config.model.depth, config.model.width = (1, 1, 1, 1), 8
  config.model.num_groups = 8
  config.num_train_steps, config.batch_size = 3, 8
  config.eval_batch_size, config.eval_split = 8, 'validation[:8]'
  config.data_dir = imagenet_standin
  config.fewshot.every_steps = 0  # big_vision's datasets need downloads.
  results = train.train_and_evaluate(config, str(tmp_path))
  assert results['steps'] == 3 and results['usable']
