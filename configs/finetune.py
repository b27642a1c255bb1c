r"""Paper fine-tuning of a pretrained Mixer: `--config=configs/finetune.py:ARG`.

ARG is `MODEL,DATASET[,RESOLUTION]`: MODEL a paper variant written `B_16`
(or `B/16`, `Mixer-B_16`), DATASET one of cifar10, cifar100,
oxford_iiit_pet, oxford_flowers102, imagenet2012, RESOLUTION 224 (default)
or an integer multiple of it per the patch grid, e.g. 448 (Appendix C). The
recipe is `configs.common.paper_finetune`. Point `init_checkpoint` at an
official checkpoint:

    gsutil cp gs://mixer_models/imagenet21k/Mixer-B_16.npz .
    python train.py --config=configs/finetune.py:B_16,cifar10 \
        --config.init_checkpoint=Mixer-B_16.npz --workdir=workdirs/b16_cifar10
"""

from configs import common


def parse_arg(arg):
  """'B_16,cifar10,448' -> ('B/16', 'cifar10', 448)."""
  parts = [p.strip() for p in (arg or '').split(',')]
  if len(parts) not in (2, 3) or not all(parts):
    raise ValueError('configs/finetune.py needs MODEL,DATASET[,RESOLUTION], '
                     f'e.g. configs/finetune.py:B_16,cifar10; got {arg!r}')
  variant = parts[0]
  if variant.lower().startswith('mixer-'):
    variant = variant[len('mixer-'):]
  variant = variant.replace('_', '/').upper()
  image_size = int(parts[2]) if len(parts) == 3 else 224
  return variant, parts[1], image_size


def get_config(arg='B_16,cifar10'):
  variant, dataset, image_size = parse_arg(arg)
  return common.paper_finetune(variant, dataset, image_size)
