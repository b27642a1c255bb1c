"""Parameter trees as flat '/'-keyed dicts, and checking one tree against another.

Owns the `.npz` key layout ('MixerBlock_0/token_mixing/Dense_0/kernel'),
the model's parameter order for messages, and the one-line errors that name
a parameter whose path or shape differs. Pure functions on trees: no files,
no orbax, no model.
"""

from typing import Any, Dict, Sequence

import flax
from flax import traverse_util
import numpy as np


def flatten_params(params: Any) -> Dict[str, np.ndarray]:
  """{'a/b/kernel': array} from a nested params dict (the `.npz` layout)."""
  flat = traverse_util.flatten_dict(unfreeze(params), sep='/')
  return {k: np.asarray(v) for k, v in flat.items()}


def unflatten_params(flat: Dict[str, Any]) -> Dict[str, Any]:
  """Inverse of `flatten_params`."""
  return traverse_util.unflatten_dict(
      {tuple(k.split('/')): v for k, v in flat.items()})


def unfreeze(tree: Any) -> Any:
  if isinstance(tree, flax.core.FrozenDict):
    return flax.core.unfreeze(tree)
  return tree


_MODULE_RANK = {'stem': 0, 'MixerBlock': 1, 'pre_head_layer_norm': 2,
                'head': 3}
_BLOCK_RANK = {'LayerNorm_0': 0, 'token_mixing': 1, 'LayerNorm_1': 2,
               'channel_mixing': 3}
_LEAF_RANK = {'kernel': 0, 'scale': 1, 'bias': 2}


def _param_order(key: str):
  """Sort key: the model's order (stem, MixerBlock_2 before MixerBlock_10,
  ..., head; kernel before bias)."""
  parts = key.split('/')
  out = []
  for i, part in enumerate(parts):
    name, _, num = part.rpartition('_')
    if not (name and num.isdigit()):
      name, num = part, '-1'
    rank = (_LEAF_RANK.get(part, 3) if i == len(parts) - 1 else
            _MODULE_RANK.get(name, 4) if i == 0 else
            _BLOCK_RANK.get(part, 4))
    out.append((rank, name, int(num)))
  return out


def shape_problems(loaded: Dict[str, Any], expected: Dict[str, Any],
                    *, source: str) -> Sequence[str]:
  """Human-readable differences in paths and shapes (flat dicts)."""
  problems = []
  for key in sorted(set(loaded) | set(expected), key=_param_order):
    if key not in expected:
      problems.append(f'{source} parameter {key} (shape '
                      f'{tuple(np.shape(loaded[key]))}) does not exist in the '
                      'model')
    elif key not in loaded:
      problems.append(f'the model parameter {key} (shape '
                      f'{tuple(np.shape(expected[key]))}) is missing from '
                      f'{source}')
    elif tuple(np.shape(loaded[key])) != tuple(np.shape(expected[key])):
      problems.append(f'{source} parameter {key} has shape '
                      f'{tuple(np.shape(loaded[key]))} but the model expects '
                      f'{tuple(np.shape(expected[key]))}')
  return problems


def raise_problems(problems: Sequence[str], hint: str = '') -> None:
  if not problems:
    return
  more = (f' (and {len(problems) - 1} more: ' + '; '.join(problems[1:4]) +
          ('; ...' if len(problems) > 4 else '') + ')') if len(
              problems) > 1 else ''
  raise ValueError(problems[0] + more + (f'. {hint}' if hint else ''))


def check_params(params: Any, expected: Any, *, source: str = 'checkpoint'
                 ) -> None:
  """Raises one ValueError unless `params` has exactly `expected`'s paths and
  shapes (`expected` may hold arrays or `jax.ShapeDtypeStruct`s)."""
  raise_problems(shape_problems(flatten_params_shapes(params),
                                  flatten_params_shapes(expected),
                                  source=source))


def flatten_params_shapes(params: Any) -> Dict[str, Any]:
  """Like `flatten_params` without converting leaves (shape structs stay)."""
  return traverse_util.flatten_dict(unfreeze(params), sep='/')


# -- Resolution change (paper Appendix C) -----------------------------------
