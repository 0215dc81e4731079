"""A per-image cost model for ``--dry-run``: how many GPU-hours a suite needs, and how long it takes on G GPUs.

Two sources of images/s, and ``--dry-run`` names the one it used:

* **Measured** (preferred): the JSON that ``bench/throughput.py --out`` writes, stored in ``results/reference/rates/``
  with its date, device and model (docs/performance.md). Per method and precision it holds training images/s at
  the first and the last task of a 20-task job and evaluation images/s at both; a job's task ``t`` costs the
  seconds per image interpolated linearly between them (task index clipped to the measured range), times the
  images it trains on (epochs x its task's share, or every seen task's for ``trains_on_all_seen``) and evaluates
  (every seen task's test images). A method the file does not hold (an Avalanche strategy, a plugin) is costed as
  the file's SD-LoRA figures times its declared factors (``MethodInfo.train_cost``, ``eval_cost``). Without
  ``--rates``, the newest stored file measured on a GPU is used.
* **Calibration** (when no GPU file is stored): the SD-LoRA logs show about 8-11 minutes per ImageNet-R task on
  one A100 (docs/sdlora.md section 6: 2,400 training images x 20 epochs per task), i.e. about 12 ms per training
  image for ViT-B/16 at 224 px with a frozen backbone; inference is taken as a third of that, and a method's
  declared factors scale both.

Both scale with the number of tokens, (img_size / measured img_size)^2. Wall-clock (:func:`wall_clock`) spreads
the jobs over G GPUs x S slots, longest first, each GPU's throughput with S jobs at once being the measured
multiple of one job's (the file's ``slots``; 1.0, i.e. no gain, where it was not measured). An estimate, not a
promise.

``--dry-run`` prints it per method and benchmark (:func:`estimate_table`) and names the jobs that feed no cell of
the paper's numbers (``results/reference/paper_results.csv``, matched on method, benchmark, N and backbone as the
reference table matches them: :func:`unpaired_summary`), so a plan can be cut knowingly.
"""

from __future__ import annotations

import csv
import heapq
import json
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import BENCHMARKS
from core.errors import UserError
from methods import METHODS
from runner.jobs import Job

SEC_PER_TRAIN_IMAGE = 0.012
SEC_PER_EVAL_IMAGE = 0.004
# A method's (train, eval) multipliers are its MethodInfo's train_cost and eval_cost; a benchmark's image counts
# are its BenchmarkInfo's train_size and test_size.
ROOT = Path(__file__).resolve().parent.parent
RATES_DIR = ROOT / "results" / "reference" / "rates"
ANCHOR = "sd_lora"  # the measured method a method missing from a rates file is scaled from


@dataclass(frozen=True)
class Rates:
    """Images/s measured by ``bench/throughput.py`` on one device (its ``--out`` JSON)."""

    path: Path
    device: str
    device_name: str
    date: str
    model: str
    img_size: int
    tasks: int
    methods: dict = field(repr=False)
    slots: dict = field(default_factory=dict)  # jobs at once on one GPU -> throughput relative to one job

    @classmethod
    def load(cls, path: str | Path) -> Rates:
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
            rates = cls(path, raw["device"], raw["device_name"], raw["date"], raw["model"], int(raw["img_size"]),
                        int(raw["tasks"]), raw["methods"], {int(k): float(v) for k, v in raw.get("slots", {}).items()})
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise UserError(f"--rates {path}: not a bench/throughput.py --out file ({err}); "
                            "write one with python bench/throughput.py --out FILE") from None
        if ANCHOR not in rates.methods:
            raise UserError(f"--rates {path}: it holds no {ANCHOR} figures, which methods it lacks are scaled from; "
                            f"measure with python bench/throughput.py (without --methods)")
        return rates

    @property
    def on_gpu(self) -> bool:
        return self.device.startswith("cuda")

    @property
    def best_slots(self) -> int:
        """Jobs per GPU with the highest measured total throughput (1 where several jobs were not measured)."""
        return max(self.slots, key=self.slots.get) if self.slots else 1

    def figures(self, method: str) -> dict:
        return self.methods.get(method, {}).get("images_per_s", {})

    def seconds_per_image(self, method: str, what: str, t: int, prec: str) -> float:
        """Seconds per image of ``what`` (train, eval) for ``method`` at task index ``t`` (0-based) in ``prec``:
        linear between the first- and the last-task figures; 0 where the method has none (trains nothing)."""
        suffix = "" if prec == "fp32" else f"_{prec}"
        figs = self.figures(method)
        if f"{what}_first{suffix}" not in figs:
            suffix = ""  # a precision the file lacks: fp32's figure
        first, last = figs.get(f"{what}_first{suffix}"), figs.get(f"{what}_last{suffix}")
        if first is None or last is None:
            return 0.0
        frac = min(t, self.tasks - 1) / (self.tasks - 1)
        return (1 - frac) / first["method"] + frac / last["method"]

    def describe(self) -> str:
        return (f"images/s measured by bench/throughput.py on {self.device_name} ({self.device}), {self.date}, "
                f"{self.model} at {self.img_size} px: {_shown(self.path)}")


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def stored_rates(rates_dir: Path = RATES_DIR) -> list[Rates]:
    """Every rates file stored in the repository, oldest first."""
    return sorted((Rates.load(p) for p in sorted(rates_dir.glob("*.json"))), key=lambda r: r.date)


def newest_gpu_rates(rates_dir: Path = RATES_DIR) -> Rates | None:
    """The newest stored rates measured on a GPU (what ``--dry-run`` and ``--gpus all`` read), None if none is."""
    gpu = [r for r in stored_rates(rates_dir) if r.on_gpu]
    return gpu[-1] if gpu else None


@dataclass(frozen=True)
class CostModel:
    """Seconds per job from measured rates, or from the official logs' calibration when ``rates`` is None."""

    rates: Rates | None = None

    @classmethod
    def choose(cls, path: str | None = None, rates_dir: Path = RATES_DIR) -> CostModel:
        """``--rates PATH`` when given, else the newest stored GPU measurement, else the calibration."""
        return cls(Rates.load(path) if path else newest_gpu_rates(rates_dir))

    @property
    def unit(self) -> str:
        if self.rates is None:
            return "A100-hours"
        return "GPU-hours" if self.rates.on_gpu else "CPU-hours"

    def source(self) -> str:
        if self.rates is None:
            return ("the official code's logged speed (about 12 ms per training image on an A100, runner/cost.py); "
                    "no GPU measurement is stored in results/reference/rates/")
        return self.rates.describe()

    def job_seconds(self, job: Job) -> float | None:
        bench = BENCHMARKS.get(job.benchmark_name).info
        if bench.train_size is None or bench.test_size is None:
            return None
        n_train, n_test = bench.train_size, bench.test_size
        info = METHODS.get(job.method_name).info
        m, b = job.method_cfg, job.benchmark_cfg
        img = getattr(b, "img_size", 224) or 224
        n = job.n_tasks()
        total = 0.0
        for t in range(n):
            epochs = m.for_task(t)[1]
            images = n_train * ((t + 1) / n if info.trains_on_all_seen else 1 / n)
            total += epochs * images * self.per_image(job, "train", t, img)
            total += n_test * (t + 1) / n * self.per_image(job, "eval", t, img)
        return total

    def per_image(self, job: Job, what: str, t: int, img: int) -> float:
        """Seconds per training (``what="train"``) or evaluation image of the job's method at task ``t``."""
        info = METHODS.get(job.method_name).info
        factor = info.train_cost if what == "train" else info.eval_cost
        if self.rates is None:
            per = SEC_PER_TRAIN_IMAGE if what == "train" else SEC_PER_EVAL_IMAGE
            return per * factor * (img / 224) ** 2
        prec = "bf16" if getattr(job.method_cfg, "amp", "none") == "bf16" else "fp32"
        scale = (img / self.rates.img_size) ** 2
        if self.rates.figures(job.method_name):
            return self.rates.seconds_per_image(job.method_name, what, t, prec) * scale
        anchor = METHODS.get(ANCHOR).info
        ratio = factor / (anchor.train_cost if what == "train" else anchor.eval_cost)
        return self.rates.seconds_per_image(ANCHOR, what, t, prec) * ratio * scale

    def slot_speedup(self, slots: int) -> tuple[float, bool]:
        """(one GPU's throughput with ``slots`` jobs at once relative to one job, whether it was measured)."""
        measured = self.rates.slots if self.rates is not None else {}
        if slots in measured:
            return measured[slots], True
        return 1.0, slots == 1


CALIBRATION = CostModel()


def wall_clock(seconds: list[float], gpus: int, slots: int, speedup: float) -> float:
    """Seconds until the last job ends on ``gpus`` GPUs with ``slots`` jobs each, longest job first to the
    least-loaded slot; a job on a shared GPU runs at ``speedup / slots`` of its alone speed."""
    if gpus < 1 or slots < 1:
        raise UserError(f"wall-clock needs at least one GPU and one slot, got {gpus} GPU(s) x {slots} slot(s)")
    pace = slots / speedup
    loads = [0.0] * (gpus * slots)
    for s in sorted(seconds, reverse=True):
        heapq.heapreplace(loads, loads[0] + s * pace)
    return max(loads)


def suite_gpu_hours(jobs: list[Job], model: CostModel = CALIBRATION) -> tuple[float, int]:
    """(estimated GPU-hours of the jobs the model knows, number of jobs it does not know)."""
    known = [model.job_seconds(j) for j in jobs]
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


def estimate_table(jobs: list[Job], model: CostModel = CALIBRATION) -> str:
    """Estimated GPU-hours per method (rows) and benchmark (columns), with totals; ``?`` = no size estimate."""
    seconds = {j.job_id: model.job_seconds(j) for j in jobs}
    methods = list(dict.fromkeys(j.method for j in jobs))
    benches = list(dict.fromkeys(j.benchmark for j in jobs))
    width = max(6, *(len(b) for b in benches)) + 1
    first = max(len("total"), *(len(m) for m in methods)) + 2
    lines = [f"{model.unit:{first}s}" + "".join(f"{b:>{width}s}" for b in benches) + f"{'total':>{width}s}"]
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


def unpaired_summary(jobs: list[Job], reference_csv: Path = REFERENCE_CSV, model: CostModel = CALIBRATION) -> str:
    """One paragraph: how many jobs feed no paper cell, their cost, and which method x benchmark they are."""
    rest = unpaired_jobs(jobs, reference_csv)
    if not rest:
        return f"every job feeds a paper cell ({reference_csv.name})"
    if len(rest) == len(jobs):
        return (f"none of the {len(jobs)} jobs feeds a paper cell (no row in {reference_csv.name} for their method, "
                "benchmark, N and backbone)")
    hours, unknown = suite_gpu_hours(rest, model)
    groups: dict[str, list[str]] = {}
    for j in rest:
        groups.setdefault(j.method, [])
        if j.benchmark not in groups[j.method]:
            groups[j.method].append(j.benchmark)
    which = "; ".join(f"{m} on {', '.join(b)}" for m, b in groups.items())
    return (f"{len(rest)} of {len(jobs)} jobs feed no paper cell (no row in {reference_csv.name} for their method, "
            f"benchmark, N and backbone; figures may still use them): {hours:.1f} {model.unit}"
            f"{' + ' + str(unknown) + ' without an estimate' if unknown else ''}. They are: {which}. "
            "Cut the plan with --methods, --benchmarks or --seeds 1993.")


def cost_headline(jobs: list[Job], model: CostModel = CALIBRATION) -> str:
    """The first line of ``--dry-run``: number of jobs and estimated GPU-hours."""
    hours, unknown = suite_gpu_hours(jobs, model)
    note = f" ({unknown} jobs on benchmarks without a size estimate left out)" if unknown else ""
    return f"{len(jobs)} jobs; estimated {hours:.1f} {model.unit}{note} (cost model: runner/cost.py)"


def wall_clock_lines(jobs: list[Job], model: CostModel, plans: list[tuple[int, int]]) -> list[str]:
    """One line per (GPUs, slots per GPU) plan: the wall-clock of the jobs the model knows."""
    seconds = [s for s in (model.job_seconds(j) for j in jobs) if s is not None]
    lines = []
    for gpus, slots in plans:
        speedup, measured = model.slot_speedup(slots)
        how = ("" if slots == 1 else f", {speedup:.2f}x one job's throughput per GPU "
               + ("(measured)" if measured else "(not measured: no gain assumed)"))
        hours = wall_clock(seconds, gpus, slots, speedup) / 3600 if seconds else 0.0
        lines.append(f"  {gpus} GPU(s) x {slots} slot(s): {hours:.1f} h{how}")
    return lines


def gpu_plan(gpus: str | None) -> list[tuple[int, int]] | None:
    """``--gpus 0,0,1,1`` -> [(2 GPUs, 2 slots each)] for the dry run's wall-clock; None (its default plans) when
    not given or ``all``."""
    if not gpus or gpus.strip() == "all":
        return None
    ids = [g.strip() for g in gpus.split(",") if g.strip()]
    return [(len(set(ids)), max(ids.count(g) for g in set(ids)))] if ids else None


def default_plans(model: CostModel) -> list[tuple[int, int]]:
    """1, 4 and 8 GPUs with one job each, and with the measured best number of jobs per GPU (if measured)."""
    best = model.rates.best_slots if model.rates is not None else 1
    return [(g, s) for g in (1, 4, 8) for s in dict.fromkeys((1, best))]


def cost_report(jobs: list[Job], model: CostModel = CALIBRATION, plans: list[tuple[int, int]] | None = None) -> str:
    """What ``--dry-run`` prints below the job list: the table per method and benchmark, the model's source, the
    wall-clock per plan and the jobs that feed no paper cell."""
    return "\n".join([estimate_table(jobs, model), f"source: {model.source()}", "wall-clock:",
                       *wall_clock_lines(jobs, model, plans or default_plans(model)),
                       unpaired_summary(jobs, model=model)])
