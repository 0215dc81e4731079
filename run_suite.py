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
from dataclasses import replace
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
    ap.add_argument("--data-root", help="folder holding the datasets (sets $SDLB_DATA_ROOT; see docs/datasets.md)")
    ap.add_argument("--weights", action="append", default=[],
                    help="local backbone weights: PATH (one-backbone suites) or LABEL=PATH (repeatable)")
    ap.add_argument("--smoke", action="store_true",
                    help="run every job on tiny stand-ins (generated files in each dataset's format, a tiny ViT, "
                         "one step per task) to prove a suite's wiring on CPU")
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
    from harness.cost import suite_gpu_hours

    hours, unknown = suite_gpu_hours(jobs)
    note = f" ({unknown} jobs on benchmarks without a size estimate left out)" if unknown else ""
    print(f"{len(jobs)} jobs; estimated {hours:.1f} A100-hours{note} (cost model: harness/cost.py)")
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
    if args.data_root:
        if not Path(args.data_root).is_dir():
            raise UserError(f"--data-root {args.data_root}: not a folder; give the folder that holds the datasets")
        os.environ["SDLB_DATA_ROOT"] = str(Path(args.data_root).resolve())
    suite = load_suite(args.suite)
    jobs = expand_jobs(suite, methods=csv_list(args.methods), benchmarks=csv_list(args.benchmarks),
                       seeds=csv_list(args.seeds, int))
    jobs = apply_weights(jobs, args.weights)
    name = suite["name"] + ("_smoke" if args.smoke else "")
    results_dir = Path(args.results_dir) if args.results_dir else REPO / "results" / name
    if args.smoke and not args.dry_run:
        from harness.smoke import smoke_jobs

        jobs = smoke_jobs(jobs, results_dir / "smoke_data")
    if args.dry_run and not args.smoke:
        try:
            validate_paths(jobs)
        except UserError as err:  # planning a suite does not need the data yet
            print(f"note: a real run would stop here: {err}")
    elif not args.smoke:
        validate_paths(jobs)
    runtime = {"device": args.device, "checkpoints": args.checkpoints}
    jobs = [replace(job, runtime=runtime) for job in jobs]
    return suite, jobs, results_dir


def apply_weights(jobs, specs: list[str]):
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
