"""The paper's datasets on tiny fixtures written in each real on-disk format (docs/datasets.md)."""

from __future__ import annotations

import os
import pickle
import shutil
import time
from pathlib import Path

# Avalanche takes seconds to import: pay it once at collection, not inside the first test's time budget.
import avalanche.benchmarks.scenarios.supervised  # noqa: F401
import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torchvision import transforms

from benchmarks import paper_datasets as pd
from benchmarks.base import BENCHMARKS, class_order
from benchmarks.fixtures import write_fixture
from benchmarks.transforms import ImagePathDataset, build_transforms
from core.errors import UserError

torch.set_num_threads(1)

SEED = 1993
IMG = 16
NAMES = ("cifar100", "imagenet_r", "imagenet_a", "domainnet", "cub200")
# (benchmark, extra config): every layout, ImageNet-R in both splits.
LAYOUTS = [(name, {}) for name in NAMES] + [("imagenet_r", {"split": "coda"})]
LAYOUT_IDS = [name + ("-" + extra["split"] if extra else "") for name, extra in LAYOUTS]
DEFAULT_TASKS = {"cifar100": 10, "imagenet_r": 10, "imagenet_a": 10, "domainnet": 5, "cub200": 10}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """One shared data root; ``data_root(*names)`` writes those fixtures on first use (real class counts, 2 train +
    1 test image per class) so that no single test pays for all five."""
    path = tmp_path_factory.mktemp("data")
    written: set[str] = set()

    def ensure(*names: str) -> Path:
        for name in set(names) - written:
            write_fixture(name, path)
            written.add(name)
        return path

    return ensure


def make_cfg(name: str, root: Path, **fields):
    return BENCHMARKS.make_config(name, {"root": str(root), "img_size": IMG, **fields})


def build(name: str, root: Path, seed: int = SEED, **fields):
    cfg = make_cfg(name, root, **fields)
    cfg.validate_paths()
    return BENCHMARKS.get(name).obj(cfg, seed)


def assert_one_line_error(fn, *needles: str) -> str:
    with pytest.raises(UserError) as err:
        fn()
    message = str(err.value)
    assert "\n" not in message and message.strip() == message and message
    for needle in needles:
        assert needle in message, message
    return message


# ----------------------------------------------------------------------------------------------------------------
# Class orders and task splits


def test_verified_class_orders():
    # SDL utils/data_manager.py / docs/sdlora.md section 6: prefixes re-computed from the repositories' logs.
    assert class_order(200, 1993)[:5] == [168, 136, 51, 9, 183]
    assert class_order(100, 1994)[:5] == [72, 6, 33, 96, 60]
    assert class_order(200, 1995)[:4] == [146, 198, 169, 126]
    assert class_order(100, 1993)[:10] == [68, 56, 78, 8, 23, 84, 90, 65, 74, 76]
    assert class_order(345, 1993)[:10] == [214, 80, 343, 268, 224, 97, 253, 55, 165, 170]
    assert class_order(7, -1) == list(range(7))


@pytest.mark.parametrize("name,extra", LAYOUTS, ids=LAYOUT_IDS)
def test_counts_order_and_tasks(data_root, name, extra):
    root = data_root(name)
    bench = build(name, root, **extra)
    n, n_tasks = BENCHMARKS.get(name).info.n_classes, DEFAULT_TASKS[name]
    np.random.seed(SEED)
    assert bench.class_order == np.random.permutation(n).tolist()
    assert bench.classes_per_task == [n // n_tasks] * n_tasks
    assert (bench.info["n_train"], bench.info["n_test"], bench.info["n_classes"]) == (2 * n, n, n)
    assert bench.image_shape == (3, IMG, IMG) and len(bench.class_names) == n
    known = 0
    for t, size in enumerate(bench.classes_per_task):
        train, test = bench.scenario.train_stream[t], bench.scenario.test_stream[t]
        assert sorted(train.classes_in_this_experience) == list(range(known, known + size))
        assert sorted(test.classes_in_this_experience) == list(range(known, known + size))
        assert (len(train.dataset), len(test.dataset)) == (2 * size, size)
        known += size


@pytest.mark.parametrize("name,extra", LAYOUTS, ids=LAYOUT_IDS)
def test_images_load_as_unit_range_tensors(data_root, name, extra):
    root = data_root(name)
    bench = build(name, root, **extra)
    for stream in (bench.scenario.train_stream, bench.scenario.test_stream):
        x, y, *_ = stream[1].dataset[0]
        assert x.shape == (3, IMG, IMG) and x.dtype == torch.float32
        assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
        assert bench.classes_per_task[0] <= y < sum(bench.classes_per_task[:2])


def test_class_names_follow_the_order(data_root):
    root = data_root("cifar100")
    data = pd.load_cifar100(make_cfg("cifar100", root))
    bench = pd.build_benchmark(make_cfg("cifar100", root), 1994, data)
    assert bench.class_names[:3] == [data.class_names[c] for c in (72, 6, 33)]
    assert bench.info["order_seed"] == 1994 and bench.info["split"] == "official"


def test_order_seed_minus_one_is_coda_identity(data_root):
    root = data_root("imagenet_r")
    bench = build("imagenet_r", root, split="coda", order_seed=-1)
    assert bench.class_order == list(range(200)) and bench.info["split"] == "coda"


def test_init_classes_and_custom_task_count(data_root):
    root = data_root("cifar100")
    bench = build("cifar100", root, n_tasks=6, init_classes=50)
    assert bench.classes_per_task == [50, 10, 10, 10, 10, 10]
    assert sorted(bench.scenario.train_stream[1].classes_in_this_experience) == list(range(50, 60))


def test_per_class_subsets_keep_the_first_items(data_root):
    root = data_root("cub200")
    bench = build("cub200", root, train_per_class=1, test_per_class=1)
    assert (bench.info["n_train"], bench.info["n_test"]) == (200, 200)
    data = pd.load_pilot_folders(pd.CUB, root)
    first = [data.train_targets.index(c) for c in range(200)]
    ds = pd.make_dataset(data.train_items, data.train_targets, 1, None)
    assert ds.paths == [data.train_items[i] for i in first]


# ----------------------------------------------------------------------------------------------------------------
# Labels: sorted folders (PILOT), the file (CODA), the pickle (CIFAR)


@pytest.mark.parametrize("layout", [pd.IMAGENET_R_PILOT, pd.IMAGENET_A, pd.CUB], ids=lambda lay: lay.subdir)
def test_pilot_labels_are_sorted_folder_indices(data_root, layout):
    root = data_root({"imagenet-r": "imagenet_r", "imagenet-a": "imagenet_a", "cub": "cub200"}[layout.subdir])
    data = pd.load_pilot_folders(layout, root)
    folders = sorted(os.listdir(root / layout.subdir / "train"))
    assert data.class_names == folders
    for path, label in zip(data.train_items + data.test_items, data.train_targets + data.test_targets):
        assert folders[label] == Path(path).parent.name
    assert not any(p.endswith("Thumbs.db") for p in data.train_items)  # ImageFolder skips non-images
    assert len(data.train_items) == 2 * len(folders)


def test_coda_labels_come_from_the_file(data_root):
    root = data_root("imagenet_r")
    data = pd.load_imagenet_r(make_cfg("imagenet_r", root, split="coda"))
    with open(root / "splits" / "imagenet-r_train.yaml") as f:
        listed = yaml.safe_load(f)
    assert data.train_targets == listed["targets"]
    for path, entry in zip(data.train_items, listed["data"]):
        assert path == str(root / entry.removeprefix("data/"))
    wnids = sorted(os.listdir(root / "imagenet-r" / "train"))
    sorted_index = [wnids.index(Path(p).parent.name) for p in data.train_items]
    assert sorted_index != data.train_targets  # the fixture would not catch an ImageFolder-style relabelling
    test_label = {Path(p).parent.name: t for p, t in zip(data.test_items, data.test_targets)}
    assert all(test_label[Path(p).parent.name] == t for p, t in zip(data.train_items, data.train_targets))
    assert data.class_names[data.train_targets[0]] == Path(data.train_items[0]).parent.name


def test_domainnet_labels_names_and_domains(data_root):
    root = data_root("domainnet")
    data = pd.load_domainnet(make_cfg("domainnet", root))
    for path, label in zip(data.train_items + data.test_items, data.train_targets + data.test_targets):
        assert int(Path(path).name.split("_")[-2]) == label + 1  # <domain>_<label+1:03d>_<n:06d>.jpg, the official
        # DomainNet lists
    assert {"The_Great_Wall_of_China", "t-shirt", "cell_phone"} <= set(data.class_names)
    assert data.class_names != sorted(data.class_names)
    assert data.info["domains"] == ["clipart", "infograph", "painting", "real", "sketch"]


def test_cifar_rows_are_rgb_planes(data_root):
    root = data_root("cifar100")
    data = pd.load_cifar100(make_cfg("cifar100", root))
    with open(root / "cifar-100-python" / "train", "rb") as f:
        raw = pickle.load(f, encoding="latin1")
    row, image = raw["data"][5], data.train_items[5]
    for r, c in ((0, 0), (3, 17), (31, 30)):
        assert image[r, c].tolist() == [row[ch * 1024 + r * 32 + c] for ch in range(3)]
    assert data.train_targets == raw["fine_labels"] and data.class_names[:2] == ["apple", "aquarium_fish"]


# ----------------------------------------------------------------------------------------------------------------
# Transforms and images


def test_transforms_match_sdlora():
    train, test = build_transforms(IMG)
    crop = train.transforms[0]
    assert isinstance(crop, transforms.RandomResizedCrop)
    assert crop.scale == (0.05, 1.0) and crop.ratio == pytest.approx((3 / 4, 4 / 3))
    resize, center = test.transforms[0], test.transforms[1]
    assert resize.size == int(IMG * 256 / 224) and resize.interpolation == transforms.InterpolationMode.BICUBIC
    assert center.size == (IMG, IMG) and not any(isinstance(t, transforms.Normalize) for t in test.transforms)
    assert build_transforms(224)[1].transforms[0].size == 256
    img = Image.new("RGB", (9, 14), (255, 0, 0))
    assert train(img).shape == test(img).shape == (3, IMG, IMG)
    norm = build_transforms(IMG, normalize=True)[1]
    assert torch.allclose(norm(img)[:, 0, 0], torch.tensor([1.0, -1.0, -1.0]))  # mean = std = 0.5


def test_the_references_own_transform_recipes():
    """CODA-Prompt's get_transform (also InfLoRA's on CIFAR-100, ImageNet-R, DomainNet) and HiDe-Prompt's CIFAR-100
    transform, which the rows "as released" take (docs/baselines.md section 13)."""
    bicubic, bilinear = transforms.InterpolationMode.BICUBIC, transforms.InterpolationMode.BILINEAR
    train, test = build_transforms(IMG, recipe="coda")
    assert train.transforms[0].scale == (0.08, 1.0) and train.transforms[0].interpolation == bilinear
    assert [type(t) for t in test.transforms] == [transforms.Resize, transforms.CenterCrop, transforms.ToTensor]
    assert test.transforms[0].size == int(IMG * 256 / 224) and test.transforms[0].interpolation == bilinear
    cifar_test = build_transforms(IMG, recipe="coda", cifar=True)[1]  # Resize(224) alone: no crop of the borders
    assert [type(t) for t in cifar_test.transforms] == [transforms.Resize, transforms.ToTensor]
    assert cifar_test.transforms[0].size == IMG
    train, test = build_transforms(IMG, recipe="hide_cifar")
    assert [type(t) for t in train.transforms] == [transforms.RandomResizedCrop, transforms.RandomHorizontalFlip,
                                                   transforms.ColorJitter, transforms.ToTensor, transforms.Normalize]
    assert train.transforms[0].scale == (0.08, 1.0) and train.transforms[0].interpolation == bicubic
    assert train.transforms[2].brightness == pytest.approx((1 - 63 / 255, 1 + 63 / 255))
    assert test.transforms[0].interpolation == bicubic and test.transforms[-1].mean == (0.5071, 0.4867, 0.4408)
    img = Image.new("RGB", (32, 32), (255, 0, 0))
    assert torch.allclose(test(img)[:, 0, 0], (torch.tensor([1.0, 0, 0]) - torch.tensor(
        [0.5071, 0.4867, 0.4408])) / torch.tensor([0.2675, 0.2565, 0.2761]))
    with pytest.raises(UserError, match="cifar100 only"):
        make_cfg("imagenet_r", Path("."), transform="hide_cifar")
    with pytest.raises(UserError, match="leave normalize false"):
        make_cfg("cifar100", Path("."), transform="hide_cifar", normalize=True)
    with pytest.raises(UserError, match="transform must be one of pilot, coda, hide_cifar"):
        make_cfg("cifar100", Path("."), transform="timm")


def test_a_benchmark_applies_its_transform_recipe_to_test_images(data_root):
    """CIFAR-100 under ``coda``: the test image is resized whole (CODA-Prompt's ``Resize(224)``), not cropped; the
    benchmark's info names the recipe."""
    root = data_root("cifar100")
    images = {}
    for recipe in ("pilot", "coda"):
        bench = build("cifar100", root, transform=recipe)
        assert bench.info["transform"] == recipe
        images[recipe] = bench.scenario.test_stream[0].dataset[0][0]
    raw = pd.load_cifar100(make_cfg("cifar100", root))
    assert images["coda"].shape == images["pilot"].shape == (3, IMG, IMG)
    assert not torch.allclose(images["coda"], images["pilot"])
    whole = transforms.Compose([transforms.Resize(IMG), transforms.ToTensor()])
    first_task = set(bench.class_order[:bench.classes_per_task[0]])
    candidates = [whole(Image.fromarray(x)) for x, t in zip(raw.test_items, raw.test_targets) if t in first_task]
    assert sum(torch.allclose(images["coda"], c) for c in candidates) == 1  # one of the task's images, uncropped


def test_grayscale_and_palette_images_load_as_rgb(data_root):
    root = data_root("imagenet_r")
    files = sorted(p for p in (root / "imagenet-r" / "train").rglob("*") if p.suffix in (".jpg", ".png"))
    modes = {}
    for path in files:
        with Image.open(path) as img:
            modes.setdefault(img.mode, str(path))
    assert {"RGB", "L", "P"} <= set(modes) and len({Image.open(p).size for p in files[:12]}) > 2
    ds = ImagePathDataset([modes["L"], modes["P"]], [0, 1])
    assert all(ds[i][0].shape[0] == 3 for i in range(2))


# ----------------------------------------------------------------------------------------------------------------
# Configs and paths


def test_registry_and_config_defaults(tmp_path, monkeypatch):
    for name in NAMES:
        assert BENCHMARKS.get(name).doc
        cfg = BENCHMARKS.make_config(name, {})
        assert (cfg.n_tasks, cfg.img_size, cfg.normalize) == (DEFAULT_TASKS[name], 224, False)
    assert BENCHMARKS.make_config("imagenet_r", {}).split == "pilot"
    monkeypatch.setenv("SDLB_DATA_ROOT", str(tmp_path))
    assert BENCHMARKS.make_config("cub200", {}).data_root == tmp_path
    assert BENCHMARKS.make_config("cub200", {"root": "/x"}).data_root == Path("/x")
    monkeypatch.delenv("SDLB_DATA_ROOT")
    assert BENCHMARKS.make_config("cub200", {}).data_root == Path("./data")
    assert_one_line_error(lambda: BENCHMARKS.make_config("imagenet_r", {"split": "l2p"}), "pilot", "coda")
    assert_one_line_error(lambda: BENCHMARKS.make_config("cifar100", {"train_per_class": 0}), "train_per_class")


def test_env_var_root_builds(data_root, monkeypatch):
    root = data_root("imagenet_a")
    monkeypatch.setenv("SDLB_DATA_ROOT", str(root))
    cfg = BENCHMARKS.make_config("imagenet_a", {"img_size": IMG})
    cfg.validate_paths()
    assert BENCHMARKS.get("imagenet_a").obj(cfg, SEED).info["root"] == str(root.resolve())


MISSING = {
    "cifar100": ({}, ("CIFAR-100 not found", "cifar-100-python", "--data-root")),
    "imagenet_r": (
        {},
        ("ImageNet-R (PILOT split) not found", "imagenet-r/train/<wnid>", "1SG4TbiL8_DooekztyCVK8mPmfhMo8fkR"),
    ),
    "imagenet_r-coda": ({"split": "coda"}, ("ImageNet-R (CODA split) not found", "imagenet-r_train.yaml", "split_dir")),
    "imagenet_a": ({}, ("ImageNet-A (PILOT split) not found", "imagenet-a/train", "19l52ua_vvTtttgVRziCZJjal0TPE9f2p")),
    "domainnet": ({}, ("DomainNet (CODA split) not found", "domainnet_train.yaml", "M3SDA")),
    "cub200": ({}, ("CUB-200 (PILOT split) not found", "cub/train", "1XbUpnWpJPnItt5zQ6sHJnsjPncnNLvWb")),
}


@pytest.mark.parametrize("case", sorted(MISSING))
def test_missing_data_is_one_line_user_error(tmp_path, case):
    name = case.split("-")[0]
    extra, needles = MISSING[case]
    cfg = make_cfg(name, tmp_path / "nowhere", **extra)
    assert_one_line_error(cfg.validate_paths, *needles)
    assert_one_line_error(lambda: BENCHMARKS.get(name).obj(cfg, SEED), *needles)


def test_data_prefix_and_absolute_list_paths(data_root, tmp_path):
    root = data_root("imagenet_r", "domainnet")
    # CODA opens "data/imagenet-r/..." from its working directory: a root holding data/ must work as written.
    (tmp_path / "cwd").mkdir()
    (tmp_path / "cwd" / "data").symlink_to(root)
    data = pd.load_imagenet_r(make_cfg("imagenet_r", tmp_path / "cwd", split="coda", split_dir=str(root / "splits")))
    assert data.train_items[0].startswith(str(tmp_path / "cwd" / "data" / "imagenet-r"))
    # Derived copies of the lists hold absolute paths (pkrukowski1/PromptInTAct dataloaders/splits).
    lists = tmp_path / "abs"
    lists.mkdir()
    for split in ("train", "test"):
        doc = yaml.safe_load((root / "splits" / f"domainnet_{split}.yaml").read_text())
        doc["data"] = [str(root / p.removeprefix("data/")) for p in doc["data"]]
        (lists / f"domainnet_{split}.yaml").write_text(yaml.safe_dump(doc))
    bench = build("domainnet", tmp_path / "elsewhere", split_dir=str(lists))
    assert bench.n_classes == 345 and bench.info["split_files"][0] == str(lists / "domainnet_train.yaml")


# ----------------------------------------------------------------------------------------------------------------
# Malformed data: one line naming the fix


def _drop_test_class(root: Path) -> None:
    shutil.rmtree(next((root / "imagenet-a" / "test").iterdir()))


def _empty_class(root: Path) -> None:
    folder = sorted((root / "imagenet-a" / "train").iterdir())[1]
    for f in folder.iterdir():
        f.unlink()


def _rewrite_yaml(root: Path, edit) -> None:
    path = root / "splits" / "domainnet_train.yaml"
    path.write_text(edit(path.read_text()))


def _drop_yaml_key(root: Path) -> None:
    path = root / "splits" / "domainnet_train.yaml"
    doc = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({"data": doc["data"]}))


def _short_targets(root: Path) -> None:
    path = root / "splits" / "domainnet_train.yaml"
    doc = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({"data": doc["data"], "targets": doc["targets"][:-1]}))


def _delete_listed_image(root: Path) -> None:
    doc = yaml.safe_load((root / "splits" / "domainnet_test.yaml").read_text())
    (root / doc["data"][-1].removeprefix("data/")).unlink()


def _drop_fine_labels(root: Path) -> None:
    path = root / "cifar-100-python" / "test"
    blob = pickle.loads(path.read_bytes(), encoding="latin1")
    del blob["fine_labels"]
    path.write_bytes(pickle.dumps(blob))


MALFORMED = {
    "train-test-folders-differ": ("imagenet_a", _drop_test_class, ("same class folders", "only in train")),
    "empty-class-folder": ("imagenet_a", _empty_class, ("holds no image",)),
    "yaml-without-targets": ("domainnet", _drop_yaml_key, ("'data'/'targets'", "domainnet_train.yaml")),
    "yaml-lengths-differ": ("domainnet", _short_targets, ("as many 'data' paths as 'targets'",)),
    "yaml-syntax": ("domainnet", lambda r: _rewrite_yaml(r, lambda t: "data: [unclosed\n" + t), ("not valid YAML",)),
    "listed-image-missing": ("domainnet", _delete_listed_image, ("1 of the 2 images listed", "missing")),
    "pickle-without-fine-labels": ("cifar100", _drop_fine_labels, ("fine_labels",)),
    "pickle-garbage": ("cifar100", lambda r: (r / "cifar-100-python" / "meta").write_bytes(b"\x00junk"), ("pickle",)),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_data_is_one_line_user_error(tmp_path, case):
    name, corrupt, needles = MALFORMED[case]
    write_fixture(name, tmp_path, n_classes=2 if name == "domainnet" else 4, per_class_train=1, per_class_test=1)
    corrupt(tmp_path)
    assert_one_line_error(lambda: build(name, tmp_path, n_tasks=2), *needles)


def test_listed_path_that_resolves_nowhere(tmp_path):
    write_fixture("imagenet_r", tmp_path / "a", n_classes=4)
    cfg = make_cfg("imagenet_r", tmp_path / "b", split="coda", split_dir=str(tmp_path / "a" / "splits"), n_tasks=2)
    assert_one_line_error(cfg.validate_paths, "found neither", "--data-root")


# ----------------------------------------------------------------------------------------------------------------
# Fixture writer


def test_fixture_writer_sizes_names_and_speed(tmp_path):
    start = time.process_time()  # CPU time: the machine is shared, wall time would flake
    write_fixture("domainnet", tmp_path / "dn")  # 345 classes x 3 images
    assert time.process_time() - start < 3.0
    write_fixture("cub200", tmp_path / "cub", n_classes=4, per_class_train=3, per_class_test=2)
    bench = build("cub200", tmp_path / "cub", n_tasks=2)
    assert (bench.n_classes, bench.info["n_train"], bench.info["n_test"]) == (4, 12, 8)
    assert min(bench.class_names) == "001.Black_footed_Albatross"
    assert_one_line_error(lambda: write_fixture("mnist", tmp_path), "valid names")
