"""The ``slurm`` executor: every job of a suite as a task of a SLURM array job, through submitit.

Settings come from the suite file's ``slurm:`` mapping, overridden by ``--slurm-*`` flags::

    executor: slurm
    slurm: {partition: gpu, time: "12:00:00", gpus: 1, cpus: 8, mem_gb: 32, array_parallelism: 16,
            setup: ["source ~/venvs/sdlb/bin/activate"]}

One array job per chunk of ``chunk_size`` jobs (SLURM's MaxArraySize is 1001 by default). Each task runs
:func:`runner.executors.run_spec` on a plain-dict job, exactly as a local worker does, so both executors write
identical records for the same jobs. Pre-emption and time limits: submitit asks SLURM for a signal
``signal_delay_s`` before the kill; :class:`SlurmJobRunner` is a ``submitit.helpers.Checkpointable``, so the
task is requeued (at most ``max_requeues`` times after time-outs; pre-emptions always) and, started again, the job
continues from its resume state (:mod:`runner.resume`) after the last experience it finished.

The runner then waits: a task is finished when submitit's result file appears; a task that SLURM ended without
one (cancelled, out of memory, node failure) is recorded as failed. ``sacct`` is used by submitit where
accounting is enabled; the states read here come from ``squeue``, which works on every cluster.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import submitit

from core.errors import UserError
from runner.executors import job_spec, run_spec, with_threads
from runner.jobs import Job
from runner.record import Record
from runner.run_job import record_failure
from runner.store import atomic_write_text

REPO = Path(__file__).resolve().parent.parent
# states after which a task runs no more; PREEMPTED turns into PENDING when the task is requeued
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE",
         "PREEMPTED", "REVOKED", "SPECIAL_EXIT"}
ALIVE = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING",
         "RESIZING", "SUSPENDED", "STAGE_OUT", "SIGNALING"}
LEDGER = "submitted.json"  # job_id -> {"slurm_id", "config_hash"} of the latest submission
GRACE_POLLS = 3  # an ended task's result file may show up a little later on a network file system


@dataclasses.dataclass(frozen=True)
class SlurmSettings:
    """Resources per job and how the arrays are submitted (suite ``slurm:`` keys, same names)."""

    partition: str | None = None
    time: str | int = 60  # minutes, or "HH:MM:SS" / "D-HH:MM:SS"
    gpus: int = 0
    cpus: int = 1
    mem_gb: float | None = None
    array_parallelism: int = 256
    chunk_size: int = 1000
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    max_requeues: int = 3  # time-outs requeued per task (pre-emptions always are)
    signal_delay_s: int = 90
    setup: tuple[str, ...] = ()
    folder: str | None = None  # submitit's files; default <results>/slurm
    poll_s: float = 5.0
    additional: dict | None = None  # passed to sbatch verbatim, e.g. {"exclude": "node12"}

    @classmethod
    def build(cls, suite_mapping: dict | None, overrides: dict[str, Any]) -> SlurmSettings:
        """Suite mapping < non-None flag values; unknown keys and impossible values are a :class:`UserError`."""
        data = dict(suite_mapping or {})
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(valid))
        if unknown:
            raise UserError(f"suite slurm: unknown key(s) {', '.join(unknown)}; valid keys are: {', '.join(valid)}")
        data.update({k: v for k, v in overrides.items() if v is not None})
        data["setup"] = tuple(data.get("setup") or ())
        settings = cls(**data)
        settings.minutes()  # validates the time
        for name in ("gpus", "cpus", "array_parallelism", "chunk_size", "max_requeues", "signal_delay_s"):
            value = getattr(settings, name)
            if not isinstance(value, int) or value < (0 if name in ("gpus", "max_requeues") else 1):
                raise UserError(f"slurm {name}: expected a positive integer, got {value!r}")
        return settings

    def minutes(self) -> int:
        """The time limit in whole minutes (submitit measures time-outs in minutes)."""
        if isinstance(self.time, int) and not isinstance(self.time, bool) and self.time > 0:
            return self.time
        if isinstance(self.time, str) and self.time.strip().isdigit() and int(self.time) > 0:
            return int(self.time)
        match = re.fullmatch(r"(?:(\d+)-)?(\d+):(\d\d)(?::(\d\d))?", str(self.time).strip())
        if not match:
            raise UserError(f"slurm time {self.time!r}: give minutes (e.g. 90) or HH:MM:SS, or D-HH:MM:SS")
        days, hours, mins, secs = (int(g or 0) for g in match.groups())
        return max(1, days * 1440 + hours * 60 + mins + (1 if secs else 0))

    def parameters(self, job_name: str) -> dict[str, Any]:
        """submitit ``SlurmExecutor.update_parameters`` arguments."""
        params: dict[str, Any] = {
            "job_name": job_name, "time": self.minutes(), "cpus_per_task": self.cpus, "ntasks_per_node": 1,
            "array_parallelism": self.array_parallelism, "signal_delay_s": self.signal_delay_s,
            # the tasks import this repository's packages wherever SLURM starts them
            "setup": [*self.setup, f"export PYTHONPATH={REPO}${{PYTHONPATH:+:$PYTHONPATH}}",
                      "export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}"],
            "stderr_to_stdout": True,
        }
        optional = {"partition": self.partition, "account": self.account, "qos": self.qos,
                    "constraint": self.constraint, "gpus_per_node": self.gpus or None,
                    "mem": f"{int(self.mem_gb * 1024)}MB" if self.mem_gb else None,
                    # --requeue: pre-empted tasks go back to the queue even where JobRequeue=0
                    "additional_parameters": {"requeue": True, **(self.additional or {})}}
        params.update({k: v for k, v in optional.items() if v})
        return params


class SlurmJobRunner(submitit.helpers.Checkpointable):
    """One job as a SLURM task. Checkpointable: on pre-emption or time-out submitit resubmits this same object,
    and the job resumes from its own resume state (nothing else needs saving here)."""

    def __init__(self, spec: dict[str, Any], results_dir: str, imports: list[str]):
        self.spec = spec
        self.results_dir = results_dir
        self.imports = imports

    def __call__(self) -> Record:
        return run_spec(self.spec, self.results_dir, self.imports)


def available() -> str | None:
    """None when a SLURM cluster answers here, else why not."""
    if shutil.which("sbatch") is None or shutil.which("squeue") is None:
        return "sbatch/squeue not found (not on a SLURM cluster, or its client tools are not installed)"
    try:
        subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError) as err:
        return f"squeue does not answer ({err})"
    return None


def run_slurm(jobs: list[Job], results_dir: str, settings: SlurmSettings, imports: list[str] = (),
              say: Callable[[str], None] = print) -> Iterator[Record]:
    """Submit ``jobs`` as array jobs, wait for them and yield their records as they finish.

    Jobs that an earlier runner submitted and that are still queued or running (``<folder>/submitted.json``, for
    the same config hash) are waited for, not submitted again: a runner killed and restarted never runs a job
    twice at once.
    """
    reason = available()
    if reason:
        raise UserError(f"--executor slurm: {reason}")
    folder = Path(settings.folder) if settings.folder else Path(results_dir) / "slurm"
    jobs = with_threads(jobs, 1, settings.cpus)  # torch threads = the CPUs SLURM gives each task
    ledger = _load_ledger(folder)
    attached = _still_alive(jobs, ledger, folder)
    if attached:
        say(f"waiting for {len(attached)} job(s) an earlier runner submitted (still queued or running on SLURM)")
    fresh = [job for job in jobs if job.job_id not in {j.job_id for j, _ in attached}]
    submitted = attached + _submit(fresh, results_dir, settings, imports, folder, say, ledger)
    yield from _wait(submitted, str(results_dir), settings.poll_s)
    try:
        (Path(results_dir) / ".inflight").rmdir()  # only when empty (a task SLURM killed leaves its marker)
    except OSError:
        pass


def _submit(jobs: list[Job], results_dir: str, settings: SlurmSettings, imports: list[str], folder: Path,
            say: Callable[[str], None], ledger: dict[str, dict]) -> list[tuple[Job, Any]]:
    if not jobs:
        return []
    submitted: list[tuple[Job, Any]] = []
    for chunk, handles in _arrays(jobs, lambda job: SlurmJobRunner(job_spec(job), str(results_dir), list(imports)),
                                  settings, folder, f"sdlb-{jobs[0].suite}", "job(s)", say):
        submitted += list(zip(chunk, handles))
        # written chunk by chunk: a runner killed now still knows what it submitted
        ledger.update({job.job_id: {"slurm_id": h.job_id, "config_hash": job.config_hash()}
                       for job, h in zip(chunk, handles)})
        atomic_write_text(folder / LEDGER, json.dumps(ledger, indent=1, sort_keys=True) + "\n")
    return submitted


def _arrays(items: list, task: Callable[[Any], Callable[[], Any]], settings: SlurmSettings, folder: Path,
            job_name: str, noun: str, say: Callable[[str], None]) -> Iterator[tuple[list, list]]:
    """Submit ``task(item)`` for every item as SLURM array jobs of at most ``chunk_size`` tasks (MaxArraySize);
    yields each chunk with its submitit handles, once submitted."""
    executor = submitit.SlurmExecutor(folder=str(folder / "%j"), max_num_timeout=settings.max_requeues,
                                      python=sys.executable)
    executor.update_parameters(**settings.parameters(job_name))
    for start in range(0, len(items), settings.chunk_size):
        chunk = items[start:start + settings.chunk_size]
        with executor.batch():
            handles = [executor.submit(task(item)) for item in chunk]
        say(f"submitted {len(chunk)} {noun} as SLURM array {handles[0].job_id.split('_')[0]} "
            f"(submitit files: {folder})")
        yield chunk, handles


def _load_ledger(folder: Path) -> dict[str, dict]:
    try:
        return json.loads((folder / LEDGER).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _still_alive(jobs: list[Job], ledger: dict[str, dict], folder: Path) -> list[tuple[Job, Any]]:
    """(job, handle) for the jobs whose earlier submission, for the same config, SLURM still queues or runs."""
    known = {job.job_id: job for job in jobs if ledger.get(job.job_id, {}).get("config_hash") == job.config_hash()}
    if not known:
        return []
    states = squeue_states({ledger[jid]["slurm_id"].split("_")[0] for jid in known}) or {}
    return [(job, submitit.SlurmJob(folder=str(folder / "%j"), job_id=ledger[jid]["slurm_id"]))
            for jid, job in known.items() if states.get(ledger[jid]["slurm_id"]) in ALIVE]


def run_calls(calls: list[Callable[[], Any]], settings: SlurmSettings, folder: Path, job_name: str,
              say: Callable[[str], None] = print) -> list[Any]:
    """Run picklable zero-argument callables as SLURM array tasks (the recipe rule's validation runs) with the
    suite's resources; their results, in order. A task that raises or ends without a result is a RuntimeError
    naming its output file: the caller has nothing to store without every result."""
    reason = available()
    if reason:
        raise UserError(f"--executor slurm: {reason}")
    handles = [h for _, chunk in _arrays(calls, lambda call: call, settings, folder, job_name, "task(s)", say)
               for h in chunk]
    results: dict[str, Any] = {}
    for handle, state in _finished(handles, settings.poll_s):
        if state is not None:
            raise RuntimeError(f"SLURM task {handle.job_id} ended {state} without a result; its output: "
                               f"{handle.paths.stdout}")
        try:
            results[handle.job_id] = handle.result()
        except Exception as err:  # noqa: BLE001 - the task raised: one line and where its traceback is
            raise RuntimeError(f"SLURM task {handle.job_id} failed ({_raised(err)}); its output: "
                               f"{handle.paths.stdout}") from None
    return [results[handle.job_id] for handle in handles]


def _raised(err: Exception) -> str:
    """The exception line of a task's traceback (submitit's error text holds the whole traceback, then paths)."""
    lines = [line.strip() for line in str(err).splitlines()]
    raised = [line for line in lines if re.match(r"[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b", line)]
    return raised[-1] if raised else (lines[0] if lines and lines[0] else type(err).__name__)


def _finished(handles: list[Any], poll_s: float) -> Iterator[tuple[Any, str | None]]:
    """``(handle, None)`` once a task's result file exists; ``(handle, STATE)`` once SLURM ended it without one
    (read from squeue, then sacct where a task aged out of squeue; ``GONE`` when neither knows it)."""
    pending = {handle.job_id: handle for handle in handles}
    ended_polls: dict[str, int] = {}
    while pending:
        states = squeue_states({sid.split("_")[0] for sid in pending})
        for sid, handle in list(pending.items()):
            if handle.paths.result_pickle.exists():
                del pending[sid]
                yield handle, None
                continue
            state = states.get(sid) if states is not None else None
            if state is None and states is not None:  # aged out of squeue (MinJobAge): ask sacct, if it works
                state = _sacct_state(handle)
            if state in ENDED or state == "GONE":
                ended_polls[sid] = ended_polls.get(sid, 0) + 1
                if ended_polls[sid] >= GRACE_POLLS:
                    del pending[sid]
                    yield handle, state
            else:
                ended_polls.pop(sid, None)
        if pending:
            time.sleep(poll_s)


def _wait(submitted: list[tuple[Job, Any]], results_dir: str, poll_s: float) -> Iterator[Record]:
    jobs = {handle.job_id: job for job, handle in submitted}
    for handle, state in _finished([handle for _, handle in submitted], poll_s):
        job = jobs[handle.job_id]
        yield (_outcome(job, handle, results_dir) if state is None else
               _ended_without_result(job, handle, state, results_dir))


def _outcome(job: Job, handle, results_dir: str) -> Record:
    try:
        record = handle.result()
        if isinstance(record, Record) and record.job_id == job.job_id:
            return record
        error = f"SLURM task {handle.job_id} returned {type(record).__name__}, not a record"
    except Exception as err:  # noqa: BLE001 - the task raised outside run_job (e.g. not requeued after a time-out)
        error = f"SLURM task {handle.job_id}: {type(err).__name__}: {err}"
    return record_failure(job, results_dir, f"{error}\nSLURM output: {handle.paths.stdout}")


def _ended_without_result(job: Job, handle, state: str, results_dir: str) -> Record:
    what = "is no longer known to SLURM" if state == "GONE" else f"ended {state}"
    return record_failure(job, results_dir, f"SLURM task {handle.job_id} {what} without a result "
                                            f"(killed, out of memory or cancelled?)\nSLURM output: {handle.paths.stdout}")


def _sacct_state(handle) -> str:
    """submitit's sacct reading where accounting works; ``GONE`` where it does not either."""
    try:
        state = handle.watcher.get_state(handle.job_id, mode="force")
    except Exception:  # noqa: BLE001 - sacct missing or broken: squeue already said the task is gone
        state = "UNKNOWN"
    state = (state or "UNKNOWN").split()[0].upper()
    return "GONE" if state == "UNKNOWN" else state


def squeue_states(array_ids: set[str]) -> dict[str, str] | None:
    """``{"<array>_<task>": STATE}`` for the tasks of these arrays that squeue still lists (``-t all``); None when
    squeue does not answer."""
    if not array_ids:
        return {}
    cmd = ["squeue", "-h", "-t", "all", "-r", "-o", "%i|%T", "-j", ",".join(sorted(array_ids))]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError):
        return None  # squeue unreachable for a moment: no state is no verdict
    if proc.returncode != 0 and "Invalid job id" not in proc.stderr:
        return None
    out = proc.stdout
    states = {}
    for line in out.splitlines():
        task_id, _, state = line.strip().partition("|")
        if task_id and state:
            states[task_id] = state.split()[0]
    return states
