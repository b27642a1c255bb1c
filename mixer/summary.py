r"""Per-layer summary of a config's model: `python -m mixer.summary --config=...`.

Prints one row per module (path, output shape, parameters it owns directly),
then `Total params: N` as the last line. Shapes come from `jax.eval_shape`, so
nothing is allocated or computed: Mixer-H/14 summarises in seconds on a CPU.

    python -m mixer.summary --config=configs/cifar10_baseline.py
    python -m mixer.summary --config=configs/mixer_b16.py --config.model.num_classes=0

Errors follow the CLI contract of `mixer.cli`: one `error:` line naming the
input and the fix, exit status 1 (`--debug` shows the traceback).
"""

if __name__ == '__main__':
  # The CLI contract: imported before JAX (quiet C++ start-up logging).
  from mixer import cli  # pylint: disable=g-import-not-at-top

from typing import List, Tuple

from absl import app
from absl import flags
import flax.linen as nn
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np

from mixer import models

_CONFIG = None


def define_flags():
  """Defines the command-line flags (only when run as a program, so that
  importing this module next to other CLIs never redefines a flag)."""
  global _CONFIG
  _CONFIG = config_flags.DEFINE_config_file(
      'config', None, 'Experiment config file.', lock_config=True)


def abstract_params(model: models.MlpMixer, shape):
  """The parameter tree as ShapeDtypeStructs: nothing allocated or computed."""
  x = jax.ShapeDtypeStruct((1,) + tuple(shape), jnp.float32)
  return jax.eval_shape(
      lambda x: model.init(jax.random.PRNGKey(0), x, train=False)['params'], x)


def count_params(params) -> int:
  return int(sum(np.prod(p.shape) for p in jax.tree_util.tree_leaves(params)))


def rows(model: models.MlpMixer, shape) -> List[Tuple[str, str, int]]:
  """[(module path, output shape, own params)] in call order.

  A method interceptor records every module's `__call__` output shape while
  `jax.eval_shape` traces `init`; modules without parameters and without a
  shape change of their own (dropout) are left out of the table.
  """
  calls = []

  def record(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if context.method_name == '__call__':
      path = '/'.join(context.module.scope.path)
      calls.append((path, tuple(out.shape),
                    type(context.module).__name__))
    return out

  def init(x):
    with nn.intercept_methods(record):
      variables = model.init(jax.random.PRNGKey(0), x, train=False)
    return variables['params']

  params = jax.eval_shape(
      init, jax.ShapeDtypeStruct((1,) + tuple(shape), jnp.float32))

  def own_params(path):
    node = params
    for part in path.split('/') if path else []:
      node = node.get(part, {})
    return sum(count_params(v) for v in node.values()
               if not isinstance(v, dict))

  # Calls are recorded when they return; order rows by when they started,
  # i.e. a parent before its children, as the seeds' tables read.
  starts = {}
  for path, _, _ in calls:
    parts = path.split('/')
    for i in range(1, len(parts) + 1):
      starts.setdefault('/'.join(parts[:i]), len(starts))
  table = []
  for path, out_shape, kind in sorted(calls, key=lambda c: starts.get(c[0], -1)):
    if kind == 'Dropout':
      continue
    name = f'{path or "(model)"} ({kind})'
    table.append((name, str(out_shape), own_params(path)))
  return table


def format_table(table, total: int, title: str = '') -> str:
  width = max([len(r[0]) for r in table] + [20]) + 2
  lines = []
  if title:
    lines.append(title)
  header = f'{"Layer":<{width}}{"Output shape":>22}{"Param #":>14}'
  lines += ['=' * len(header), header, '=' * len(header)]
  for name, out_shape, n in table:
    lines.append(f'{name:<{width}}{out_shape:>22}{n:>14,}')
  lines.append('=' * len(header))
  lines.append(f'Total params: {total:,}')
  return '\n'.join(lines)


def summarize(config) -> str:
  """The summary text for `config` (model from `config.model`)."""
  model = models.build_model(config.model)
  shape = models.input_shape(config)
  model.check(shape)
  table = rows(model, shape)
  total = count_params(abstract_params(model, shape))
  own = sum(r[2] for r in table)
  if own != total:  # Every parameter must be owned by exactly one row.
    raise AssertionError(f'summary rows hold {own} params, model has {total}')
  title = (f'{config.model.get("model_name") or type(model).__name__}: input '
           f'{shape}, batch dimension shown as 1')
  return format_table(table, total, title)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])} '
                         '(mixer.summary takes only flags: --config=... and '
                         '--config.<field>=<value>)')
  print(summarize(_CONFIG.value))


if __name__ == '__main__':
  define_flags()
  flags.mark_flags_as_required(['config'])
  cli.run(main)
