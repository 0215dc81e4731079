#!/usr/bin/env python
"""Run a benchmark suite: expand it into jobs (method x benchmark x seed), run them, write records and tables.

    python run_suite.py --suite quick                 # train, record, then LaTeX table + figures
    python run_suite.py --list                        # suites, methods, benchmarks
    python run_suite.py --suite quick --dry-run       # the jobs, without running them
    python run_suite.py --suite paper_tables --gpus 0,0,1,1            # 4 workers, two per GPU
    python run_suite.py --suite paper_tables --executor slurm --slurm-partition gpu --slurm-time 12:00:00
    python run_suite.py --suite paper_tables --retry-failed            # rerun only the failed jobs
    python run_suite.py status --suite paper_tables                    # done / running / failed / pending

Executors (``--executor`` or the suite's ``executor:`` key): ``local`` (joblib: in this process, ``--jobs N`` CPU
workers, or one worker per ``--gpus`` slot) and ``slurm`` (submitit array jobs; see runner/slurm.py). Every job
resumes after its last finished experience when it is started again (runner/resume.py).

Exit codes: 0 all jobs done (or skipped: another runner holds them, runner/locks.py), 1 some job failed (the
others still ran and were recorded), 2 bad input (nothing written) or a results folder that cannot be written,
130 interrupted (Ctrl-C or SIGTERM: the local workers stop too; finished records are kept and the same command
resumes the rest), 141 the output's reader left (``--dry-run | head``).
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub (it retries for ~46 s offline)

from core.cpu import DEFAULT, LEVELS, level_in_force, pin_kernels
from core.errors import UserError  # re-exported: callers catch run_suite.UserError

# The rest is imported where it is used: torch, timm and Avalanche take seconds to import (about 10 on 2 cores),
# and --help and the argument errors answer without them.


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="Run a class-incremental benchmark suite.",
                                 epilog="Where a suite stands (done, running, failed, pending, stale): "
                                        "python run_suite.py status --suite NAME [--results-dir DIR]")
    ap.add_argument("--suite", help="suite name (suites/NAME.yaml) or path to a suite file")
    ap.add_argument("--list", action="store_true", help="list suites, methods and benchmarks")
    ap.add_argument("--dry-run", action="store_true", help="print the jobs without running them")
    ap.add_argument("--methods", help="comma-separated method labels to keep")
    ap.add_argument("--benchmarks", help="comma-separated benchmark labels to keep")
    ap.add_argument("--seeds", help="comma-separated seeds (replaces the suite's)")
    ap.add_argument("--force", action="store_true", help="rerun jobs whose record already exists")
    ap.add_argument("--results-dir", help="where records and artefacts go (default: results/<suite>)")
    ap.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda[:N]")
    ap.add_argument("--jobs", type=int, help="parallel worker processes (CPU; default: the suite's 'jobs:' key, "
                                             "at most one per core, else 1)")
    ap.add_argument("--gpus", help="local GPU slots: 0,1 (one worker per GPU), 0,0,1,1 (two per GPU) or all; "
                                   "each worker sees only its GPU (CUDA_VISIBLE_DEVICES)")
    ap.add_argument("--rates", help="--dry-run's cost model: a bench/throughput.py --out file (default: the newest "
                                    "GPU measurement in results/reference/rates/, else the official logs' speed)")
    ap.add_argument("--executor", choices=("local", "slurm"),
                    help="where jobs run (default: the suite's 'executor:' key, else local)")
    ap.add_argument("--retry-failed", action="store_true", help="rerun only the jobs whose record says failed")
    ap.add_argument("--rerun-stale", action="store_true",
                    help="also rerun done jobs whose record was made by other code or under another CPU kernel pin "
                         "(status flags them CODE or PIN)")
    ap.add_argument("--threads", type=int, help="torch threads per job (default: cores / jobs)")
    ap.add_argument("--cpu-isa", choices=tuple(LEVELS), default=DEFAULT,
                    help="vector instructions the CPU kernels may use (default avx2: one record per job and seed "
                         "on every x86-64 CPU with AVX2; baseline: CPUs without it; native: the machine's best, "
                         "records per kind of CPU; core/cpu.py)")
    ap.add_argument("--checkpoints", choices=("final", "tasks"), default="tasks",
                    help="keep the method's state after every task (default) or only the last")
    ap.add_argument("--import", dest="imports", action="append", default=[],
                    help="module or .py file that registers extra methods/benchmarks (repeatable)")
    ap.add_argument("--no-report", action="store_true", help="skip the tables and figures at the end")
    ap.add_argument("--data-root", help="folder holding the datasets (sets $SDLB_DATA_ROOT; see docs/datasets.md)")
    ap.add_argument("--weights", action="append", default=[],
                    help="local backbone weights: PATH (one-backbone suites) or LABEL=PATH (repeatable)")
    ap.add_argument("--prepare", action="store_true",
                    help="first fetch, verify and lay out the datasets and backbone weights the jobs need "
                         "(python -m benchmarks.prepare; with --dry-run: list them, fetch nothing)")
    ap.add_argument("--smoke", action="store_true",
                    help="run every job on tiny stand-ins (generated files in each dataset's format, a tiny ViT, "
                         "one step per task) to prove a suite's wiring on CPU")
    slurm = ap.add_argument_group("slurm executor (override the suite's 'slurm:' mapping)")
    for flag, kind, text in SLURM_FLAGS:
        slurm.add_argument(f"--slurm-{flag}", type=kind, help=text)
    args = ap.parse_args(argv)
    args.slurm = {f.replace("-", "_"): getattr(args, "slurm_" + f.replace("-", "_")) for f, _, _ in SLURM_FLAGS}
    return args


SLURM_FLAGS = [
    ("partition", str, "partition"), ("time", str, "time limit per job: minutes or HH:MM:SS"),
    ("gpus", int, "GPUs per job"), ("cpus", int, "CPUs per job (= torch threads)"),
    ("mem-gb", float, "memory per job in GB"), ("array-parallelism", int, "array tasks running at once"),
    ("chunk-size", int, "jobs per array job"), ("account", str, "account"), ("qos", str, "quality of service"),
    ("folder", str, "submitit's files (default: <results>/slurm)"), ("poll-s", float, "seconds between polls"),
]


def print_listing() -> None:
    from benchmarks import BENCHMARKS
    from methods import METHODS
    from runner.suite import list_suites

    print("suites:     " + ", ".join(list_suites()))
    for title, registry in (("methods:", METHODS), ("benchmarks:", BENCHMARKS)):
        print(title)
        for name in registry.names():
            # "prefix:<name>" stands for names a resolver builds on demand (e.g. avalanche:EWC)
            doc = "resolved on demand" if "<" in name else registry.get(name).doc
            print(f"  {name:24s} {doc.replace('``', '`')}")  # a docstring's reST literal, as plain text shows it


def print_jobs(jobs, args: argparse.Namespace, to_run: set[str], results_dir, execution: dict) -> None:
    """The dry run's table: every job, whether a real run would run it (``to_run``) or skip its done record."""
    from runner.checks import runs_on_cpu
    from runner.cost import CostModel, cost_headline, cost_report, gpu_plan
    from runner.plan import key_settings, rule_mark

    model = CostModel.choose(args.rates)
    print(cost_headline(jobs, model))
    if model.unit != "CPU-hours" and runs_on_cpu(args.device, execution):
        print(f"note: no GPU is visible here, so these jobs would train on this machine's CPU; the {model.unit} "
              "price them on the GPU the cost model describes (source: below), not this machine's time "
              "(bench/throughput.py --device cpu --out FILE measures CPU rates for --rates FILE)")
    print(f"{'job':48s} {'method':18s} {'benchmark':16s} {'N':>3s} {'seed':>5s} {'state':5s}  key hyperparameters")
    for job in jobs:
        state = "run" if job.job_id in to_run else "done"
        print(f"{job.job_id:48s} {job.method:18s} {job.benchmark:16s} {job.n_tasks():>3d} {job.seed:>5d} {state:5s}  "
              f"{key_settings(job.method_cfg)}{rule_mark(job)}")
    if len(to_run) < len(jobs):
        print(f"{len(to_run)} of {len(jobs)} jobs would run; the {len(jobs) - len(to_run)} marked done have a record "
              f"for their config in {results_dir} and are skipped (--force reruns them)")
    print()
    print(cost_report(jobs, model, gpu_plan(args.gpus)))

def run(args: argparse.Namespace) -> int:
    from analysis.report import make_report
    from runner.checks import probe_writable, storage_error
    from runner.plan import (
        REPO,
        dry_run_jobs,
        execute,
        parallel_slots,
        plan,
        recipe_note,
        resolve_recipe,
        run_all,
        select_todo,
        terminate_as_interrupt,
    )
    from runner.resume import read_summary, resumes
    from runner.store import ResultStore

    p = plan(args)
    if args.dry_run:
        jobs = dry_run_jobs(p, args)
        todo, _, _ = select_todo(p.jobs, ResultStore(p.results_dir), force=args.force,
                                 retry_failed=args.retry_failed, rerun_stale=args.rerun_stale)
        print_jobs(jobs, args, {job.job_id for job in todo}, p.results_dir, p.execution)
        note = recipe_note(p, args, jobs)
        if note:
            print(note)
        return 0
    try:
        if any(job.runtime.get("recipe", {}).get("pending") for job in dry_run_jobs(p, args)):
            probe_writable(p.results_dir)  # before the recipe rule's selection trains anything
        with terminate_as_interrupt():  # the rule's validation runs are local workers too
            p = resolve_recipe(p, args)
        store = ResultStore(p.results_dir)
        pin = level_in_force()  # set by main before this run (core/cpu.py)
        todo, n_done, stale = select_todo(p.jobs, store, force=args.force, retry_failed=args.retry_failed,
                                          rerun_stale=args.rerun_stale, pin=pin)
        selected = " (failed ones only: --retry-failed)" if args.retry_failed else ""
        if todo or not args.no_report:
            probe_writable(p.results_dir)
        resuming = sum(resumes(read_summary(store, job.job_id), job, pin) for job in todo)
        resumed = f" ({resuming} resume after their last finished task)" if resuming else ""
        print(f"suite {p.suite['name']}: {len(p.jobs)} jobs, {n_done} already done, {len(todo)} to run{selected}"
              f"{resumed} -> {p.results_dir}", flush=True)
        if stale and not args.rerun_stale:
            print(f"note: {len(stale)} done record(s) were made by other code or under another CPU kernel pin and are "
                  f"kept (status flags them CODE or PIN; --rerun-stale reruns them): "
                  f"{', '.join(j.job_id for j in stale[:5])}{' ...' * (len(stale) > 5)}")
        with terminate_as_interrupt():
            failed, skipped = (run_all(execute(todo, p.results_dir, args, p.execution), len(todo), p.results_dir,
                                       parallel_slots(p.execution)) if todo else ([], []))
        if skipped:
            print(f"{len(skipped)} job(s) left to another runner that holds them ({skipped[0].reason}"
                  f"{', ...' * (len(skipped) > 1)}): `run_suite.py status` follows them; their records land in "
                  f"{p.results_dir / 'records'} when they finish")
        if not args.no_report and not any(r.status == "done" for r in store.all_records()):
            print(f"no tables or figures: no job in {p.results_dir} has finished yet")
        elif not args.no_report:
            reference = REPO / "results" / "reference" / "paper_results.csv"
            paths = make_report(p.results_dir, reference if reference.exists() else None)
            print("tables and figures:")
            for path in paths:
                print(f"  {path}")
    except OSError as err:  # disk full, read-only folder: one line; records are replaced atomically, none is torn
        refused = storage_error(p.results_dir, err)
        if refused is None:
            raise
        raise refused from None
    if failed:
        print(f"{len(failed)} job(s) failed: " + ", ".join(r.job_id for r in failed))
        for record in failed:
            print(f"  {record.job_id}: {record.last_error_line()}  (log: {p.results_dir / record.log_path})")
        print(f"rerun only these: python run_suite.py --suite {args.suite} --retry-failed (plus the same options)")
        return 1
    return 0


def parse_status_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="run_suite.py status",
                                 description="Done, running, failed and pending jobs of a suite, from its records "
                                             "(definitions: runner/status.py).")
    ap.add_argument("--suite", required=True, help="suite name or path")
    ap.add_argument("--results-dir", help="default: results/<suite>")
    ap.add_argument("--methods", help="comma-separated method labels to keep")
    ap.add_argument("--benchmarks", help="comma-separated benchmark labels to keep")
    ap.add_argument("--seeds", help="comma-separated seeds (replaces the suite's)")
    ap.add_argument("--import", dest="imports", action="append", default=[], help="plugin module or .py file")
    ap.add_argument("--weights", action="append", default=[], help="as for a run (changes the config hash)")
    ap.add_argument("--smoke", action="store_true", help="the --smoke variant of the suite")
    ap.add_argument("--cpu-isa", choices=tuple(LEVELS), default=DEFAULT,
                    help="as for a run: done records made under another pin are flagged PIN (core/cpu.py)")
    ap.add_argument("--active-minutes", type=float, default=60.0,
                    help="a job without a record counts as running if its log or resume state changed this recently")
    return ap.parse_args(argv)


def status(argv: list[str]) -> int:
    args = parse_status_args(argv)
    from runner.plan import awaiting_rule, plan_status
    from runner.status import format_status, suite_status
    from runner.store import ResultStore

    p = plan_status(args)
    store = ResultStore(p.results_dir)
    pin_kernels(args.cpu_isa)  # the pin a run with these options would set, for the PIN flag
    rows = suite_status(p.jobs, store, args.active_minutes, awaiting_rule(p, args), level_in_force())
    print(format_status(p.name, rows, store, p.jobs))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["status"]:
            return status(argv[1:])
        args = parse_args(argv)
        if args.list:
            from runner.executors import import_plugins

            import_plugins(args.imports)
            print_listing()
            return 0
        if not args.suite:
            raise UserError("give --suite NAME (see --list for the suites)")
        pin_kernels(args.cpu_isa)  # before torch's first kernel here, and for every worker started after
        return run(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader left (``--dry-run | head``): stop writing, quietly, as a Unix tool does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's own flush at exit must not fail
        return 141  # 128 + SIGPIPE, what a shell reports for a pipeline's writer
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM while jobs run: the local workers stop with the runner
        print("interrupted: finished records are kept; the same command resumes the unfinished jobs after their last "
              "finished task (run_suite.py status shows where each stands)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
