"""``run_suite.py status``: where each job of a suite stands, read from the result store alone.

States (every job of the suite's *current* expansion is in exactly one):

* ``done``: a ``done`` record whose config hash is the job's current one.
* ``running``: the job's running marker (``<results>/running/<job_id>.json``, written by the job when it starts
  and removed when it ends) names a live holder: on this host a live pid; on another host (a SLURM node) the
  job's log, marker or resume state written within the last ``active_minutes`` minutes (every epoch writes a
  log line). Locally both must hold.
* ``failed``: a ``failed`` record for the current config and no live run.
* ``pending``: everything else: never started, *interrupted* (a marker whose holder is gone; its resume state
  says how far it got, and a rerun continues from there, unless the state was saved by other code or under another
  CPU kernel pin: :func:`runner.resume.made_elsewhere`) or with a record for another config (the suite changed
  since; a rerun replaces it).

Flags: ``STALE`` marks a record for another config; ``CODE`` a done record for the current config made by other
code (its ``code_hash`` differs from the job's, :mod:`runner.code`); ``PIN`` one made under another CPU kernel pin
than the one a run would now set (``provenance.cpu_isa`` against ``--cpu-isa``, :mod:`core.cpu`): kernels of
another level give another record wherever a run forgets. ``--rerun-stale`` reruns both. Records of schema 1 carry
no code hash and are never called stale for their code; records older than the pin (``cpu_isa`` null) are not
judged for it. ``RULE`` marks a pending job with a record
whose config the suite's recipe rule has still to decide: no choice is stored for its family's probe as the suite
and code now are (e.g. after an edit of the probe's method), so its lr and epochs, and whether the record is for
them, are not known until a run chooses.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from runner.jobs import Job
from runner.record import made_under_other_pin
from runner.resume import read_summary, resume_path, resumes
from runner.store import ResultStore, atomic_write_text

STATES = ("done", "running", "failed", "pending")


@dataclass
class JobStatus:
    job_id: str
    state: str
    detail: str
    stale: bool = False  # the record is for another config
    stale_code: bool = False  # a done record for this config, made by other code
    other_pin: bool = False  # a done record for this config, made under another CPU kernel pin
    awaits_rule: bool = False  # a record, but the recipe rule has still to choose the job's lr and epochs


AWAITS_RULE = ("awaits the recipe rule: no choice is stored for its family's probe as the suite and code now are "
               "(runner/recipe.py); a run chooses first, then reruns this job only if the choice changes its config")


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return None


def running_path(store: ResultStore, job_id: str) -> Path:
    return store.root / "running" / f"{job_id}.json"


def mark_running(store: ResultStore, job_id: str) -> None:
    """Called by a job when it starts: its host and pid, for :func:`job_status`."""
    info = {"hostname": socket.gethostname(), "pid": os.getpid(), "started": time.time()}
    atomic_write_text(running_path(store, job_id), json.dumps(info) + "\n")


def clear_running(store: ResultStore, job_id: str) -> None:
    running_path(store, job_id).unlink(missing_ok=True)


def _holder(store: ResultStore, job_id: str) -> dict | None:
    try:
        return json.loads(running_path(store, job_id).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _alive(holder: dict) -> bool:
    """Whether the process of a running marker from this host still exists (other hosts: not knowable here)."""
    if holder.get("hostname") != socket.gethostname():
        return True
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, ValueError, TypeError):
        return True  # someone else's process, or an unreadable pid: no evidence that it died
    return True


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


def job_status(job: Job, store: ResultStore, active_minutes: float, now: float | None = None,
               awaits_rule: bool = False, pin: str | None = None) -> JobStatus:
    """The state of one job (see the module docstring for the definitions)."""
    now = time.time() if now is None else now
    record = store.load(job.job_id)
    current = record is not None and record.config_hash == job.config_hash()
    if awaits_rule and record is not None:  # its config is not known yet: no record can be called stale for it
        return JobStatus(job.job_id, "pending", AWAITS_RULE, awaits_rule=True)
    stale = record is not None and not current
    holder = _holder(store, job.job_id)
    times = (_mtime(store.log_path(job.job_id)), _mtime(resume_path(store, job.job_id)),
             _mtime(running_path(store, job.job_id)))
    activity = max(t for t in (*times, 0.0) if t is not None)
    summary = read_summary(store, job.job_id)
    progress = ""
    if resumes(summary, job, pin):
        progress = f"{summary['finished_tasks']}/{summary['n_tasks']} tasks finished"
    live = holder is not None and _alive(holder) and now - activity < active_minutes * 60
    stale_note = f"stale record (config {record.config_hash}, now {job.config_hash()})" if stale else ""
    if current and record.status == "done":
        acc = record.metrics.acc if record.metrics.acc is not None else float("nan")
        code = record.code_hash is not None and record.code_hash != job.code_hash()
        other_pin = made_under_other_pin(record, pin)
        note = (f", made by other code (code {record.code_hash}, now {job.code_hash()})" * code
                + f", made under another CPU kernel pin ({record.provenance.cpu_isa}, now {pin})" * other_pin)
        return JobStatus(job.job_id, "done", f"Acc {acc:.2f}{note}", stale_code=code, other_pin=other_pin)
    if live:
        detail = ", ".join(x for x in (progress, f"last activity {_ago(now - activity)}", stale_note) if x)
        return JobStatus(job.job_id, "running", detail, stale)
    if current and record.status == "failed":
        detail = f"{record.last_error_line()} (log: {store.root / record.log_path})"
        return JobStatus(job.job_id, "failed", detail)
    interrupted = f"interrupted {_ago(now - activity)}" if holder is not None else ""
    detail = ", ".join(x for x in (stale_note, interrupted, progress and f"resumes after {progress}") if x)
    return JobStatus(job.job_id, "pending", detail, stale)


def suite_status(jobs: list[Job], store: ResultStore, active_minutes: float = 60.0,
                 awaiting: frozenset[str] = frozenset(), pin: str | None = None) -> list[JobStatus]:
    """Each job's state; ``awaiting``: the ids of jobs whose lr and epochs the recipe rule has still to choose;
    ``pin``: the CPU kernel pin a run would set (done records made under another are flagged ``PIN``)."""
    now = time.time()
    return [job_status(job, store, active_minutes, now, job.job_id in awaiting, pin) for job in jobs]


def format_status(name: str, rows: list[JobStatus], store: ResultStore, jobs: list[Job]) -> str:
    """A summary line, then one line per job (grouped by state), then records that belong to no current job."""
    counts = {state: sum(r.state == state for r in rows) for state in STATES}
    n_stale, n_code, n_pin, n_rule = (sum(r.stale for r in rows), sum(r.stale_code for r in rows),
                                      sum(r.other_pin for r in rows), sum(r.awaits_rule for r in rows))
    notes = ([f"{n_stale} with a stale record"] * bool(n_stale) + [f"{n_code} done by other code"] * bool(n_code)
             + [f"{n_pin} done under another CPU kernel pin"] * bool(n_pin)
             + [f"{n_rule} with a record, awaiting the recipe rule"] * bool(n_rule))
    lines = [f"suite {name}: {len(rows)} jobs: " + ", ".join(f"{counts[s]} {s}" for s in STATES)
             + (f" ({'; '.join(notes)})" if notes else "") + f"  [{store.root}]"]
    width = max((len(r.job_id) for r in rows), default=10)
    for state in STATES:
        for row in (r for r in rows if r.state == state):
            flag = (" STALE" if row.stale else " RULE" if row.awaits_rule
                    else " " + "+".join(["CODE"] * row.stale_code + ["PIN"] * row.other_pin) if row.stale_code or row.other_pin
                    else "")
            lines.append(f"  {row.job_id:{width}s}  {row.state:8s}{flag:6s}  {row.detail}".rstrip())
    known = {job.job_id for job in jobs}
    others = sorted(p.stem for p in store.records_dir.glob("*.json") if p.stem not in known)
    if others:
        lines.append(f"{len(others)} record(s) belong to no job of the suite as it is now (removed methods, "
                     f"seeds or benchmarks): {', '.join(others[:10])}{' ...' if len(others) > 10 else ''}")
    if n_code:
        lines.append(f"{n_code} done record(s) were made by other code (CODE): rerun them with --rerun-stale")
    if n_pin:
        lines.append(f"{n_pin} done record(s) were made under another CPU kernel pin (PIN): rerun them with "
                     f"--rerun-stale, or give the pin they name as --cpu-isa (core/cpu.py)")
    return "\n".join(lines)
