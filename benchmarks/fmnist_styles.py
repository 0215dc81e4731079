"""Split Fashion-MNIST in a new style: the quick suite's stream with every image restyled (issue 17's candidate).

The continual half, class order and tasks are exactly ``split_fmnist``'s; only the images change, by a fixed,
deterministic style that the backbone (pretrained on the clean pretraining half) never saw:

* ``inverted``: intensities ``1 - x`` (dark garments on a white ground);
* ``rot90``: every image rotated by 90 degrees;
* ``flip_v``: every image upside down;
* ``patch_shuffle``: the 4 x 4 grid of 7 x 7 tiles (the CPU backbone's patches) in one fixed, seeded
  arrangement: each patch token's content is unchanged, its position is not;
* ``blur``: a Gaussian blur (sigma 1.5 pixels);
* ``mixed``: each image in one of ``rot90``, ``flip_v``, ``patch_shuffle``, drawn once per image (seed 1993)
  in the order the benchmark lists them: renditions of several kinds, as ImageNet-R's, with the polarity kept.

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

STYLES = ("inverted", "rot90", "flip_v", "patch_shuffle", "blur", "mixed")
# mixed: each image in one of these styles, drawn once per image position with a fixed seed (renditions of mixed
# kinds, as ImageNet-R's); polarity is kept (no inversion), geometry and arrangement change.
MIXED = ("rot90", "flip_v", "patch_shuffle")
# patch_shuffle's fixed arrangement of the 4 x 4 grid of 7 x 7 tiles (the backbone's patch size): a seeded
# permutation, so every image of the stream, train and test, is rearranged the same way.
PATCH_ORDER = tuple(np.random.default_rng(1993).permutation(16).tolist())


def styled(x: torch.Tensor, style: str) -> torch.Tensor:
    """Images (N, 1, H, W) in ``style`` (``clean`` returns them unchanged)."""
    if style == "clean":
        return x
    if style == "inverted":
        return 1.0 - x
    if style == "rot90":
        return torch.rot90(x, 1, dims=(2, 3)).contiguous()
    if style == "flip_v":
        return torch.flip(x, dims=(2,)).contiguous()
    if style == "patch_shuffle":
        n, c, h, w = x.shape
        tiles = x.reshape(n, c, 4, h // 4, 4, w // 4).permute(0, 1, 2, 4, 3, 5).reshape(n, c, 16, h // 4, w // 4)
        tiles = tiles[:, :, list(PATCH_ORDER)]
        return tiles.reshape(n, c, 4, 4, h // 4, w // 4).permute(0, 1, 2, 4, 3, 5).reshape(n, c, h, w).contiguous()
    if style == "mixed":
        pick = torch.randint(len(MIXED), (len(x),), generator=torch.Generator().manual_seed(1993))
        out = x.clone()
        for i, name in enumerate(MIXED):
            out[pick == i] = styled(x[pick == i], name)
        return out
    if style == "blur":
        k = torch.exp(-0.5 * (torch.arange(-3, 4, dtype=x.dtype) / 1.5) ** 2)
        k = k / k.sum()
        out = torch.nn.functional.conv2d(x, k.view(1, 1, 1, 7), padding=(0, 3))
        return torch.nn.functional.conv2d(out, k.view(1, 1, 7, 1), padding=(3, 0))
    raise ValueError(f"unknown style {style!r}; styles: clean, {', '.join(STYLES)}")


@dataclass(frozen=True)
class StyledFMNISTConfig(SplitFMNISTConfig):
    """``split_fmnist``'s fields, plus the stream's ``style`` (one of :data:`STYLES`)."""

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
