"""Evaluators the training loop calls, one module each (as big_vision's).

| module | measures |
| --- | --- |
| `classification` | loss and accuracy over every example of the eval split |
| `fewshot` | the paper's linear few-shot accuracy of the frozen features |

An evaluator is built once from the config and model, and its
`evaluate(params)` returns a dict of metrics; it never trains or writes.
"""
