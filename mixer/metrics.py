"""Metrics: clu collections, writers (TensorBoard / console / JSONL), progress.

* `TrainMetrics` / `EvalMetrics` are `clu.metrics` collections (averages,
  the eval one weighted by a mask so padded examples never count).
* `MetricsWriter` writes every record to `workdir/metrics.jsonl` (one JSON
  object per logged step) and, through clu's `metric_writers`, to TensorBoard
  and the log. On machines without TensorFlow (clu's writers and periodic
  actions import it) a plain logging writer is used instead, so training
  still runs.
* `Progress` times the training steps (evaluation and checkpoint writes
  excluded), says when a progress line is due (every `log_every_steps`, or
  every `every_secs` of wall time, whichever comes first) and formats it
  with images/s and the ETA of the whole run (the evaluations still to come
  included); it also drives clu's `periodic_actions.ReportProgress` when
  that is importable.
* `UnloggedSteps` keeps the per-step train metrics between two log steps on
  the host (and in checkpoints), so a resumed run logs the same averages.

clu's writers are imported on first use by the chief process only, so the
other processes of a multi-host run never import TensorFlow.

Every field of a `metrics.jsonl` record except `TIMING_FIELDS` is a function
of the config and seed: two runs of one config on the same platform, or a
run that was killed and resumed, write the same records once those fields
are dropped (`read_records(..., drop_timing=True)`).

`metrics.jsonl` and `results.json` are strict JSON (`strict_json`): a NaN or
infinite value is written as null and its field listed under `nonfinite`,
so any JSON reader loads them.
"""

import json
import math
import os
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

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


# Set to 0 to write no TensorBoard events (and never import TensorFlow):
# metrics.jsonl still gets every record. The test suite does, to save the
# ~5 s of CPU that importing TensorFlow costs each process it starts.
TENSORBOARD_ENV = 'MIXER_TENSORBOARD'


def tensorboard_enabled() -> bool:
  return os.environ.get(TENSORBOARD_ENV, '1').lower() not in ('0', 'false',
                                                              'no', 'off')


def preload_writers() -> None:
  """Starts importing clu's writers (TensorFlow: ~5 s on a small CPU) in a
  background thread, so that the import overlaps the start of the run
  (compiling the first steps releases the GIL); `MetricsWriter` then finds
  it done, or waits for it."""
  threading.Thread(target=_clu_writers, daemon=True,
                   name='mixer-import-tensorboard').start()


@flax.struct.dataclass
class TrainMetrics(clu_metrics.Collection):
  loss: clu_metrics.Average.from_output('loss')
  accuracy: clu_metrics.Average.from_output('accuracy')


@flax.struct.dataclass
class EvalMetrics(clu_metrics.Collection):
  loss: clu_metrics.Average.from_output('loss')
  accuracy: clu_metrics.Average.from_output('accuracy')


def _py(value: Any) -> Any:
  """A JSON-friendly Python scalar (floats to 7 significant digits)."""
  if isinstance(value, (np.generic, np.ndarray)):
    value = value.item()
  if isinstance(value, float) and math.isfinite(value):
    return float(f'{value:.7g}')
  return value


def strict_json(obj: Any, path: str = '') -> Tuple[Any, List[str]]:
  """(obj with every NaN/Inf float replaced by None, the paths replaced).

  JSON has no NaN or Infinity; Python's json module writes them anyway,
  which most readers reject.
  """
  if isinstance(obj, float) and not math.isfinite(obj):
    return None, [path or '.']
  if isinstance(obj, dict):
    out, bad = {}, []
    for k, v in obj.items():
      out[k], b = strict_json(v, f'{path}.{k}' if path else str(k))
      bad += b
    return out, bad
  if isinstance(obj, (list, tuple)):
    out, bad = [], []
    for i, v in enumerate(obj):
      x, b = strict_json(v, f'{path}[{i}]')
      out.append(x)
      bad += b
    return out, bad
  return obj, []


def dumps(obj: Any, **kwargs) -> str:
  """`json.dumps` of `strict_json(obj)`, with a `nonfinite` list of the
  fields that were NaN or infinite (dicts only)."""
  clean, bad = strict_json(obj)
  if bad and isinstance(clean, dict):
    clean['nonfinite'] = bad
  return json.dumps(clean, allow_nan=False, **kwargs)


class MetricsWriter:
  """Writes scalars to `metrics.jsonl` and to clu's writer (or the log).

  Only the chief process (index 0) writes files; other processes log only.
  `metrics.jsonl` is appended to, so a resumed run continues the same file
  (records past the resumed step from a killed run are dropped on open).
  """

  def __init__(self, workdir: str, *, is_chief: bool = True,
               resume_step: int = 0,
               use_tensorboard: Optional[bool] = None):
    self.is_chief = is_chief
    self.path = os.path.join(workdir, 'metrics.jsonl')
    if use_tensorboard is None:
      use_tensorboard = tensorboard_enabled()
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
    line = dumps(record)
    if self._writer is not None:
      self._writer.write_scalars(step, {
          k: v for k, v in record.items() if k != 'step' and
          isinstance(v, (int, float)) and math.isfinite(v)})
    else:
      logging.debug('step %d: %s', step, line)
    if self.is_chief:
      with open(self.path, 'a') as f:
        f.write(line + '\n')

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


def amount(n: float, word: str, fmt: str = ',') -> str:
  """'1 epoch', '2 epochs', '0.5 epochs', '1,000 steps': `n` formatted with
  `fmt` and `word`, plural unless it reads as 1."""
  text = format(n, fmt)
  return f'{text} {word}' + ('' if text == '1' else 's')


def format_duration(seconds: Optional[float]) -> str:
  """'1:02:03', or '2 days 3:04:05' beyond a day; '?' when unknown."""
  if seconds is None or not np.isfinite(seconds):
    return '?'
  seconds = int(max(seconds, 0))
  days, seconds = divmod(seconds, 86400)
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  clock = f'{h}:{m:02d}:{s:02d}'
  return f'{days} day{"s" if days > 1 else ""} {clock}' if days else clock


class Progress:
  """Training throughput and the ETA of the whole run.

  Only training counts: the first (compiling) dispatch, evaluations and
  checkpoint writes are excluded with `pause`/`resume`, so images/s is the
  steps' own speed. Once an evaluation has been timed, the ETA adds the
  evaluations still to come at that cost ('+ evaluations' before).
  """

  def __init__(self, *, total_steps: int, start_step: int, batch_size: int,
               steps_per_epoch: int, eval_every: int = 0,
               every_secs: float = 30.0,
               writer: Optional[MetricsWriter] = None):
    self.total_steps = total_steps
    self.batch_size = batch_size
    self.steps_per_epoch = max(steps_per_epoch, 1)
    self.eval_every = eval_every
    self.every_secs = every_secs
    self.eval_seconds = None  # Measured cost of one evaluation.
    self.train_seconds = 0.0  # Timed training so far (this session).
    self.timed_steps = 0
    self._running_since = None
    self._step0 = start_step
    self._last_line = time.time()
    self._report = None
    periodic_actions = _clu_writers()[1] if writer is not None and \
        writer._writer is not None else None  # pylint: disable=protected-access
    if periodic_actions is not None:
      self._report = periodic_actions.ReportProgress(
          num_train_steps=total_steps, every_secs=None, every_steps=None,
          writer=writer._writer)  # pylint: disable=protected-access

  def start(self, step: int) -> None:
    """Starts the clock (call after the first, compiling, dispatch)."""
    self._step0 = step
    self.resume()

  def pause(self, step: int) -> None:
    """Stops the clock at `step` (all its work done) for an eval or save."""
    if self._running_since is not None:
      self.train_seconds += time.time() - self._running_since
      self.timed_steps = step - self._step0
      self._running_since = None

  def resume(self) -> None:
    self._running_since = time.time()

  def timed(self, step: int) -> Tuple[float, int]:
    """(seconds, steps) of timed training up to `step` (whose work must be
    done)."""
    seconds = self.train_seconds
    if self._running_since is not None:
      seconds += time.time() - self._running_since
    return seconds, step - self._step0

  def images_per_sec(self, step: int) -> Optional[float]:
    seconds, steps = self.timed(step)
    return steps * self.batch_size / seconds if seconds > 0 and steps else None

  def due(self) -> bool:
    """Whether `every_secs` passed since the last progress line."""
    return time.time() - self._last_line >= self.every_secs

  def evals_left(self, step: int) -> int:
    """Evaluations still to run after `step`'s (the final one included)."""
    if not self.eval_every:
      return int(step < self.total_steps)
    return (self.total_steps // self.eval_every - step // self.eval_every +
            (self.total_steps % self.eval_every != 0))

  def remaining_seconds(self, step: int) -> Optional[float]:
    """Training still to do, plus the evaluations once one was timed."""
    rate = self.images_per_sec(step)
    if not rate:
      return None
    left = (self.total_steps - step) * self.batch_size / rate
    if self.eval_seconds is not None:
      left += self.evals_left(step) * self.eval_seconds
    return left

  def eta(self, step: int) -> str:
    text = format_duration(self.remaining_seconds(step))
    if self.eval_seconds is None and self.evals_left(step):
      text += ' + evaluations'
    return text

  def line(self, step: int, extra: str = '') -> str:
    """'step 120/9,700 (1.2%, epoch 1.24): <extra>, 85 img/s, ETA 1:52:10'."""
    self._last_line = time.time()
    if self._report is not None:
      self._report(step, time.time())
    pct = 100.0 * step / max(self.total_steps, 1)
    rate = self.images_per_sec(step)
    speed = f'{rate:,.0f} img/s' if rate else '? img/s'
    return (f'step {step:,}/{self.total_steps:,} ({pct:.1f}%, epoch '
            f'{step / self.steps_per_epoch:.2f}): {extra}{speed}, ETA '
            f'{self.eta(step)}')


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

  def peek(self) -> Dict[str, float]:
    """Means over this interval's finite steps so far (not cleared)."""
    ok = np.asarray(self.finite, bool)
    out = {}
    for k in ('train_loss', 'train_accuracy'):
      vals = np.asarray(self.values[k], np.float32)[ok]
      if vals.size:
        out[k] = float(np.mean(vals, dtype=np.float64))
    return out

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
