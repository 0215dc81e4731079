"""Result records -> one tidy pandas frame.

Records (``<results_dir>/records/*.json``, format in ``docs/record_schema.md``) are the only source of every number
in tables and figures. This module reads them once into a frame with one row per record; everything downstream
(tables, figures, the report) is a function of that frame, never of logs.

Only ``status == "done"`` rows carry numbers; failed rows are kept in the frame (so a caller can list them) but
:func:`done` drops them and every table or figure uses it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

SCHEMA_VERSION = 1

# Fixed row order of every table and legend (the paper's order: baselines first, the SD-LoRA family at the bottom);
# methods not listed follow alphabetically, and the upper bound `joint` always comes last.
PREFERRED_ORDER = (
    "full_ft",
    "l2p",
    "dualprompt",
    "coda_prompt",
    "hide_prompt",
    "inflora",
    "seq_lora",
    "simple_cil",
    "sd_lora",
    "sd_lora_rr",
    "sd_lora_kd",
)
JOINT = "joint"
# Table 4 ablations of SD-LoRA (docs/sdlora.md section 8), in the paper's row order.
ABLATIONS = ("sd_lora_fixed_first", "sd_lora_single", "sd_lora_no_rescale")

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
SORT_KEYS = ["method", "benchmark_name", "n_tasks", "benchmark", "backbone", "seed", "job_id"]


def method_sort_key(method: str) -> tuple[int, int, str]:
    """Sort key that puts methods in :data:`PREFERRED_ORDER`, then others alphabetically, then ``joint``.

    Args:
        method: Method label (the record's ``method`` field).

    Returns:
        A tuple usable as ``sorted(..., key=method_sort_key)``.
    """
    if method == JOINT:
        return (2, 0, method)
    if method in PREFERRED_ORDER:
        return (0, PREFERRED_ORDER.index(method), method)
    return (1, 0, method)


def order_methods(methods) -> list[str]:
    """Distinct methods in the fixed preferred order (see :func:`method_sort_key`)."""
    return sorted(set(methods), key=method_sort_key)


def ordered_labels(df: pd.DataFrame) -> list[str]:
    """Distinct row labels of ``df`` in preferred method order (``joint`` last), ties by label."""
    pairs = df[["method", "label"]].drop_duplicates()
    return [lab for _, lab in sorted(zip(pairs["method"], pairs["label"]), key=lambda p: (method_sort_key(p[0]), p[1]))]


def benchmark_order(df: pd.DataFrame) -> list[str]:
    """Distinct benchmark labels of ``df`` ordered by registry name, number of tasks, then label."""
    trip = df[["benchmark_name", "n_tasks", "benchmark"]].drop_duplicates()
    return [b for _, _, b in sorted(trip.itertuples(index=False, name=None))]


def _float(value: Any) -> float:
    """A JSON number as float; None, missing or non-numeric -> NaN (never an invented number)."""
    if isinstance(value, bool) or value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _metrics(rec: dict[str, Any]) -> dict[str, float]:
    """The record's summary metrics; ``acc``/``aaa`` fall back to ``pooled_acc`` when ``metrics`` lacks them.

    The fallback applies the schema's own definitions (acc = last pooled, aaa = mean of pooled), so it
    reproduces the field rather than inventing a value.
    """
    raw = rec.get("metrics") or {}
    out = {name: _float(raw.get(name)) for name in METRICS}
    pooled = [_float(v) for v in rec.get("pooled_acc") or []]
    if pooled and math.isnan(out["acc"]):
        out["acc"] = pooled[-1]
    if pooled and math.isnan(out["aaa"]):
        out["aaa"] = sum(pooled) / len(pooled)
    return out


def record_row(rec: dict[str, Any], path: Path) -> dict[str, Any]:
    """One frame row (columns of :data:`COLUMNS` but ``label``) from a parsed record; ``path`` names it in errors."""
    schema = rec.get("schema")
    if schema != SCHEMA_VERSION:
        raise ValueError(f"{path}: record schema {schema!r} is not supported (expected {SCHEMA_VERSION})")
    n_tasks = rec.get("n_tasks")
    seed = rec.get("seed")
    return {
        "job_id": str(rec.get("job_id", path.stem)),
        "method": str(rec.get("method", "")),
        "method_name": str(rec.get("method_name", rec.get("method", ""))),
        "benchmark": str(rec.get("benchmark", "")),
        "benchmark_name": str(rec.get("benchmark_name", rec.get("benchmark", ""))),
        "n_tasks": int(n_tasks) if n_tasks is not None else -1,
        "seed": int(seed) if seed is not None else -1,
        "backbone": str(rec.get("backbone", "")),
        "status": str(rec.get("status", "")),
        **_metrics(rec),
        "config_hash": str(rec.get("config_hash", "")),
        "record": rec,
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
    rows = []
    # Hidden files are the writers' temp files (atomic write = temp file + rename); never half-written records.
    for path in sorted(p for p in records_dir.glob("*.json") if not p.name.startswith(".")):
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from exc
        rows.append(record_row(rec, path))
    return records_frame(rows)


def done(df: pd.DataFrame) -> pd.DataFrame:
    """Rows with ``status == "done"``: the only rows whose numbers may be used."""
    return df[df["status"] == "done"].reset_index(drop=True)


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


def mean_se(values) -> tuple[float, float, int]:
    """Mean, standard error and count of the non-NaN values.

    The standard error is ``std(ddof=1) / sqrt(n)`` (the paper's "standard error over runs"); it is NaN for
    ``n < 2`` because one run gives no spread.

    Args:
        values: Iterable of numbers (NaN entries are ignored).

    Returns:
        ``(mean, se, n)``; ``mean`` is NaN when ``n == 0``.
    """
    vals = pd.Series(list(values), dtype="float64").dropna()
    n = len(vals)
    if n == 0:
        return math.nan, math.nan, 0
    mean = float(vals.mean())
    se = float(vals.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    return mean, se, n


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Mean, standard error and seed count of every metric per label x benchmark (done records only).

    Returns:
        One row per (label, benchmark) in preferred method order, columns ``<metric>_mean``, ``<metric>_se``,
        ``n_seeds`` plus the identifying columns.
    """
    keys = ["label", "method", "benchmark", "benchmark_name", "n_tasks", "backbone"]
    rows = []
    for key, group in done(df).groupby(keys, sort=True):
        row = dict(zip(keys, key))
        row["n_seeds"] = len(group)
        for name in METRICS:
            mean, se, _ = mean_se(group[name])
            row[f"{name}_mean"], row[f"{name}_se"] = mean, se
        rows.append(row)
    cols = keys + ["n_seeds"] + [f"{m}_{s}" for m in METRICS for s in ("mean", "se")]
    out = pd.DataFrame(rows, columns=cols)
    if out.empty:
        return out
    out["_order"] = out["method"].map(method_sort_key)
    out = out.sort_values(["_order", "label", "benchmark_name", "n_tasks", "benchmark"], kind="mergesort")
    return out.drop(columns="_order").reset_index(drop=True)
