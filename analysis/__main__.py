"""``python -m analysis --results-dir results/quick [--reference results/reference/paper_results.csv]``: tables,
figures and report.html from the records. ``--results-dir`` may be repeated (a new method's records beside committed
ones, one table); then ``--out DIR`` names where the outputs go. ``--stat sd|se`` (default sd) beside each mean.

Two runs of one suite (e.g. before and after a change to a method)::

    python -m analysis compare DIR_A DIR_B [--metric acc]

Weight-space analyses of jobs with per-task checkpoints (docs/analysis.md)::

    python -m analysis landscape --results-dir DIR --job JOB [--task T] [--mode random|plane] [--resolution 21]
                                 [--span 1.0] [--max-samples 500] [--params adapted|backbone] [--device auto]
    python -m analysis interpolate --results-dir DIR --jobs JOB1,JOB2 [--tasks 0,1]       (paper Fig. 4)
    python -m analysis proximity --results-dir DIR --job JOB [--source separate|sequential] (paper Fig. 2a)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from analysis.records import METRICS, STATISTICS
from core.cpu import DEFAULT, LEVELS, pin_kernels
from core.errors import UserError
from core.folders import output_problem

SUBCOMMANDS = ("landscape", "interpolate", "proximity")
COMPARE = "compare"


def report_main(argv: list[str]) -> int:
    """The report: parse arguments, write tables and figures, print the written paths."""
    parser = argparse.ArgumentParser(prog="python -m analysis", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results-dir", type=Path, required=True, action="append",
                        help="results directory holding records/ (repeat to put several folders in one table)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder for tables/, figures/, report.html (default: the single --results-dir)")
    parser.add_argument("--reference", type=Path, default=None, help="CSV of the paper's numbers (reference.tex)")
    parser.add_argument("--stat", choices=STATISTICS, default="sd",
                        help="statistic beside each mean: sd (standard deviation over seeds, default) or se")
    parser.add_argument("--reference-method", default=None,
                        help="method every other is compared with in report.html, besides the best (default: "
                             "sd_lora where it ran)")
    parser.add_argument("--matrix-job", action="append", default=[],
                        help="job whose accuracy matrix report.html shows for its benchmark (repeatable)")
    args = parser.parse_args(argv)

    def work() -> list[Path]:
        from analysis.report import make_report  # seaborn and the method registry: after --help and bad input

        out = args.out or (args.results_dir[0] if len(args.results_dir) == 1 else None)
        if out is not None:
            _writable(out)
        return make_report(args.results_dir, args.reference, stat=args.stat, out_dir=args.out,
                           reference=args.reference_method, matrix_jobs=tuple(args.matrix_job))

    return _run(work)


def _writable(folder: Path) -> Path:
    """``folder`` when it can be made and written (before any work), else the one-line error naming ``--out``."""
    problem = output_problem(folder, "--out")
    if problem:
        raise UserError(problem)
    return folder


def _run(work) -> int:
    """Call ``work`` and print each line it returns (paths or text); bad input: one line on stderr, exit 2."""
    try:
        lines = work()
    except (UserError, FileNotFoundError, ValueError) as exc:
        print(f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
        return 2
    for line in lines:
        print(line)
    return 0


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results-dir", type=Path, required=True, help="results directory (records/, checkpoints/)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda[:N]")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--cpu-isa", choices=tuple(LEVELS), default=DEFAULT,
                        help="CPU kernels' vector level, as for run_suite.py (default avx2: the same numbers on every "
                             "x86-64 CPU with AVX2; core/cpu.py)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: <results-dir>/figures/...)")


def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"cannot read {text!r} as comma-separated task indices (e.g. 0,1)") from None


def _write_json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(json.dumps(data, indent=1, sort_keys=True) + "\n")
    return path


def landscape_main(args: argparse.Namespace) -> list[Path]:
    from analysis.landscape import LandscapeOptions, compute_landscape, write_landscape
    from runner.reload import load_record
    from runner.run_job import cpu_isa

    record = load_record(args.results_dir, args.job)
    out = _writable(args.out or args.results_dir / "figures" / "landscape")
    opts = LandscapeOptions(mode=args.mode, resolution=args.resolution, span=args.span,
                            max_samples=args.max_samples or None, params=args.params, seed=args.seed,
                            batch_size=args.batch_size, device=args.device)
    t0 = time.perf_counter()
    result = compute_landscape(record, args.results_dir, args.task, opts)
    result["cpu_isa"] = cpu_isa()  # the kernels' pin, as a record names it
    paths = write_landscape(result, out)
    n = sum(result["n_samples"].values())
    print(f"landscape: {opts.resolution}x{opts.resolution} points x {n} test samples, {result['n_perturbed']} "
          f"weights perturbed, {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return paths


def interpolate_main(args: argparse.Namespace) -> list[Path]:
    from analysis.figures import interpolation_plot
    from analysis.solutions import interpolate
    from runner.env import resolve_device
    from runner.reload import load_record

    jobs = [j.strip() for j in args.jobs.split(",") if j.strip()]
    tasks = _ints(args.tasks)
    if len(tasks) != 2:
        raise UserError(f"--tasks takes two task indices (e.g. 0,1), got {args.tasks!r}")
    records = [load_record(args.results_dir, job) for job in jobs]  # every missing record fails before any work
    out = _writable(args.out or args.results_dir / "figures")
    device = str(resolve_device(args.device))
    results = [interpolate(r, args.results_dir, tasks[0], tasks[1], device=device, max_samples=args.max_samples)
               for r in records]
    labels = [r["method"] for r in records]
    if len(set(labels)) < len(labels):  # e.g. two seeds of one method: one panel per job
        labels = [r["job_id"] for r in records]
    name = f"interpolation_task{tasks[0]}_task{tasks[1]}"
    paths = interpolation_plot(dict(zip(labels, results)), out, name) or []
    return [*paths, _write_json(out / f"{name}.json", dict(zip(labels, results)))]


def proximity_main(args: argparse.Namespace) -> list[Path]:
    from analysis.figures import proximity_heatmap
    from analysis.solutions import job_solutions, pretrained_state, proximity, separate_task_solutions
    from runner.env import resolve_device
    from runner.reload import load_record
    from runner.run_job import cpu_isa

    record = load_record(args.results_dir, args.job)
    out = _writable(args.out or args.results_dir / "figures")
    w0 = pretrained_state(record)
    tasks = list(range(record["n_tasks"]))
    if args.source == "sequential":
        states, changeable, _ = job_solutions(record, args.results_dir, tasks)
        solutions = [{k: s[k] for k in changeable} for s in states]
        name, method = f"proximity_sequential__{args.job}", record["method"]
    else:
        device = str(resolve_device(args.device))
        solutions = separate_task_solutions(record, args.method, args.epochs, device=device, w0=w0)
        name, method = f"proximity_separate_{args.method}__{args.job}", args.method
    matrix = proximity(solutions, w0)
    labels = [f"T{t + 1}" for t in tasks]
    paths = proximity_heatmap(matrix, labels, out, name) or []
    data = {"job_id": args.job, "source": args.source, "method": method, "epochs": args.epochs, "labels": labels,
            "formula": "||W_i - W_j||_F / ||W_i - W_0||_F (row i, column j; assumed, the paper gives none)",
            "matrix": matrix.tolist(), "cpu_isa": cpu_isa()}
    return [*paths, _write_json(out / f"{name}.json", data)]


def _subcommand_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m analysis", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    land = sub.add_parser("landscape", help="2-D loss landscape around a saved task solution")
    _common(land)
    land.add_argument("--job", required=True, help="job id (records/<job>.json)")
    land.add_argument("--task", type=int, default=None, help="0-based task of the solution (default: the last)")
    land.add_argument("--mode", choices=("random", "plane"), default="random",
                      help="filter-normalised random directions, or the plane through tasks T-2, T-1, T")
    land.add_argument("--resolution", type=int, default=21, help="grid points per axis")
    land.add_argument("--span", type=float, default=1.0, help="random: half-width; plane: padding (see docs)")
    land.add_argument("--max-samples", type=int, default=500, help="test samples per grid point (0: all)")
    land.add_argument("--params", choices=("adapted", "backbone"), default="adapted", help="tensors perturbed")
    land.add_argument("--seed", type=int, default=0, help="seed of the directions and the sample subset")
    land.add_argument("--batch-size", type=int, default=500, help="evaluation batch size")
    interp = sub.add_parser("interpolate", help="accuracy along W(lambda) between two task solutions (Fig. 4)")
    _common(interp)
    interp.add_argument("--jobs", required=True, help="comma-separated job ids, one panel each")
    interp.add_argument("--tasks", default="0,1", help="the two 0-based tasks (default 0,1)")
    interp.add_argument("--max-samples", type=int, default=None, help="test samples per task (default: all)")
    prox = sub.add_parser("proximity", help="relative distances between per-task solutions (Fig. 2a)")
    _common(prox)
    prox.add_argument("--job", required=True, help="job whose benchmark, backbone and seed are used")
    prox.add_argument("--source", choices=("separate", "sequential"), default="separate",
                      help="separate: train --method on each task from W0 (the paper); sequential: the job's checkpoints")
    prox.add_argument("--method", default="full_ft", help="method trained per task with --source separate")
    prox.add_argument("--epochs", type=int, default=None, help="epochs per task (default: the job's)")
    return parser


def subcommand_main(argv: list[str]) -> int:
    """Run one weight-space analysis; errors (missing record or checkpoint, bad value) exit 2 with one line."""
    args = _subcommand_parser().parse_args(argv)
    pin_kernels(args.cpu_isa)  # before torch's first kernel in this process, as run_suite.py does
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    run = {"landscape": landscape_main, "interpolate": interpolate_main, "proximity": proximity_main}[args.command]
    return _run(lambda: run(args))


def compare_main(argv: list[str]) -> int:
    """``compare DIR_A DIR_B``: print the per-cell differences; exit 2 with one line on bad input."""
    parser = argparse.ArgumentParser(prog="python -m analysis compare",
                                     description="Differences B - A per method and benchmark, with 95% intervals; "
                                                 "flags changes larger than seed noise.")
    parser.add_argument("dir_a", type=Path, help="results folder of the first run (A)")
    parser.add_argument("dir_b", type=Path, help="results folder of the second run (B)")
    parser.add_argument("--metric", choices=METRICS, default="acc", help="record metric compared (default acc)")
    args = parser.parse_args(argv)
    from analysis.compare import compare_dirs

    return _run(lambda: [compare_dirs(args.dir_a, args.dir_b, args.metric)[1]])


def main(argv: list[str] | None = None) -> int:
    """``python -m analysis <subcommand> ...`` or, without a subcommand, the report."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == COMPARE:
        return compare_main(argv[1:])
    if argv and argv[0] in SUBCOMMANDS:
        return subcommand_main(argv)
    return report_main(argv)


if __name__ == "__main__":
    sys.exit(main())
