"""Executors: run a list of jobs and yield their records as they finish.

``local``: joblib. With ``jobs=1`` the jobs run one after another in this process; with ``jobs=N`` in N worker
processes, each given its share of the cores (two 2-thread trainings on 2 cores ran ~10x slower than one, so
threads are never oversubscribed).
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Iterator

from harness.jobs import Job
from harness.run_job import run_job


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def with_threads(jobs: list[Job], n_workers: int, threads: int | None) -> list[Job]:
    share = threads or max(1, cpu_count() // max(1, n_workers))
    return [replace(job, runtime={**job.runtime, "threads": share}) for job in jobs]


def run_local(jobs: list[Job], results_dir: str, n_workers: int = 1, threads: int | None = None) -> Iterator[dict]:
    jobs = with_threads(jobs, n_workers, threads)
    if n_workers <= 1:
        for job in jobs:
            yield run_job(job, results_dir)
        return
    from joblib import Parallel, delayed

    parallel = Parallel(n_jobs=n_workers, backend="loky", return_as="generator_unordered")
    yield from parallel(delayed(run_job)(job, results_dir) for job in jobs)
