"""Executors: run a list of jobs and yield their records as they finish.

``local`` (this module): joblib.

* ``jobs=1`` and no GPU list: the jobs run one after another in this process.
* ``jobs=N`` (CPU): N loky worker processes, each given its share of the cores (torch threads and the
  OMP/MKL/OPENBLAS variables). Two 2-thread trainings on 2 cores ran ~10x slower than one, so threads are never
  oversubscribed.
* ``gpus=["0", "0", "1", "1"]``: one worker per GPU *slot* (a GPU listed twice runs two jobs at once). Each worker
  claims a slot when it starts (a lock file, released by the OS if the worker dies, so a respawned worker takes
  the free slot) and sets ``CUDA_VISIBLE_DEVICES`` to that slot's GPU in its initializer, before torch is
  imported, so CUDA only ever sees that one GPU. A single slot runs in this process, pinned the same way.

Failure isolation: a job's own exceptions become failed records inside :func:`runner.run_job.run_job`. A worker
that dies (the OS out-of-memory killer, a segfault) breaks the loky pool; the jobs that were in flight then (each
worker marks the job it runs in ``<results>/.inflight/``) are run again one at a time, resuming from their resume
states, so the job that kills its worker again is identified and recorded as failed while the others go on.

``slurm``: :mod:`runner.slurm` (submitit). Both executors ship a job to its worker as a plain dict
(:func:`job_spec`) rebuilt there through the registries, so plugin methods (``--import``) and generated config
classes need no pickling, and the rebuilt job is checked to have the same config hash.
"""

from __future__ import annotations

import fcntl
import importlib
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from pathlib import Path
from typing import Any

from joblib import Parallel, delayed

from benchmarks import BENCHMARKS
from benchmarks.backbones import BackboneConfig
from core.errors import UserError
from methods import METHODS
from runner.jobs import Job
from runner.record import Record
from runner.run_job import record_failure, run_job

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
_IMPORTED: set[str] = set()
_SLOT: dict[str, Any] = {}  # this worker's claimed GPU slot: {"dir", "index", "fd"}


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def with_threads(jobs: list[Job], n_workers: int, threads: int | None) -> list[Job]:
    share = threads or max(1, cpu_count() // max(1, n_workers))
    return [replace(job, runtime={**job.runtime, "threads": share}) for job in jobs]


# ---------------------------------------------------------------------------------------------------- plugins
def import_plugins(specs: list[str] | tuple[str, ...]) -> None:
    """Import modules or ``.py`` files that register extra methods/benchmarks (once per process)."""
    for spec in specs:
        key = str(Path(spec).resolve()) if spec.endswith(".py") else spec
        if key in _IMPORTED:
            continue
        try:
            if spec.endswith(".py"):
                path = Path(spec).resolve()
                if not path.exists():
                    raise UserError(f"--import {spec}: file not found")
                loaded = sys.modules.get(path.stem)
                if loaded is not None and getattr(loaded, "__file__", None) == str(path):
                    _IMPORTED.add(key)
                    continue  # the same file, already imported under its name (a second run in this process)
                module_spec = importlib.util.spec_from_file_location(path.stem, path)
                module = importlib.util.module_from_spec(module_spec)
                sys.modules[path.stem] = module
                module_spec.loader.exec_module(module)
            else:
                importlib.import_module(spec)
        except ImportError as err:
            raise UserError(f"--import {spec}: cannot import it ({err}); give a module on sys.path or a .py file") from None
        _IMPORTED.add(key)


def absolute_imports(specs: list[str]) -> list[str]:
    """``.py`` paths made absolute: workers (loky, SLURM) may start in another folder."""
    return [str(Path(s).resolve()) if s.endswith(".py") else s for s in specs]


# ---------------------------------------------------------------------------------------------------- job specs
def job_spec(job: Job) -> dict[str, Any]:
    """A job as plain data (JSON-safe): what travels to a worker process or a SLURM job."""
    return {"suite": job.suite, "method": job.method, "method_name": job.method_name,
            "method_cfg": job.method_cfg.to_dict(), "benchmark": job.benchmark, "benchmark_name": job.benchmark_name,
            "benchmark_cfg": job.benchmark_cfg.to_dict(), "backbone": job.backbone,
            "backbone_cfg": job.backbone_cfg.to_dict(), "seed": job.seed, "multi_backbone": job.multi_backbone,
            "runtime": dict(job.runtime), "config_hash": job.config_hash()}


def job_from_spec(spec: dict[str, Any]) -> Job:
    """Rebuild a job through the registries; refuses one whose config hash changed on the way."""
    job = Job(spec["suite"], spec["method"], spec["method_name"],
              METHODS.make_config(spec["method_name"], spec["method_cfg"]), spec["benchmark"], spec["benchmark_name"],
              BENCHMARKS.make_config(spec["benchmark_name"], spec["benchmark_cfg"]), spec["backbone"],
              BackboneConfig.from_dict(spec["backbone_cfg"]), spec["seed"], spec["multi_backbone"],
              dict(spec["runtime"]))
    if job.config_hash() != spec["config_hash"]:
        raise RuntimeError(f"job {job.job_id}: config hash {job.config_hash()} after rebuilding, "
                           f"{spec['config_hash']} when planned (a config field does not survive to_dict/from_dict)")
    return job


def run_spec(spec: dict[str, Any], results_dir: str, imports: list[str] = ()) -> Record:
    """Worker entry point: import plugins, rebuild the job, run it (marked in flight while it runs)."""
    import_plugins(imports)
    job = job_from_spec(spec)
    marker = Path(results_dir) / ".inflight" / job.job_id
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(f"{socket.gethostname()} {os.getpid()}\n")
    try:
        return run_job(job, results_dir)
    finally:
        marker.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------------- GPU slots
def parse_gpus(text: str | None) -> list[str] | None:
    """``--gpus 0,0,1,1`` -> one slot per entry (values go to CUDA_VISIBLE_DEVICES); ``all``: every visible GPU."""
    if text is None:
        return None
    if text.strip() == "all":
        gpus = visible_gpus()
        if not gpus:
            raise UserError("--gpus all: no GPU found (nvidia-smi lists none); use --jobs N on a CPU machine")
        free = free_memory_mb()
        optimum, job_mb, source = slot_policy()
        slots = {g: slots_for(free.get(g), job_mb, optimum) for g in gpus}
        print(f"--gpus all: {', '.join(f'GPU {g} x {n}' for g, n in slots.items())} ({source})", flush=True)
        return [g for g in gpus for _ in range(slots[g])]
    gpus = [g.strip() for g in text.split(",") if g.strip()]
    if not gpus:
        raise UserError(f"--gpus {text!r}: give GPU ids separated by commas, e.g. 0,1 or 0,0,1,1 (two slots each)")
    return gpus


SLOT_HEADROOM = 1.25  # a slot's memory: the measured peak of the costliest method x this


def slots_for(free_mb: float | None, job_mb: float | None, optimum: int) -> int:
    """Jobs to run at once on one GPU: the measured optimum, capped by how many measured peaks fit in its free
    memory (with headroom); at least one."""
    if free_mb is None or not job_mb:
        return max(1, optimum)
    return max(1, min(optimum, int(free_mb // (job_mb * SLOT_HEADROOM))))


def slot_policy() -> tuple[int, float | None, str]:
    """(jobs per GPU with the highest measured total throughput, peak MB of one job, where both come from): the
    newest GPU measurement stored in results/reference/rates/ (docs/performance.md); 1 when none is stored. The
    peak is the costliest method's ``max_memory_allocated`` in the throughput bench, whose process also holds its
    floor ViTs: an overestimate of one job, so the memory cap errs towards fewer slots."""
    from runner.cost import newest_gpu_rates

    rates = newest_gpu_rates()
    if rates is None or not rates.slots:
        return 1, None, "one job per GPU: no measurement of several jobs per GPU is stored in results/reference/rates/"
    optimum = rates.best_slots
    peaks = [m.get("peak_mem_mb", {}).get("last", 0.0) for m in rates.methods.values()]
    return optimum, max(peaks) or None, f"optimum {optimum} per GPU and peak memory from {rates.describe()}"


def free_memory_mb() -> dict[str, float]:
    """Free memory per GPU index as nvidia-smi reports it ({} when it cannot be asked)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index,memory.free", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    free = {}
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0].isdigit():
            try:
                free[parts[0]] = float(parts[1])
            except ValueError:
                continue
    return free


def visible_gpus() -> list[str]:
    """The GPUs this process may use, without initialising CUDA here (a pinned in-process job needs it unset)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g for g in visible.split(",") if g.strip() and g.strip() != "-1"]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20,
                             check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(ln for ln in out.splitlines() if ln.startswith("GPU "))]


def claim_slot(slot_dir: str, n_slots: int) -> int:
    """Lock the first free slot file; the lock lives as long as this process (the OS drops it when it dies)."""
    if _SLOT.get("dir") == slot_dir:
        return _SLOT["index"]
    for index in range(n_slots):
        fd = os.open(os.path.join(slot_dir, f"slot{index}"), os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        _SLOT.update(dir=slot_dir, index=index, fd=fd)
        return index
    raise RuntimeError(f"no free GPU slot among {n_slots} in {slot_dir}")


def init_worker(slot_dir: str | None, gpus: list[str] | None, threads: int | None, imports: list[str]) -> None:
    """loky initializer: runs in each worker before any job, hence before CUDA (or even torch) is loaded."""
    if gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus[claim_slot(slot_dir, len(gpus))]
    if threads:
        for var in THREAD_VARS:
            os.environ[var] = str(threads)
    import_plugins(imports)


def worker_identity() -> tuple[int, str | None]:
    """(pid, CUDA_VISIBLE_DEVICES) of the calling process: how a test or a GPU check sees a worker's pinning."""
    return os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES")


# ---------------------------------------------------------------------------------------------------- local
def local_workers(n_workers: int, gpus: list[str] | None) -> int:
    """How many jobs a local run runs at once: one per GPU slot with ``gpus``, else ``n_workers``."""
    return len(gpus) if gpus else n_workers


def run_local(jobs: list[Job], results_dir: str, n_workers: int = 1, threads: int | None = None,
              gpus: list[str] | None = None, imports: list[str] = ()) -> Iterator[Record]:
    """Run ``jobs`` here (one by one) or on joblib workers (``n_workers`` CPU workers, or one per GPU slot)."""
    n_workers = local_workers(n_workers, gpus)
    jobs = with_threads(jobs, n_workers, threads)
    if n_workers <= 1:
        if gpus:
            _pin_this_process(gpus[0])
        for job in jobs:
            yield run_job(job, results_dir)
        return
    yield from _run_pool(jobs, str(results_dir), n_workers, jobs[0].runtime["threads"] if jobs else None, gpus,
                         absolute_imports(list(imports)))


def _pin_this_process(gpu: str) -> None:
    """One slot runs here: pin this process, which works only until CUDA is initialised in it."""
    if os.environ.get("CUDA_VISIBLE_DEVICES") == gpu:
        return
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        raise UserError(f"--gpus {gpu}: CUDA is already initialised in this process on other GPUs; "
                        "run the suite in a fresh process")
    os.environ["CUDA_VISIBLE_DEVICES"] = gpu


def _run_pool(jobs: list[Job], results_dir: str, n_workers: int, threads: int | None, gpus: list[str] | None,
              imports: list[str]) -> Iterator[Record]:
    """The jobs on a loky pool; after a worker death, the jobs then in flight run again one at a time."""
    inflight = Path(results_dir) / ".inflight"
    pending = {job.job_id: job for job in jobs}
    for job_id in pending:  # markers of an earlier runner that was killed are no evidence against these jobs
        (inflight / job_id).unlink(missing_ok=True)
    isolate: list[Job] = []  # suspects of a worker death, run alone until each is cleared or convicted
    slot_dir = tempfile.mkdtemp(prefix="sdlb-slots-")
    try:
        while pending:
            batch = isolate[:1] if isolate else list(pending.values())
            try:
                for record in _parallel(batch, results_dir, n_workers, slot_dir, threads, gpus, imports):
                    pending.pop(record.job_id, None)
                    isolate = [j for j in isolate if j.job_id != record.job_id]
                    yield record
            except BrokenProcessPool as err:
                suspects = [pending[p.name] for p in sorted(inflight.glob("*")) if p.name in pending]
                for job in suspects:
                    (inflight / job.job_id).unlink(missing_ok=True)
                if isolate:  # it ran alone: it is the job that kills its worker
                    job = isolate.pop(0)
                    pending.pop(job.job_id, None)
                    yield record_failure(job, results_dir, f"its worker process died while running it, twice "
                                                           f"(the second time alone): {err}")
                elif suspects:
                    isolate = suspects
                else:
                    raise
    finally:
        shutil.rmtree(slot_dir, ignore_errors=True)
        try:
            inflight.rmdir()  # only when empty: a marker left means a worker died with that job
        except OSError:
            pass


def _parallel(jobs: list[Job], results_dir: str, n_workers: int, slot_dir: str, threads: int | None,
              gpus: list[str] | None, imports: list[str]) -> Iterator[Record]:
    parallel = Parallel(n_jobs=n_workers, backend="loky", return_as="generator_unordered", batch_size=1,
                        initializer=init_worker, initargs=(slot_dir, gpus, threads, imports))
    yield from parallel(delayed(run_spec)(job_spec(job), results_dir, imports) for job in jobs)
