"""Handwritten digits in image folders: scikit-learn's 8x8 digits written as PNG files, read back with ImageFolder.

A worked example for docs/adding_a_benchmark.md, loaded with ``--import examples/digits_folder.py``; not a paper
benchmark. The data are the 1,797 digits that ship with scikit-learn (``sklearn.datasets.load_digits``, the UCI
optical-recognition test set, 16 grey levels), so nothing is downloaded. ``python examples/digits_folder.py ROOT``
writes them once as ``ROOT/digits/{train,test}/<digit>/<index>.png``; the benchmark reads that tree with torchvision's
``ImageFolder`` (label = position of the folder name in sorted order) and splits it into 5 tasks of 2 digits. The
``--smoke`` stand-in is the same writer with 2 training and 1 test image per digit.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from torchvision import datasets, transforms

from benchmarks.base import BENCHMARKS, BenchmarkConfig, BenchmarkInfo, CILBenchmark, make_benchmark
from benchmarks.fixtures import fixture_smoke
from benchmarks.paper_datasets import data_root
from core.config import check
from core.errors import UserError

# Per digit: the first 140 images (load_digits order) train, the next 34 test; 174 is the smallest class (digit 8).
TRAIN_PER_CLASS, TEST_PER_CLASS = 140, 34


def write_digits(root: Path, n_classes: int, per_class_train: int, per_class_test: int) -> None:
    """Write digits ``0 .. n_classes-1`` under ``root/digits``; also the ``--smoke`` fixture (``BenchmarkInfo``)."""
    digits = load_digits()
    if n_classes > 10 or per_class_train + per_class_test > 174:
        raise UserError("digits: at most 10 classes and 174 images per class (train + test)")
    for label in range(n_classes):
        index = np.flatnonzero(digits.target == label)
        for split, chosen in (("train", index[:per_class_train]),
                              ("test", index[per_class_train : per_class_train + per_class_test])):
            folder = root / "digits" / split / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            for i in chosen:  # grey levels 0..16 -> 0..255, ink bright on black as in Fashion-MNIST
                pixels = (digits.images[i] * 255 / 16).round().astype(np.uint8)
                Image.fromarray(pixels, "L").save(folder / f"{i:04d}.png")


@dataclass(frozen=True)
class DigitsConfig(BenchmarkConfig):
    """Attributes:
    root: data root holding ``digits/`` (None: ``$SDLB_DATA_ROOT``, which ``--data-root`` sets, else ``./data``).
    img_size: side of the model input; the 8 px digits are resized (bilinear) to it.
    """

    n_tasks: int = 5
    root: str | None = None
    img_size: int = 28

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.img_size >= 8, f"img_size must be >= 8, got {self.img_size}")

    def validate_paths(self) -> None:
        base = data_root(self.root) / "digits"
        if not ((base / "train").is_dir() and (base / "test").is_dir()):
            raise UserError(f"digits not found: expected {base}/train/<digit>/*.png and {base}/test/...; write "
                            f"them with 'python examples/digits_folder.py {data_root(self.root)}'")


@BENCHMARKS.register("digits", DigitsConfig, info=BenchmarkInfo(
    train_size=10 * TRAIN_PER_CLASS, test_size=10 * TEST_PER_CLASS, n_classes=10,
    data_help="digits/{train,test}/<digit>/*.png (python examples/digits_folder.py DATA_ROOT writes them)",
    fixture=write_digits, smoke=fixture_smoke("digits", channels=1)))
def digits(cfg: DigitsConfig, seed: int) -> CILBenchmark:
    """scikit-learn's 8x8 digits read from PNG folders (5 x 2 classes)."""
    cfg.validate_paths()
    base = data_root(cfg.root) / "digits"
    # one channel in [0, 1], like every benchmark here (the backbones normalise nothing)
    tf = transforms.Compose([transforms.Grayscale(), transforms.Resize(cfg.img_size), transforms.ToTensor()])
    train, test = (datasets.ImageFolder(str(base / split), transform=tf) for split in ("train", "test"))
    if train.classes != test.classes:  # ImageFolder labels are positions in each split's own sorted folder list
        raise UserError(f"digits: {base}/train and {base}/test must hold the same digit folders; write them again")
    return make_benchmark(
        train, test, n_classes=len(train.classes), cfg=cfg, seed=seed, class_names=train.classes,
        image_shape=(1, cfg.img_size, cfg.img_size), info={"n_train": len(train), "n_test": len(test)},
    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="Write scikit-learn's digits as PNG folders under a data root.")
    ap.add_argument("root", nargs="?", default="data", help="data root (default: ./data)")
    root = Path(ap.parse_args().root)
    write_digits(root, 10, TRAIN_PER_CLASS, TEST_PER_CLASS)
    print(f"wrote {root / 'digits'}: {10 * TRAIN_PER_CLASS} training and {10 * TEST_PER_CLASS} test images")
