"""One job, one runner: a per-job lock, so that two runners on one results folder never run a job twice.

Two ``run_suite.py`` processes started on the same suite and results folder (by accident, or on two nodes of a
shared file system) each plan the same jobs. Every job runs under an exclusive ``fcntl.flock`` on
``<results>/locks/<job_id>.lock``, taken where the job runs (this process, a joblib worker or a SLURM task) and
held until its record is written. A runner that finds a job's lock held **skips** that job and reports which runner
holds it (host, pid, since when: written into the lock file by the holder); it goes on with its other jobs, so two
runners share a suite instead of queueing behind each other. A runner that takes a lock and then finds the job
already done for the same config (the other runner finished it meanwhile) skips it too, unless ``--force``.

Stale locks: an flock belongs to the open file, so the kernel releases it when the holder's process ends in any
way (SIGKILL and out-of-memory kills included); a crashed runner never leaves a lock that blocks anyone. On NFS the
Linux client maps flock to POSIX locks, which the server drops when a dead client's lease expires. The lock files
stay in place: removing a file that another process may have open and locked would let two runners hold "the" lock.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOCKS_DIR = "locks"


def lock_path(results_dir: str | Path, job_id: str) -> Path:
    return Path(results_dir) / LOCKS_DIR / f"{job_id}.lock"


@contextmanager
def job_lock(results_dir: str | Path, job_id: str) -> Iterator[str | None]:
    """Hold ``job_id``'s lock for the ``with`` block: yields None when taken, else who holds it (one line)."""
    path = lock_path(results_dir, job_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode(errors="replace").strip()
            yield holder or "another runner (starting)"
            return
        since = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{socket.gethostname()} pid {os.getpid()} since {since}\n".encode(), 0)
        yield None
    finally:
        os.close(fd)  # releases the lock


def run_once(job, results_dir: str | Path, run: Callable[[Any, str | Path], Any]) -> Any:
    """``run(job, results_dir)`` under the job's lock, or a ``skipped`` result (never written to the store).

    Skipped: another runner holds the lock, or the job turned out done for its config, code and CPU kernel pin once
    the lock was taken (and the run was not asked to ``force`` reruns).
    """
    from core.cpu import level_in_force
    from runner.record import kept_but_stale
    from runner.store import ResultStore

    with job_lock(results_dir, job.job_id) as holder:
        if holder is not None:
            return skipped(job, f"another runner is running it: {holder}")
        record = ResultStore(results_dir).load(job.job_id)
        if (not job.runtime.get("force") and record is not None and record.status == "done"
                and record.config_hash == job.config_hash()
                and not kept_but_stale(record, job.code_hash(), level_in_force())):
            return skipped(job, "another runner finished it meanwhile")  # a stale record (code, pin) is not
        return run(job, results_dir)


@dataclass(frozen=True)
class Skipped:
    """What a runner returns for a job it left to another runner: never written to the store."""

    job_id: str
    reason: str
    status: str = "skipped"


def skipped(job, reason: str) -> Skipped:
    return Skipped(job.job_id, reason)
