"""From a (train, test) dataset pair to an Avalanche class-incremental benchmark.

Class order follows the SD-LoRA/PILOT convention (docs/sdlora.md section 6): ``np.random.seed(order_seed);
order = np.random.permutation(n_classes)``, labels are remapped to their position in that order, and task k
takes the next ``increment`` classes. The order seed is a field of its own; the training seed is the job's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from core.config import Config, check
from core.registry import Registry

# --smoke: (config on stand-ins written under data_root at img_size px, its image channels, the backbone's img_size)
SmokeHook = Callable[["BenchmarkConfig", Path, int], tuple["BenchmarkConfig", int, int]]


@dataclass(frozen=True)
class BenchmarkInfo:
    """What the rest of the system knows about a benchmark; given at registration
    (``@BENCHMARKS.register("name", Config, info=BenchmarkInfo(...))``)."""

    train_size: int | None = None  # training images over all tasks (the dry-run cost model; None: unknown)
    test_size: int | None = None  # test images over all tasks
    n_classes: int | None = None  # classes of the real dataset
    data_help: str = ""  # one line: where the data goes (``--list``; docs/datasets.md has the details)
    smoke: SmokeHook | None = None  # how ``--smoke`` runs it on stand-ins (None: it cannot)
    fixture: Callable[[Path, int, int, int], None] | None = None  # writes a tiny stand-in (root, n, train, test)


BENCHMARKS: Registry = Registry("benchmark", lambda name: BenchmarkInfo())


@dataclass(frozen=True)
class BenchmarkConfig(Config):
    """Fields every benchmark has.

    Attributes:
        n_tasks: number of experiences; classes are split evenly (``init_classes`` may change the first).
        init_classes: classes in the first task (None: same as the others).
        order_seed: seed of the class permutation; None means "the job's seed" (the paper's convention,
            where one seed sets both). ``-1`` keeps the identity order (CODA-Prompt/InfLoRA convention).
    """

    n_tasks: int = 5
    init_classes: int | None = None
    order_seed: int | None = None

    def __post_init__(self) -> None:
        check(self.n_tasks >= 1, f"n_tasks must be >= 1, got {self.n_tasks}")
        check(self.init_classes is None or self.init_classes >= 1, "init_classes must be >= 1")

    def validate_paths(self) -> None:
        """Raise a :class:`UserError` naming the fix when the data this config needs is missing (default: none)."""


class ArrayDataset(Dataset):
    """Images held in memory as a float tensor (N, C, H, W) in [0, 1] with integer targets."""

    def __init__(self, images: torch.Tensor, targets: Sequence[int], transform=None):
        self.images = images
        self.targets = [int(t) for t in targets]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        x = self.images[i]
        if self.transform is not None:
            x = self.transform(x)
        return x, self.targets[i]


class RelabeledDataset(Dataset):
    """A view of ``base`` whose targets are remapped through ``mapping`` (original label -> position)."""

    def __init__(self, base: Dataset, mapping: np.ndarray):
        self.base = base
        self.mapping = mapping
        self.targets = [int(mapping[t]) for t in base.targets]

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        x, _ = self.base[i]
        return x, self.targets[i]


@dataclass
class CILBenchmark:
    """What a job needs from a benchmark: the Avalanche scenario plus its bookkeeping."""

    scenario: Any
    class_order: list[int]  # class_order[i] = original label of remapped class i
    classes_per_task: list[int]
    class_names: list[str]
    image_shape: tuple[int, int, int]
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def n_tasks(self) -> int:
        return len(self.classes_per_task)

    @property
    def n_classes(self) -> int:
        return sum(self.classes_per_task)


def class_order(n_classes: int, order_seed: int) -> list[int]:
    """The paper's class order: ``np.random.seed(seed); np.random.permutation(n)`` (-1: identity)."""
    if order_seed == -1:
        return list(range(n_classes))
    # a private RandomState seeded alike draws the same permutation and leaves the global numpy RNG alone
    return np.random.RandomState(order_seed).permutation(n_classes).tolist()


def split_sizes(n_classes: int, n_tasks: int, init_classes: int | None) -> list[int]:
    from core.errors import UserError

    first = init_classes if init_classes is not None else n_classes // n_tasks
    rest = n_tasks - 1
    if rest == 0:
        sizes = [n_classes]
    else:
        if (n_classes - first) % rest:
            raise UserError(
                f"{n_classes} classes cannot be split into a first task of {first} and {rest} equal tasks; "
                "change n_tasks or init_classes"
            )
        sizes = [first] + [(n_classes - first) // rest] * rest
    if first < 1 or min(sizes) < 1 or sum(sizes) != n_classes:
        raise UserError(f"cannot split {n_classes} classes into {n_tasks} tasks; change n_tasks")
    return sizes


def with_groups(dataset: Dataset, train: Callable, evaluation: Callable, initial: str):
    """``dataset`` as the Avalanche dataset ``class_incremental_benchmark`` would make of it (targets, task label 0),
    with transform groups ``train`` and ``eval`` applied to the image, starting in group ``initial``."""
    from avalanche.benchmarks.utils import _make_taskaware_classification_dataset  # Avalanche 0.6's exported maker

    return _make_taskaware_classification_dataset(
        dataset, transform_groups={"train": train, "eval": evaluation}, initial_transform_group=initial
    )


def make_benchmark(
    train: Dataset,
    test: Dataset,
    *,
    n_classes: int,
    cfg: BenchmarkConfig,
    seed: int,
    class_names: Sequence[str] | None = None,
    image_shape: tuple[int, int, int],
    info: dict[str, Any] | None = None,
    transforms: tuple[Callable, Callable] | None = None,
) -> CILBenchmark:
    """Remap labels to class-order positions and split into an Avalanche class-incremental scenario.

    ``transforms=(train, eval)`` hands the image transforms to Avalanche's transform groups instead of the
    datasets (which then yield untransformed images, e.g. PIL): the training data apply ``train`` in the
    ``train`` group (what the training loop uses) and ``eval`` in the ``eval`` group, so ``dataset.eval()``
    removes the augmentation, as statistics passes over training data need (SimpleCIL's prototypes, HiDe's class
    statistics; docs/baselines.md). Test data apply ``eval`` in both groups. None: the datasets transform their
    items themselves and both groups are the identity (a benchmark without augmentation needs nothing else).
    """
    from avalanche.benchmarks.scenarios.supervised import class_incremental_benchmark

    order = class_order(n_classes, seed if cfg.order_seed is None else cfg.order_seed)
    mapping = np.empty(n_classes, dtype=np.int64)
    mapping[order] = np.arange(n_classes)
    sizes = split_sizes(n_classes, cfg.n_tasks, cfg.init_classes)
    # A fixed class_order avoids Avalanche's torch.manual_seed side effect (docs/baselines.md section 12.2), and
    # explicit sizes stop it from dropping leftover classes.
    datasets = {"train": RelabeledDataset(train, mapping), "test": RelabeledDataset(test, mapping)}
    if transforms is not None:
        datasets = {"train": with_groups(datasets["train"], *transforms, initial="train"),
                    "test": with_groups(datasets["test"], transforms[1], transforms[1], initial="eval")}
    scenario = class_incremental_benchmark(
        datasets,
        class_order=list(range(n_classes)),
        num_classes_per_exp=sizes,
    )
    names = list(class_names) if class_names is not None else [str(c) for c in range(n_classes)]
    return CILBenchmark(scenario, order, sizes, [names[c] for c in order], image_shape, dict(info or {}))
