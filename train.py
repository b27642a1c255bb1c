r"""Trains and evaluates an MLP-Mixer: the project's main job.

    python train.py --config=configs/cifar10_baseline.py --workdir=workdirs/baseline
    python train.py --config=configs/cifar10_baseline.py --workdir=W \
        --config.num_train_steps=200 --config.batch_size=128

Any config field can be overridden as `--config.<field>=<value>`. Running
again with the same workdir resumes from its latest checkpoint (run length,
cadences and data location may change; see `mixer.workdir.RESUMABLE_FIELDS`).
A workdir that holds a run with another config is refused, listing the
differing fields; `--overwrite` deletes that run's checkpoints, metrics and
results and starts over.

Errors in what the run was given (config, data, workdir, a NaN loss, a
checkpoint that cannot be written) print one line `error: <message>` on
stderr and exit with status 1, without a traceback; `--debug` (or
MIXER_DEBUG=1) shows the traceback instead (mixer/cli.py). Ctrl-C saves the
current step and exits with status 130, saying how to resume. See
docs/guarantees.md.

Multi-host (one process per host, each feeding its own slice of the global
batch): `--multihost` calls `jax.distributed.initialize()` first, which
detects TPU pods, SLURM, Open MPI, ... or reads $JAX_COORDINATOR_ADDRESS;
`--coordinator_address=HOST:PORT --num_processes=N --process_id=I` give the
values explicitly (e.g. several CPU processes on one machine, which use gloo
collectives). Every process runs the same command; only process 0 writes
metrics, config.json and results.json.
"""

from mixer import cli  # pylint: disable=g-bad-import-order  (before JAX/TF)
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Experiment config file (configs/<name>.py).',
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Folder for checkpoints, metrics and results.')
_OVERWRITE = flags.DEFINE_bool(
    'overwrite', False, 'Delete the checkpoints, metrics, results and '
    'TensorBoard events already in --workdir and start over (otherwise a '
    'workdir holding a run with another config is refused).')
_MULTIHOST = flags.DEFINE_bool(
    'multihost', False, 'Call jax.distributed.initialize() before training '
    '(auto-detects TPU pods, SLURM, ...; implied by --coordinator_address).')
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', None, 'Multi-host: HOST:PORT of process 0.')
_NUM_PROCESSES = flags.DEFINE_integer(
    'num_processes', None, 'Multi-host: number of processes.')
_PROCESS_ID = flags.DEFINE_integer(
    'process_id', None, 'Multi-host: index of this process.')


def _initialize_distributed() -> None:
  explicit = {k: v for k, v in (('coordinator_address', _COORDINATOR.value),
                                ('num_processes', _NUM_PROCESSES.value),
                                ('process_id', _PROCESS_ID.value))
              if v is not None}
  if not (_MULTIHOST.value or explicit):
    return
  import jax  # pylint: disable=g-import-not-at-top
  try:
    jax.distributed.initialize(**explicit)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f'multi-host: jax.distributed.initialize() failed: '
                     f'{type(e).__name__}: {e}') from e
  logging.info('Multi-host: process %d of %d, %d local / %d global devices',
               jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  _initialize_distributed()
  # Imported here so that flag errors are reported without loading JAX.
  from mixer import train  # pylint: disable=g-import-not-at-top
  train.train_and_evaluate(_CONFIG.value, _WORKDIR.value,
                           overwrite=_OVERWRITE.value)


if __name__ == '__main__':
  flags.mark_flags_as_required(['config', 'workdir'])
  cli.run(main)
