"""The data package: where examples come from and in which order.

Where the data comes from, in order:

1. `config.data_dir`, a local dataset folder (or a folder of datasets holding
   a `<config.dataset>/` subfolder) -- or a TFDS data dir holding the dataset
   prepared by tfds (`<data_dir>/<dataset>/<version>/dataset_info.json`),
   which is then read with tfds from there;
2. `$MIXER_DATA_DIR/<config.dataset>/`, if that folder exists (a TFDS
   prepared dataset there is read with tfds, as in 1.);
3. TensorFlow Datasets by name (`cifar10`, `cifar100`, `fashion_mnist`,
   `mnist`, `oxford_iiit_pet`, ...), downloading into tfds's data dir
   (`$TFDS_DATA_DIR`, default `~/tensorflow_datasets`) if not prepared there.
   Without network this fails within seconds (the download's hosts are
   probed first, instead of tfds's minutes of retries), and a failed
   download leaves nothing behind.
   Datasets that need a manual download (`imagenet2012`, `imagenet21k`) are
   never downloaded: tfds builds them only from archives already in its
   manual dir, and when they are missing a one-line error says how to
   prepare them once (docs/imagenet.md). `imagenet21k` is not in tfds's
   catalogue; it is read from its prepared files (big_vision's layout: a
   `full` split).

A local folder may hold any of these formats, detected automatically:

* `train_*.npz` / `test.npz` shards (also `<split>.npz` / `<split>_*.npz`),
  each with arrays `images` (uint8 [N, H, W, C] or [N, H, W]) and `labels`
  ([N]); shards are concatenated in natural sort order (`train_2` before
  `train_10`);
* the original CIFAR python pickles: `cifar-10-batches-py/` (data_batch_1..5,
  test_batch, batches.meta) or `cifar-100-python/` (train, test, meta; fine
  labels), either as that folder itself or as a subfolder of it;
* MNIST-style IDX files (`train-images-idx3-ubyte.gz`,
  `train-labels-idx1-ubyte.gz`, `t10k-...` for the test split; gzipped or
  not), as Fashion-MNIST and MNIST are distributed;
* image folders, as vit_jax trains on them: `train/` and/or `test/` (any
  split name) holding one folder per class of `.jpg` / `.jpeg` / `.png`
  images, `<split>/<class>/<image>`. Labels index the sorted class folder
  names of `train/` (of `test/` without `train/`); every split must have the
  same class folders. PIL decodes them to `config.channels` (1: grayscale,
  3: RGB). When all images share one size they load as stored (a PNG folder
  is bit-identical to the arrays it was written from); otherwise
  `dataset_info(...).fixed_size` is False and they are resized to
  `config.image_size` as variable-size tfds datasets are, while the
  streaming path crops the original files (docs/data.md).

Everything is validated on load (uint8 pixels, ranks, equal lengths, labels
in [0, num_classes), IDX magic numbers and sizes, every image decoded) and
any problem raises `DataError` with a one-line message naming the file.
Local data never needs TensorFlow -- tensorflow / tensorflow_datasets are
imported only when a dataset has to come from tfds, for the streaming path,
and to resize an image folder whose images vary in size.

Batches carry the raw stored uint8 pixels: no normalisation and no
augmentation happen here. Cropping, flipping, RandAugment and mixup run on
device inside the jitted train step (`mixer.augment`), so the same code
augments host batches and a device-resident copy of the dataset.

Data order is a pure function of (config.seed, step): epoch e visits the
training set in the order `epoch_permutation(seed, e, num_train)`, the
remainder of each epoch that does not fill a global batch is dropped, and
process p of P takes the p-th contiguous slice of every global batch. Hence a
run resumed at step k sees exactly what an uninterrupted run sees from step k,
a P-process run sees the same global batches as a 1-process run, and the
device-resident pipeline in `mixer.train` (which gathers by the same
permutation) matches the host one example for example.

Evaluation covers every example of the eval split exactly once: the last
global batch is padded with zeros and `mask` marks real examples (vit_jax's
input pipeline drops that partial batch and so silently skips examples).

Datasets too large for host memory (ImageNet), and recipes that need the
Inception crop or a resize to a larger resolution (the paper's pre-training
and fine-tuning), use the streaming tf.data path instead:
`tfds_train_dataset` / `tfds_eval_dataset` yield the same batch dicts with
images already cropped or resized to `config.image_size` on the host (flip,
RandAugment and mixup still run on device). That path imports TensorFlow.

Modules, in the order data flows (each imports only those above it):

| module | owns |
| --- | --- |
| `base` | `DataError`, `DatasetInfo`, known class names, array validation |
| `splits` | the tfds split syntax |
| `folders` | image folders `<split>/<class>/<image>`: listing and decoding |
| `local` | local folders: `.npz` shards, CIFAR pickles, IDX files, image folders |
| `locate` | where a dataset is: `config.data_dir`, `$MIXER_DATA_DIR`, tfds |
| `download` | before a tfds download: is the network there (seconds); after a failed one: its leftovers removed |
| `tfds` | tfds builders, whole splits through tfds, tfds metadata and errors |
| `dataset` | `load_split` / `dataset_info` from whichever source has the data |
| `batches` | the deterministic training order and the padded eval pass |
| `stream` | the tf.data streaming path (ImageNet, Inception crops, resizing) |

This file is the public surface the rest of the project uses; nothing
outside `mixer/data/` imports its submodules except tests.
"""

from mixer.data.base import DataError
from mixer.data.base import DatasetUnavailable
from mixer.data.base import DatasetInfo
from mixer.data.base import ENV_DATA_DIR
from mixer.data.base import KNOWN_CLASS_NAMES
from mixer.data.batches import epoch_permutation
from mixer.data.batches import eval_batches
from mixer.data.batches import train_batches
from mixer.data.dataset import check_eval_split
from mixer.data.dataset import clear_cache
from mixer.data.dataset import dataset_info
from mixer.data.dataset import load_split
from mixer.data.dataset import steps_per_epoch
from mixer.data.locate import MANUAL_DATASETS
from mixer.data.locate import local_dir
from mixer.data.locate import tfds_data_dir
from mixer.data.stream import CENTER_CROP_FRACTION
from mixer.data.stream import tfds_eval_dataset
from mixer.data.stream import tfds_train_dataset

__all__ = [
    'CENTER_CROP_FRACTION', 'DataError', 'DatasetInfo', 'DatasetUnavailable',
    'ENV_DATA_DIR', 'check_eval_split',
    'KNOWN_CLASS_NAMES', 'MANUAL_DATASETS', 'clear_cache', 'dataset_info',
    'epoch_permutation', 'eval_batches', 'load_split', 'local_dir',
    'steps_per_epoch', 'tfds_data_dir', 'tfds_eval_dataset',
    'tfds_train_dataset', 'train_batches',
]
