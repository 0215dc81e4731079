"""Run one job in the current process: benchmark + backbone + method -> train task by task -> one record.

A job never raises: any exception becomes a record with ``status: failed`` and its traceback, so that one
bad job cannot stop a suite and a finished record is never lost.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import platform
import random
import socket
import subprocess
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.jobs import Job
from harness.store import ResultStore, atomic_torch_save

REPO = Path(__file__).resolve().parent.parent


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def configure_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[var] = str(threads)


def git_state() -> tuple[str | None, bool | None]:
    try:
        commit = subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD"], cwd=REPO, capture_output=True,
                                text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=5)
        return (commit.stdout.strip() or None), bool(dirty.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return None, None


def versions() -> dict[str, str]:
    import avalanche
    import timm

    return {"python": platform.python_version(), "torch": torch.__version__, "timm": timm.__version__,
            "avalanche": avalanche.__version__, "numpy": np.__version__}


def job_logger(path: Path) -> logging.Logger:
    """One job, one log file (ANCHORS.md: basicConfig per seed in one process loses logs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger(f"sdlb.job.{path.stem}")
    logger.handlers.clear()
    logger.propagate = False
    handler = logging.FileHandler(path, mode="a")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return logger


def base_record(job: Job, store: ResultStore) -> dict[str, Any]:
    return {
        "schema": 1, "job_id": job.job_id, "suite": job.suite, "method": job.method, "method_name": job.method_name,
        "benchmark": job.benchmark, "benchmark_name": job.benchmark_name, "n_tasks": job.n_tasks(),
        "seed": job.seed, "backbone": job.backbone, "config": {**job.config(), "runtime": dict(job.runtime)},
        "config_hash": job.config_hash(), "log_path": str(store.log_path(job.job_id).relative_to(store.root)),
        "checkpoint": None, "error": None,
    }


def run_job(job: Job, results_dir: str | Path) -> dict[str, Any]:
    """Run ``job``, write its record (done or failed) and return it."""
    store = ResultStore(results_dir)
    record = base_record(job, store)
    log = job_logger(store.log_path(job.job_id))
    commit, dirty = git_state()
    record["provenance"] = {"versions": versions(), "git_commit": commit, "git_dirty": dirty,
                            "hostname": socket.gethostname(), "started": now()}
    log.info("start %s config_hash=%s", job.job_id, record["config_hash"])
    try:
        record.update(_train_and_evaluate(job, store, log, record["provenance"]))
        record["status"] = "done"
    except Exception:  # noqa: BLE001 - every failure becomes a record
        record["status"] = "failed"
        record["error"] = traceback.format_exc()
        log.error("failed:\n%s", record["error"])
    record["provenance"]["finished"] = now()
    store.write(record)
    log.info("end %s status=%s", job.job_id, record["status"])
    for handler in log.handlers:
        handler.close()
    return record


def _train_and_evaluate(job: Job, store: ResultStore, log: logging.Logger, provenance: dict) -> dict[str, Any]:
    from avalanche.evaluation.metrics import accuracy_metrics
    from avalanche.training.plugins import EvaluationPlugin

    from benchmarks import BENCHMARKS
    from benchmarks.backbones import build_backbone
    from harness.metrics import AccuracyCollector, MemoryLogger, summary
    from harness.profile import efficiency
    from methods import METHODS

    rt = job.runtime
    configure_threads(rt.get("threads"))
    device = resolve_device(rt.get("device", "auto"))
    torch.use_deterministic_algorithms(device.type == "cpu", warn_only=True)
    seed_everything(job.seed)
    bench = BENCHMARKS.get(job.benchmark_name).obj(job.benchmark_cfg, job.seed)
    seed_everything(job.seed)  # the benchmark builder may touch RNGs; the model starts from a known state
    backbone, prov = build_backbone(job.backbone_cfg)
    provenance.update(prov, device=str(device))
    collector = AccuracyCollector(bench.classes_per_task)
    memory = MemoryLogger()
    evaluator = EvaluationPlugin(accuracy_metrics(stream=True), loggers=[memory])
    strategy = METHODS.get(job.method_name).obj(cfg=job.method_cfg, backbone=backbone, device=device, plugins=[collector],
                                                 evaluator=evaluator)
    loader_kw = dict(num_workers=job.method_cfg.num_workers, pin_memory=device.type == "cuda")
    out: dict[str, Any] = {"class_order": bench.class_order, "classes_per_task": bench.classes_per_task,
                           "acc_matrix": [], "til_matrix": [], "pooled_acc": [], "til_pooled_acc": [],
                           "avalanche_stream_acc": [], "timings": {"train_s": [], "eval_s": []},
                           "benchmark_info": bench.info}
    peak_mem = []
    t_start = time.perf_counter()
    for t, experience in enumerate(bench.scenario.train_stream):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        strategy.train(experience, eval_streams=[], **loader_kw)
        t1 = time.perf_counter()
        collector.reset()
        strategy.eval(bench.scenario.test_stream[: t + 1], **loader_kw)
        t2 = time.perf_counter()
        cil, til, pooled, pooled_til = collector.row()
        out["acc_matrix"].append(cil)
        out["til_matrix"].append(til)
        out["pooled_acc"].append(pooled)
        out["til_pooled_acc"].append(pooled_til)
        out["avalanche_stream_acc"].append(memory.stream_accuracy())
        out["timings"]["train_s"].append(t1 - t0)
        out["timings"]["eval_s"].append(t2 - t1)
        peak_mem.append(torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None)
        log.info("task %d/%d: pooled acc %.2f (task-incremental %.2f), train %.1fs, eval %.1fs",
                 t + 1, bench.n_tasks, pooled, pooled_til, t1 - t0, t2 - t1)
        if rt.get("checkpoints", "final") == "tasks" or t == bench.n_tasks - 1:
            path = store.checkpoint_dir(job.job_id) / f"task{t}.pt"
            atomic_torch_save(strategy.checkpoint(), path)
            out["checkpoint"] = str(path.relative_to(store.root))
    out["timings"]["total_s"] = time.perf_counter() - t_start
    out["metrics"] = summary(out["acc_matrix"], out["pooled_acc"], out["til_pooled_acc"])
    out["efficiency"] = efficiency(strategy, bench.image_shape, device)
    out["efficiency"]["peak_mem_mb"] = peak_mem
    out["mechanism"] = strategy.mechanism()
    return out

