"""Evaluators the training loop calls, one module each (as big_vision's).

| module | measures |
| --- | --- |
| `classification` | loss and accuracy over every example of the eval split |
| `fewshot` | the paper's linear few-shot accuracy of the frozen features |

An evaluator is built once from the config and model, and its
`evaluate(params, stop=None)` returns a dict of metrics; it never trains or
writes. `stop`, a callable, is checked between batches (or datasets): when
it returns True the evaluation gives up with `EvaluationStopped`, so that
Ctrl-C during a long evaluation is served within one batch.
"""


class EvaluationStopped(Exception):
  """An evaluation gave up because its `stop` callable asked it to."""
