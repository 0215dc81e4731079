#!/usr/bin/env python
"""Run a benchmark suite: expand it into jobs (method x benchmark x seed), run them, write records and tables.

    python run_suite.py --suite quick                 # train, record, then LaTeX table + figures
    python run_suite.py --list                        # suites, methods, benchmarks
    python run_suite.py --suite quick --dry-run       # the jobs, without running them

Exit codes: 0 all jobs done, 1 some job failed (the others still ran and were recorded), 2 bad input
(nothing written).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub (it retries for ~46 s offline)

from harness.errors import UserError  # noqa: E402

REPO = Path(__file__).resolve().parent


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="Run a class-incremental benchmark suite.")
    ap.add_argument("--suite", help="suite name (suites/NAME.yaml) or path to a suite file")
    ap.add_argument("--list", action="store_true", help="list suites, methods and benchmarks")
    ap.add_argument("--dry-run", action="store_true", help="print the jobs without running them")
    ap.add_argument("--methods", help="comma-separated method labels to keep")
    ap.add_argument("--benchmarks", help="comma-separated benchmark labels to keep")
    ap.add_argument("--seeds", help="comma-separated seeds (replaces the suite's)")
    ap.add_argument("--force", action="store_true", help="rerun jobs whose record already exists")
    ap.add_argument("--results-dir", help="where records and artefacts go (default: results/<suite>)")
    ap.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda[:N]")
    ap.add_argument("--jobs", type=int, default=1, help="parallel worker processes (CPU)")
    ap.add_argument("--threads", type=int, help="torch threads per job (default: cores / jobs)")
    ap.add_argument("--checkpoints", choices=("final", "tasks"), default="tasks",
                    help="keep the method's state after every task (default) or only the last")
    ap.add_argument("--import", dest="imports", action="append", default=[],
                    help="module or .py file that registers extra methods/benchmarks (repeatable)")
    ap.add_argument("--no-report", action="store_true", help="skip the tables and figures at the end")
    return ap.parse_args(argv)


def import_plugins(specs: list[str]) -> None:
    for spec in specs:
        try:
            if spec.endswith(".py"):
                path = Path(spec).resolve()
                if not path.exists():
                    raise UserError(f"--import {spec}: file not found")
                module_spec = importlib.util.spec_from_file_location(path.stem, path)
                module = importlib.util.module_from_spec(module_spec)
                sys.modules[path.stem] = module
                module_spec.loader.exec_module(module)
            else:
                importlib.import_module(spec)
        except ImportError as err:
            raise UserError(f"--import {spec}: cannot import it ({err}); give a module on sys.path or a .py file") from None


def csv_list(value: str | None, cast=str) -> list | None:
    if value is None:
        return None
    try:
        return [cast(v.strip()) for v in value.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"cannot read {value!r} as a comma-separated list of {cast.__name__}") from None


def print_listing() -> None:
    from benchmarks import BENCHMARKS
    from harness.suite import list_suites
    from methods import METHODS

    print("suites:     " + ", ".join(list_suites()))
    print("methods:")
    for name in METHODS.names():
        print(f"  {name:24s} {METHODS.get(name).doc}")
    print("benchmarks:")
    for name in BENCHMARKS.names():
        print(f"  {name:24s} {BENCHMARKS.get(name).doc}")


def print_jobs(jobs) -> None:
    print(f"{len(jobs)} jobs")
    print(f"{'job':48s} {'method':18s} {'benchmark':16s} {'N':>3s} {'seed':>5s}  key hyperparameters")
    for job in jobs:
        m = job.method_cfg
        keys = f"epochs={m.epochs} lr={m.lr:g} bs={m.batch_size} opt={m.optimizer}"
        print(f"{job.job_id:48s} {job.method:18s} {job.benchmark:16s} {job.n_tasks():>3d} {job.seed:>5d}  {keys}")


def plan(args: argparse.Namespace):
    """Everything that can fail on bad input happens here, before anything is written."""
    import benchmarks  # noqa: F401  (registers built-ins)
    import methods  # noqa: F401
    from harness.suite import expand_jobs, load_suite, validate_paths

    import_plugins(args.imports)
    if args.jobs < 1 or (args.threads is not None and args.threads < 1):
        raise UserError("--jobs and --threads must be >= 1")
    suite = load_suite(args.suite)
    jobs = expand_jobs(suite, methods=csv_list(args.methods), benchmarks=csv_list(args.benchmarks),
                       seeds=csv_list(args.seeds, int))
    validate_paths(jobs)
    runtime = {"device": args.device, "checkpoints": args.checkpoints}
    from dataclasses import replace

    jobs = [replace(job, runtime=runtime) for job in jobs]
    results_dir = Path(args.results_dir) if args.results_dir else REPO / "results" / suite["name"]
    return suite, jobs, results_dir


def run(args: argparse.Namespace) -> int:
    from harness.executors import run_local
    from harness.store import ResultStore

    suite, jobs, results_dir = plan(args)
    if args.dry_run:
        print_jobs(jobs)
        return 0
    store = ResultStore(results_dir)
    todo = [j for j in jobs if args.force or not store.is_done(j.job_id, j.config_hash())]
    print(f"suite {suite['name']}: {len(jobs)} jobs, {len(jobs) - len(todo)} already done, {len(todo)} to run "
          f"-> {results_dir}", flush=True)
    failed = []
    t0 = time.time()
    for i, record in enumerate(run_local(todo, str(results_dir), args.jobs, args.threads), 1):
        elapsed = time.time() - t0
        eta = elapsed / i * (len(todo) - i)
        if record["status"] == "done":
            m = record["metrics"]
            status = f"Acc {m['acc']:6.2f}  AAA {m['aaa']:6.2f}  ({record['timings']['total_s']:.0f}s)"
        else:
            failed.append(record)
            status = f"FAILED (see {results_dir / record['log_path']})"
        print(f"[{i}/{len(todo)} done, {len(failed)} failed, ETA {eta:.0f}s] {record['job_id']}: {status}", flush=True)
    if not args.no_report:
        from analysis.report import make_report

        reference = REPO / "results" / "reference" / "paper_results.csv"
        paths = make_report(results_dir, reference if reference.exists() else None)
        print("tables and figures:")
        for path in paths:
            print(f"  {path}")
    if failed:
        print(f"{len(failed)} job(s) failed: " + ", ".join(r["job_id"] for r in failed))
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.list:
            import benchmarks  # noqa: F401
            import methods  # noqa: F401

            import_plugins(args.imports)
            print_listing()
            return 0
        if not args.suite:
            raise UserError("give --suite NAME (see --list for the suites)")
        return run(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
