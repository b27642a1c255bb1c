r"""What checkpoint integrity costs: digests on save, verification on restore.

    python benchmarks/checkpoint_integrity.py --gigabytes=1 --workdir=/tmp/ckpt

Saves a state of `--gigabytes` of float32 arrays (in 64 MiB leaves, like a
large model's parameters and optimizer state) through `mixer.checkpoints`,
then restores it with and without checking the digests. Prints one JSON line
per measurement: seconds and seconds per GB for hashing alone, for the save
(digests included), and for the restore with and without verification. The
folder is deleted afterwards.
"""

import argparse
import json
import os
import shutil
import time

import jax
import numpy as np
import orbax.checkpoint as ocp

from mixer import checkpoints


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--gigabytes', type=float, default=1.0)
  parser.add_argument('--workdir', default='/tmp/mixer_checkpoint_integrity')
  args = parser.parse_args()
  leaf = 16 * 2**20  # float32 values per leaf: 64 MiB.
  n = max(1, int(round(args.gigabytes * 2**30 / (4 * leaf))))
  rng = np.random.default_rng(0)
  state = {'step': np.int32(1), 'params': {
      f'w{i}': rng.random(leaf, np.float32) for i in range(n)},
           'opt_state': {}, 'rng': np.zeros(2, np.uint32)}
  gb = n * leaf * 4 / 2**30

  def report(name, seconds):
    print(json.dumps({'bench': name, 'gigabytes': round(gb, 3),
                      'seconds': round(seconds, 3),
                      'seconds_per_gb': round(seconds / gb, 3),
                      'cpu_cores': os.cpu_count()}), flush=True)

  shutil.rmtree(args.workdir, ignore_errors=True)
  try:
    t = time.perf_counter()
    checkpoints.digests(state)
    report('sha256 digests of every array', time.perf_counter() - t)

    mgr = checkpoints.manager(args.workdir, async_save=False)
    t = time.perf_counter()
    checkpoints.save(mgr, 1, state, {'step': 1})
    checkpoints.wait_until_finished(mgr)
    report('save (digests included)', time.perf_counter() - t)
    target = jax.tree_util.tree_map(np.zeros_like, state)

    t = time.perf_counter()
    checkpoints.restore(mgr, target)
    report('restore, verified', time.perf_counter() - t)

    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)
    t = time.perf_counter()
    mgr.restore(1, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract),
        meta=ocp.args.JsonRestore()))
    report('restore, orbax alone (no verification)', time.perf_counter() - t)
    mgr.close()
  finally:
    shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == '__main__':
  main()
