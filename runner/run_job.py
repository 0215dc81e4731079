"""Run one job in the current process: benchmark + backbone + method -> train task by task -> one record.

A job never raises: any exception becomes a record with ``status: failed`` and its traceback, so that one
bad job cannot stop a suite and a finished record is never lost. After every experience but the last the job
saves a resume state (:mod:`runner.resume`); a job killed mid-experience continues from it when started again.
The job's log file gets a ``start`` line, per-epoch progress (:mod:`runner.progress`), one ``task t/N`` line per
finished experience (written after its resume state, so a ``task t/N`` line means "resumable from here") and an
``end`` line.
"""

from __future__ import annotations

import datetime as dt
import functools
import gc
import logging
import os
import platform
import socket
import subprocess
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import avalanche
import numpy as np
import timm
import torch
from avalanche.training.plugins import EvaluationPlugin

from benchmarks import BENCHMARKS
from benchmarks.backbones import build_backbone
from core.cpu import LEVELS, level_in_force
from methods import METHODS
from runner import resume
from runner.env import configure_threads, resolve_device, seed_everything
from runner.jobs import Job
from runner.locks import Skipped, run_once
from runner.metrics import AccuracyCollector, stream_accuracy, stream_accuracy_evaluator, summary
from runner.profile import efficiency
from runner.progress import EpochLogger
from runner.record import Efficiency, Metrics, Provenance, Record, Timings, portable_path
from runner.status import clear_running, mark_running
from runner.store import ResultStore, atomic_torch_save

# Avalanche 0.6.0's EWC indexes a tensor with a list (avalanche/training/utils.py:451), which torch 2.14 flags as
# deprecated on every experience. Nothing in a suite causes or can avoid it; the result is unaffected.
warnings.filterwarnings("ignore", message="Using a non-tuple sequence for multidimensional indexing",
                        category=UserWarning, module=r"avalanche\.")

REPO = Path(__file__).resolve().parent.parent


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def git_state() -> tuple[str | None, bool | None]:
    try:
        commit = subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD"], cwd=REPO, capture_output=True,
                                text=True, timeout=5, check=False)
        # --no-optional-locks: a job killed mid-call (tests kill runners) must not leave .git/index.lock behind
        dirty = subprocess.run(["git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=5, check=False)
        return (commit.stdout.strip() or None), bool(dirty.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return None, None


@functools.cache
def cpu() -> str:
    """The CPU model and the vector instruction level torch's CPU kernels dispatch to: records made at different
    levels (AVX2, AVX512) may differ in the last bits, and a chaotic run in more (README, Determinism). One reading
    per process: a worker that runs many jobs does not reread ``/proc/cpuinfo`` for each."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    return f"{model} ({torch.backends.cpu.get_cpu_capability()})"


def cpu_isa() -> str:
    """The kernels' pin in force in this process (core/cpu.py): the level its environment names, unless ATen runs
    another level than that pin's, which happens where torch ran a kernel before the variables were set (a program
    that calls ``run_suite.main`` after its own torch work): then the record says so rather than claim the pin."""
    level = level_in_force()
    wanted = LEVELS.get(level, {}).get("ATEN_CPU_CAPABILITY", "").upper()
    have = torch.backends.cpu.get_cpu_capability()
    if wanted and have not in (wanted, "DEFAULT"):  # DEFAULT: a CPU without the level falls back to it
        return f"{level} set, not in force (ATen runs {have}: torch ran a kernel before the variables were set)"
    return level


def versions() -> dict[str, str]:
    return {"python": platform.python_version(), "torch": torch.__version__, "timm": timm.__version__,
            "avalanche": avalanche.__version__, "numpy": np.__version__}


def job_logger(path: Path) -> logging.Logger:
    """One job, one log file (LAMDA-PILOT's and InfLoRA's ``trainer.py`` call ``logging.basicConfig`` per seed in one
    process, so later seeds' logs are lost)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger(f"sdlb.job.{path.stem}")
    logger.handlers.clear()
    logger.propagate = False
    handler = logging.FileHandler(path, mode="a")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return logger


def base_record(job: Job, store: ResultStore) -> Record:
    """The record of ``job`` before it runs: identity, config and hashes (the one place a record is made)."""
    return Record(job_id=job.job_id, suite=job.suite, method=job.method, method_name=job.method_name,
                  benchmark=job.benchmark, benchmark_name=job.benchmark_name, n_tasks=job.n_tasks(), seed=job.seed,
                  backbone=job.backbone, config={**job.config(), "runtime": dict(job.runtime)},
                  config_hash=job.config_hash(), code_hash=job.code_hash(), status="failed",
                  log_path=str(store.log_path(job.job_id).relative_to(store.root)))


def run_job(job: Job, results_dir: str | Path) -> Record | Skipped:
    """Run ``job``, write its record (done or failed) and return it.

    A job that finds a resume state for its config (:mod:`runner.resume`) continues after the last experience it
    finished. Any exception, CUDA out-of-memory included, becomes a ``failed`` record with its traceback; the
    resume state is then kept (``--retry-failed`` continues from it) and removed once the job is ``done``.
    While it runs, ``<results>/running/<job_id>.json`` names its host and pid (:mod:`runner.status`).
    The job runs under its lock (:mod:`runner.locks`): one that another runner holds is returned ``skipped``.
    """
    return run_once(job, results_dir, _run_job)


def _run_job(job: Job, results_dir: str | Path) -> Record:
    store = ResultStore(results_dir)
    record = base_record(job, store)
    log = job_logger(store.log_path(job.job_id))
    commit, dirty = git_state()
    record.provenance = Provenance(versions=versions(), git_commit=commit, git_dirty=dirty,
                                  hostname=socket.gethostname(), cpu=cpu(), cpu_isa=cpu_isa(),
                                  started=now(),
                                  cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
                                  slurm_job_id=_slurm_job_id())
    mark_running(store, job.job_id)
    log.info("start %s config_hash=%s pid=%d", job.job_id, record.config_hash, os.getpid())
    try:
        _train_and_evaluate(job, store, log, record)
        record.status = "done"
    except Exception as err:  # noqa: BLE001 - every failure becomes a record
        record.status = "failed"
        record.error = traceback.format_exc()
        if isinstance(err, torch.cuda.OutOfMemoryError):
            record.error = f"CUDA out of memory on {record.provenance.device}: lower batch_size or " \
                           f"give the job a GPU of its own\n{record.error}"
        log.error("failed:\n%s", record.error)
    finally:
        _release_memory()
    record.provenance.finished = now()
    store.write(record)
    if record.status == "done":
        resume.clear(store, job.job_id)  # after the record: a kill in between leaves a done record, never a loss
    log.info("end %s status=%s", job.job_id, record.status)
    clear_running(store, job.job_id)
    for handler in log.handlers:
        handler.close()
    return record


def _slurm_job_id() -> str | None:
    """``<array>_<task>`` (or the plain job id) when running as a SLURM task."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID")


def _release_memory() -> None:
    """A failed job's tensors must not crowd the next job in the same worker (the exception is gone by now)."""
    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


@dataclass
class _Run:
    """What one job trains: built once per process start, identically for a fresh and a resumed run."""

    bench: Any
    strategy: Any
    collector: AccuracyCollector
    evaluator: EvaluationPlugin
    device: torch.device
    loader_kw: dict
    epochs: EpochLogger


def build_run(job: Job, log: logging.Logger, provenance: Provenance,
              bench: Callable[[Any], Any] | None = None) -> _Run:
    """Benchmark, backbone and strategy of ``job``; ``bench`` may turn the built benchmark into another (the recipe
    rule's validation split of the first tasks, runner/recipe.py) before anything else is built."""
    rt = job.runtime
    configure_threads(rt.get("threads"))
    device = resolve_device(rt.get("device", "auto"))
    torch.use_deterministic_algorithms(device.type == "cpu", warn_only=True)
    seed_everything(job.seed)
    bench = (bench or (lambda b: b))(BENCHMARKS.get(job.benchmark_name).obj(job.benchmark_cfg, job.seed))
    seed_everything(job.seed)  # the benchmark builder may touch RNGs; the model starts from a known state
    backbone, prov = build_backbone(job.backbone_cfg)
    prov["weights_path"] = portable_path(prov["weights_path"])
    provenance.__dict__.update(prov, device=str(device))
    collector = AccuracyCollector(bench.classes_per_task)
    evaluator = stream_accuracy_evaluator()
    epochs = EpochLogger(log, bench.n_tasks)
    plugins = [collector, epochs]
    strategy = METHODS.get(job.method_name).obj(cfg=job.method_cfg, backbone=backbone, device=device, plugins=plugins,
                                                 evaluator=evaluator)
    loader_kw = {"num_workers": job.method_cfg.num_workers, "pin_memory": device.type == "cuda"}
    return _Run(bench, strategy, collector, evaluator, device, loader_kw, epochs)


def _train_and_evaluate(job: Job, store: ResultStore, log: logging.Logger, record: Record) -> None:
    """Train and evaluate task by task (resuming where a resume state says), filling ``record``'s results."""
    run = build_run(job, log, record.provenance)
    bench, strategy, device = run.bench, run.strategy, run.device
    # progress = the record fields that grow task by task; exactly what a resume state carries
    progress: dict[str, Any] = {"acc_matrix": [], "til_matrix": [], "pooled_acc": [], "til_pooled_acc": [],
                                "avalanche_stream_acc": [], "timings": {"train_s": [], "eval_s": []},
                                "peak_mem_mb": [], "checkpoint": None, "elapsed_s": 0.0,
                                "task_confusion": [], "task_id_acc": None, "nonfinite_loss": None}
    pin = record.provenance.cpu_isa  # a resume state saved under another pin or by other code is not continued
    state = resume.load(store, job.job_id, job.config_hash(), log, pin, record.code_hash)
    first = state["finished"] + 1 if state is not None else 0
    t_start = time.perf_counter()
    for t, experience in enumerate(bench.scenario.train_stream):
        if t < first:
            continue  # finished before the restart
        if state is not None and t == first:
            # a method that keeps earlier experiences' data by reference gets them back
            strategy.resume_experiences(list(bench.scenario.train_stream)[:first])
            resume.apply(state, strategy)  # RNGs last, right before the next experience draws from them
            progress.update(state["progress"])
            t_start -= progress["elapsed_s"]
            log.info("resumed: experiences 1-%d of %d already finished (%s)", first, bench.n_tasks,
                     resume.resume_path(store, job.job_id).relative_to(store.root))
        _experience(job, run, t, experience, progress, store)
        progress["elapsed_s"] = time.perf_counter() - t_start
        if t < bench.n_tasks - 1:
            resume.save(store, job.job_id, job.config_hash(), t, bench.n_tasks, strategy, progress, pin,
                        record.code_hash)
        train_s, eval_s = progress["timings"]["train_s"][-1], progress["timings"]["eval_s"][-1]
        log.info("task %d/%d: pooled acc %.2f (task-incremental %.2f), train %.1fs, eval %.1fs",
                 t + 1, bench.n_tasks, progress["pooled_acc"][-1], progress["til_pooled_acc"][-1], train_s, eval_s)
    total_s = time.perf_counter() - t_start
    eff, mechanism = efficiency(strategy, bench.image_shape, device), strategy.mechanism()
    timings = progress["timings"]
    record.acc_matrix, record.til_matrix = progress["acc_matrix"], progress["til_matrix"]
    record.task_confusion, record.nonfinite_loss = progress["task_confusion"], progress["nonfinite_loss"]
    record.pooled_acc, record.til_pooled_acc = progress["pooled_acc"], progress["til_pooled_acc"]
    record.avalanche_stream_acc, record.checkpoint = progress["avalanche_stream_acc"], progress["checkpoint"]
    record.class_order, record.classes_per_task = bench.class_order, bench.classes_per_task
    record.benchmark_info = bench.info
    record.timings = Timings(timings["train_s"], timings["eval_s"], total_s)
    record.metrics = Metrics(**summary(record.acc_matrix, record.pooled_acc, record.til_pooled_acc),
                             task_id_acc=progress["task_id_acc"])
    record.efficiency = Efficiency(**eff, peak_mem_mb=progress["peak_mem_mb"])
    record.mechanism = mechanism


def _experience(job: Job, run: _Run, t: int, experience, progress: dict[str, Any], store: ResultStore) -> None:
    """Train experience ``t``, evaluate on every experience seen so far and append the results to ``progress``."""
    strategy, device = run.strategy, run.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    # workers live for all epochs of the task (a new loader per task): no respawn per epoch (docs/performance.md 3)
    strategy.train(experience, eval_streams=[], persistent_workers=run.loader_kw["num_workers"] > 0, **run.loader_kw)
    t1 = time.perf_counter()
    if progress["nonfinite_loss"] is None and run.epochs.nonfinite_epoch is not None:
        progress["nonfinite_loss"] = [t + 1, run.epochs.nonfinite_epoch]
    run.collector.reset()
    strategy.eval(run.bench.scenario.test_stream[: t + 1], **run.loader_kw)
    t2 = time.perf_counter()
    cil, til, pooled, pooled_til = run.collector.row()
    for key, value in (("acc_matrix", cil), ("til_matrix", til), ("pooled_acc", pooled),
                       ("til_pooled_acc", pooled_til), ("avalanche_stream_acc", stream_accuracy(run.evaluator))):
        progress[key].append(value)
    progress["task_confusion"], progress["task_id_acc"] = run.collector.task_rows()  # after the latest task
    progress["timings"]["train_s"].append(t1 - t0)
    progress["timings"]["eval_s"].append(t2 - t1)
    progress["peak_mem_mb"].append(torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None)
    if job.runtime.get("checkpoints", "final") == "tasks" or t == run.bench.n_tasks - 1:
        path = store.checkpoint_dir(job.job_id) / f"task{t}.pt"
        atomic_torch_save(strategy.checkpoint(), path)
        progress["checkpoint"] = str(path.relative_to(store.root))


def record_failure(job: Job, results_dir: str | Path, error: str) -> Record:
    """Record a job that died outside :func:`run_job`'s own handling (its worker process or SLURM job was killed).

    A record the job itself wrote for its current config wins: it is returned unchanged, never overwritten.
    """
    store = ResultStore(results_dir)
    existing = store.load(job.job_id)
    if existing is not None and existing.config_hash == job.config_hash() and existing.status == "done":
        return existing
    record = base_record(job, store)
    record.error = error
    record.provenance = Provenance(hostname=socket.gethostname(), finished=now())
    store.write(record)
    clear_running(store, job.job_id)
    log = job_logger(store.log_path(job.job_id))
    log.error("failed outside the job:\n%s", error)
    log.info("end %s status=failed", job.job_id)
    for handler in log.handlers:
        handler.close()
    return record
