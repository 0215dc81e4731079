"""Fashion-MNIST from the IDX files of Debian's ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``).

The 60,000 training images are cut once, by a fixed permutation (seed 0), into two halves: the first half
pretrains the CPU backbone (``benchmarks/pretrain_fmnist.py``), the second feeds the continual stream. So the
backbone already knows the label space but has never seen a continual image: an in-domain miniature of the
paper's regime, where ImageNet-21K pretraining covers the downstream classes.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from benchmarks.base import BENCHMARKS, ArrayDataset, BenchmarkConfig, BenchmarkInfo, CILBenchmark, make_benchmark
from core.config import check
from core.errors import UserError

DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
HALF_SPLIT_SEED = 0  # fixes which 30,000 training images pretrain the backbone; never change it


def fmnist_root(root: str | None) -> Path:
    return Path(root or os.environ.get("SDLB_FMNIST_ROOT") or DEFAULT_ROOT)


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[0:4], "big")
    ndim = magic & 0xFF
    check(magic >> 8 == 0x08, f"{path} is not an unsigned-byte IDX file")
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def idx_paths(root: str | None = None) -> dict[str, Path]:
    """Paths of the four IDX files (``.gz`` or plain); one clear error when one is missing."""
    base = fmnist_root(root)
    paths = {}
    for key, stem in FILES.items():
        candidates = [base / (stem + ".gz"), base / stem]
        paths[key] = next((p for p in candidates if p.exists()), None)
        if paths[key] is None:
            raise UserError(
                f"Fashion-MNIST not found: expected {candidates[0]} (install it with "
                f"'apt-get install dataset-fashion-mnist', or set SDLB_FMNIST_ROOT / the benchmark's root)"
            )
    return paths


def load_fmnist(root: str | None = None) -> dict[str, np.ndarray]:
    return {key: _read_idx(path) for key, path in idx_paths(root).items()}


def halves(n: int = 60000) -> tuple[np.ndarray, np.ndarray]:
    """(pretraining indices, continual indices) of the training set: a fixed, disjoint 50/50 cut."""
    perm = np.random.RandomState(HALF_SPLIT_SEED).permutation(n)
    return np.sort(perm[: n // 2]), np.sort(perm[n // 2 :])


def to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)


def per_class_subset(labels: np.ndarray, pool: np.ndarray, per_class: int | None) -> np.ndarray:
    """The first ``per_class`` indices of each class, in pool order (deterministic, seed-free)."""
    if per_class is None:
        return pool
    keep = np.concatenate([pool[labels[pool] == c][:per_class] for c in np.unique(labels[pool])])
    return np.sort(keep)


@dataclass(frozen=True)
class SplitFMNISTConfig(BenchmarkConfig):
    """Split Fashion-MNIST: 5 tasks of 2 classes from the continual half of the training images.

    Attributes:
        root: folder with the IDX files (default: Debian's, or $SDLB_FMNIST_ROOT).
        train_per_class: training images per class in the stream (from the continual half).
        test_per_class: test images per class (None: the full test set, 1,000 per class).
    """

    n_tasks: int = 5
    root: str | None = None
    train_per_class: int | None = 1000
    test_per_class: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.train_per_class is None or self.train_per_class >= 1, "train_per_class must be >= 1")
        check(self.test_per_class is None or self.test_per_class >= 1, "test_per_class must be >= 1")

    def validate_paths(self) -> None:
        idx_paths(self.root)


def _smoke(cfg: SplitFMNISTConfig, data_root: Path, img_size: int):
    """--smoke: the real files (small already) at their own 28 px, one channel; only backbone and training shrink."""
    return cfg, 1, 28


@BENCHMARKS.register("split_fmnist", SplitFMNISTConfig, info=BenchmarkInfo(
    train_size=10000, test_size=10000, n_classes=10, smoke=_smoke,
    data_help="fashion_mnist/ (the four idx files; fetched once by benchmarks/fmnist.py)"))
def split_fmnist(cfg: SplitFMNISTConfig, seed: int) -> CILBenchmark:
    """Split Fashion-MNIST (5 x 2 classes), continual images disjoint from the CPU backbone's pretraining."""
    raw = load_fmnist(cfg.root)
    _, continual = halves(len(raw["train_labels"]))
    train_idx = per_class_subset(raw["train_labels"], continual, cfg.train_per_class)
    test_idx = per_class_subset(raw["test_labels"], np.arange(len(raw["test_labels"])), cfg.test_per_class)
    train = ArrayDataset(to_tensor(raw["train_images"][train_idx]), raw["train_labels"][train_idx])
    test = ArrayDataset(to_tensor(raw["test_images"][test_idx]), raw["test_labels"][test_idx])
    return make_benchmark(
        train, test, n_classes=10, cfg=cfg, seed=seed, class_names=CLASS_NAMES, image_shape=(1, 28, 28),
        info={"split": "continual-half", "n_train": len(train), "n_test": len(test)},
    )
