"""Split Fashion-MNIST in a new style: the quick suite's stream with every image restyled (issue 17's candidate).

The continual half, class order and tasks are exactly ``split_fmnist``'s; only the images change, by a fixed,
deterministic style that the backbone (pretrained on the clean pretraining half) never saw:

* ``inverted``: intensities ``1 - x`` (dark garments on a white ground);
* ``rot90``: every image rotated by 90 degrees.

``bench/mini_designs.py`` measured, before any method ran, how far frozen features lag behind adaptation in each
style (docs/results/mini/DESIGN.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from benchmarks.base import BENCHMARKS, ArrayDataset, BenchmarkInfo, CILBenchmark, make_benchmark
from benchmarks.fmnist import CLASS_NAMES, SplitFMNISTConfig, halves, load_fmnist, per_class_subset, to_tensor
from core.config import check

STYLES = ("inverted", "rot90")


def styled(x: torch.Tensor, style: str) -> torch.Tensor:
    """Images (N, 1, H, W) in ``style`` (``clean`` returns them unchanged)."""
    if style == "clean":
        return x
    if style == "inverted":
        return 1.0 - x
    if style == "rot90":
        return torch.rot90(x, 1, dims=(2, 3)).contiguous()
    raise ValueError(f"unknown style {style!r}; styles: clean, {', '.join(STYLES)}")


@dataclass(frozen=True)
class StyledFMNISTConfig(SplitFMNISTConfig):
    """``split_fmnist``'s fields, plus the stream's ``style`` (one of ``inverted``, ``rot90``)."""

    style: str = "inverted"

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.style in STYLES, f"style must be one of {', '.join(STYLES)}, got {self.style!r}")


@BENCHMARKS.register("split_fmnist_styled", StyledFMNISTConfig, info=BenchmarkInfo(
    train_size=10000, test_size=10000, n_classes=10,
    data_help="fashion_mnist/ (the four idx files; fetched once by benchmarks/fmnist.py)"))
def split_fmnist_styled(cfg: StyledFMNISTConfig, seed: int) -> CILBenchmark:
    """Split Fashion-MNIST (5 x 2 classes) from the continual half, every image in ``cfg.style``."""
    raw = load_fmnist(cfg.root)
    _, continual = halves(len(raw["train_labels"]))
    parts = {}
    for split, pool in (("train", continual), ("test", np.arange(len(raw["test_labels"])))):
        per_class = cfg.train_per_class if split == "train" else cfg.test_per_class
        idx = per_class_subset(raw[f"{split}_labels"], pool, per_class)
        parts[split] = ArrayDataset(styled(to_tensor(raw[f"{split}_images"][idx]), cfg.style),
                                    raw[f"{split}_labels"][idx])
    return make_benchmark(
        parts["train"], parts["test"], n_classes=10, cfg=cfg, seed=seed, class_names=CLASS_NAMES,
        image_shape=(1, 28, 28), info={"split": "continual-half", "style": cfg.style, "n_train": len(parts["train"]),
                                       "n_test": len(parts["test"])},
    )
