"""``python -m analysis compare DIR_A DIR_B``: did a change move a method beyond seed noise?

For every method label x benchmark with done records in both folders: the paired difference B - A over the seeds
both ran (a seed pairs a run with its rerun: same class order and split), its 95% t-interval
(:func:`analysis.stats.paired_interval`), and a flag. A cell is flagged CHANGED when the interval excludes 0 *and*
the mean difference is larger than the seed noise of A (the standard deviation of A's runs over those seeds): the first
alone would flag a tiny but consistent numeric drift, the second alone a difference the seeds cannot confirm.
With fewer than two shared seeds there is no interval and nothing is flagged.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from analysis.records import benchmark_order, done, load_records, method_sort_key
from analysis.stats import interval_text, paired_interval

COLUMNS = ["label", "benchmark", "n_shared", "a_mean", "b_mean", "diff", "lo", "hi", "noise", "changed"]


def compare_frames(a: pd.DataFrame, b: pd.DataFrame, metric: str = "acc") -> pd.DataFrame:
    """One row per label x benchmark present in both frames (done records), columns :data:`COLUMNS`."""
    a, b = done(a), done(b)
    rows = []
    keys = sorted(set(zip(a["label"], a["benchmark"])) & set(zip(b["label"], b["benchmark"])))
    bench_rank = {bench: i for i, bench in enumerate(benchmark_order(pd.concat([a, b])))}
    methods = dict(zip(a["label"], a["method"]))
    keys.sort(key=lambda k: (bench_rank[k[1]], method_sort_key(methods[k[0]]), k[0]))
    for lab, bench in keys:
        xa = a[(a["label"] == lab) & (a["benchmark"] == bench)].groupby("seed")[metric].mean().dropna()
        xb = b[(b["label"] == lab) & (b["benchmark"] == bench)].groupby("seed")[metric].mean().dropna()
        shared = xa.index.intersection(xb.index).sort_values()
        xa, xb = xa[shared], xb[shared]  # every column over the same seeds: a seed only one folder ran is left out
        diff, lo, hi = paired_interval(xb, xa)
        noise = float(xa.std(ddof=1)) if len(xa) > 1 else math.nan
        excludes = not math.isnan(lo) and not lo <= 0.0 <= hi
        changed = bool(excludes and abs(diff) > (0.0 if math.isnan(noise) else noise))
        means = (float(xa.mean()), float(xb.mean())) if len(shared) else (math.nan, math.nan)
        rows.append([lab, bench, len(shared), *means, diff, lo, hi, noise, changed])
    return pd.DataFrame(rows, columns=COLUMNS)


def format_comparison(table: pd.DataFrame, metric: str, dir_a: Path, dir_b: Path) -> str:
    """The comparison as aligned text, one line per cell, CHANGED cells marked, and a one-line verdict."""
    def fmt(v: float, sign: str = "") -> str:
        return "--" if math.isnan(v) else f"{v:{sign}.2f}"

    text = pd.DataFrame({
        "method": table["label"],
        "benchmark": table["benchmark"],
        "seeds": table["n_shared"],
        "A": [fmt(v) for v in table["a_mean"]],
        "B": [fmt(v) for v in table["b_mean"]],
        "B-A": [fmt(v, "+") for v in table["diff"]],
        "95% interval": [interval_text(lo, hi) for lo, hi in zip(table["lo"], table["hi"])],
        "seed sd (A)": [fmt(v) for v in table["noise"]],
        "": ["CHANGED" if c else "" for c in table["changed"]],
    })
    n = int(table["changed"].sum())
    head = f"{metric}: B = {dir_b} minus A = {dir_a}, every column over the seeds both ran (seeds)"
    verdict = f"{n} of {len(table)} method x benchmark cells changed beyond seed noise"
    return "\n".join([head, text.to_string(index=False), verdict])


def compare_dirs(dir_a: Path, dir_b: Path, metric: str = "acc") -> tuple[pd.DataFrame, str]:
    """Load both folders and compare them (see the module docstring)."""
    table = compare_frames(load_records(dir_a), load_records(dir_b), metric)
    if table.empty:
        raise ValueError(f"{dir_a} and {dir_b} share no method x benchmark with done records; nothing to compare")
    return table, format_comparison(table, metric, dir_a, dir_b)
