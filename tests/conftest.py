"""Shared test helpers: a tiny random ViT, the synthetic benchmark, and a one-call training run."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from core.cpu import DEFAULT, pin_kernels  # torch-free

pin_kernels(DEFAULT)  # as run_suite.py does: jobs run in this process and in workers give the same records

import pytest
import torch

torch.set_num_threads(1)

SMALL_SETTINGS = {"epochs": 1, "batch_size": 8, "eval_batch_size": 16}  # the tests' suite defaults


def tiny_backbone(seed: int = 0, **kwargs):
    """A random 2-block ViT on 16 px RGB images (deterministic for a seed)."""
    from benchmarks.backbones import BackboneConfig, build_backbone

    torch.manual_seed(seed)
    backbone, _ = build_backbone(BackboneConfig(tag="vit_test_tiny", pretrained=False, **kwargs))
    return backbone


def synthetic_bench(seed: int = 0, **overrides):
    from benchmarks import BENCHMARKS

    cfg = BENCHMARKS.make_config("synthetic", overrides)
    return BENCHMARKS.get("synthetic").obj(cfg, seed)


def make_strategy(method: str, seed: int = 0, plugins=None, evaluator=None, **cfg_overrides):
    """Build a registered method on the tiny ViT with small, fast settings."""
    from methods import METHODS
    from runner.env import seed_everything
    from runner.suite import suite_defaults_for

    entry = METHODS.get(method)
    small = suite_defaults_for(entry.config_cls, SMALL_SETTINGS)  # as a suite's defaults: the fields it has
    cfg = METHODS.make_config(method, {**small, **cfg_overrides})
    backbone = tiny_backbone(seed)
    seed_everything(seed)
    kwargs = {"evaluator": evaluator} if evaluator is not None else {"evaluator": quiet_evaluator()}
    return entry.obj(cfg=cfg, backbone=backbone, device="cpu", plugins=plugins or [], **kwargs)


def quiet_evaluator():
    from runner.metrics import silent_evaluator

    return silent_evaluator()


def train_tasks(strategy, bench, n_tasks: int | None = None):
    """Train on the first n_tasks experiences (all by default)."""
    stream = bench.scenario.train_stream
    for exp in list(stream)[: n_tasks or len(stream)]:
        strategy.train(exp, eval_streams=[], num_workers=0)
    return strategy


@pytest.fixture
def bench():
    return synthetic_bench()
