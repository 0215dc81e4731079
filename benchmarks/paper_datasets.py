"""The paper's datasets read from a data root: CIFAR-100, ImageNet-R, ImageNet-A, DomainNet and CUB-200.

Every fact about on-disk formats, splits and class orders is in ``docs/datasets.md``, each with its primary
source. Sources below: SDL = WuYichen-97/SD-Lora-CL@8bacded, PILOT = sun-hailong/LAMDA-PILOT@2647455, CODA =
GT-RIPL/CODA-Prompt@6417d4f, INF = liangyanshuo/InfLoRA@e08b00e. In short:

* ``cifar100``: the python pickles ``<root>/cifar-100-python/{train,test,meta}`` read by our own reader, because
  torchvision's MD5 check rejects any fixture and then tries to download (torchvision ``CIFAR100._check_integrity``).
* ``imagenet_r``, ``imagenet_a``, ``cub200``: PILOT/APER pre-split folders ``<root>/<name>/{train,test}/<class>/*``
  read with ImageFolder semantics (label = index in the sorted folder names, SDL utils/data_manager.py). ``imagenet_r``
  can instead read CODA-Prompt's YAML lists (``split="coda"``), whose labels are taken from the file (CODA
  dataloaders/splits).
* ``domainnet``: CODA/InfLoRA YAML lists (CODA dataloaders/splits); SD-LoRA ships no DomainNet loader at all (SDL
  utils/data_manager.py).

The class order is the SD-LoRA one (``np.random.seed(seed); np.random.permutation(n)``, applied by
:func:`benchmarks.base.make_benchmark`); ``order_seed=-1`` gives CODA/InfLoRA's identity order (CODA trainer.py; INF
configs/*.json). The data root is the ``root`` field, else ``$SDLB_DATA_ROOT``, else ``./data`` (the hard-coded root of
SDL/PILOT).
"""

from __future__ import annotations

import functools
import os
import pickle
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import yaml
from torchvision.datasets.folder import IMG_EXTENSIONS

from benchmarks.base import BENCHMARKS, BenchmarkConfig, BenchmarkInfo, CILBenchmark, make_benchmark
from benchmarks.fixtures import (
    fixture_smoke,
    write_cifar100,
    write_cub200,
    write_domainnet,
    write_imagenet_a,
    write_imagenet_r,
)
from benchmarks.transforms import (
    RECIPES,
    VIT_AUGREG_MEAN,
    VIT_AUGREG_STD,
    build_transforms,
    make_dataset,
    untransformed,
)
from core.config import check
from core.errors import UserError

DATA_ROOT_ENV = "SDLB_DATA_ROOT"
DEFAULT_DATA_ROOT = "./data"
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: the real lists hold 24,000+ entries


def data_root(root: str | None) -> Path:
    """The data root: ``root`` if given, else ``$SDLB_DATA_ROOT``, else ``./data``."""
    return Path(root or os.environ.get(DATA_ROOT_ENV) or DEFAULT_DATA_ROOT).expanduser()


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())


def prepare_command(name: str, root: Path) -> str:
    """The command that fetches and lays out dataset ``name`` under ``root`` (benchmarks/prepare)."""
    return f"'python -m benchmarks.prepare {name} --data-root {root}'"


def _few(names: Sequence[str], k: int = 3) -> str:
    shown = ", ".join(list(names)[:k])
    return shown + (", ..." if len(names) > k else "")


# ----------------------------------------------------------------------------------------------------------------
# Configs


@dataclass(frozen=True)
class PaperDataConfig(BenchmarkConfig):
    """Fields shared by the paper's datasets.

    Attributes:
        root: data root (None: ``$SDLB_DATA_ROOT``, else ``./data``, resolved when the data are read).
        img_size: side of the square model input (224 in the paper).
        normalize: add mean/std normalisation; off by default because SD-LoRA feeds [0, 1] inputs (SDL utils/data.py).
        mean: normalisation mean (default: the augreg ViT's 0.5), used only with ``normalize``.
        std: normalisation std (default 0.5), used only with ``normalize``.
        train_per_class: keep only the first k training images of each class (None: all); for smoke runs.
        test_per_class: the same for the test images.
        transform: the transform recipe (benchmarks/transforms.py): ``pilot``, SD-LoRA's and every fair row's;
            ``coda``, CODA-Prompt's and InfLoRA's own; ``hide_cifar``, HiDe-Prompt's on CIFAR-100 (CIFAR-100 only,
            and it normalises itself). The rows "as released" take them per benchmark (suites/paper_tables.yaml).
    """

    CIFAR: ClassVar[bool] = False  # 32 px source images (recipe ``coda``: no test crop)

    n_tasks: int = 10
    root: str | None = None
    img_size: int = 224
    normalize: bool = False
    mean: tuple[float, ...] = VIT_AUGREG_MEAN
    std: tuple[float, ...] = VIT_AUGREG_STD
    train_per_class: int | None = None
    test_per_class: int | None = None
    transform: str = "pilot"

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.img_size >= 4, f"img_size must be >= 4, got {self.img_size}")
        check(self.transform in RECIPES, f"transform must be one of {', '.join(RECIPES)}, got {self.transform!r}")
        check(self.transform != "hide_cifar" or self.CIFAR, "transform hide_cifar is HiDe-Prompt's CIFAR-100 recipe: "
              "use it on cifar100 only")
        check(self.transform != "hide_cifar" or not self.normalize, "transform hide_cifar normalises with CIFAR-100's "
              "statistics itself: leave normalize false")
        check(len(self.mean) == 3 and len(self.std) == 3, "mean and std need 3 values each (R, G, B)")
        check(all(s > 0 for s in self.std), "std values must be > 0")
        check(self.train_per_class is None or self.train_per_class >= 1, "train_per_class must be >= 1")
        check(self.test_per_class is None or self.test_per_class >= 1, "test_per_class must be >= 1")

    @property
    def data_root(self) -> Path:
        return data_root(self.root)

    def validate_paths(self) -> None:
        """Raise a one-line UserError naming the expected layout when the data are not on disk."""
        raise NotImplementedError


@dataclass(frozen=True)
class CIFAR100Config(PaperDataConfig):
    """CIFAR-100: 10 tasks of 10 classes by default (SDL exps/sdlora_c100.json)."""

    CIFAR: ClassVar[bool] = True

    def validate_paths(self) -> None:
        base = self.data_root / "cifar-100-python"
        if not all((base / name).is_file() for name in CIFAR_FILES):
            raise UserError(
                f"CIFAR-100 not found: expected the python pickles {base}/{{train,test,meta}}; run "
                f"{prepare_command('cifar100', self.data_root)} (or extract "
                f"https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz there), or pass --data-root"
            )


@dataclass(frozen=True)
class ImageNetRConfig(PaperDataConfig):
    """ImageNet-R, 200 classes in 10 tasks by default (SDL exps/sdlora_inr.json).

    Attributes:
        split: ``pilot`` (APER/PILOT pre-split folders, what SD-LoRA used, SDL issue #7) or ``coda`` (CODA-Prompt's
            YAML lists, CODA dataloaders/splits). The two splits differ in membership and label ids (docs/datasets.md).
        split_dir: folder holding ``imagenet-r_{train,test}.yaml`` for ``split="coda"`` (None: ``<root>/splits``).
    """

    split: str = "pilot"
    split_dir: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.split in ("pilot", "coda"), f"split must be 'pilot' or 'coda', got {self.split!r}")

    def validate_paths(self) -> None:
        if self.split == "pilot":
            IMAGENET_R_PILOT.validate(self.data_root)
        else:
            IMAGENET_R_CODA.validate(self.data_root, split_dir(self))


@dataclass(frozen=True)
class ImageNetAConfig(PaperDataConfig):
    """ImageNet-A, 200 classes in 10 tasks by default (SDL exps/sdlora_ina.json)."""

    def validate_paths(self) -> None:
        IMAGENET_A.validate(self.data_root)


@dataclass(frozen=True)
class DomainNetConfig(PaperDataConfig):
    """DomainNet from the CODA/InfLoRA lists, 345 classes in 5 tasks of 69 (CODA dataloaders/splits).

    Attributes:
        split_dir: folder holding ``domainnet_{train,test}.yaml`` (None: ``<root>/splits``).
    """

    n_tasks: int = 5
    split_dir: str | None = None

    def validate_paths(self) -> None:
        DOMAINNET.validate(self.data_root, split_dir(self))


@dataclass(frozen=True)
class CUB200Config(PaperDataConfig):
    """CUB-200-2011 in the PILOT 80/20 re-split, 200 classes in 10 tasks by default (PILOT utils/data.py)."""

    def validate_paths(self) -> None:
        CUB.validate(self.data_root)


def split_dir(cfg: ImageNetRConfig | DomainNetConfig) -> Path:
    """Where the YAML split lists live: ``split_dir`` if set, else ``<root>/splits``."""
    return Path(cfg.split_dir).expanduser() if cfg.split_dir else cfg.data_root / "splits"


# ----------------------------------------------------------------------------------------------------------------
# Datasets


@dataclass
class SplitData:
    """One dataset's train and test items, before per-class subsets and transforms.

    Attributes:
        train_items: image paths, or a uint8 array (N, H, W, 3).
        train_targets: original labels (0 .. n_classes-1) of ``train_items``.
        test_items: as ``train_items``.
        test_targets: as ``train_targets``.
        class_names: name of each original label.
        info: what the benchmark records about the split (``CILBenchmark.info``).
    """

    train_items: Any
    train_targets: list[int]
    test_items: Any
    test_targets: list[int]
    class_names: list[str]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)


def build_benchmark(cfg: PaperDataConfig, seed: int, data: SplitData) -> CILBenchmark:
    """Apply subsets to ``data`` and split it into a class-incremental benchmark whose Avalanche transform groups
    hold the SD-LoRA transforms: ``train`` (augmenting) and ``eval`` (resize + centre crop), so that
    ``dataset.eval()`` gives the test transform on training images, as PILOT's ``mode="test"`` does."""
    train = make_dataset(data.train_items, data.train_targets, cfg.train_per_class, untransformed)
    test = make_dataset(data.test_items, data.test_targets, cfg.test_per_class, untransformed)
    info = {
        **data.info,
        "root": str(cfg.data_root.resolve()),
        "n_classes": data.n_classes,
        "n_train": len(train),
        "n_test": len(test),
        "order_seed": seed if cfg.order_seed is None else cfg.order_seed,
        "normalize": cfg.normalize,
        "transform": cfg.transform,
    }
    return make_benchmark(
        train,
        test,
        n_classes=data.n_classes,
        cfg=cfg,
        seed=seed,
        class_names=data.class_names,
        image_shape=(3, cfg.img_size, cfg.img_size),
        info=info,
        transforms=build_transforms(cfg.img_size, cfg.normalize, cfg.mean, cfg.std, cfg.transform, cfg.CIFAR),
    )


# ----------------------------------------------------------------------------------------------------------------
# CIFAR-100 (torchvision datasets/cifar.py)

CIFAR_FILES = ("train", "test", "meta")


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle names a global that a CIFAR-100 file never holds."""


class CifarUnpickler(pickle.Unpickler):
    """Unpickles only what the CIFAR-100 python pickles hold: builtins containers and numpy arrays.

    An unrestricted unpickler calls whatever global a file names (``os.system`` included), so a dataset folder
    received from someone else could run code; this one refuses every global outside :attr:`ALLOWED`. Scalars,
    strings, lists, tuples and dicts need no global at all; a numpy array needs ``_reconstruct`` (under numpy 1's
    and numpy 2's module names), ``ndarray`` and ``dtype``, and its raw bytes ``_codecs.encode`` when written with
    protocol 2 by python 3.
    """

    ALLOWED = frozenset({
        ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "bytearray"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("_codecs", "encode"),
    })

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise RefusedGlobal(f"{module}.{name}")
        return super().find_class(module, name)


def read_cifar_pickle(path: Path, keys: Sequence[str]) -> dict:
    """Load one CIFAR-100 python pickle (latin1 gives str keys, torchvision datasets/cifar.py) and check it has
    ``keys``."""
    try:
        with open(path, "rb") as f:
            blob = CifarUnpickler(f, encoding="latin1").load()
    except RefusedGlobal as err:
        raise UserError(
            f"CIFAR-100: {path} names {err}, which a CIFAR-100 pickle never holds: refused (unpickling it could run "
            "code); re-extract cifar-100-python.tar.gz"
        ) from None
    except Exception as err:  # noqa: BLE001 - any unpickling failure means one thing to the user: a bad file
        raise UserError(
            f"CIFAR-100: {path} is not a python pickle ({_one_line(err)}); re-extract cifar-100-python.tar.gz"
        ) from None
    missing = [k for k in keys if not isinstance(blob, dict) or k not in blob]
    if missing:
        raise UserError(
            f"CIFAR-100: {path} has no key(s) {', '.join(missing)}; expected the python-version pickles of "
            "cifar-100-python.tar.gz (keys data, fine_labels / fine_label_names)"
        )
    return blob


def read_cifar_split(path: Path, n_classes: int) -> tuple[np.ndarray, list[int]]:
    """Images (N, 32, 32, 3) uint8 and fine labels of the ``train`` or ``test`` pickle."""
    blob = read_cifar_pickle(path, ("data", "fine_labels"))
    data = np.asarray(blob["data"])
    labels = [int(y) for y in blob["fine_labels"]]
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
        raise UserError(
            f"CIFAR-100: {path} must hold 'data' as uint8 (N, 3072) with N fine_labels, got {data.dtype} "
            f"{data.shape} and {len(labels)} labels; re-extract cifar-100-python.tar.gz"
        )
    if labels and not 0 <= min(labels) <= max(labels) < n_classes:
        raise UserError(f"CIFAR-100: {path} has fine_labels outside 0..{n_classes - 1}; re-extract the archive")
    # Each row is three 32x32 planes R, G, B (torchvision datasets/cifar.py); PIL wants HWC.
    return np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)), labels


def load_cifar100(cfg: CIFAR100Config) -> SplitData:
    """Read the three CIFAR-100 pickles under ``<root>/cifar-100-python``."""
    cfg.validate_paths()
    base = cfg.data_root / "cifar-100-python"
    names = [str(n) for n in read_cifar_pickle(base / "meta", ("fine_label_names",))["fine_label_names"]]
    train_x, train_y = read_cifar_split(base / "train", len(names))
    test_x, test_y = read_cifar_split(base / "test", len(names))
    if len(set(train_y)) != len(names):
        raise UserError(
            f"CIFAR-100: {base}/train covers {len(set(train_y))} of the {len(names)} classes named in meta; "
            "re-extract cifar-100-python.tar.gz"
        )
    info = {"split": "official", "format": "cifar-100-python pickles"}
    return SplitData(train_x, train_y, test_x, test_y, names, info)


# ----------------------------------------------------------------------------------------------------------------
# PILOT/APER pre-split folders (SDL utils/data_manager.py; SDL issue #7; SDL issue #13; PILOT utils/data.py)


@dataclass(frozen=True)
class FolderLayout:
    """A PILOT-style ``<root>/<subdir>/{train,test}/<class>/*`` dataset and where to get it."""

    title: str
    subdir: str
    class_word: str
    drive_id: str
    benchmark: str

    def validate(self, root: Path) -> None:
        base = root / self.subdir
        if not ((base / "train").is_dir() and (base / "test").is_dir()):
            raise UserError(
                f"{self.title} (PILOT split) not found: expected {base}/train/<{self.class_word}>/*.jpg and "
                f".../test/...; run {prepare_command(self.benchmark, root)} (it fetches the pre-split archive "
                f"linked in the APER/PILOT README, Google Drive id {self.drive_id}), or pass --data-root"
            )


IMAGENET_R_PILOT = FolderLayout(
    "ImageNet-R", "imagenet-r", "wnid", "1SG4TbiL8_DooekztyCVK8mPmfhMo8fkR", "imagenet_r"
)
IMAGENET_A = FolderLayout("ImageNet-A", "imagenet-a", "class", "19l52ua_vvTtttgVRziCZJjal0TPE9f2p", "imagenet_a")
CUB = FolderLayout("CUB-200", "cub", "class", "1XbUpnWpJPnItt5zQ6sHJnsjPncnNLvWb", "cub200")


def images_under(folder: Path) -> list[str]:
    """Image files below ``folder`` in ImageFolder's order (sorted walk, sorted names, case-insensitive suffix)."""
    found = []
    for dirpath, _, fnames in sorted(os.walk(folder, followlinks=True)):
        found += [os.path.join(dirpath, f) for f in sorted(fnames) if f.lower().endswith(IMG_EXTENSIONS)]
    return found


def scan_image_folder(folder: Path, title: str) -> tuple[list[str], list[str], list[int]]:
    """``(classes, paths, targets)`` with ImageFolder semantics: label = index in the sorted folder names (SDL
    utils/data_manager.py)."""
    classes = sorted(entry.name for entry in os.scandir(folder) if entry.is_dir())
    if not classes:
        raise UserError(f"{title}: {folder} holds no class folders; re-extract the pre-split archive")
    paths: list[str] = []
    targets: list[int] = []
    for label, name in enumerate(classes):
        found = images_under(folder / name)
        if not found:  # ImageFolder raises here too (torchvision ``make_dataset``): every class needs a train and a
        # test image
            raise UserError(
                f"{title}: class folder {folder / name} holds no image ({'/'.join(IMG_EXTENSIONS)}); "
                "remove it from both train/ and test/ or restore its images"
            )
        paths += found
        targets += [label] * len(found)
    return classes, paths, targets


def load_pilot_folders(layout: FolderLayout, root: Path) -> SplitData:
    """Read ``<root>/<subdir>/{train,test}`` as two ImageFolders that must hold the same class folders."""
    layout.validate(root)
    base = root / layout.subdir
    train_classes, train_paths, train_targets = scan_image_folder(base / "train", layout.title)
    test_classes, test_paths, test_targets = scan_image_folder(base / "test", layout.title)
    if train_classes != test_classes:  # labels are positions in each split's own sorted list (SDL
    # utils/data_manager.py)
        only_train = sorted(set(train_classes) - set(test_classes))
        only_test = sorted(set(test_classes) - set(train_classes))
        raise UserError(
            f"{layout.title}: {base}/train and {base}/test must hold the same class folders, but "
            f"{len(only_train)} are only in train ({_few(only_train)}) and {len(only_test)} only in test "
            f"({_few(only_test)}); re-extract the pre-split archive"
        )
    info = {"split": "pilot", "format": f"{layout.subdir}/{{train,test}}/<{layout.class_word}>/*"}
    return SplitData(train_paths, train_targets, test_paths, test_targets, train_classes, info)


# ----------------------------------------------------------------------------------------------------------------
# CODA-Prompt / InfLoRA YAML lists (CODA dataloaders/splits)


@dataclass(frozen=True)
class ListLayout:
    """A dataset given by ``<split_dir>/<stem>_{train,test}.yaml`` lists of image paths and labels."""

    title: str
    stem: str
    images_hint: str
    benchmark: str

    def files(self, lists: Path) -> tuple[Path, Path]:
        return lists / f"{self.stem}_train.yaml", lists / f"{self.stem}_test.yaml"

    def validate(self, root: Path, lists: Path) -> None:
        """Check the lists exist and that their first entries resolve under ``root`` (not every file: that is load)."""
        train_list, test_list = self.files(lists)
        if not (train_list.is_file() and test_list.is_file()):
            raise UserError(
                f"{self.title} (CODA split) not found: expected {train_list} and {test_list} with the images they "
                f"list under {root} ({self.images_hint}); run {prepare_command(self.benchmark, root)} (it fetches "
                "both from CODA-Prompt's dataloaders/splits/ and the images), or set split_dir, or pass --data-root"
            )
        for path in (train_list, test_list):
            entries, _ = read_split_list(path, self.title)
            resolve_listed(entries[:1], root, path, self.title)


IMAGENET_R_CODA = ListLayout(
    "ImageNet-R",
    "imagenet-r",
    "<root>/imagenet-r/<wnid>/*.jpg from https://people.eecs.berkeley.edu/~hendrycks/imagenet-r.tar",
    "imagenet_r:coda",
)
DOMAINNET = ListLayout(
    "DomainNet",
    "domainnet",
    "<root>/DomainNet/<domain>/<class>/*.jpg, the per-domain zips of http://ai.bu.edu/M3SDA/",
    "domainnet",
)


def read_split_list(path: Path, title: str) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """``(data, targets)`` of one YAML list, parsed once per file version (the real lists are large)."""
    stat = path.stat()
    return _parse_split_list(str(path), stat.st_mtime_ns, stat.st_size, title)


@functools.lru_cache(maxsize=8)
def _parse_split_list(path: str, mtime_ns: int, size: int, title: str) -> tuple[tuple[str, ...], tuple[int, ...]]:
    fix = "expected CODA-Prompt's format: a mapping with 'data' (image paths) and 'targets' (int labels)"
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.load(f, Loader=_YAML_LOADER)
    except yaml.YAMLError as err:
        raise UserError(f"{title}: {path} is not valid YAML ({_one_line(err)}); {fix}") from None
    if not isinstance(doc, dict) or "data" not in doc or "targets" not in doc:
        keys = sorted(map(str, doc)) if isinstance(doc, dict) else type(doc).__name__
        raise UserError(f"{title}: {path} has no 'data'/'targets' keys (found {keys}); {fix}")
    data, targets = doc["data"], doc["targets"]
    if not (isinstance(data, list) and isinstance(targets, list) and data and len(data) == len(targets)):
        raise UserError(f"{title}: {path} must list as many 'data' paths as 'targets' labels (at least one); {fix}")
    if not all(isinstance(p, str) for p in data) or not all(type(t) is int for t in targets):
        raise UserError(f"{title}: {path} must hold path strings in 'data' and ints in 'targets'; {fix}")
    return tuple(data), tuple(targets)


def _listed_candidates(entry: str, root: Path) -> list[Path]:
    """Where a listed path may live: relative to the root as written, or without the ``data/`` prefix (CODA
    dataloaders/splits)."""
    rel = entry.removeprefix("./")
    candidates = [root / rel]  # an absolute entry stays absolute under pathlib's "/"
    if rel.startswith("data/"):
        candidates.append(root / rel[len("data/") :])
    return candidates


def resolve_listed(entries: Sequence[str], root: Path, list_path: Path, title: str) -> list[str]:
    """Resolve every listed path under ``root``; the first entry decides whether ``data/`` is stripped."""
    candidates = _listed_candidates(entries[0], root)
    strip = len(candidates) > 1 and not candidates[0].is_file() and candidates[1].is_file()
    if not (candidates[0].is_file() or strip):
        raise UserError(
            f"{title}: {list_path} lists {entries[0]!r}, found neither as {' nor as '.join(map(str, candidates))}; "
            "extract the images under the data root so the listed paths resolve, or pass --data-root"
        )
    resolved = [str(_listed_candidates(e, root)[-1 if strip else 0]) for e in entries]
    missing = [p for p in resolved if not os.path.isfile(p)]
    if missing:
        raise UserError(
            f"{title}: {len(missing)} of the {len(resolved)} images listed in {list_path} are missing "
            f"(first: {missing[0]}); re-extract the images or use the list that matches them"
        )
    return resolved


def check_list_labels(train_targets: Sequence[int], test_targets: Sequence[int], title: str) -> int:
    """The class count of a pair of lists; labels must be 0..n-1, all present in train, test within them."""
    labels = set(train_targets)
    n = max(labels) + 1
    if min(labels) < 0 or len(labels) != n:
        raise UserError(
            f"{title}: the train list's targets must cover every label 0..{n - 1}, found {len(labels)} distinct "
            f"labels (min {min(labels)}); use the matching CODA-Prompt lists"
        )
    extra = sorted(set(test_targets) - labels)
    if extra:
        raise UserError(
            f"{title}: the test list has labels absent from train ({_few(list(map(str, extra)))}); "
            "use the train and test lists from the same CODA-Prompt snapshot"
        )
    return n


def names_from_paths(entries: Sequence[str], targets: Sequence[int], n_classes: int) -> list[str]:
    """Class name of each label: the folder holding its first listed image (a wnid or a DomainNet class)."""
    names: list[str | None] = [None] * n_classes
    for entry, t in zip(entries, targets):
        if names[t] is None:
            names[t] = os.path.basename(os.path.dirname(entry))
    return [str(name) for name in names]


def load_split_lists(layout: ListLayout, root: Path, lists: Path) -> SplitData:
    """Read a pair of CODA lists; labels come from ``targets``, never from sorted paths (CODA dataloaders/splits; the
    official DomainNet lists)."""
    layout.validate(root, lists)
    train_list, test_list = layout.files(lists)
    train_entries, train_targets = read_split_list(train_list, layout.title)
    test_entries, test_targets = read_split_list(test_list, layout.title)
    n = check_list_labels(train_targets, test_targets, layout.title)
    info = {"split": "coda", "split_files": [str(train_list), str(test_list)]}
    return SplitData(
        resolve_listed(train_entries, root, train_list, layout.title),
        list(train_targets),
        resolve_listed(test_entries, root, test_list, layout.title),
        list(test_targets),
        names_from_paths(train_entries, train_targets, n),
        info,
    )


# ----------------------------------------------------------------------------------------------------------------
# Registered benchmarks


def load_imagenet_r(cfg: ImageNetRConfig) -> SplitData:
    """ImageNet-R in the configured split (``pilot`` folders or ``coda`` lists)."""
    if cfg.split == "pilot":
        return load_pilot_folders(IMAGENET_R_PILOT, cfg.data_root)
    return load_split_lists(IMAGENET_R_CODA, cfg.data_root, split_dir(cfg))


def load_domainnet(cfg: DomainNetConfig) -> SplitData:
    """DomainNet from the CODA/InfLoRA lists; records which domains they hold (no quickdraw, CODA
    dataloaders/splits)."""
    data = load_split_lists(DOMAINNET, cfg.data_root, split_dir(cfg))
    # Entries are <domain>/<class>/<file> (the official DomainNet lists), so the domain is two folders above the file.
    data.info["domains"] = sorted({Path(p).parent.parent.name for p in data.train_items})
    return data


# Sizes (training, test images): the split's authors' counts (docs/datasets.md); DomainNet: the official 5-domain
# lists without quickdraw (the size of CODA-Prompt's lists is unverified).
@BENCHMARKS.register("cifar100", CIFAR100Config, info=BenchmarkInfo(
    train_size=50000, test_size=10000, n_classes=100, fixture=write_cifar100, smoke=fixture_smoke("cifar100"),
    data_help="cifar-100-python/ (the python pickles) under the data root"))
def cifar100(cfg: CIFAR100Config, seed: int) -> CILBenchmark:
    """CIFAR-100 from the python pickles, upsampled to img_size as SD-LoRA's cifar224 (10 x 10 classes)."""
    return build_benchmark(cfg, seed, load_cifar100(cfg))


@BENCHMARKS.register("imagenet_r", ImageNetRConfig, info=BenchmarkInfo(
    train_size=24000, test_size=6000, n_classes=200, fixture=write_imagenet_r, smoke=fixture_smoke("imagenet_r"),
    data_help="imagenet-r/ (PILOT train/test folders or the raw release with CODA lists)"))
def imagenet_r(cfg: ImageNetRConfig, seed: int) -> CILBenchmark:
    """ImageNet-R, PILOT pre-split folders (SD-LoRA) or CODA-Prompt lists (10 x 20 classes)."""
    return build_benchmark(cfg, seed, load_imagenet_r(cfg))


@BENCHMARKS.register("imagenet_a", ImageNetAConfig, info=BenchmarkInfo(
    train_size=5981, test_size=1519, n_classes=200, fixture=write_imagenet_a, smoke=fixture_smoke("imagenet_a"),
    data_help="imagenet-a/ (PILOT train/test folders)"))
def imagenet_a(cfg: ImageNetAConfig, seed: int) -> CILBenchmark:
    """ImageNet-A, PILOT pre-split folders (10 x 20 classes)."""
    return build_benchmark(cfg, seed, load_pilot_folders(IMAGENET_A, cfg.data_root))


@BENCHMARKS.register("domainnet", DomainNetConfig, info=BenchmarkInfo(
    train_size=288000, test_size=72000, n_classes=345, fixture=write_domainnet, smoke=fixture_smoke("domainnet"),
    data_help="domainnet/ (five domains and the CODA/InfLoRA lists)"))
def domainnet(cfg: DomainNetConfig, seed: int) -> CILBenchmark:
    """DomainNet, CODA/InfLoRA lists over 5 domains (5 x 69 classes)."""
    return build_benchmark(cfg, seed, load_domainnet(cfg))


@BENCHMARKS.register("cub200", CUB200Config, info=BenchmarkInfo(
    train_size=9430, test_size=2358, n_classes=200, fixture=write_cub200, smoke=fixture_smoke("cub200"),
    data_help="cub/ (PILOT 80/20 train/test folders)"))
def cub200(cfg: CUB200Config, seed: int) -> CILBenchmark:
    """CUB-200-2011, PILOT 80/20 pre-split folders (10 x 20 classes)."""
    return build_benchmark(cfg, seed, load_pilot_folders(CUB, cfg.data_root))
