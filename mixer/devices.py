"""Placing host arrays on the local devices, and barriers across processes.

Owns the one sharding convention of the project: a leading axis of
`jax.local_device_count()` rows on a mesh axis named 'batch', the axis the
pmapped steps reduce over. No model, data or file code.
"""

from typing import Any

from flax import jax_utils
import jax
import numpy as np


def shard(x: np.ndarray) -> jax.Array:
  """Puts [devices, ...] host data on the local devices, one row each."""
  mesh = jax.sharding.Mesh(np.array(jax.local_devices()), ('batch',))
  return jax.device_put(x, jax.sharding.NamedSharding(
      mesh, jax.sharding.PartitionSpec('batch')))


def replicate(tree: Any) -> Any:
  """Copies `tree` to every local device with the sharding pmap outputs
  (mesh axis 'batch'), so the second step does not compile again."""
  return jax_utils.replicate(tree, axis_name='batch')


def unreplicate(tree: Any) -> Any:
  """The first device's copy of a replicated tree."""
  return jax_utils.unreplicate(tree)


def sync(name: str) -> None:
  """A barrier across processes (no-op with one process)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)
