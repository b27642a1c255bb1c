r"""The paper's analyses as tables and figures, from their sweep folders.

    python -m mixer.analyses permutation workdirs/permutation
    python -m mixer.analyses data_scale workdirs/data_scale

reads a folder written by `sweep.py --sweep=configs/sweeps/permutation.py`
(or `data_scale.py`), through `mixer.report.collect`, and writes into it

* `permutation.md` / `permutation.png` (paper §3.4, Fig. 4): one row per
  (model, input pipeline) with the final test accuracy, the 5-shot linear
  accuracy and their drops from the same model's `none` run (absolute and
  relative), the paper's drops beside them; how far the `Mixer_none` and
  `Mixer_patch_pixel` runs are apart (their curves coincide when the latter
  starts aligned, `input_permutation.align_init`); the figure shows test
  accuracy over training, one panel per model, one curve per pipeline;
* `data_scale.md` / `data_scale.png` (§3.3, Fig. 2 right): one row per
  (model, training subset) with the test and 5-shot accuracies, and each
  model's gain from the smallest to the largest subset; the figure plots
  both against the subset size.

The table is also printed. Errors follow the CLI contract of `mixer.cli`:
one `error:` line, exit status 1.
"""

if __name__ == '__main__':
  from mixer import cli  # pylint: disable=g-import-not-at-top

import os
from typing import Any, Dict, List, Optional, Sequence

from absl import app

from mixer import report
from mixer.data import splits as splits_lib

KINDS = ('none', 'patch_pixel', 'global')
# The paper's proxy is linear 5-shot ImageNet; the CPU sweeps have CIFAR-10.
FEWSHOT_PREFERRED = ('fewshot/imagenet2012_5shot', 'fewshot/cifar10_5shot')
# Paper §3.4: "when globally permuting the pixels, Mixer's performance drops
# much less (~45% drop) compared to the ResNet (~75% drop)" (linear 5-shot
# ImageNet after JFT-300M pre-training); patch_pixel: Mixer's curves "match
# perfectly", the ResNet's performance "drops significantly" (no number).
PAPER_DROPS = {('Mixer', 'patch_pixel'): 'none (curves match perfectly)',
               ('Mixer', 'global'): '~45%',
               ('ResNet', 'patch_pixel'): 'significant (no number given)',
               ('ResNet', 'global'): '~75%'}


def _pct(v: Optional[float]) -> str:
  return '' if v is None else f'{100 * v:.2f}'


def _params(n: Optional[int]) -> str:
  return '' if n is None else f'{n / 1e3:.0f}K' if n < 1e6 else f'{n / 1e6:.2f}M'


def _model(row) -> str:
  return row['name'].split('_', 1)[0]


def fewshot_key(rows: Sequence[Dict[str, Any]]) -> Optional[str]:
  """The 5-shot metric the tables show: ImageNet's or CIFAR-10's when the
  runs have it, else the first 5-shot dataset they have."""
  keys = sorted(k for r in rows for k in r.get('fewshot') or {}
                if k.endswith('_5shot'))
  return next((k for k in FEWSHOT_PREFERRED if k in keys),
              keys[0] if keys else None)


def _fewshot_fn(rows):
  key = fewshot_key(rows)
  name = report.fewshot_header(key) if key else '5-shot %'
  return (lambda row: (row.get('fewshot') or {}).get(key)), name


def _drop(base: Optional[float], value: Optional[float]) -> str:
  """'12.34 pp (29%)': absolute and relative drop from `base`."""
  if base is None or value is None:
    return ''
  rel = f' ({100 * (base - value) / base:.0f}%)' if base else ''
  return f'{100 * (base - value):.2f} pp{rel}'


def _series(row, key: str):
  recs = [r for r in row['records'] if key in r]
  return {int(r['step']): r[key] for r in recs}


def coincidence(a, b) -> Dict[str, Optional[float]]:
  """Largest |difference| between two runs' logged test accuracies and
  train losses at the steps both logged (None where they share none)."""
  out = {}
  for key in ('eval_accuracy', 'train_loss'):
    sa, sb = _series(a, key), _series(b, key)
    common = sorted(set(sa) & set(sb))
    out[key] = (max(abs(sa[s] - sb[s]) for s in common) if common else None)
  return out


def permutation_table(rows: Sequence[Dict[str, Any]]) -> str:
  by = {(_model(r), r['fields'].get('input_permutation.kind')): r
        for r in rows}
  fewshot_of, shot = _fewshot_fn(rows)
  lines = [f'| model | input | params | test acc % | drop | {shot} | drop | '
           "paper's drop (5-shot ImageNet) | status |",
           '|---|---|---:|---:|---:|---:|---:|---|---|']
  for r in rows:
    model, kind = _model(r), r['fields'].get('input_permutation.kind')
    base = by.get((model, 'none'))
    drop = lambda f: '' if kind == 'none' or base is None else _drop(
        f(base), f(r))
    lines.append('| ' + ' | '.join([
        model, str(kind), _params(r['num_params']),
        _pct(r['final_eval_accuracy']),
        drop(lambda x: x['final_eval_accuracy']), _pct(fewshot_of(r)),
        drop(fewshot_of), PAPER_DROPS.get((model, kind), ''),
        r['status']]) + ' |')
  a, b = by.get(('Mixer', 'none')), by.get(('Mixer', 'patch_pixel'))
  if a and b:
    c = coincidence(a, b)
    fmt = lambda v, scale: 'n/a' if v is None else f'{scale * v:.3g}'
    lines += ['', 'Mixer none vs patch_pixel, largest difference at the '
              f'steps both logged: test accuracy {fmt(c["eval_accuracy"], 100)}'
              f' pp, train loss {fmt(c["train_loss"], 1)}.']
  return '\n'.join(lines)


def permutation_figure(path: str, rows: Sequence[Dict[str, Any]]) -> None:
  """Fig. 4 style: test accuracy over training, a panel per model."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  models = list(dict.fromkeys(_model(r) for r in rows))
  fig, axes = plt.subplots(1, max(len(models), 1), figsize=(11, 4.2),
                           sharey=True, layout='constrained', squeeze=False)
  styles = {'none': ('tab:blue', '-', 'o'),
            'patch_pixel': ('tab:green', '--', 'x'),
            'global': ('tab:red', ':', 's')}
  for ax, model in zip(axes[0], models):
    for r in rows:
      kind = r['fields'].get('input_permutation.kind')
      if _model(r) != model:
        continue
      evals = [x for x in r['records'] if 'eval_accuracy' in x and 'epoch' in x]
      color, line, marker = styles.get(kind, ('gray', '-', None))
      ax.plot([x['epoch'] for x in evals],
              [100 * x['eval_accuracy'] for x in evals], line, color=color,
              marker=marker, markersize=6, linewidth=2, label=kind)
    ax.set_title(model)
    ax.set_xlabel('epoch')
    ax.grid(True, alpha=0.3)
    ax.legend(title='input')
  axes[0][0].set_ylabel('test accuracy (%)')
  fig.suptitle('Invariance to input permutations (paper Fig. 4)')
  fig.savefig(path + '.tmp.png', dpi=100)
  plt.close(fig)
  os.replace(path + '.tmp.png', path)


def subset_percent(split: str) -> Optional[float]:
  """'train[:10%]' -> 10.0, 'train' -> 100.0; None for example counts."""
  parts = splits_lib.parse_split(split)
  if len(parts) != 1:
    return None
  p = parts[0]
  if p.start is None and p.stop is None:
    return 100.0
  if not p.percent:
    return None
  return (100.0 if p.stop is None else p.stop) - (p.start or 0.0)


def data_scale_table(rows: Sequence[Dict[str, Any]]) -> str:
  fewshot_of, shot = _fewshot_fn(rows)
  lines = [f'| model | train split | epochs | test acc % | {shot} | status |',
           '|---|---|---:|---:|---:|---|']
  for r in rows:
    epochs = '' if r['epochs'] is None else f'{r["epochs"]:.3g}'
    lines.append('| ' + ' | '.join([
        _model(r), str(r['fields'].get('train_split')), epochs,
        _pct(r['final_eval_accuracy']), _pct(fewshot_of(r)), r['status']]) +
                 ' |')
  lines.append('')
  for model in dict.fromkeys(_model(r) for r in rows):
    mine = [r for r in rows if _model(r) == model and r['status'] == 'done']
    mine.sort(key=lambda r: subset_percent(r['fields'].get('train_split', ''))
              or 0)
    if len(mine) >= 2:
      lo, hi = mine[0], mine[-1]
      gain = lambda f: ('' if f(lo) is None or f(hi) is None else
                        f'{100 * (f(hi) - f(lo)):+.2f} pp')
      lines.append(f'{model}: {lo["fields"]["train_split"]} -> '
                   f'{hi["fields"]["train_split"]}: test accuracy '
                   f'{gain(lambda x: x["final_eval_accuracy"])}, '
                   f'{shot[:-2]} {gain(fewshot_of)}.  ')
  return '\n'.join(lines).rstrip()


def data_scale_figure(path: str, rows: Sequence[Dict[str, Any]]) -> None:
  """Fig. 2 (right) style: accuracy against the training subset's size."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), layout='constrained')
  fewshot_of, shot = _fewshot_fn(rows)
  sizes = sorted({subset_percent(r['fields'].get('train_split', ''))
                  for r in rows} - {None})
  for model in dict.fromkeys(_model(r) for r in rows):
    points = sorted(
        (subset_percent(r['fields'].get('train_split', '')), r) for r in rows
        if _model(r) == model and r['status'] == 'done'
        and subset_percent(r['fields'].get('train_split', '')))
    line = '-' if model == 'Mixer' else ':'
    for ax, metric in zip(axes, (lambda r: r['final_eval_accuracy'],
                                 fewshot_of)):
      xy = [(x, metric(r)) for x, r in points if metric(r) is not None]
      ax.plot([x for x, _ in xy], [100 * y for _, y in xy], line, marker='o',
              linewidth=2, label=model)
  for ax, title in zip(axes, ('test accuracy (%)',
                              f'linear {shot[:-2]} accuracy (%)')):
    ax.set_xscale('log')
    ax.set_xticks(sizes, [f'{x:g}%' for x in sizes])
    ax.minorticks_off()
    ax.set_xlabel('training subset (share of the training set)')
    ax.set_ylabel(title)
    ax.grid(True, alpha=0.3, which='both')
    ax.legend()
  fig.suptitle('Pre-training data size, same number of steps (paper Fig. 2 '
               'right)')
  fig.savefig(path + '.tmp.png', dpi=100)
  plt.close(fig)
  os.replace(path + '.tmp.png', path)


ANALYSES = {'permutation': (permutation_table, permutation_figure),
            'data_scale': (data_scale_table, data_scale_figure)}


def write(kind: str, sweep_dir: str) -> List[str]:
  """Writes `<kind>.md` and `<kind>.png` into `sweep_dir`; returns paths."""
  if kind not in ANALYSES:
    raise ValueError(f'unknown analysis {kind!r}; one of '
                     f'{", ".join(ANALYSES)}')
  report.check_sweep_dir(sweep_dir)
  rows, _, _ = report.collect(sweep_dir)
  if not rows:
    raise ValueError(f'{sweep_dir} holds no runs; run sweep.py '
                     f'--sweep=configs/sweeps/{kind}.py --workdir={sweep_dir} '
                     'first')
  table, figure = ANALYSES[kind]
  md, png = (os.path.join(sweep_dir, f'{kind}.{e}') for e in ('md', 'png'))
  text = table(rows)
  with open(md + '.tmp', 'w') as f:
    f.write(text + '\n')
  os.replace(md + '.tmp', md)
  figure(png, rows)
  return [md, png]


def main(argv):
  if len(argv) != 3:
    raise app.UsageError('give the analysis and its sweep folder: python -m '
                         'mixer.analyses {permutation,data_scale} SWEEP_DIR')
  paths = write(argv[1], argv[2])
  with open(paths[0]) as f:
    print(f.read())
  print('\n'.join(f'wrote {p}' for p in paths))


if __name__ == '__main__':
  cli.run(main)
