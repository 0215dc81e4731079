"""From a stored image to a model tensor: the SD-LoRA/PILOT transforms and the image datasets that apply them.

Transforms: docs/sdlora.md section 6 and SDL utils/data.py. Datasets: SDL utils/data_manager.py (SDL's
``DummyDataset``).

SD-LoRA uses PILOT's ``build_transform`` for every dataset it reports: a strong random crop for training, a
bicubic resize plus centre crop for testing, and **no** mean/std normalisation, so the ViT sees inputs in [0, 1]
although its augreg weights were trained with mean = std = 0.5 (timm's ``pretrained_cfg`` of the augreg tags). We keep
that for fidelity; ``normalize=True`` is an opt-in deviation.

That recipe (``pilot``) is every row's under the fair protocol. Two references transform differently for their own
method (docs/baselines.md section 13), which the rows "as released" reproduce (``recipe``):

* ``coda``: CODA-Prompt (GT-RIPL/CODA-Prompt ``dataloaders/utils.py`` ``get_transform``) and InfLoRA on CIFAR-100,
  ImageNet-R and DomainNet (liangyanshuo/InfLoRA ``utils/data.py``): torchvision's default crop scale (0.08, 1),
  bilinear test resize, and on CIFAR-100 no test crop (``Resize(224)`` alone); their normalisation is mean 0, std 1.
* ``hide_cifar``: HiDe-Prompt on CIFAR-100 (thu-ml/HiDe-Prompt ``datasets.py`` ``build_cifar_transform``): bicubic
  crop at the default scale, ``ColorJitter(brightness=63/255)``, and CIFAR-100's mean and std at train and test.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms

# The timm augreg ViT-B/16 checkpoints' pretrained_cfg mean/std (what "normalize" means for the paper's backbone).
VIT_AUGREG_MEAN = (0.5, 0.5, 0.5)
VIT_AUGREG_STD = (0.5, 0.5, 0.5)

# PILOT's RandomResizedCrop(224, scale=(0.05, 1.0), ratio=(3/4, 4/3)): scale starts at 0.05, not torchvision's 0.08.
TRAIN_CROP_SCALE = (0.05, 1.0)
TRAIN_CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)


# HiDe-Prompt's CIFAR-100 statistics (thu-ml/HiDe-Prompt datasets.py build_cifar_transform).
CIFAR100_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR100_STD = (0.2675, 0.2565, 0.2761)
RECIPES = ("pilot", "coda", "hide_cifar")


def eval_resize_size(img_size: int) -> int:
    """Side of the test-time resize: 256 for 224, scaled with the same 256/224 ratio for other sizes."""
    return int(img_size * 256 / 224)


def build_transforms(
    img_size: int,
    normalize: bool = False,
    mean: Sequence[float] = VIT_AUGREG_MEAN,
    std: Sequence[float] = VIT_AUGREG_STD,
    recipe: str = "pilot",
    cifar: bool = False,
) -> tuple[transforms.Compose, transforms.Compose]:
    """The (train, test) transforms of SDL/PILOT ``build_transform`` for PIL RGB images, or of another reference.

    Args:
        img_size: side of the square output (224 in the paper).
        normalize: add ``Normalize(mean, std)`` after ``ToTensor`` (off in SD-LoRA, SDL utils/data.py).
        mean: per-channel mean used when ``normalize`` is set.
        std: per-channel std used when ``normalize`` is set.
        recipe: ``pilot`` (SDL/PILOT), ``coda`` or ``hide_cifar`` (module docstring).
        cifar: the images are CIFAR's 32 px ones (``coda``: test ``Resize`` without a crop).

    Returns:
        ``(train, test)``; both map a PIL image to a float tensor ``(3, img_size, img_size)``, in [0, 1] unless
        ``normalize`` is set or the recipe normalises.
    """
    bicubic, bilinear = transforms.InterpolationMode.BICUBIC, transforms.InterpolationMode.BILINEAR
    if recipe == "hide_cifar":
        stats = transforms.Normalize(CIFAR100_MEAN, CIFAR100_STD)
        train = [transforms.RandomResizedCrop(img_size, interpolation=bicubic), transforms.RandomHorizontalFlip(),
                 transforms.ColorJitter(brightness=63 / 255), transforms.ToTensor(), stats]
        test = [transforms.Resize(eval_resize_size(img_size), interpolation=bicubic), transforms.CenterCrop(img_size),
                transforms.ToTensor(), stats]
        return transforms.Compose(train), transforms.Compose(test)
    if recipe == "coda":
        train = [transforms.RandomResizedCrop(img_size), transforms.RandomHorizontalFlip(), transforms.ToTensor()]
        test = [transforms.Resize(img_size, interpolation=bilinear)] if cifar else [
            transforms.Resize(eval_resize_size(img_size), interpolation=bilinear), transforms.CenterCrop(img_size)]
        test.append(transforms.ToTensor())
    else:
        # Default (bilinear) interpolation for the train crop, bicubic (PIL code 3) for the test resize:
        # SDL:utils/data.py.
        train = [
            transforms.RandomResizedCrop(img_size, scale=TRAIN_CROP_SCALE, ratio=TRAIN_CROP_RATIO),
            transforms.RandomHorizontalFlip(p=0.5),
            transforms.ToTensor(),
        ]
        test = [
            transforms.Resize(eval_resize_size(img_size), interpolation=bicubic),
            transforms.CenterCrop(img_size),
            transforms.ToTensor(),
        ]
    if normalize:
        train.append(transforms.Normalize(tuple(mean), tuple(std)))
        test.append(transforms.Normalize(tuple(mean), tuple(std)))
    return transforms.Compose(train), transforms.Compose(test)


def untransformed(img: Image.Image) -> Image.Image:
    """The identity: a dataset given it yields the RGB PIL image, for Avalanche's transform groups to transform
    (``benchmarks.base.make_benchmark(..., transforms=...)``)."""
    return img


class ImagePathDataset(Dataset):
    """Images read lazily from files, as SDL's ``DummyDataset`` does for ``use_path=True`` (SDL utils/data_manager.py).

    Args:
        paths: image files.
        targets: one int label per file (``make_benchmark`` reads ``.targets``).
        transform: maps an RGB PIL image to a tensor (None: ``ToTensor``; :func:`untransformed`: the PIL image).
    """

    def __init__(self, paths: Sequence[str], targets: Sequence[int], transform=None):
        self.paths = list(paths)
        self.targets = [int(t) for t in targets]
        self.transform = transform if transform is not None else transforms.ToTensor()

    def __len__(self) -> int:
        return len(self.targets)

    def load(self, i: int) -> Image.Image:
        # .convert('RGB') turns grayscale, palette and RGBA files into 3 channels, as PILOT's pil_loader does.
        with Image.open(self.paths[i]) as img:
            return img.convert("RGB")

    def __getitem__(self, i: int):
        return self.transform(self.load(i)), self.targets[i]


class UInt8ImageDataset(ImagePathDataset):
    """Images held as a uint8 HWC array (CIFAR), turned into PIL images like SDL's ``Image.fromarray`` path."""

    def __init__(self, images: np.ndarray, targets: Sequence[int], transform=None):
        super().__init__([], targets, transform)
        self.images = images

    def load(self, i: int) -> Image.Image:
        return Image.fromarray(self.images[i])


def first_per_class(targets: Sequence[int], k: int | None) -> list[int]:
    """Indices of the first ``k`` items of each class in list order (all when ``k`` is None); seed-free."""
    if k is None:
        return list(range(len(targets)))
    seen: collections.Counter = collections.Counter()
    keep = []
    for i, t in enumerate(targets):
        if seen[t] < k:
            seen[t] += 1
            keep.append(i)
    return keep


def make_dataset(items: Any, targets: Sequence[int], per_class: int | None, transform) -> ImagePathDataset:
    """A dataset over the first ``per_class`` items of each class of ``items`` (paths or a uint8 array)."""
    idx = first_per_class(targets, per_class)
    labels = [targets[i] for i in idx]
    if isinstance(items, np.ndarray):
        return UInt8ImageDataset(items[idx], labels, transform)
    return ImagePathDataset([items[i] for i in idx], labels, transform)
