"""A synthetic benchmark for tests: each class is a fixed random image template plus noise (no files needed)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks.base import BENCHMARKS, ArrayDataset, BenchmarkConfig, BenchmarkInfo, CILBenchmark, make_benchmark
from core.config import check


@dataclass(frozen=True)
class SyntheticConfig(BenchmarkConfig):
    """Attributes:
    n_classes: number of classes. train_per_class/test_per_class: images per class.
    img_size/channels: image shape. noise: std of the per-image noise around the class template.
    data_seed: seed of the templates and noise (independent of the class order and training seeds).
    """

    n_tasks: int = 3
    n_classes: int = 6
    train_per_class: int = 8
    test_per_class: int = 4
    img_size: int = 16
    channels: int = 3
    noise: float = 0.15
    data_seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.n_classes >= self.n_tasks, "n_classes must be >= n_tasks")
        check(self.train_per_class >= 1 and self.test_per_class >= 1, "images per class must be >= 1")
        check(self.img_size >= 4 and self.channels >= 1, "img_size must be >= 4 and channels >= 1")

    def validate_paths(self) -> None:
        return None


def synthetic_arrays(cfg: SyntheticConfig, per_class: int, offset: int) -> tuple[torch.Tensor, list[int]]:
    g = torch.Generator().manual_seed(cfg.data_seed)
    templates = torch.rand(cfg.n_classes, cfg.channels, cfg.img_size, cfg.img_size, generator=g)
    g.manual_seed(cfg.data_seed * 7919 + offset)
    noise = torch.randn(cfg.n_classes, per_class, cfg.channels, cfg.img_size, cfg.img_size, generator=g)
    images = (templates[:, None] + cfg.noise * noise).clamp(0, 1)
    targets = [c for c in range(cfg.n_classes) for _ in range(per_class)]
    return images.flatten(0, 1), targets


def _smoke(cfg: SyntheticConfig, data_root: Path, img_size: int):
    """--smoke: generated in memory, at the smoke image size."""
    return dataclasses.replace(cfg, img_size=img_size), cfg.channels, img_size


@BENCHMARKS.register("synthetic", SyntheticConfig, info=BenchmarkInfo(smoke=_smoke, data_help="generated in memory: no files"))
def synthetic(cfg: SyntheticConfig, seed: int) -> CILBenchmark:
    """Synthetic class templates plus noise; for tests and smoke runs."""
    train = ArrayDataset(*synthetic_arrays(cfg, cfg.train_per_class, 1))
    test = ArrayDataset(*synthetic_arrays(cfg, cfg.test_per_class, 2))
    shape = (cfg.channels, cfg.img_size, cfg.img_size)
    return make_benchmark(train, test, n_classes=cfg.n_classes, cfg=cfg, seed=seed, image_shape=shape)
