"""A per-image cost model for ``--dry-run``: how many GPU-hours a suite needs, before running it.

Calibration: the SD-LoRA logs show about 8-11 minutes per ImageNet-R task on one A100 (docs/sdlora.md section 6:
2,400 training images x 20 epochs per task), i.e. about 12 ms per training image for ViT-B/16 at 224 px with a
frozen backbone; inference is taken as a third of that. Methods that run two ViT passes at inference (the prompt
methods, docs/baselines.md section 0) and methods that back-propagate into every weight cost more, by the
factors each method declares (``MethodInfo.train_cost``, ``eval_cost``). Costs scale with the number of
tokens, i.e. (img_size / 224)^2. An estimate, not a promise.

``--dry-run`` prints it per method and benchmark (:func:`estimate_table`) and names the jobs that feed no cell of
the paper's numbers (``results/reference/paper_results.csv``, matched on method, benchmark, N and backbone as the
reference table matches them: :func:`unpaired_summary`), so a plan can be cut knowingly.
"""

from __future__ import annotations

import csv
from pathlib import Path

from benchmarks import BENCHMARKS
from methods import METHODS
from runner.jobs import Job

SEC_PER_TRAIN_IMAGE = 0.012
SEC_PER_EVAL_IMAGE = 0.004
# A method's (train, eval) multipliers are its MethodInfo's train_cost and eval_cost; a benchmark's image counts
# are its BenchmarkInfo's train_size and test_size.


def job_gpu_seconds(job: Job) -> float | None:
    bench = BENCHMARKS.get(job.benchmark_name).info
    if bench.train_size is None or bench.test_size is None:
        return None
    n_train, n_test = bench.train_size, bench.test_size
    method = METHODS.get(job.method_name).info
    m, b = job.method_cfg, job.benchmark_cfg
    img = getattr(b, "img_size", 224) or 224
    scale = (img / 224) ** 2
    train_f, eval_f = method.train_cost, method.eval_cost
    n = job.n_tasks()
    total = 0.0
    for t in range(n):
        epochs = m.for_task(t)[1]
        images = n_train * ((t + 1) / n if method.trains_on_all_seen else 1 / n)
        total += epochs * images * train_f * SEC_PER_TRAIN_IMAGE * scale
        total += n_test * (t + 1) / n * eval_f * SEC_PER_EVAL_IMAGE * scale
    return total


def suite_gpu_hours(jobs: list[Job]) -> tuple[float, int]:
    """(estimated A100-hours of the jobs the model knows, number of jobs it does not know)."""
    known = [job_gpu_seconds(j) for j in jobs]
    return sum(s for s in known if s is not None) / 3600, sum(s is None for s in known)


REFERENCE_CSV = Path(__file__).resolve().parent.parent / "results" / "reference" / "paper_results.csv"


def paper_cells(reference_csv: Path = REFERENCE_CSV) -> set[tuple[str, str, int, str | None]]:
    """(method label, benchmark, N, backbone tag or None) of every row of the paper's numbers; a paper method name
    maps to ours through ``MethodInfo.paper_key`` (the fair row and its "as released" twins), as the reference table
    matches them."""
    ours: dict[str, list[str]] = {}
    for n in METHODS.names():
        if n in METHODS and METHODS.get(n).info.paper_key:
            ours.setdefault(METHODS.get(n).info.paper_key, []).append(n)
    lines = [ln for ln in reference_csv.read_text().splitlines() if ln and not ln.startswith("#")]
    cells = set()
    for row in csv.DictReader(lines):
        for name in ours.get(row["method"], [row["method"]]):
            cells.add((name, row["benchmark"], int(row["n_tasks"]), row.get("backbone") or None))
    return cells


def feeds_paper_cell(job: Job, cells: set[tuple[str, str, int, str | None]]) -> bool:
    """Whether the job's record fills a cell of the reference table (same method, benchmark, N and backbone)."""
    tag = job.runtime.get("smoke_of") or job.backbone_cfg.tag
    key = (job.method, job.benchmark_name, job.n_tasks())
    return (*key, tag) in cells or (*key, None) in cells


def _hours(seconds: list[float | None]) -> str:
    known = [s for s in seconds if s is not None]
    text = f"{sum(known) / 3600:.1f}" if known else "?"
    return text + ("+?" if known and len(known) < len(seconds) else "")


def estimate_table(jobs: list[Job]) -> str:
    """Estimated A100-hours per method (rows) and benchmark (columns), with totals; ``?`` = no size estimate."""
    seconds = {j.job_id: job_gpu_seconds(j) for j in jobs}
    methods = list(dict.fromkeys(j.method for j in jobs))
    benches = list(dict.fromkeys(j.benchmark for j in jobs))
    width = max(6, *(len(b) for b in benches)) + 1
    first = max(len("total"), *(len(m) for m in methods)) + 2
    lines = [f"{'A100-hours':{first}s}" + "".join(f"{b:>{width}s}" for b in benches) + f"{'total':>{width}s}"]
    for m in [*methods, "total"]:
        row = f"{m:{first}s}"
        for b in [*benches, "total"]:
            cell = [seconds[j.job_id] for j in jobs if m in ("total", j.method) and b in ("total", j.benchmark)]
            row += f"{_hours(cell) if cell else '-':>{width}s}"
        lines.append(row)
    return "\n".join(lines)


def unpaired_jobs(jobs: list[Job], reference_csv: Path = REFERENCE_CSV) -> list[Job]:
    """The jobs that feed no paper cell (see :func:`feeds_paper_cell`)."""
    cells = paper_cells(reference_csv)
    return [j for j in jobs if not feeds_paper_cell(j, cells)]


def unpaired_summary(jobs: list[Job], reference_csv: Path = REFERENCE_CSV) -> str:
    """One paragraph: how many jobs feed no paper cell, their cost, and which method x benchmark they are."""
    rest = unpaired_jobs(jobs, reference_csv)
    if not rest:
        return f"every job feeds a paper cell ({reference_csv.name})"
    if len(rest) == len(jobs):
        return (f"none of the {len(jobs)} jobs feeds a paper cell (no row in {reference_csv.name} for their method, "
                "benchmark, N and backbone)")
    hours, unknown = suite_gpu_hours(rest)
    groups: dict[str, list[str]] = {}
    for j in rest:
        groups.setdefault(j.method, [])
        if j.benchmark not in groups[j.method]:
            groups[j.method].append(j.benchmark)
    which = "; ".join(f"{m} on {', '.join(b)}" for m, b in groups.items())
    return (f"{len(rest)} of {len(jobs)} jobs feed no paper cell (no row in {reference_csv.name} for their method, "
            f"benchmark, N and backbone; figures may still use them): {hours:.1f} A100-hours"
            f"{' + ' + str(unknown) + ' without an estimate' if unknown else ''}. They are: {which}. "
            "Cut the plan with --methods, --benchmarks or --seeds 1993.")


def cost_headline(jobs: list[Job]) -> str:
    """The first line of ``--dry-run``: number of jobs and estimated A100-hours."""
    hours, unknown = suite_gpu_hours(jobs)
    note = f" ({unknown} jobs on benchmarks without a size estimate left out)" if unknown else ""
    return f"{len(jobs)} jobs; estimated {hours:.1f} A100-hours{note} (cost model: runner/cost.py)"


def cost_report(jobs: list[Job]) -> str:
    """What ``--dry-run`` prints below the job list: the table per method and benchmark, the jobs that feed no
    paper cell."""
    return "\n".join([estimate_table(jobs), unpaired_summary(jobs)])
