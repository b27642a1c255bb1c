"""Metrics: clu collections, writers (TensorBoard / console / JSONL), progress.

* `TrainMetrics` / `EvalMetrics` are `clu.metrics` collections (averages,
  the eval one weighted by a mask so padded examples never count).
* `MetricsWriter` writes every record to `workdir/metrics.jsonl` (one JSON
  object per logged step) and, through clu's `metric_writers`, to TensorBoard
  and the log. On machines without TensorFlow (clu's writers and periodic
  actions import it) a plain logging writer is used instead, so training
  still runs.
* `Progress` logs steps/s, images/s and the ETA; it also drives clu's
  `periodic_actions.ReportProgress` when that is importable.
* `UnloggedSteps` keeps the per-step train metrics between two log steps on
  the host (and in checkpoints), so a resumed run logs the same averages.

clu's writers are imported on first use by the chief process only, so the
other processes of a multi-host run never import TensorFlow.

Every field of a `metrics.jsonl` record except `TIMING_FIELDS` is a function
of the config and seed: two runs of one config on the same platform, or a
run that was killed and resumed, write the same records once those fields
are dropped (`read_records(..., drop_timing=True)`).
"""

import json
import os
import time
from typing import Any, Dict, List, Optional

from absl import logging
from clu import metrics as clu_metrics
import flax
import numpy as np

# Wall-clock fields of metrics.jsonl records (they differ between runs).
TIMING_FIELDS = ('images_per_sec',)


def _clu_writers():
  """(metric_writers, periodic_actions) from clu, or (None, None) without
  TensorFlow (both import it)."""
  try:
    from clu import metric_writers  # pylint: disable=g-import-not-at-top
    from clu import periodic_actions  # pylint: disable=g-import-not-at-top
  except ImportError:  # pragma: no cover - exercised on the TF-less GPU box.
    return None, None
  return metric_writers, periodic_actions


@flax.struct.dataclass
class TrainMetrics(clu_metrics.Collection):
  loss: clu_metrics.Average.from_output('loss')
  accuracy: clu_metrics.Average.from_output('accuracy')


@flax.struct.dataclass
class EvalMetrics(clu_metrics.Collection):
  loss: clu_metrics.Average.from_output('loss')
  accuracy: clu_metrics.Average.from_output('accuracy')


def _py(value: Any) -> Any:
  """A JSON-friendly Python scalar."""
  if isinstance(value, (np.generic, np.ndarray)):
    value = value.item()
  if isinstance(value, float):
    return float(f'{value:.7g}')
  return value


class MetricsWriter:
  """Writes scalars to `metrics.jsonl` and to clu's writer (or the log).

  Only the chief process (index 0) writes files; other processes log only.
  `metrics.jsonl` is appended to, so a resumed run continues the same file
  (records past the resumed step from a killed run are dropped on open).
  """

  def __init__(self, workdir: str, *, is_chief: bool = True,
               resume_step: int = 0, use_tensorboard: bool = True):
    self.is_chief = is_chief
    self.path = os.path.join(workdir, 'metrics.jsonl')
    metric_writers = (_clu_writers()[0] if is_chief and use_tensorboard
                      else None)
    if metric_writers is not None:
      self._writer = metric_writers.create_default_writer(workdir)
    else:
      self._writer = None
    if is_chief:
      self._truncate_after(resume_step)

  def _truncate_after(self, step: int) -> None:
    """Keeps only records up to `step` (a crash may have logged past it)."""
    if not os.path.exists(self.path):
      return
    kept = []
    with open(self.path) as f:
      for line in f:
        try:
          if json.loads(line)['step'] <= step:
            kept.append(line if line.endswith('\n') else line + '\n')
        except (ValueError, KeyError):
          continue  # A torn last line from a kill: drop it.
    tmp = self.path + '.tmp'
    with open(tmp, 'w') as f:
      f.writelines(kept)
    os.replace(tmp, self.path)

  def write(self, step: int, scalars: Dict[str, Any]) -> None:
    record = {'step': int(step)}
    record.update({k: _py(v) for k, v in scalars.items()})
    if self._writer is not None:
      self._writer.write_scalars(step, {k: v for k, v in record.items()
                                        if k != 'step'})
    else:
      logging.info('step %d: %s', step, json.dumps(record))
    if self.is_chief:
      with open(self.path, 'a') as f:
        f.write(json.dumps(record) + '\n')

  def write_hparams(self, hparams: Dict[str, Any]) -> None:
    if self._writer is not None and self.is_chief:
      self._writer.write_hparams(hparams)

  def flush(self) -> None:
    if self._writer is not None:
      self._writer.flush()

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()


def read_records(workdir: str, *, drop_timing: bool = False
                 ) -> List[Dict[str, Any]]:
  """The records of `workdir/metrics.jsonl` (a torn last line is skipped).

  With `drop_timing`, without `TIMING_FIELDS`: what two runs of the same
  config and seed, interrupted or not, have in common.
  """
  records = []
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    for line in f:
      try:
        record = json.loads(line)
      except ValueError:
        continue
      if drop_timing:
        record = {k: v for k, v in record.items() if k not in TIMING_FIELDS}
      records.append(record)
  return records


def format_duration(seconds: float) -> str:
  if not np.isfinite(seconds):
    return '?'
  seconds = int(max(seconds, 0))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f'{h}:{m:02d}:{s:02d}'


class Progress:
  """Steps/s, images/s and ETA, measured between calls (excludes compile)."""

  def __init__(self, *, total_steps: int, start_step: int, batch_size: int,
               writer: Optional[MetricsWriter] = None):
    self.total_steps = total_steps
    self.batch_size = batch_size
    self._t0 = None
    self._s0 = start_step
    self._last = (time.time(), start_step)
    self._report = None
    periodic_actions = _clu_writers()[1] if writer is not None and \
        writer._writer is not None else None  # pylint: disable=protected-access
    if periodic_actions is not None:
      self._report = periodic_actions.ReportProgress(
          num_train_steps=total_steps, every_secs=None, every_steps=None,
          writer=writer._writer)  # pylint: disable=protected-access

  def start(self, step: int) -> None:
    """Marks the first measured step (call after the first, compiling, step)."""
    self._t0 = time.time()
    self._s0 = step
    self._last = (self._t0, step)

  def update(self, step: int) -> Dict[str, float]:
    """Rates since the last call and the ETA; also ticks clu's reporter."""
    now = time.time()
    t_last, s_last = self._last
    self._last = (now, step)
    rate = (step - s_last) / max(now - t_last, 1e-9)
    overall = ((step - self._s0) / max(now - self._t0, 1e-9)
               if self._t0 is not None and step > self._s0 else rate)
    if self._report is not None:
      self._report(step, now)
    eta = (self.total_steps - step) / overall if overall > 0 else float('nan')
    return {'steps_per_sec': rate, 'images_per_sec': rate * self.batch_size,
            'eta_seconds': eta}

  def line(self, step: int, rates: Dict[str, float], extra: str = '') -> str:
    pct = 100.0 * step / max(self.total_steps, 1)
    return (f'step {step}/{self.total_steps} ({pct:.1f}%) {extra}'
            f'{rates["images_per_sec"]:,.0f} img/s, '
            f'ETA {format_duration(rates["eta_seconds"])}')


_STEP_KEYS = ('train_loss', 'train_accuracy', 'learning_rate', 'grad_norm')


class UnloggedSteps:
  """Per-step train metrics since the last log step, on the host.

  Saved in every checkpoint's `meta` (exact float32 values survive JSON), so
  a run resumed between two log steps logs the same averages as one that was
  never interrupted.
  """

  def __init__(self, saved: Optional[Dict[str, Any]] = None):
    self.clear()
    if saved:
      self.steps = [int(s) for s in saved['step']]
      self.finite = [bool(f) for f in saved['finite']]
      for k in _STEP_KEYS:
        self.values[k] = [np.float32(v) for v in saved[k]]

  def clear(self) -> None:
    self.steps: List[int] = []
    self.values = {k: [] for k in _STEP_KEYS}
    self.finite: List[bool] = []

  def add(self, first_step: int, fetched: Dict[str, np.ndarray]) -> None:
    n = len(fetched['finite'])
    self.steps.extend(range(first_step + 1, first_step + 1 + n))
    self.finite.extend(bool(f) for f in fetched['finite'])
    for k in _STEP_KEYS:
      self.values[k].extend(np.asarray(fetched[k], np.float32).tolist())

  def to_json(self) -> Dict[str, Any]:
    return {'step': list(self.steps), 'finite': list(self.finite),
            **{k: [float(v) for v in vals] for k, vals in self.values.items()}}

  def record(self, skip_nonfinite: bool) -> Dict[str, Any]:
    """Means over this interval's finite steps; clears the interval."""
    ok = np.asarray(self.finite, bool)
    record = {}
    for k in ('train_loss', 'train_accuracy', 'grad_norm'):
      vals = np.asarray(self.values[k], np.float32)[ok]
      if vals.size:
        record[k] = float(np.mean(vals, dtype=np.float64))
    if self.values['learning_rate']:
      record['learning_rate'] = float(self.values['learning_rate'][-1])
    if skip_nonfinite:
      record['skipped_steps'] = int((~ok).sum())
    self.clear()
    return record
