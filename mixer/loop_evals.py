"""The evaluations a run makes at its eval steps, as the training loop calls them.

Owns running the run's evaluators at one step -- classification on the eval
split, the minival split beside it, the few-shot linear evaluation --,
timing them (the training clock is paused and the ETA learns their cost),
logging one line each, and keeping the latest and best results for
results.json. `stop`, checked between batches, interrupts them with
`mixer.evaluators.EvaluationStopped`; the loop (`mixer.loop`) then saves the
step with the evaluations still owed.
"""

import time
from typing import Any, Callable, Dict, Optional

from absl import logging
import numpy as np

from mixer import metrics as metrics_lib
from mixer.trainer import Trainer


def pct(x: Optional[float]) -> str:
  return '?' if x is None or not np.isfinite(x) else f'{100 * x:.2f}%'


class Evaluations:
  """The run's evaluators at eval steps, and what they measured so far."""

  def __init__(self, trainer: Trainer, progress: metrics_lib.Progress):
    self.trainer, self.progress = trainer, progress
    self.best_acc = 0.0
    self.last_eval: Optional[Dict[str, Any]] = None
    self.last_minival: Optional[Dict[str, Any]] = None
    self.last_fewshot: Optional[Dict[str, Any]] = None
    self.seconds = 0.0  # All evaluations of this session.

  def batch_seconds(self) -> Optional[float]:
    """The last classification eval batch's duration (None: not timed)."""
    return getattr(self.trainer.evaluator, 'batch_seconds', None)

  def classification(self, params, step: int, record: Dict[str, Any],
                     stop: Optional[Callable[[], bool]]) -> None:
    """Eval split (and minival, config.extra_evals) accuracy and loss of
    `params` into `record`."""
    self.progress.pause(step)
    t0 = time.time()
    result = self.trainer.evaluator.evaluate(params, stop=stop)
    seconds = time.time() - t0
    self.progress.eval_seconds = seconds
    self.seconds += seconds
    self.progress.resume()
    self.last_eval = result
    if np.isfinite(result['eval_accuracy']):
      self.best_acc = max(self.best_acc, result['eval_accuracy'])
    record.update(result)
    record['epoch'] = step / self.trainer.steps_per_epoch
    logging.info('step %s: eval loss %.4f, accuracy %s (%s examples, %.1f s)',
                 f'{step:,}', result['eval_loss'],
                 pct(result['eval_accuracy']),
                 f'{result["eval_examples"]:,}', seconds)
    for name, evaluator in self.trainer.extra_evals:  # minival, ...
      self.progress.pause(step)
      t0 = time.time()
      extra = {k.replace('eval_', f'{name}_'): v for k, v in
               evaluator.evaluate(params, stop=stop).items()}
      self.progress.resume()
      self.seconds += time.time() - t0
      if name == 'minival':
        self.last_minival = extra
      record.update(extra)
      logging.info('step %s: %s loss %.4f, accuracy %s (%s examples)',
                   f'{step:,}', name, extra[f'{name}_loss'],
                   pct(extra[f'{name}_accuracy']),
                   f'{extra[f"{name}_examples"]:,}')

  def fewshot(self, params, step: int, record: Dict[str, Any],
              stop: Optional[Callable[[], bool]]) -> None:
    """Few-shot linear accuracies of `params` into `record`."""
    self.progress.pause(step)
    t0 = time.time()
    result = self.trainer.fewshot.evaluate(params, stop=stop)
    self.progress.resume()
    self.seconds += time.time() - t0
    self.last_fewshot = result
    record.update(result)
    logging.info('step %s: few-shot linear accuracy %s (%.1f s)',
                 f'{step:,}', ', '.join(
                     f'{k.split("/", 1)[-1]} {pct(v)}'
                     for k, v in result.items() if '-seed-' not in k),
                 time.time() - t0)
