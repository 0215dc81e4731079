"""Tiny stand-ins for the paper's datasets, written in each real on-disk format (docs/datasets.md, "Fixtures and smoke
runs").

For tests and smoke runs (``BenchmarkInfo.fixture`` and ``.smoke`` of each dataset): ``write_fixture("imagenet_r", root)`` lays out under ``root`` exactly what the loaders
of :mod:`benchmarks.paper_datasets` expect from the real data, with the real class counts by default (so class
orders and task splits are the paper's) but a few images of 8-20 px per class. Each class has its own colour, so a
model can learn something in a smoke run. The pitfalls the real data hold are reproduced on purpose:

* non-square images of several sizes, some grayscale JPEGs and palette PNGs (``.convert('RGB')``, docs/datasets.md,
  "Fixtures and smoke runs");
* wnid folder names that ImageFolder sorts (SDL utils/data_manager.py), an upper-case ``.JPEG`` suffix, names with
  spaces and a stray non-image file that ImageFolder skips;
* CODA lists whose labels are not in sorted-path order and whose entries are shuffled (CODA dataloaders/splits;
  docs/datasets.md, "Fixtures and smoke runs");
* DomainNet names with capitals and hyphens, ``<domain>_<label+1:03d>_<n:06d>.jpg`` files, no quickdraw (CODA
  dataloaders/splits);
* CIFAR pickles with the real keys and R, G, B planes (torchvision datasets/cifar.py), which torchvision's MD5 check
  would reject.
"""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from benchmarks.base import BENCHMARKS
from core.errors import UserError

# (width, height): non-square, both orientations, all tiny so that 345 x 3 images take a fraction of a second.
SIZES = ((12, 9), (9, 14), (16, 10), (10, 8), (20, 13), (8, 18))
# The 15 rendition prefixes of ImageNet-R file names (hendrycks/imagenet-r).
RENDITIONS = (
    "art", "cartoon", "deviantart", "embroidery", "graffiti", "graphic", "misc", "origami", "painting",
    "sculpture", "sketch", "sticker", "tattoo", "toy", "videogame",
)  # fmt: skip
# CODA's DomainNet lists hold five domains: quickdraw is missing (CODA dataloaders/splits, CODA issue #19).
DOMAINS = ("clipart", "infograph", "painting", "real", "sketch")
# Names that trip naive sorting (the official DomainNet lists): "cello" before "cell_phone", a capitalised and two
# hyphenated classes.
DOMAINNET_NAMES = ("aircraft_carrier", "cello", "cell_phone", "The_Great_Wall_of_China", "t-shirt", "teddy-bear")
CUB_NAMES = (
    "Black_footed_Albatross", "Laysan_Albatross", "Sooty_Albatross", "Groove_billed_Ani", "Crested_Auklet",
    "Least_Auklet", "Parakeet_Auklet", "Rhinoceros_Auklet", "Brewer_Blackbird", "Red_winged_Blackbird",
)  # fmt: skip
CIFAR_NAMES = (  # meta's fine_label_names of the real release, alphabetical
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle", "bowl", "boy",
    "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock",
    "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish",
    "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange",
    "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine",
    "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk",
    "skyscraper", "snail", "snake", "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale",
    "willow_tree", "wolf", "woman", "worm",
)  # fmt: skip


class ImageWriter:
    """Writes small noisy images whose colour encodes the class; the mode follows a fixed cycle."""

    def __init__(self, n_classes: int, seed: int = 0):
        self.rng = np.random.RandomState(seed)
        self.colours = self.rng.randint(30, 226, size=(n_classes, 3))
        self.count = 0
        self.made: set[Path] = set()  # mkdir is a slow syscall on some file systems: once per folder

    def pixels(self, label: int, width: int, height: int) -> np.ndarray:
        noise = self.rng.randint(-25, 26, size=(height, width, 3))
        return np.clip(self.colours[label] + noise, 0, 255).astype(np.uint8)

    def write(self, path: Path, label: int) -> None:
        """Save one image; ``.png`` gives a palette image, every third JPEG is grayscale."""
        width, height = SIZES[self.count % len(SIZES)]
        img = Image.fromarray(self.pixels(label, width, height), "RGB")
        if path.suffix.lower() == ".png":
            img = img.quantize(colors=16)  # mode "P"
        elif self.count % 3 == 1:
            img = img.convert("L")
        self.count += 1
        if path.parent not in self.made:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.made.add(path.parent)
        img.save(path)


def wnids(n: int, seed: int) -> list[str]:
    """``n`` distinct, sorted, WordNet-id-like names (``n01443537``)."""
    offsets = np.random.RandomState(seed).randint(0, 5000, size=n)
    return [f"n{1440764 + 7919 * i + int(o):08d}" for i, o in enumerate(offsets)]


def suffix(label: int, k: int, upper_jpeg: bool = False) -> str:
    """A mix of suffixes: mostly ``.jpg``, some palette ``.png``, optionally an upper-case ``.JPEG``."""
    if (label + k) % 5 == 4:
        return ".png"
    return ".JPEG" if upper_jpeg and (label + k) % 5 == 3 else ".jpg"


def write_pilot_folders(base: Path, classes: list[str], n_train: int, n_test: int, file_name: Callable) -> None:
    """PILOT/APER layout ``base/{train,test}/<class>/<file>`` with the same class folders in both (SDL
    utils/data_manager.py)."""
    writer = ImageWriter(len(classes))
    for label, cls in enumerate(classes):
        for split, count, start in (("train", n_train, 0), ("test", n_test, n_train)):
            for k in range(start, start + count):
                writer.write(base / split / cls / file_name(label, cls, k), label)
    (base / "train" / classes[0] / "Thumbs.db").write_bytes(b"not an image")  # ImageFolder skips it


def write_split_lists(lists: Path, stem: str, entries: dict[str, list[tuple[str, int]]], seed: int) -> None:
    """CODA-Prompt's ``<stem>_{train,test}.yaml``: keys ``data`` and ``targets``, entries shuffled (CODA
    dataloaders/splits)."""
    lists.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(seed)
    for split, items in entries.items():
        items = [items[i] for i in rng.permutation(len(items))]
        doc = {"data": [path for path, _ in items], "targets": [label for _, label in items]}
        with open(lists / f"{stem}_{split}.yaml", "w", encoding="utf-8") as f:
            yaml.dump(doc, f, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), default_flow_style=False)


def not_sorted_labels(n: int, seed: int) -> np.ndarray:
    """A permutation of ``range(n)`` that differs from the identity (when n > 1): CODA's labels are not sorted."""
    perm = np.random.RandomState(seed).permutation(n)
    return np.roll(perm, 1) if n > 1 and (perm == np.arange(n)).all() else perm


def write_imagenet_r(root: Path, n: int, n_train: int, n_test: int) -> None:
    """Both ImageNet-R layouts: PILOT folders (SDL issue #7) and the raw release with CODA lists (hendrycks/imagenet-r;
    CODA dataloaders/splits)."""
    classes = wnids(n, seed=1)

    def file_name(label: int, cls: str, k: int) -> str:
        return f"{RENDITIONS[(label + k) % len(RENDITIONS)]}_{k}{suffix(label, k)}"

    write_pilot_folders(root / "imagenet-r", classes, n_train, n_test, file_name)
    # The raw release has no split: CODA's lists cut it, with their own labels (not the sorted-wnid index).
    writer, coda_label = ImageWriter(n, seed=2), not_sorted_labels(n, seed=3)
    entries: dict[str, list[tuple[str, int]]] = {"train": [], "test": []}
    for sorted_index, wnid in enumerate(classes):
        label = int(coda_label[sorted_index])
        for k in range(n_train + n_test):
            name = f"{RENDITIONS[(label + 2 * k) % len(RENDITIONS)]}_{k}{suffix(label, k)}"
            writer.write(root / "imagenet-r" / wnid / name, label)
            entries["train" if k < n_train else "test"].append((f"data/imagenet-r/{wnid}/{name}", label))
    write_split_lists(root / "splits", "imagenet-r", entries, seed=4)


def write_imagenet_a(root: Path, n: int, n_train: int, n_test: int) -> None:
    """ImageNet-A in PILOT folders; file names with spaces like the release's (SDL issue #13)."""

    def file_name(label: int, cls: str, k: int) -> str:
        return f"0.{label:03d}{k:03d}_thing _ thing_0.5{suffix(label, k, upper_jpeg=True)}"

    write_pilot_folders(root / "imagenet-a", wnids(n, seed=5), n_train, n_test, file_name)


def write_cub200(root: Path, n: int, n_train: int, n_test: int) -> None:
    """CUB-200 in PILOT folders named like the official release (``001.Black_footed_Albatross``, PILOT
    utils/data.py)."""
    classes = [f"{i + 1:03d}.{CUB_NAMES[i] if i < len(CUB_NAMES) else f'Bird_{i + 1:03d}'}" for i in range(n)]

    def file_name(label: int, cls: str, k: int) -> str:
        return f"{cls.split('.', 1)[1]}_{k + 1:04d}_{100000 + 10 * label + k}{suffix(label, k)}"

    write_pilot_folders(root / "cub", classes, n_train, n_test, file_name)


def write_domainnet(root: Path, n: int, n_train: int, n_test: int) -> None:
    """DomainNet class folders per domain plus CODA lists whose paths start with ``data/DomainNet`` (CODA
    dataloaders/splits)."""
    names = [DOMAINNET_NAMES[i] if i < len(DOMAINNET_NAMES) else f"object_{i:03d}" for i in range(n)]
    writer = ImageWriter(n, seed=6)
    entries: dict[str, list[tuple[str, int]]] = {"train": [], "test": []}
    for label, cls in enumerate(names):
        for k in range(n_train + n_test):
            domain = DOMAINS[(label + k) % len(DOMAINS)]
            rel = f"{domain}/{cls}/{domain}_{label + 1:03d}_{k + 1:06d}.jpg"
            writer.write(root / "DomainNet" / rel, label)
            entries["train" if k < n_train else "test"].append((f"data/DomainNet/{rel}", label))
    write_split_lists(root / "splits", "domainnet", entries, seed=7)


def write_cifar100(root: Path, n: int, n_train: int, n_test: int) -> None:
    """The three python pickles of ``cifar-100-python`` with the real keys; rows are R, G, B planes (torchvision
    datasets/cifar.py)."""
    base = root / "cifar-100-python"
    base.mkdir(parents=True, exist_ok=True)
    names = [CIFAR_NAMES[i] if i < len(CIFAR_NAMES) else f"class_{i}" for i in range(n)]
    writer = ImageWriter(n, seed=8)
    for split, per_class, batch in (
        ("train", n_train, "training batch 1 of 1"),
        ("test", n_test, "testing batch 1 of 1"),
    ):
        labels = np.random.RandomState(9).permutation(np.repeat(np.arange(n), per_class)).tolist()
        rows = [writer.pixels(y, 32, 32).transpose(2, 0, 1).reshape(-1) for y in labels]
        blob = {
            "filenames": [f"{names[y]}_s_{i:06d}.png" for i, y in enumerate(labels)],
            "batch_label": batch,
            "fine_labels": labels,
            "coarse_labels": [y // 5 for y in labels],
            "data": np.stack(rows).astype(np.uint8),
        }
        with open(base / split, "wb") as f:
            pickle.dump(blob, f, protocol=2)
    meta = {"fine_label_names": names, "coarse_label_names": [f"superclass_{i}" for i in range((n + 4) // 5)]}
    with open(base / "meta", "wb") as f:
        pickle.dump(meta, f, protocol=2)


def write_fixture(
    name: str, root: Path, n_classes: int | None = None, per_class_train: int = 2, per_class_test: int = 1
) -> None:
    """Write a tiny stand-in for benchmark ``name`` under ``root`` in the real on-disk format.

    Args:
        name: a benchmark name (``cifar100``, ``imagenet_r``, ``imagenet_a``, ``domainnet``, ``cub200``).
            ``imagenet_r`` writes both its layouts (PILOT folders, and the raw release with CODA lists).
        root: the data root to write into (created if needed); pass it as the benchmark's ``root``.
        n_classes: number of classes (None: the real count, so that class orders match the paper's).
        per_class_train: training images per class.
        per_class_test: test images per class.
    """
    info = BENCHMARKS.get(name).info
    if info.fixture is None:
        with_fixture = [b for b in BENCHMARKS.names() if b in BENCHMARKS and BENCHMARKS.get(b).info.fixture]
        raise UserError(f"no fixture for {name!r}; valid names are: {', '.join(with_fixture)}")
    n = info.n_classes if n_classes is None else n_classes
    if n < 1 or per_class_train < 1 or per_class_test < 1:
        raise UserError("a fixture needs n_classes, per_class_train and per_class_test >= 1")
    info.fixture(Path(root), n, per_class_train, per_class_test)


def fixture_smoke(name: str, channels: int = 3) -> Callable:
    """``BenchmarkInfo.smoke`` of dataset ``name`` on disk: its fixture under the smoke data root (written once per
    process and folder), read at the smoke image size with ``channels`` image channels (its config's ``root`` and
    ``img_size`` fields are set)."""

    def smoke(cfg, data_root: Path, img_size: int):
        if (name, str(data_root)) not in _WRITTEN:
            write_fixture(name, data_root)
            _WRITTEN.add((name, str(data_root)))
        return dataclasses.replace(cfg, root=str(data_root), img_size=img_size), channels, img_size

    return smoke


_WRITTEN: set[tuple[str, str]] = set()
