"""Result records -> one tidy pandas frame.

Records (``<results_dir>/records/*.json``, format in ``docs/record_schema.md``) are the only source of every number
in tables and figures. This module reads them once into a frame with one row per record; everything downstream
(tables, figures, the report) is a function of that frame, never of logs.

Only ``status == "done"`` rows carry numbers; failed rows are kept in the frame (so a caller can list them) but
:func:`done` drops them and every table or figure uses it.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from runner.record import Record
from runner.record import from_dict as record_from_dict
from runner.record import load as load_record

# Row order, table groups and colours are each method's own (methods.base.MethodInfo, given at registration).

METRICS = ("acc", "aaa", "task_mean_acc", "forgetting", "til_acc", "til_aaa")
COLUMNS = (
    "job_id",
    "method",
    "method_name",
    "benchmark",
    "benchmark_name",
    "n_tasks",
    "seed",
    "backbone",
    "status",
    *METRICS,
    "config_hash",
    "label",
    "record",
)
# The paper's numbers (the tables beside ours; the order of its benchmarks).
PAPER_RESULTS = Path(__file__).resolve().parents[1] / "results" / "reference" / "paper_results.csv"
SORT_KEYS = ["method", "benchmark_name", "n_tasks", "benchmark", "backbone", "seed", "job_id"]


def smoke_count(df: pd.DataFrame) -> int:
    """How many of the frame's records ran on ``--smoke`` stand-ins (their ``config.runtime.smoke_of`` names the
    backbone they stand for): numbers that test a suite's wiring, never results."""
    return sum(bool(((r.get("config") or {}).get("runtime") or {}).get("smoke_of")) for r in df["record"])


SMOKE_TEXT = ("SMOKE RUN: {n} of these records ran on stand-ins (generated data in each dataset's format, a random "
              "tiny ViT, one step per task) to test the suite's wiring; their numbers are not results")


def _methods():
    """The method registry, imported on first use: reading records needs neither torch nor Avalanche, so the
    analysis commands answer --help and bad input without importing them."""
    from methods import METHODS

    return METHODS


def _registered_info(label: str):
    """The MethodInfo of a row label that is a registered method name; None for other labels (e.g. ``ewc``)."""
    methods = _methods()
    return methods.get(label).info if label in methods else None


def method_sort_key(method: str) -> tuple[int, int, str, str]:
    """Sort key: ordered methods by their ``MethodInfo.order``, then the others alphabetically, then references; an
    "as released" twin (``MethodInfo.released_of``) right after the method it reproduces.

    Args:
        method: Method label (the record's ``method`` field).

    Returns:
        A tuple usable as ``sorted(..., key=method_sort_key)``.
    """
    info = _registered_info(method)
    if info is not None and info.released_of and info.released_of != method:
        return (*method_sort_key(info.released_of)[:3], method)
    if info is not None and info.group == "reference":
        return (2, 0, method, "")
    if info is not None and info.group == "method" and info.order is not None:
        return (0, info.order, method, "")
    return (1, 0, method, "")


def reference_methods() -> set[str]:
    """Registered methods of group ``reference`` (upper bounds such as joint training): below a rule, dashed."""
    methods = _methods()
    return {name for name in methods.names() if name in methods and methods.get(name).info.group == "reference"}


def ablation_methods() -> tuple[str, ...]:
    """Registered methods of group ``ablation``, in their declared order (the ablation table's rows)."""
    methods = _methods()
    names = [n for n in methods.names() if n in methods and methods.get(n).info.group == "ablation"]
    return tuple(sorted(names, key=lambda n: (methods.get(n).info.order or 0, n)))


def display_name(method: str) -> str | None:
    """A registered method's human name (``MethodInfo.display``, e.g. "SD-LoRA-RR", "L2P (as released)"); None for
    a name that is not registered or registers no display name of its own."""
    info = _registered_info(method)
    return info.display if info is not None and info.display and info.display != method else None


def released_twin(method: str) -> str | None:
    """The method a registered "as released" row reproduces (``MethodInfo.released_of``); None for any other row."""
    info = _registered_info(method)
    return info.released_of if info is not None and info.released_of else None


def paper_key(method: str) -> str | None:
    """The reference CSV's name of a method the paper reports (``MethodInfo.paper_key``); None for every other row.

    An "as released" twin is never a paper row of its own (the paper has one row per method), even with a key.
    """
    info = _registered_info(method)
    if info is None or info.released_of or info.group == "reference":
        return None
    return info.paper_key or None


def paper_names() -> dict[str, tuple[str, ...]]:
    """The reference CSV's method names -> ours: the paper row (``MethodInfo.paper_key``) first, then its "as
    released" twins (``MethodInfo.released_of``), which reproduce the same paper row as its authors' code ran it."""
    out: dict[str, list[str]] = {}
    methods = _methods()
    for name in order_methods(n for n in methods.names() if n in methods):
        key = paper_key(name) or paper_key(released_twin(name) or "")
        if key:
            out.setdefault(key, []).append(name)
    return {key: tuple(names) for key, names in out.items()}


def paper_rows(methods, keys=None) -> list[str]:
    """The methods of ``methods`` that are paper rows, in the paper's order (``MethodInfo.order``; the ablations,
    the paper's Table 4, after the compared methods).

    Args:
        methods: Method names (record ``method`` fields).
        keys: The reference CSV's method names of one paper table, or None for every method with a paper key.
    """
    def key(name: str) -> tuple[int, int, str]:
        info = _registered_info(name)
        return (int(info.group == "ablation"), info.order or 0, name)

    return sorted({m for m in methods if paper_key(m) and (keys is None or paper_key(m) in keys)}, key=key)


def order_methods(methods) -> list[str]:
    """Distinct methods in the fixed preferred order (see :func:`method_sort_key`)."""
    return sorted(set(methods), key=method_sort_key)


def ordered_labels(df: pd.DataFrame) -> list[str]:
    """Distinct row labels of ``df`` in preferred method order (``joint`` last), ties by label."""
    pairs = df[["method", "label"]].drop_duplicates()
    return [lab for _, lab in sorted(zip(pairs["method"], pairs["label"]), key=lambda p: (method_sort_key(p[0]), p[1]))]


@lru_cache(maxsize=1)
def paper_benchmarks() -> tuple[str, ...]:
    """Registry names of the benchmarks the paper reports, in the order its tables first do (the committed
    reference CSV: ImageNet-R, ImageNet-A, DomainNet, then CIFAR-100 and CUB-200 of its appendix Table 6)."""
    if not PAPER_RESULTS.exists():
        return ()
    names = pd.read_csv(PAPER_RESULTS, comment="#", usecols=["benchmark"])["benchmark"]
    return tuple(dict.fromkeys(names))


def benchmark_order(df: pd.DataFrame) -> list[str]:
    """Distinct benchmark labels of ``df`` in the paper's order (:func:`paper_benchmarks`), the benchmarks it does
    not report after them by registry name; within one benchmark by number of tasks, then label."""
    paper = {name: i for i, name in enumerate(paper_benchmarks())}
    trip = df[["benchmark_name", "n_tasks", "benchmark"]].drop_duplicates()
    rows = sorted(trip.itertuples(index=False, name=None), key=lambda t: (paper.get(t[0], len(paper)), t))
    return [b for _, _, b in rows]


def _float(value: Any) -> float:
    """A JSON number as float; None, missing or non-numeric -> NaN (never an invented number)."""
    if isinstance(value, bool) or value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def record_row(rec: Record | dict[str, Any], path: Path | None = None) -> dict[str, Any]:
    """One frame row (columns of :data:`COLUMNS` but ``label``) from a record (or its parsed JSON; ``path`` names it
    in errors); its metrics as the job computed them (runner/metrics.py), missing ones NaN. ``record`` holds the
    record as a plain dict."""
    if isinstance(rec, dict):
        rec = record_from_dict(rec, str(path or "record"))
    return {
        "job_id": rec.job_id,
        "method": rec.method,
        "method_name": rec.method_name,
        "benchmark": rec.benchmark,
        "benchmark_name": rec.benchmark_name,
        "n_tasks": rec.n_tasks,
        "seed": rec.seed,
        "backbone": rec.backbone,
        "status": rec.status,
        **{name: _float(getattr(rec.metrics, name)) for name in METRICS},
        "config_hash": rec.config_hash,
        "record": rec.to_dict(),
    }


def _labels(df: pd.DataFrame) -> pd.Series:
    """Row labels of tables and legends: the method, plus the backbone when the records hold several backbones.

    Without the backbone suffix, runs of one method on two backbones would be pooled into one mean.
    """
    if df["backbone"].nunique() > 1:
        return df["method"] + " (" + df["backbone"] + ")"
    return df["method"].copy()


def records_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Build the sorted tidy frame from row dicts (shared by :func:`load_records` and tests)."""
    df = pd.DataFrame(rows, columns=[c for c in COLUMNS if c != "label"])
    df = df.astype({"n_tasks": "int64", "seed": "int64"})
    for name in METRICS:
        df[name] = df[name].astype("float64")
    df["label"] = _labels(df) if len(df) else pd.Series(dtype="object")
    df = df.sort_values(SORT_KEYS, kind="mergesort").reset_index(drop=True)
    return df[list(COLUMNS)]


def load_records(results_dir: Path | str) -> pd.DataFrame:
    """Read ``<results_dir>/records/*.json`` into one tidy frame, one row per record.

    Args:
        results_dir: Results directory that holds a ``records/`` folder.

    Returns:
        Frame with the columns of :data:`COLUMNS`, sorted by method, benchmark, backbone and seed. ``record`` holds
        the raw dict (for series such as ``pooled_acc`` or ``mechanism``); ``label`` is the row label of tables.
        Failed records are included; use :func:`done` before computing numbers.

    Raises:
        FileNotFoundError: When ``records/`` does not exist.
        ValueError: When a file is not valid JSON or has an unknown schema version.
    """
    records_dir = Path(results_dir) / "records"
    if not records_dir.is_dir():
        raise FileNotFoundError(
            f"no records folder at {records_dir}; run a suite first or pass the right --results-dir"
        )
    # Hidden files are the writers' temp files (atomic write = temp file + rename); never half-written records.
    paths = sorted(p for p in records_dir.glob("*.json") if not p.name.startswith("."))
    return records_frame([record_row(load_record(path)) for path in paths])


def done(df: pd.DataFrame) -> pd.DataFrame:
    """Rows with ``status == "done"``: the only rows whose numbers may be used."""
    return df[df["status"] == "done"].reset_index(drop=True)


TASK_ERRORS = {"acc": "Acc", "til_acc": "task-incr. Acc", "task_id_acc": "task-id Acc",
               "into_last": "old tasks' images into the last task (%)",
               "last_into_earlier": "last task's images into earlier tasks (%)"}


def task_errors(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``df`` whose record holds ``task_confusion`` (runner/metrics.py), with the columns of
    :data:`TASK_ERRORS` that it lacks: task-identity accuracy (the final test images predicted into their own
    task's classes; Acc never exceeds it), the old tasks' images predicted into the last task (the mean over the
    tasks before the last: recency) and the last task's images predicted into earlier tasks (old heads outscoring
    the new ones). Where class-incremental errors go: within tasks, or between them and which way."""
    d = df[[bool(r.get("task_confusion")) for r in df["record"]]]
    return d.assign(
        task_id_acc=[float(r["metrics"]["task_id_acc"]) for r in d["record"]],
        into_last=[float(np.mean([row[-1] for row in r["task_confusion"][:-1]])) if len(r["task_confusion"]) > 1
                   else math.nan for r in d["record"]],  # one task: no old task to lose images
        last_into_earlier=[100.0 - r["task_confusion"][-1][-1] for r in d["record"]])


def diverged_seeds(df: pd.DataFrame, label: str) -> int:
    """How many of ``label``'s records say their training diverged (``nonfinite_loss``: a NaN or infinite mean
    training loss; docs/record_schema.md). Their numbers are a diverged network's, so tables mark them."""
    return sum(bool(r.get("nonfinite_loss")) for r in df.loc[df["label"] == label, "record"])


def seed_count(df: pd.DataFrame, label: str, n: int | None = None) -> str:
    """A row's seed count as text (``n``, default ``label``'s records in ``df``), followed by how many of them
    diverged (:func:`diverged_seeds`) when any did: ``3 (2 diverged)``. report.html and the Markdown tables."""
    n = int((df["label"] == label).sum()) if n is None else n
    diverged = diverged_seeds(df, label)
    return f"{n} ({diverged} diverged)" if diverged else str(n)


def pooled_long(df: pd.DataFrame) -> pd.DataFrame:
    """Long frame of pooled accuracy after each task, for accuracy curves.

    Args:
        df: Frame from :func:`load_records` (failed rows are dropped here).

    Returns:
        Columns ``method, label, benchmark, seed, task, pooled_acc`` with ``task`` counted from 1, sorted.
    """
    rows = []
    for rec_row in done(df).itertuples(index=False):
        for task, value in enumerate(rec_row.record.get("pooled_acc") or [], start=1):
            rows.append((rec_row.method, rec_row.label, rec_row.benchmark, rec_row.seed, task, _float(value)))
    out = pd.DataFrame(rows, columns=["method", "label", "benchmark", "seed", "task", "pooled_acc"])
    out = out.astype({"seed": "int64", "task": "int64", "pooled_acc": "float64"})
    return out.sort_values(["method", "label", "benchmark", "seed", "task"], kind="mergesort").reset_index(drop=True)


# The statistics a table may show beside a mean (``--stat``): ``sd`` = std(ddof=1) over seeds, ``se`` = sd / sqrt(n).
STATISTICS = ("sd", "se")


def aggregate(frame: pd.DataFrame, keys: list[str], values: list[str]) -> pd.DataFrame:
    """Mean, standard deviation, standard error and count of each ``values`` column per ``keys`` group.

    The one implementation of the seed statistics (tables, summary, figures read it). NaN entries are ignored.
    Single-seed rule: ``sd`` and ``se`` are NaN when a group has fewer than two values, because one run gives no
    spread (a table then prints the mean alone; a figure draws no band).

    Args:
        frame: Tidy frame, one row per run.
        keys: Grouping columns (empty: one group of all rows).
        values: Numeric columns to aggregate.

    Returns:
        One row per group (keys as columns, sorted), columns ``<v>_mean``, ``<v>_sd``, ``<v>_se``, ``<v>_n``.
    """
    data = frame.assign(_all=0) if not keys else frame
    grouped = data.groupby(keys or ["_all"], sort=True)[list(values)]
    agg = grouped.agg(["mean", "std", "count"])
    out = pd.DataFrame(index=agg.index)
    for name in values:
        n = agg[(name, "count")].astype("int64")
        sd = agg[(name, "std")].where(n > 1)
        out[f"{name}_mean"] = agg[(name, "mean")]
        out[f"{name}_sd"] = sd
        out[f"{name}_se"] = sd / np.sqrt(n)
        out[f"{name}_n"] = n
    return out.reset_index(drop=not keys)


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Mean, standard deviation, standard error and seed count of every metric per label x benchmark (done only).

    Returns:
        One row per (label, benchmark) in preferred method order, columns ``<metric>_mean``, ``<metric>_sd``,
        ``<metric>_se``, ``n_seeds`` plus the identifying columns.
    """
    keys = ["label", "method", "benchmark", "benchmark_name", "n_tasks", "backbone"]
    d = done(df)
    cols = keys + ["n_seeds"] + [f"{m}_{s}" for m in METRICS for s in ("mean", "se")]
    if d.empty:
        return pd.DataFrame(columns=cols)
    out = aggregate(d.assign(_one=1.0), keys, [*METRICS, "_one"]).rename(columns={"_one_n": "n_seeds"})
    out = out[cols + [f"{m}_sd" for m in METRICS]]
    out["_order"] = out["method"].map(method_sort_key)
    out = out.sort_values(["_order", "label", "benchmark_name", "n_tasks", "benchmark"], kind="mergesort")
    return out.drop(columns="_order").reset_index(drop=True)
