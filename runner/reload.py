"""Rebuild a finished job's strategy from its record and a saved checkpoint (for analysis of solutions)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks import BENCHMARKS
from benchmarks.backbones import BackboneConfig, build_backbone
from core.errors import UserError
from methods import METHODS
from methods.base import legacy_amp
from runner.env import seed_everything
from runner.store import ResultStore, load_tensors


def load_record(results_dir: str | Path, job_id: str) -> dict[str, Any]:
    """The record of ``job_id`` as a plain dict (what the analysis functions take)."""
    record = ResultStore(results_dir).load(job_id)
    if record is None:
        raise UserError(f"no record {job_id!r} in {Path(results_dir) / 'records'}; run the suite first")
    return record.to_dict()


def checkpoint_path(results_dir: str | Path, job_id: str, task: int) -> Path:
    path = Path(results_dir) / "checkpoints" / job_id / f"task{task}.pt"
    if not path.exists():
        raise UserError(f"no checkpoint for task {task} of {job_id} ({path}); run the job into a results folder of "
                        "your own (run_suite.py keeps one per task by default; results committed under docs/ hold none)")
    return path


def method_fields(record: dict[str, Any]) -> dict[str, Any]:
    """The record's method config as today's config classes read it: the boolean ``amp`` of an older record
    becomes the precision that job ran (:func:`methods.base.legacy_amp`)."""
    fields = dict(record["config"]["method"])
    if "amp" in fields:
        fields["amp"] = legacy_amp(fields["amp"], (record.get("provenance") or {}).get("device"))
    return fields


def load_strategy(record: dict[str, Any], results_dir: str | Path, task: int | None = None,
                  device: str = "cpu"):
    """(strategy restored after ``task`` (default: the last), benchmark) for a record with checkpoints."""
    cfg = record["config"]
    task = record["n_tasks"] - 1 if task is None else task
    seed = cfg["seed"]
    bench_cfg = BENCHMARKS.make_config(cfg["benchmark_name"], cfg["benchmark"])
    bench = BENCHMARKS.get(cfg["benchmark_name"]).obj(bench_cfg, seed)
    seed_everything(seed)
    backbone, _ = build_backbone(BackboneConfig.from_dict(cfg["backbone"]))
    method_cfg = METHODS.make_config(cfg["method_name"], method_fields(record))
    strategy = METHODS.get(cfg["method_name"]).obj(cfg=method_cfg, backbone=backbone, device=device)
    # weights_only=True: a results folder from someone else must not run code here (refused with one line)
    state = load_tensors(checkpoint_path(results_dir, record["job_id"], task), map_location=device)
    strategy.restore(state)
    strategy.model.eval()
    return strategy, bench
