"""Transform groups: the paper datasets augment in Avalanche's ``train`` group only, and every statistics pass over
training data reads the ``eval`` group (docs/baselines.md "Evaluation transform for statistics")."""

from __future__ import annotations

# Avalanche takes seconds to import: pay it once at collection, not inside the first test's time budget.
import avalanche.benchmarks.scenarios.supervised  # noqa: F401
import pytest
import torch
from conftest import make_strategy, synthetic_bench
from torch.utils.data import DataLoader

from benchmarks import paper_datasets as pd
from benchmarks.base import BENCHMARKS
from benchmarks.fixtures import write_fixture
from benchmarks.transforms import build_transforms

IMG = 16  # the tiny test ViT's input side


class Spy:
    """A transform that records the (PIL) images it is given, then applies ``inner``."""

    def __init__(self, inner):
        self.inner, self.seen = inner, []

    def __call__(self, img):
        self.seen.append(img)
        return self.inner(img)


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    """A CIFAR-100 stand-in in the real pickle format (10 classes, 4 training images each, 32 px), read at 16 px with
    its real transforms (RandomResizedCrop + flip for training) wrapped in spies: 2 tasks of 5 classes."""
    root = tmp_path_factory.mktemp("data")
    write_fixture("cifar100", root, n_classes=10, per_class_train=4, per_class_test=1)
    cfg = BENCHMARKS.make_config("cifar100", {"root": str(root), "img_size": IMG, "n_tasks": 2})
    spies = tuple(Spy(tf) for tf in build_transforms(IMG))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pd, "build_transforms", lambda *args: spies)
        bench = BENCHMARKS.get("cifar100").obj(cfg, 0)
    return bench, spies


def images(dataset, seed: int) -> torch.Tensor:
    """One pass over ``dataset`` in order, after seeding the global RNG with ``seed``."""
    torch.manual_seed(seed)
    return torch.cat([batch[0] for batch in DataLoader(dataset, batch_size=8, shuffle=False)])


def test_eval_group_gives_the_test_transform_and_train_group_augments(cifar):
    bench, (train_spy, test_spy) = cifar
    data = bench.scenario.train_stream[0].dataset
    train_spy.seen.clear()
    first = images(data.eval(), 0)
    assert torch.equal(first, images(data.eval(), 1))  # eval group: deterministic whatever the RNG
    assert not train_spy.seen and len(test_spy.seen) >= 2 * len(data)  # and never the training transform
    assert not torch.equal(images(data.train(), 0), images(data.train(), 1))  # train group: still augmented
    assert not torch.equal(images(data, 0), images(data, 1))  # the experience starts in the train group
    train_spy.seen.clear()
    test = bench.scenario.test_stream[0].dataset  # test images never augment, in either group
    assert torch.equal(images(test, 0), images(test.train(), 1)) and torch.equal(images(test.eval(), 0), images(test, 1))
    assert not train_spy.seen


def test_train_group_draws_the_same_random_stream_as_the_bare_transform(cifar):
    """Moving the augmentation into the train group leaves training's random stream as it was when the datasets
    applied it: item by item, the same draws as the training transform applied to the raw images in order, and
    nothing else draws from the global RNG."""
    bench, (train_spy, _) = cifar
    data = bench.scenario.train_stream[1].dataset
    train_spy.seen.clear()
    torch.manual_seed(7)
    got = torch.stack([data[i][0] for i in range(len(data))])
    after = torch.rand(3)
    raw = list(train_spy.seen)
    assert len(raw) == len(data)
    torch.manual_seed(7)
    assert torch.equal(got, torch.stack([train_spy.inner(img) for img in raw]))
    assert torch.equal(torch.rand(3), after)


def test_simple_cil_prototypes_ignore_the_augmentation(cifar):
    """SimpleCIL's prototypes (PILOT ``replace_fc``, test transform): the same whatever the RNG state."""
    bench, _ = cifar
    protos = []
    for seed in (0, 1):
        strategy = make_strategy("simple_cil")
        torch.manual_seed(seed)
        strategy.train(bench.scenario.train_stream[0], eval_streams=[], num_workers=0)
        protos.append(strategy.model.head.weight.clone())
    assert protos[0].abs().sum() > 0
    assert torch.equal(protos[0], protos[1])


class Capture:
    """Stands in for HiDe's ClassStats: records the features each class's statistics would be computed from."""

    n_classes = 0

    def __init__(self):
        self.feats: list[torch.Tensor] = []

    def add_class(self, feats: torch.Tensor) -> None:
        self.feats.append(feats.clone())


def test_hide_statistics_ignore_the_augmentation(cifar):
    """HiDe-Prompt's class statistics (HIDE ``_compute_mean`` over the eval-transformed training set)."""
    bench, _ = cifar
    strategy = make_strategy("hide_prompt")
    strategy.experience = bench.scenario.train_stream[0]
    strategy.known, strategy.seen = 0, 5
    strategy.model.eval()
    runs = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        capture = Capture()
        with torch.no_grad():
            strategy._add_stats(capture, strategy.model.query)
        runs.append(capture.feats)
    assert len(runs[0]) == 5 and all(torch.equal(a, b) for a, b in zip(*runs))


def test_inflora_representation_matrix_keeps_the_training_transform(cifar):
    """InfLoRA's R_l is accumulated over the reference's training loader (augmented; liangyanshuo/InfLoRA
    ``methods/inflora.py``, ``train_loader``), so two passes differ on an augmenting benchmark."""
    bench, _ = cifar
    strategy = make_strategy("inflora")
    exp = bench.scenario.train_stream[0]
    torch.manual_seed(0)
    first = strategy.input_statistics(exp)
    torch.manual_seed(1)
    second = strategy.input_statistics(exp)
    assert not torch.equal(first[0], second[0])


def test_benchmarks_without_augmentation_read_the_same_images_in_both_groups():
    data = synthetic_bench().scenario.train_stream[0].dataset
    assert torch.equal(images(data.train(), 0), images(data.eval(), 1))
    assert torch.equal(images(data, 0), images(data.eval(), 1))
