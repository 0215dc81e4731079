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
others still ran and were recorded), 2 bad input (nothing written) or a results folder that cannot be written.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub (it retries for ~46 s offline)

from core.errors import UserError

REPO = Path(__file__).resolve().parent


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
    ap.add_argument("--jobs", type=int, default=1, help="parallel worker processes (CPU)")
    ap.add_argument("--gpus", help="local GPU slots: 0,1 (one worker per GPU), 0,0,1,1 (two per GPU) or all; "
                                   "each worker sees only its GPU (CUDA_VISIBLE_DEVICES)")
    ap.add_argument("--executor", choices=("local", "slurm"),
                    help="where jobs run (default: the suite's 'executor:' key, else local)")
    ap.add_argument("--retry-failed", action="store_true", help="rerun only the jobs whose record says failed")
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
    slurm = ap.add_argument_group("slurm executor (override the suite's 'slurm:' mapping)")
    for flag, kind, text in SLURM_FLAGS:
        slurm.add_argument(f"--slurm-{flag}", type=kind, help=text)
    return ap.parse_args(argv)


SLURM_FLAGS = [
    ("partition", str, "partition"), ("time", str, "time limit per job: minutes or HH:MM:SS"),
    ("gpus", int, "GPUs per job"), ("cpus", int, "CPUs per job (= torch threads)"),
    ("mem-gb", float, "memory per job in GB"), ("array-parallelism", int, "array tasks running at once"),
    ("chunk-size", int, "jobs per array job"), ("account", str, "account"), ("qos", str, "quality of service"),
    ("folder", str, "submitit's files (default: <results>/slurm)"), ("poll-s", float, "seconds between polls"),
]


def slurm_overrides(args: argparse.Namespace) -> dict:
    return {flag.replace("-", "_"): getattr(args, "slurm_" + flag.replace("-", "_")) for flag, _, _ in SLURM_FLAGS}


def import_plugins(specs: list[str]) -> None:
    from runner.executors import import_plugins as _import

    _import(specs)


def csv_list(value: str | None, cast=str) -> list | None:
    if value is None:
        return None
    try:
        return [cast(v.strip()) for v in value.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"cannot read {value!r} as a comma-separated list of {cast.__name__}") from None


def print_listing() -> None:
    from benchmarks import BENCHMARKS
    from runner.suite import list_suites
    from methods import METHODS

    print("suites:     " + ", ".join(list_suites()))
    print("methods:")
    for registry in (METHODS, BENCHMARKS):
        if registry is BENCHMARKS:
            print("benchmarks:")
        for name in registry.names():
            # "prefix:<name>" stands for names a resolver builds on demand (e.g. avalanche:EWC)
            doc = "resolved on demand" if "<" in name else registry.get(name).doc
            print(f"  {name:24s} {doc}")


def print_jobs(jobs) -> None:
    from runner.cost import suite_gpu_hours

    hours, unknown = suite_gpu_hours(jobs)
    note = f" ({unknown} jobs on benchmarks without a size estimate left out)" if unknown else ""
    print(f"{len(jobs)} jobs; estimated {hours:.1f} A100-hours{note} (cost model: runner/cost.py)")
    print(f"{'job':48s} {'method':18s} {'benchmark':16s} {'N':>3s} {'seed':>5s}  key hyperparameters")
    for job in jobs:
        m = job.method_cfg
        keys = f"epochs={m.epochs} lr={m.lr:g} bs={m.batch_size} opt={m.optimizer}"
        print(f"{job.job_id:48s} {job.method:18s} {job.benchmark:16s} {job.n_tasks():>3d} {job.seed:>5d}  {keys}")


def plan(args: argparse.Namespace, for_status: bool = False):
    """Everything that can fail on bad input happens here, before anything is written.

    Returns (suite, jobs, results_dir, execution), execution = {"executor", "gpus", "slurm"}.
    """
    import benchmarks  # noqa: F401  (registers built-ins)
    import methods  # noqa: F401
    from runner.suite import expand_jobs, load_suite

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
    execution = {} if for_status else plan_execution(args, suite)
    if args.smoke and (for_status or not args.dry_run):  # smoke rewrites configs, so hashes need it
        from runner.smoke import smoke_jobs

        jobs = smoke_jobs(jobs, results_dir / "smoke_data")
    if not for_status:  # the status of a suite needs no data; a dry run lists what a real run would stop on
        report_problems(args, jobs, execution, results_dir)
    runtime = {"device": args.device, "checkpoints": args.checkpoints,
               "force": getattr(args, "force", False)}  # reruns a job another runner finished meanwhile
    jobs = [replace(job, runtime=runtime) for job in jobs]
    return suite, jobs, results_dir, execution


def report_problems(args: argparse.Namespace, jobs, execution: dict, results_dir: Path) -> None:
    """A real run stops on the first problem (exit 2, nothing written); a dry run prints them all."""
    from runner.checks import device_problems, folder_problems, path_problems

    problems = device_problems(args.device, execution) + ([] if args.smoke else path_problems(jobs))
    if not args.dry_run:
        if problems:
            raise UserError(problems[0])
        return
    for problem in problems + folder_problems(results_dir):
        print(f"note: a real run would stop here: {problem}")


def plan_execution(args: argparse.Namespace, suite: dict) -> dict:
    """The executor and its settings, from flags over the suite file; bad values exit 2 before anything runs."""
    from runner.executors import parse_gpus
    from runner.slurm import SlurmSettings

    executor = args.executor or suite.get("executor") or "local"
    if executor not in ("local", "slurm"):
        raise UserError(f"suite {suite['name']}: executor {executor!r} is not one of: local, slurm")
    gpus = parse_gpus(args.gpus)
    if gpus and executor == "slurm":
        raise UserError("--gpus is for the local executor; with slurm give --slurm-gpus (GPUs per job)")
    if gpus and args.jobs > 1:
        raise UserError("give either --gpus (one worker per GPU slot) or --jobs (CPU workers), not both")
    slurm = SlurmSettings.build(suite.get("slurm"), slurm_overrides(args))
    if executor == "slurm" and not args.dry_run:
        from runner.slurm import available

        reason = available()
        if reason:
            raise UserError(f"executor slurm: {reason}")
    return {"executor": executor, "gpus": gpus, "slurm": slurm}


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


def select_todo(jobs, store, args) -> tuple[list, int]:
    """(jobs to run, jobs already done): not done (or all, with --force); only failed ones with --retry-failed."""
    done = {j.job_id for j in jobs if store.is_done(j.job_id, j.config_hash())}
    if args.retry_failed:
        todo = []
        for job in jobs:
            rec = store.load(job.job_id)
            if rec is not None and rec.get("status") == "failed" and rec.get("config_hash") == job.config_hash():
                todo.append(job)
        return todo, len(done)
    return (list(jobs) if args.force else [j for j in jobs if j.job_id not in done]), len(done)


def records_of(todo, results_dir: Path, args, execution: dict):
    from runner.executors import absolute_imports

    imports = absolute_imports(args.imports)
    if execution["executor"] == "slurm":
        from runner.slurm import run_slurm

        return run_slurm(todo, str(results_dir), execution["slurm"], imports)
    from runner.executors import run_local

    return run_local(todo, str(results_dir), args.jobs, args.threads, gpus=execution["gpus"], imports=imports)


def run_all(records, n: int, results_dir: Path) -> list[dict]:
    """Consume the executor's records: a progress bar (on a terminal) and one line per finished job."""
    from tqdm import tqdm

    failed: list[dict] = []
    t0 = time.time()
    with tqdm(total=n, unit="job", file=sys.stderr, disable=None, dynamic_ncols=True) as bar:
        for i, record in enumerate(records, 1):
            eta = (time.time() - t0) / i * (n - i)
            if record["status"] == "done":
                m = record["metrics"]
                status = f"Acc {m['acc']:6.2f}  AAA {m['aaa']:6.2f}  ({record['timings']['total_s']:.0f}s)"
            elif record["status"] == "skipped":  # one job, one runner (runner/locks.py)
                status = f"skipped: {record['reason']}"
            else:
                failed.append(record)
                status = f"FAILED (see {results_dir / record['log_path']})"
            bar.set_postfix_str(f"{i - len(failed)} done, {len(failed)} failed", refresh=False)
            bar.update()
            tqdm.write(f"[{i}/{n} done, {len(failed)} failed, ETA {eta:.0f}s] {record['job_id']}: {status}",
                       file=sys.stdout)
            sys.stdout.flush()
    return failed


def run(args: argparse.Namespace) -> int:
    from runner.checks import probe_writable, storage_error
    from runner.store import ResultStore

    suite, jobs, results_dir, execution = plan(args)
    if args.dry_run:
        print_jobs(jobs)
        return 0
    store = ResultStore(results_dir)
    todo, n_done = select_todo(jobs, store, args)
    selected = " (failed ones only: --retry-failed)" if args.retry_failed else ""
    try:
        if todo or not args.no_report:
            probe_writable(results_dir)
        print(f"suite {suite['name']}: {len(jobs)} jobs, {n_done} already done, {len(todo)} to run{selected} "
              f"-> {results_dir}", flush=True)
        failed = run_all(records_of(todo, results_dir, args, execution), len(todo), results_dir) if todo else []
        if not args.no_report:
            from analysis.report import make_report

            reference = REPO / "results" / "reference" / "paper_results.csv"
            paths = make_report(results_dir, reference if reference.exists() else None)
            print("tables and figures:")
            for path in paths:
                print(f"  {path}")
    except OSError as err:  # disk full, read-only folder: one line; records are replaced atomically, none is torn
        refused = storage_error(results_dir, err)
        if refused is None:
            raise
        raise refused from None
    if failed:
        print(f"{len(failed)} job(s) failed: " + ", ".join(r["job_id"] for r in failed))
        for record in failed:
            lines = (record.get("error") or "").strip().splitlines()
            print(f"  {record['job_id']}: {lines[-1] if lines else '?'}  (log: {results_dir / record['log_path']})")
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
    ap.add_argument("--active-minutes", type=float, default=60.0,
                    help="a job without a record counts as running if its log or resume state changed this recently")
    args = ap.parse_args(argv)
    # what plan() reads besides: a status never runs or writes anything
    args.dry_run, args.jobs, args.threads, args.data_root = True, 1, None, None
    args.device, args.checkpoints = "auto", "tasks"
    return args


def status(argv: list[str]) -> int:
    from runner.status import format_status, suite_status
    from runner.store import ResultStore

    args = parse_status_args(argv)
    suite, jobs, results_dir, _ = plan(args, for_status=True)
    store = ResultStore(results_dir)
    rows = suite_status(jobs, store, args.active_minutes)
    print(format_status(suite["name"] + ("_smoke" if args.smoke else ""), rows, store, jobs))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["status"]:
            return status(argv[1:])
        args = parse_args(argv)
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
