"""The typed record (runner/record.py): its documentation, version-1 files, and code-aware staleness."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

import run_suite
from runner.record import SCHEMA_VERSION, Record, from_dict, schema_table

REPO = Path(__file__).resolve().parent.parent
PLUGIN = '''
from dataclasses import dataclass

from methods.base import METHODS, CILStrategy, MethodConfig


@dataclass(frozen=True)
class StaleProbeConfig(MethodConfig):
    epochs: int = 0


class StaleProbe(CILStrategy):
    """Trains nothing: a frozen tiny ViT and a growing head."""


if "stale_probe" not in METHODS:
    METHODS.register("stale_probe", StaleProbeConfig)(StaleProbe)
'''


def test_committed_records_are_version_2_and_load():
    paths = sorted((REPO / "docs" / "results").glob("*/records/*.json"))
    assert paths
    for path in paths:
        rec = from_dict(json.loads(path.read_text()), str(path))
        assert rec.schema == SCHEMA_VERSION and rec.code_hash and rec.provenance.git_dirty is False


def test_record_schema_doc_is_generated_from_the_dataclasses():
    doc = (REPO / "docs" / "record_schema.md").read_text()
    assert schema_table() in doc, "docs/record_schema.md is stale: paste runner.record.schema_table() into it"
    assert f"Schema version {SCHEMA_VERSION}" in doc


def test_committed_version_1_records_still_load():
    """Version-1 records as the previous release wrote them (tests/fixtures/records_v1: three of its committed
    quick-suite records, their absolute weights path made relative) load into the typed record unchanged."""
    paths = sorted((REPO / "tests" / "fixtures" / "records_v1").glob("*.json"))
    assert len(paths) == 3
    for path in paths:
        raw = json.loads(path.read_text())
        rec = from_dict(raw, str(path))
        assert isinstance(rec, Record) and rec.schema == raw["schema"] == 1 and rec.code_hash is None
        assert rec.metrics.acc == raw["metrics"]["acc"] and rec.pooled_acc == raw["pooled_acc"]


def probe_suite(tmp_path: Path) -> tuple[Path, list[str], list[str], Path]:
    """A one-job suite of the ``stale_probe`` plugin: (plugin file, a run's options, status's, the record's path)."""
    plugin = tmp_path / "stale_probe_plugin.py"
    plugin.write_text(PLUGIN)
    suite = tmp_path / "stale.yaml"
    suite.write_text(yaml.safe_dump({
        "name": "stale", "seeds": [0], "backbones": {"tiny": {"tag": "vit_test_tiny", "pretrained": False}},
        "benchmarks": {"synthetic": {"n_tasks": 2, "n_classes": 4, "train_per_class": 2, "test_per_class": 2}},
        "defaults": {"batch_size": 8, "eval_batch_size": 16}, "methods": {"probe": {"method": "stale_probe"}}}))
    out = tmp_path / "res"
    common = ["--suite", str(suite), "--results-dir", str(out), "--import", str(plugin)]
    return plugin, common, ["status", *common], out / "records" / "probe__synthetic__s0.json"


def test_editing_a_methods_source_marks_its_records_stale(tmp_path, capsys):
    plugin, common, status, path = probe_suite(tmp_path)
    assert run_suite.main([*common, "--no-report", "--threads", "1"]) == 0
    record = json.loads(path.read_text())
    assert record["schema"] == SCHEMA_VERSION and record["code_hash"]
    capsys.readouterr()
    assert run_suite.main(status) == 0
    text = capsys.readouterr().out
    assert "1 done" in text and "CODE" not in text and "other code" not in text
    plugin.write_text(PLUGIN.replace("Trains nothing", "Still trains nothing"))  # an edit of the method's source
    assert run_suite.main(status) == 0
    text = capsys.readouterr().out
    assert "1 done, 0 running, 0 failed, 0 pending (1 done by other code)" in text and "CODE" in text and "--rerun-stale" in text
    # the edit does not make the job "not done": a plain rerun skips it, --rerun-stale reruns it
    assert run_suite.main([*common, "--no-report", "--threads", "1"]) == 0
    assert "1 already done, 0 to run" in capsys.readouterr().out
    assert run_suite.main([*common, "--no-report", "--threads", "1", "--rerun-stale"]) == 0
    assert "1 already done, 1 to run" in capsys.readouterr().out
    assert run_suite.main(status) == 0
    assert "CODE" not in capsys.readouterr().out


def test_a_record_made_under_another_kernel_pin_is_flagged_and_rerun_on_request(tmp_path, capsys, monkeypatch):
    """A done record whose ``provenance.cpu_isa`` names another pin than a run would set is kept, flagged ``PIN``
    by status and named by the run's note; ``--rerun-stale`` reruns it; status under the pin it names is clean."""
    import platform

    from core.cpu import VARIABLES

    _, common, status, path = probe_suite(tmp_path)
    common = [*common, "--no-report", "--threads", "1"]
    assert run_suite.main(common) == 0
    made = json.loads(path.read_text())
    assert made["provenance"]["cpu_isa"] not in (None, "baseline")
    made["provenance"]["cpu_isa"] = "baseline"  # as a run under --cpu-isa baseline would have written it
    path.write_text(json.dumps(made))
    capsys.readouterr()
    assert run_suite.main(status) == 0
    text = capsys.readouterr().out
    assert "1 done, 0 running, 0 failed, 0 pending (1 done under another CPU kernel pin)" in text
    assert " PIN " in text and "made under another CPU kernel pin (baseline, now " in text and "CODE" not in text
    assert run_suite.main(common) == 0
    text = capsys.readouterr().out
    assert "1 already done, 0 to run" in text and "under another CPU kernel pin" in text
    assert json.loads(path.read_text())["provenance"]["cpu_isa"] == "baseline"  # kept as it was
    if platform.machine().lower() in ("x86_64", "amd64"):  # elsewhere no level is set: the pin is native
        for var in VARIABLES:  # the pin's variables as a shell without them has: --cpu-isa decides
            monkeypatch.delenv(var, raising=False)
        assert run_suite.main([*status, "--cpu-isa", "baseline"]) == 0
        assert "PIN" not in capsys.readouterr().out
        for var in VARIABLES:  # that status set them for this process; the next command is a new process
            monkeypatch.delenv(var, raising=False)
    assert run_suite.main([*common, "--rerun-stale"]) == 0
    assert "1 already done, 1 to run" in capsys.readouterr().out
    assert json.loads(path.read_text())["provenance"]["cpu_isa"] != "baseline"
    assert run_suite.main(status) == 0
    assert "PIN" not in capsys.readouterr().out


def test_a_pin_set_after_torchs_first_kernel_is_not_claimed(monkeypatch):
    """``provenance.cpu_isa`` names the pin only where ATen runs its level (core/cpu.py)."""
    import torch

    from core.cpu import LEVELS, VARIABLES
    from runner import run_job

    for var, value in LEVELS["avx2"].items():
        monkeypatch.setenv(var, value)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert run_job.cpu_isa() == "avx2"
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "DEFAULT")  # a CPU without AVX2
    assert run_job.cpu_isa() == "avx2"
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert run_job.cpu_isa().startswith("avx2 set, not in force (ATen runs AVX512")
    for var in VARIABLES:
        monkeypatch.delenv(var)
    assert run_job.cpu_isa() == "native"
