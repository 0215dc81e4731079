"""Where a method's config fields come from, and a training-free method declared once.

Precedence (runner/suite.py, docs/adding_a_method.md), last wins: the config class's own defaults, the suite's
``defaults`` (only fields the method has, never a ``TRAINING_FREE`` method's ``epochs``/``init_epochs``), the
method's entry, matching ``overrides``, command-line overrides.
"""

from __future__ import annotations

import json

import pytest
import yaml
from ridge_fixture import registered

import run_suite
from core.errors import UserError
from runner.suite import expand_jobs, load_suite

TINY = {"tag": "vit_test_tiny", "pretrained": False}


def suite(methods: dict, **defaults) -> dict:
    return {"name": "precedence", "seeds": [0], "backbones": {"tiny": TINY},
            "benchmarks": {"synthetic": {"n_tasks": 3, "n_classes": 6}},
            "defaults": {"epochs": 2, "batch_size": 8, "eval_batch_size": 16, **defaults}, "methods": methods}


def method_cfgs(data: dict) -> dict:
    return {job.method: job.method_cfg for job in expand_jobs(data)}


def test_a_training_free_method_declared_once_runs_under_suite_defaults_of_two_epochs(tmp_path, capsys):
    """ridge_buffers says it trains nothing once, by subclassing TrainingFreeConfig; its suite entry is empty."""
    path = tmp_path / "precedence.yaml"
    path.write_text(yaml.safe_dump(suite({"ridge_buffers": {}, "full_ft": {}})))
    out = tmp_path / "res"
    with registered("ridge_buffers"):
        cfgs = method_cfgs(load_suite(str(path)))
        assert cfgs["ridge_buffers"].epochs == 0 and cfgs["full_ft"].epochs == 2  # the defaults reach full_ft only
        assert cfgs["ridge_buffers"].batch_size == 8  # every other default still applies
        code = run_suite.main(["--suite", str(path), "--methods", "ridge_buffers", "--results-dir", str(out),
                               "--no-report"])
    assert code == 0, capsys.readouterr().err
    record = json.loads((out / "records" / "ridge_buffers__synthetic__s0.json").read_text())
    assert record["status"] == "done" and record["config"]["method"]["epochs"] == 0
    assert len(record["acc_matrix"]) == 3 and record["efficiency"]["learnable_params"] == 0


def test_the_quick_suite_needs_no_epochs_for_simple_cil():
    cfgs = method_cfgs(load_suite("quick"))
    assert cfgs["simple_cil"].epochs == 0 and cfgs["full_ft"].epochs == 2


def test_epochs_set_for_a_training_free_method_exits_2_naming_the_fix(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(suite({"simple_cil": {"epochs": 2}})))
    out = tmp_path / "res"
    assert run_suite.main(["--suite", str(path), "--results-dir", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "method simple_cil: this method trains nothing (training-free, epochs: 0): remove epochs from its " \
           "suite entry" in err, err
    assert len(err.splitlines()) == 1 and not out.exists()


def test_a_suite_default_the_method_rejects_is_named_with_the_fix():
    with pytest.raises(UserError, match=r"lr must be > 0.*suite defaults gave it lr: -1.*entry of full_ft"):
        expand_jobs(suite({"full_ft": {}}, lr=-1))
    assert method_cfgs(suite({"full_ft": {"lr": 0.5}}, lr=-1))["full_ft"].lr == 0.5  # the entry wins
