"""``run_suite.py status``: where each job of a suite stands, read from the result store alone.

States (every job of the suite's *current* expansion is in exactly one):

* ``done``: a ``done`` record whose config hash is the job's current one.
* ``running``: the job's log does not end with its ``end`` line, was written after the job's record (or there
  is none), and was written (or its resume state saved) within the last ``active_minutes`` minutes. Every epoch
  writes a log line, so a live job keeps it fresh; works alike for local workers and SLURM tasks.
* ``failed``: a ``failed`` record for the current config and no newer activity.
* ``pending``: everything else: never started, *interrupted* (activity older than ``active_minutes`` without an
  ``end`` line; its resume state says how far it got, and a rerun continues from there) or *stale* (its record
  is for another config: the suite changed since; a rerun replaces it).

Stale records are flagged in the table and counted in the summary line.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from runner.jobs import Job
from runner.resume import read_summary, resume_path
from runner.store import ResultStore

STATES = ("done", "running", "failed", "pending")


@dataclass
class JobStatus:
    job_id: str
    state: str
    detail: str
    stale: bool = False


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return None


def last_line(path: Path, window: int = 4096) -> str:
    """The last non-empty line of a text file (reads only its end)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - window))
            lines = f.read().decode(errors="replace").splitlines()
    except FileNotFoundError:
        return ""
    return next((ln for ln in reversed(lines) if ln.strip()), "")


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


def job_status(job: Job, store: ResultStore, active_minutes: float, now: float | None = None) -> JobStatus:
    """The state of one job (see the module docstring for the definitions)."""
    now = time.time() if now is None else now
    record = store.load(job.job_id)
    record_time = _mtime(store.record_path(job.job_id)) if record is not None else None
    current = record is not None and record.get("config_hash") == job.config_hash()
    stale = record is not None and not current
    log = store.log_path(job.job_id)
    log_time = _mtime(log)
    activity = max(t for t in (log_time, _mtime(resume_path(store, job.job_id)), 0.0) if t is not None)
    summary = read_summary(store, job.job_id)
    progress = ""
    if summary is not None and summary.get("config_hash") == job.config_hash():
        progress = f"{summary['finished_tasks']}/{summary['n_tasks']} tasks finished"
    ended = f" end {job.job_id} status=" in last_line(log)
    live = (log_time is not None and not ended and (record_time is None or activity >= record_time)
            and now - activity < active_minutes * 60)
    stale_note = f"stale record (config {record.get('config_hash')}, now {job.config_hash()})" if stale else ""
    if current and record.get("status") == "done":
        return JobStatus(job.job_id, "done", f"Acc {record.get('metrics', {}).get('acc', float('nan')):.2f}")
    if live:
        detail = ", ".join(x for x in (progress, f"last activity {_ago(now - activity)}", stale_note) if x)
        return JobStatus(job.job_id, "running", detail, stale)
    if current and record.get("status") == "failed":
        error = (record.get("error") or "").strip().splitlines()
        detail = f"{error[-1] if error else 'no error text'} (log: {store.root / record.get('log_path', '')})"
        return JobStatus(job.job_id, "failed", detail)
    interrupted = f"interrupted {_ago(now - activity)}" if log_time is not None and not ended else ""
    detail = ", ".join(x for x in (stale_note, interrupted, progress and f"resumes after {progress}") if x)
    return JobStatus(job.job_id, "pending", detail, stale)


def suite_status(jobs: list[Job], store: ResultStore, active_minutes: float = 60.0) -> list[JobStatus]:
    now = time.time()
    return [job_status(job, store, active_minutes, now) for job in jobs]


def format_status(name: str, rows: list[JobStatus], store: ResultStore, jobs: list[Job]) -> str:
    """A summary line, then one line per job (grouped by state), then records that belong to no current job."""
    counts = {state: sum(r.state == state for r in rows) for state in STATES}
    n_stale = sum(r.stale for r in rows)
    lines = [f"suite {name}: {len(rows)} jobs: " + ", ".join(f"{counts[s]} {s}" for s in STATES)
             + (f" ({n_stale} with a stale record)" if n_stale else "") + f"  [{store.root}]"]
    width = max((len(r.job_id) for r in rows), default=10)
    for state in STATES:
        for row in (r for r in rows if r.state == state):
            flag = " STALE" if row.stale else ""
            lines.append(f"  {row.job_id:{width}s}  {row.state:8s}{flag:6s}  {row.detail}".rstrip())
    known = {job.job_id for job in jobs}
    others = sorted(p.stem for p in store.records_dir.glob("*.json") if p.stem not in known)
    if others:
        lines.append(f"{len(others)} record(s) belong to no job of the suite as it is now (removed methods, "
                     f"seeds or benchmarks): {', '.join(others[:10])}{' ...' if len(others) > 10 else ''}")
    return "\n".join(lines)
