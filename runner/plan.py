"""From a command line's choices to the jobs to run: everything that can fail on bad input, before anything runs.

:func:`select` expands a suite into jobs (shared by a run and by ``status``); :func:`plan` adds what only a run
needs (data checks, the executor, runtime settings); :func:`select_todo` drops the jobs already done;
:func:`run_all` runs the rest through the chosen executor and reports each finished job.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from tqdm import tqdm

import benchmarks  # noqa: F401  (registers the built-in benchmarks)
import methods  # noqa: F401  (registers the built-in methods)
from benchmarks.prepare import prepare_jobs
from core.errors import UserError
from core.folders import output_problem
from runner import recipe
from runner.checks import device_problems, folder_problems, path_problems
from runner.executors import absolute_imports, import_plugins, local_workers, parse_gpus, run_local
from runner.jobs import Job
from runner.locks import Skipped
from runner.recipe import RecipeRule
from runner.record import Record, kept_but_stale
from runner.slurm import SlurmSettings, available, run_calls, run_slurm
from runner.smoke import smoke_jobs
from runner.store import ResultStore
from runner.suite import expand_jobs, load_suite

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Plan:
    """A suite's jobs, where their results go and how they run (``execution`` is empty for ``status``)."""

    suite: dict[str, Any]
    name: str  # the suite's name, ``<name>_smoke`` for ``--smoke``: the default results folder's name
    jobs: list[Job]
    results_dir: Path
    execution: dict[str, Any]


def csv_list(value: str | None, cast=str) -> list | None:
    """``"a,b"`` -> ``["a", "b"]`` (None stays None); a bad item exits 2 naming the list."""
    if value is None:
        return None
    try:
        return [cast(v.strip()) for v in value.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"cannot read {value!r} as a comma-separated list of {cast.__name__}") from None


def select(args, smoke: bool) -> tuple[dict[str, Any], str, list[Job], Path]:
    """(suite, name, jobs, results folder) of ``args.suite`` narrowed by --methods/--benchmarks/--seeds, with --weights.

    ``smoke``: rewrite the jobs onto their ``--smoke`` stand-ins (their config hashes change, so ``status`` of a
    smoke suite needs it too); this writes the stand-in data under ``<results>/smoke_data``.
    """
    import_plugins(args.imports)
    suite = load_suite(args.suite)
    jobs = expand_jobs(suite, methods=csv_list(args.methods), benchmarks=csv_list(args.benchmarks),
                       seeds=csv_list(args.seeds, int))
    jobs = apply_weights(jobs, args.weights)
    name = suite["name"] + ("_smoke" if args.smoke else "")
    results_dir = Path(args.results_dir) if args.results_dir else REPO / "results" / name
    if args.smoke and smoke:
        jobs = smoke_jobs(jobs, results_dir / "smoke_data")
    elif (rule := active_rule(suite, args)) is not None:  # the recipe rule's stored choices (runner/recipe.py)
        jobs, _ = recipe.apply(rule, jobs, suite_jobs(suite, args), results_dir)
    return suite, name, jobs, results_dir


def active_rule(suite: dict[str, Any], args) -> RecipeRule | None:
    """The suite's recipe rule, or None where it has none or the run is a smoke run (which keeps the entries')."""
    return None if args.smoke else RecipeRule.from_suite(suite)


def suite_jobs(suite: dict[str, Any], args) -> list[Job]:
    """Every job of the suite, unnarrowed (the recipe rule's probes), with --weights."""
    return apply_weights(expand_jobs(suite), args.weights)


def resolve_recipe(p: Plan, args) -> Plan:
    """A real run makes the recipe rule's missing choices (training its probes) before the jobs, then applies them."""
    rule = active_rule(p.suite, args)
    if rule is None:
        return p
    everything = [replace(job, runtime={**job.runtime, "device": args.device}) for job in suite_jobs(p.suite, args)]
    imports = tuple(absolute_imports(args.imports))
    if p.execution["executor"] == "slurm":  # the validation runs as SLURM tasks, with the jobs' resources
        settings = p.execution["slurm"]
        folder = (Path(settings.folder) if settings.folder else Path(p.results_dir) / "slurm") / "recipe"
        run_all, threads = partial(run_calls, settings=settings, folder=folder,
                                   job_name=f"sdlb-{p.suite['name']}-recipe"), settings.cpus
    else:
        run_all, threads = recipe.run_here(p.execution["jobs"]), p.execution["threads"]
    recipe.select(rule, everything, p.jobs, p.results_dir, run_all, threads, imports)
    jobs, pending = recipe.apply(rule, p.jobs, everything, p.results_dir)
    if pending:  # cannot happen unless recipe.json could not be written
        raise UserError(f"recipe: {pending} choice(s) could not be stored in {p.results_dir / 'recipe.json'}")
    return replace(p, jobs=jobs)


def dry_run_jobs(p: Plan, args) -> list[Job]:
    """The jobs as a dry run shows and costs them: the plan's jobs already carry their family's stored choice
    (:func:`select`); where the rule has still to choose, the grid's most epochs (the cost's upper bound) and
    ``runtime["recipe"] = {"pending": True}``."""
    rule = active_rule(p.suite, args)
    if rule is None:
        return p.jobs
    def pending(job: Job) -> Job:  # a grid without epochs keeps the config's
        cfg = job.method_cfg.replace(epochs=max(rule.epochs)) if rule.epochs else job.method_cfg
        return replace(job, method_cfg=cfg, runtime={**job.runtime, "recipe": {"pending": True}})

    return [job if "recipe" in job.runtime or rule.family_of(job.method) is None else pending(job) for job in p.jobs]


def recipe_note(p: Plan, args, jobs: list[Job]) -> str | None:
    """A dry run's line on the recipe rule: which choices are stored and how many the run would make first
    (the (benchmark, family) pairs of ``jobs``, :func:`dry_run_jobs`' list, marked still to choose)."""
    rule = active_rule(p.suite, args)
    if rule is None:
        return None
    pending = len({(job.benchmark, rule.family_of(job.method).name) for job in jobs
                   if job.runtime.get("recipe", {}).get("pending")})
    runs = len(rule.lrs or [0]) * len(rule.epochs or [0])
    stored = "" if not (Path(p.results_dir) / "recipe.json").exists() else f"; stored: {p.results_dir / 'recipe.json'}"
    bound = (f"; the jobs above marked 'rule: to choose' are costed at {max(rule.epochs)} epochs, the grid's most"
             if pending and rule.epochs else "")
    grid = ", ".join(f"{key} in {list(values)}" for key, values in (("lr", rule.lrs), ("epochs", rule.epochs)) if values)
    return (f"recipe rule: {grid} per family, on {rule.validation:g} of "
            f"{rule.where()} held out (runner/recipe.py); {pending} choice(s) to make first ({pending * runs} "
            f"validation runs){stored}{bound}")


def plan(args) -> Plan:
    """A run's plan; every check on bad input (exit 2) happens here, before anything is written."""
    if (args.jobs is not None and args.jobs < 1) or (args.threads is not None and args.threads < 1):
        raise UserError("--jobs and --threads must be >= 1")
    if args.data_root:
        if args.prepare:  # --prepare creates it and fetches into it
            problem = output_problem(args.data_root, "--data-root", probe=not args.dry_run)
            if problem:
                raise UserError(problem)
        elif not Path(args.data_root).is_dir():
            what = "not a folder" if Path(args.data_root).exists() else "no such folder"
            raise UserError(f"--data-root {args.data_root}: {what}; give the folder that holds the datasets (or add "
                            "--prepare to fetch them into it)")
        os.environ["SDLB_DATA_ROOT"] = str(Path(args.data_root).resolve())
    suite, name, jobs, results_dir = select(args, smoke=not args.dry_run)
    execution = plan_execution(args, suite)
    if args.prepare and not args.smoke:  # fetch, verify and lay out what the jobs need (a dry run lists it)
        prepare_jobs([(j.benchmark_name, j.benchmark_cfg) for j in jobs], [j.backbone_cfg for j in jobs],
                     results_dir, dry_run=args.dry_run)
    report_problems(args, jobs, execution, results_dir)
    runtime = {"device": args.device, "checkpoints": args.checkpoints,
               "force": args.force}  # reruns a job another runner finished meanwhile
    return Plan(suite, name, [replace(job, runtime={**job.runtime, **runtime}) for job in jobs], results_dir, execution)


def key_settings(m) -> str:
    """Epochs, learning rate (task 0's first when it differs), schedule, batch size and optimizer of a method config."""
    lr = f"{m.init_lr:g}/{m.lr:g}" if m.init_lr is not None and m.init_lr != m.lr else f"{m.lr:g}"
    sched = m.scheduler
    if getattr(m, "coda_schedule", False) or getattr(m, "coda_cosine", False):  # the method's own schedule wins
        sched = "coda-cosine"
    elif sched == "multistep":
        sched += "[" + ",".join(str(e) for e in m.milestones) + f"]x{m.lr_decay:g}"
    return f"epochs={m.epochs} lr={lr} sched={sched} bs={m.batch_size} opt={m.optimizer}"


def rule_mark(job: Job) -> str:
    """What the recipe rule did to a dry run's job line: nothing, a stored choice, or a choice still to make."""
    choice = job.runtime.get("recipe")
    if choice is None:
        return ""
    if choice.get("pending"):
        return "  [rule: to choose]"
    return f"  [rule: chosen, validation {choice['val_acc']:.2f}]"


def report_problems(args, jobs: list[Job], execution: dict[str, Any], results_dir: Path) -> None:
    """A real run stops on the first problem (exit 2, nothing written); a dry run prints them all."""
    problems = device_problems(args.device, execution) + ([] if args.smoke else path_problems(jobs))
    if not args.dry_run:
        if problems:
            raise UserError(problems[0])
        return
    for problem in problems + folder_problems(results_dir):
        print(f"note: a real run would stop here: {problem}")


def awaiting_rule(p: Plan, args) -> frozenset[str]:
    """Ids of the plan's jobs whose lr and epochs the recipe rule has still to choose (no stored choice applied)."""
    rule = active_rule(p.suite, args)
    if rule is None:
        return frozenset()
    return frozenset(j.job_id for j in p.jobs if "recipe" not in j.runtime and rule.family_of(j.method) is not None)


def plan_status(args) -> Plan:
    """The jobs ``status`` reports on: the same selection as a run, without run settings or data checks."""
    suite, name, jobs, results_dir = select(args, smoke=True)
    return Plan(suite, name, jobs, results_dir, {})


def plan_execution(args, suite: dict) -> dict[str, Any]:
    """The executor and its settings, from flags over the suite file; bad values exit 2 before anything runs."""
    executor = args.executor or suite.get("executor") or "local"
    if executor not in ("local", "slurm"):
        raise UserError(f"suite {suite['name']}: executor {executor!r} is not one of: local, slurm")
    gpus = parse_gpus(args.gpus)
    if gpus and executor == "slurm":
        raise UserError("--gpus is for the local executor; with slurm give --slurm-gpus (GPUs per job)")
    if gpus and (args.jobs or 1) > 1:
        raise UserError("give either --gpus (one worker per GPU slot) or --jobs (CPU workers), not both")
    slurm = SlurmSettings.build(suite.get("slurm"), args.slurm)
    jobs = args.jobs if args.jobs is not None else 1 if gpus else suite_count(suite, "jobs", cap=os.cpu_count() or 1)
    threads = args.threads if args.threads is not None else suite_count(suite, "threads", default=None)
    if executor == "slurm" and not args.dry_run:
        reason = available()
        if reason:
            raise UserError(f"executor slurm: {reason}")
    return {"executor": executor, "gpus": gpus, "slurm": slurm, "jobs": jobs, "threads": threads}


def suite_count(suite: dict, key: str, default: int | None = 1, cap: int | None = None) -> int | None:
    """``jobs:`` (CPU workers, at most one per core) or ``threads:`` (torch threads per job, so that records do not
    depend on the machine's core count) from the suite file, for when the flag is not given."""
    wanted = suite.get(key, default)
    if wanted is None:
        return None
    if not isinstance(wanted, int) or isinstance(wanted, bool) or wanted < 1:
        raise UserError(f"suite {suite['name']}: {key} must be an integer >= 1, got {wanted!r}")
    return max(1, min(wanted, cap)) if cap else wanted


def apply_weights(jobs: list[Job], specs: list[str]) -> list[Job]:
    """``--weights PATH`` or ``--weights LABEL=PATH``: point backbones at local files."""
    labels = sorted({job.backbone for job in jobs})
    chosen: dict[str, str] = {}
    for spec in specs:
        label, sep, path = spec.rpartition("=")
        if not sep:
            if len(labels) > 1:
                raise UserError(f"--weights {spec}: the suite has several backbones ({', '.join(labels)}); use LABEL=PATH")
            label, path = labels[0], spec
        if label not in labels:
            raise UserError(f"--weights {spec}: no backbone {label!r}; the suite's backbones are: {', '.join(labels)}")
        chosen[label] = path
    return [replace(job, backbone_cfg=replace(job.backbone_cfg, weights=chosen[job.backbone]))
            if job.backbone in chosen else job for job in jobs]


def select_todo(jobs: list[Job], store: ResultStore, force: bool = False, retry_failed: bool = False,
                rerun_stale: bool = False, pin: str | None = None) -> tuple[list[Job], int, list[Job]]:
    """(jobs to run, number already done, done jobs whose record was made by other code or under another pin).

    Not done (or all, with ``force``); only failed ones with ``retry_failed``. A record made by other code (its
    ``code_hash`` differs), or under another CPU kernel pin than ``pin`` (the one in force, core/cpu.py), still
    counts as done; ``rerun_stale`` reruns those jobs too.
    """
    records = {job.job_id: store.load(job.job_id) for job in jobs}
    done = [j for j in jobs if _is_done(records[j.job_id], j)]
    stale = [j for j in done if kept_but_stale(records[j.job_id], j.code_hash(), pin)]
    if retry_failed:
        todo = [j for j in jobs if (rec := records[j.job_id]) is not None and rec.status == "failed"
                and rec.config_hash == j.config_hash()]
        return todo, len(done), stale
    if force:
        return list(jobs), len(done), stale
    skip = {j.job_id for j in done} - ({j.job_id for j in stale} if rerun_stale else set())
    return [j for j in jobs if j.job_id not in skip], len(done), stale


def _is_done(record: Record | None, job: Job) -> bool:
    return record is not None and record.status == "done" and record.config_hash == job.config_hash()


def parallel_slots(execution: dict[str, Any]) -> int | None:
    """Jobs that run at once under ``execution``: a local run's workers; None under SLURM (the cluster decides)."""
    return None if execution["executor"] == "slurm" else local_workers(execution["jobs"], execution["gpus"])


def execute(todo: list[Job], results_dir: Path, args, execution: dict[str, Any]) -> Iterator[Record]:
    """The jobs' records as they finish, from the executor of ``execution``."""
    imports = absolute_imports(args.imports)
    if execution["executor"] == "slurm":
        return run_slurm(todo, str(results_dir), execution["slurm"], imports)
    return run_local(todo, str(results_dir), execution["jobs"], execution["threads"], gpus=execution["gpus"],
                     imports=imports)


def eta_s(elapsed: float, finished: int, durations: list[float], remaining: int, slots: int | None) -> float:
    """Seconds until the last job ends: the finished jobs' mean duration x the jobs left / the jobs that run at once
    (``slots``: a local run's workers or GPU slots). Elapsed time per finished job, the estimate without ``slots``
    (SLURM: the cluster decides), overestimates early by about the number of slots: the first job ends when every
    slot's first job is nearly done."""
    if slots and durations:
        return sum(durations) / len(durations) * remaining / slots
    return elapsed / max(finished, 1) * remaining


def run_all(records: Iterable[Record | Skipped], n: int, results_dir: Path,
            slots: int | None = None) -> tuple[list[Record], list[Skipped]]:
    """Consume the executor's records: a progress bar (on a terminal) and one line per finished job (with
    :func:`eta_s`); returns the failed records and the jobs left to another runner."""
    failed: list[Record] = []
    skipped: list[Skipped] = []
    durations: list[float] = []
    t0 = time.time()
    with tqdm(total=n, unit="job", file=sys.stderr, disable=None, dynamic_ncols=True) as bar:
        for i, record in enumerate(records, 1):
            timings = getattr(record, "timings", None)
            if getattr(timings, "total_s", None):
                durations.append(timings.total_s)
            eta = eta_s(time.time() - t0, i, durations, n - i, slots)
            if record.status == "done":
                m = record.metrics
                status = f"Acc {m.acc:6.2f}  AAA {m.aaa:6.2f}  ({record.timings.total_s:.0f}s)"
                if record.nonfinite_loss:
                    task, epoch = record.nonfinite_loss
                    status += f"  DIVERGED: training loss not finite from task {task}, epoch {epoch}"
            elif record.status == "skipped":  # one job, one runner (runner/locks.py)
                skipped.append(record)
                status = f"skipped: {record.reason}"
            else:
                failed.append(record)
                status = f"FAILED (see {results_dir / record.log_path})"
            counts = f"{len(failed)} failed" + (f", {len(skipped)} skipped" if skipped else "")
            bar.set_postfix_str(f"{i - len(failed) - len(skipped)} done, {counts}", refresh=False)
            bar.update()
            tqdm.write(f"[{i}/{n}, {counts}, ETA {eta:.0f}s] {record.job_id}: {status}", file=sys.stdout)
            sys.stdout.flush()
    return failed, skipped


@contextlib.contextmanager
def terminate_as_interrupt():
    """While jobs run, SIGTERM (kill, a scheduler's stop) acts as Ctrl-C: joblib then stops the local workers
    instead of leaving them running without their runner. A KILL cannot be caught: kill the process group
    (``kill -- -PGID``) to stop the workers too."""
    if threading.current_thread() is not threading.main_thread():  # signals are the main thread's
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    before = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)
