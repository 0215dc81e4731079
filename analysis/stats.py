"""How sure a comparison is: paired differences over seeds, probability of improvement, average ranks.

Interval: a **paired t-interval** (``scipy.stats.ttest_rel(...).confidence_interval``) of the mean difference over
the seeds both methods ran. Why not the percentile bootstrap of ``rliable``: suites run 3-5 seeds, and a bootstrap
over n seeds has at most C(2n-1, n) distinct resamples (10 for n = 3), so its percentile interval is too narrow
(it under-covers for tiny n; rliable is meant for tens of runs). The t-interval is exact for normal seed noise,
widens honestly with few seeds, and needs no random numbers, so a report is the same bytes on every run.
Pairing by seed removes what two methods share within a seed (class order, data split).

Many comparisons: every interval, p-value and mark is per comparison, unadjusted (a benchmark of k ranked methods
makes up to 2(k-1) of them). Beside each p-value stands its Holm adjustment over the comparisons against the same
method on the same benchmark (Holm, Scand. J. Statist. 1979, the step-down test Demsar, JMLR 2006, recommends for
comparisons with one control): a difference whose adjusted p is below 0.05 holds for the family as a whole.

Probability of improvement: P(X > Y) + P(X = Y) / 2 for a random run X of one method and Y of the other, the
statistic of Agarwal et al. (NeurIPS 2021, ``rliable``); computed as the Mann-Whitney U statistic / (n_x n_y)
(``scipy.stats.mannwhitneyu``), which is that same count.

Across benchmarks: Friedman test (``scipy.stats.friedmanchisquare``) on the per-benchmark means, Nemenyi post-hoc
(``scikit_posthocs.posthoc_nemenyi_friedman``), drawn as a critical-difference diagram (Demsar, JMLR 2006).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats as st

from analysis.records import (
    ablation_methods,
    benchmark_order,
    done,
    method_sort_key,
    ordered_labels,
    reference_methods,
)

CONFIDENCE = 0.95
# A critical-difference diagram needs a complete block design of at least this many benchmarks and methods.
MIN_CD_BENCHMARKS = 3
MIN_CD_METHODS = 3
COMPARISON_COLUMNS = [
    "benchmark", "metric", "label", "versus", "role", "n_shared", "mean", "versus_mean", "diff", "lo", "hi", "p",
    "p_holm", "p_improve", "indistinguishable",
]


def interval_text(lo: float, hi: float) -> str:
    """``[lo, hi]`` signed to two decimals; a bound that would print as +-0.00 without being 0 keeps two
    significant digits (``+0.0042``), so an interval that excludes zero never reads as touching it."""
    def bound(v: float) -> str:
        return f"{v:+.2g}" if v != 0 and abs(v) < 0.005 else f"{v:+.2f}"

    return "--" if math.isnan(lo) or math.isnan(hi) else f"[{bound(lo)}, {bound(hi)}]"


def paired_test(x, y, confidence: float = CONFIDENCE) -> tuple[float, float, float, float]:
    """Mean of ``x - y`` (paired), its t-interval and the paired t-test's two-sided p, from one
    ``scipy.stats.ttest_rel``.

    Args:
        x: Values of one method, one per seed.
        y: Values of the other method on the same seeds, same order.
        confidence: Coverage of the interval.

    Returns:
        ``(diff, lo, hi, p)``; ``lo, hi, p`` are NaN with fewer than two pairs. Identical differences in every seed
        give the point interval ``[diff, diff]`` (no seed noise was observed) and p 1.0 when that difference is 0,
        0.0 otherwise.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    d = x - y
    if len(d) == 0:
        return math.nan, math.nan, math.nan, math.nan
    diff = float(d.mean())
    if len(d) < 2:
        return diff, math.nan, math.nan, math.nan
    if np.allclose(d, d[0], rtol=0.0, atol=1e-12):
        # scipy's t statistic is undefined for zero spread; the interval of a constant difference is that constant.
        return diff, diff, diff, 1.0 if abs(d[0]) <= 1e-12 else 0.0
    test = st.ttest_rel(x, y)
    ci = test.confidence_interval(confidence)
    return diff, float(ci.low), float(ci.high), float(test.pvalue)


def paired_interval(x, y, confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """``(diff, lo, hi)`` of :func:`paired_test`."""
    return paired_test(x, y, confidence)[:3]


def paired_p(x, y) -> float:
    """The two-sided p of :func:`paired_test`."""
    return paired_test(x, y)[3]


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (``statsmodels``' ``multipletests``); NaN entries are
    left out of the family and stay NaN."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, math.nan)
    valid = ~np.isnan(p)
    if valid.any():
        out[valid] = multipletests(p[valid], method="holm")[1]
    return out


def probability_of_improvement(x, y) -> float:
    """P(X > Y) + P(X = Y) / 2 over all pairs of runs (rliable's statistic), via the Mann-Whitney U statistic."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) == 0 or len(y) == 0:
        return math.nan
    return float(st.mannwhitneyu(x, y, alternative="two-sided").statistic) / (len(x) * len(y))


def _by_seed(frame: pd.DataFrame, metric: str) -> dict[str, pd.Series]:
    """Per label, the metric indexed by seed (done rows; a seed counted once)."""
    d = frame.dropna(subset=[metric])
    return {lab: g.groupby("seed")[metric].mean() for lab, g in d.groupby("label", sort=True)}


def compare_pair(x: pd.Series, y: pd.Series) -> dict:
    """Paired difference, interval and probability of improvement of seed-indexed series ``x`` over ``y``."""
    shared = x.index.intersection(y.index).sort_values()
    diff, lo, hi, p = paired_test(x[shared], y[shared])
    return {
        "n_shared": len(shared),
        "mean": float(x.mean()),
        "versus_mean": float(y.mean()),
        "diff": diff,
        "lo": lo,
        "hi": hi,
        "p": p,
        "p_holm": math.nan,  # filled in per family by :func:`comparisons`
        "p_improve": probability_of_improvement(x, y),
    }


def best_label(series: dict[str, pd.Series], ranked: list[str], higher: bool = True) -> str | None:
    """The ranked label with the best mean (first in ``ranked`` order on ties), None when none has values."""
    means = {lab: float(series[lab].mean()) for lab in ranked if lab in series and len(series[lab])}
    if not means:
        return None
    target = max(means.values()) if higher else min(means.values())
    return next(lab for lab in ranked if means.get(lab) == target)


def indistinguishable(frame: pd.DataFrame, metric: str, ranked: list[str], best: set[str]) -> set[str]:
    """Ranked labels of one benchmark whose paired interval against a best label contains 0.

    Args:
        frame: Done rows of one benchmark.
        metric: Metric column.
        ranked: Labels that may be compared (``joint`` excluded).
        best: The best labels (bold in a table); they are not part of the answer.

    Returns:
        Labels, other than ``best``, that the seeds cannot tell apart from (one of) the best. A label sharing fewer
        than two seeds with the best has no interval and is never marked.
    """
    series = _by_seed(frame, metric)
    out = set()
    for lab in ranked:
        if lab in best or lab not in series:
            continue
        for top in best:
            _, lo, hi = paired_interval(*_aligned(series[lab], series[top]))
            if not math.isnan(lo) and lo <= 0.0 <= hi:
                out.add(lab)
    return out


def _aligned(x: pd.Series, y: pd.Series) -> tuple[pd.Series, pd.Series]:
    shared = x.index.intersection(y.index).sort_values()
    return x[shared], y[shared]


def comparisons(df: pd.DataFrame, metric: str = "acc", reference: str = "sd_lora") -> pd.DataFrame:
    """Every ranked method against the best method and against ``reference``, per benchmark. An ablation of
    SD-LoRA (``MethodInfo.group == "ablation"``) is compared against both but is never the best: it is not a method
    the paper compares.

    Args:
        df: Frame from :func:`analysis.records.load_records`.
        metric: Metric column (higher is better).
        reference: Method label compared against (skipped on a benchmark where it has no runs).

    Returns:
        Frame with :data:`COMPARISON_COLUMNS`: ``diff = label - versus`` over shared seeds with its interval
        ``[lo, hi]`` and paired-t ``p``, ``p_holm`` that p adjusted over the rows of the same benchmark and
        ``versus`` (Holm), ``role`` says whether ``versus`` is the best and/or the reference,
        ``indistinguishable`` whether the (unadjusted) interval contains 0.
    """
    d = done(df)
    rows = []
    for bench in benchmark_order(d):
        sub = d[d["benchmark"] == bench]
        series = _by_seed(sub, metric)
        joint = set(sub.loc[sub["method"].isin(reference_methods()), "label"])
        ranked = [lab for lab in ordered_labels(sub) if lab not in joint and lab in series]
        ablations = set(sub.loc[sub["method"].isin(ablation_methods()), "label"])
        top = best_label(series, [lab for lab in ranked if lab not in ablations])  # an ablation is compared, never best
        roles = {top: "best"} if top is not None else {}
        if reference in series:
            roles[reference] = "best, reference" if reference == top else "reference"
        for versus, role in roles.items():
            family = []
            for lab in ranked:
                if lab == versus:
                    continue
                row = compare_pair(series[lab], series[versus])
                contains = not math.isnan(row["lo"]) and row["lo"] <= 0.0 <= row["hi"]
                family.append({"benchmark": bench, "metric": metric, "label": lab, "versus": versus, "role": role,
                               **row, "indistinguishable": contains})
            for row, adjusted in zip(family, holm([row["p"] for row in family])):
                row["p_holm"] = float(adjusted)
            rows += family
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


def rank_table(df: pd.DataFrame, metric: str = "acc") -> pd.DataFrame:
    """Mean ``metric`` per benchmark (rows) x method label (columns), complete cases only, ``joint`` and the
    ablations of SD-LoRA left out (the critical-difference diagram compares methods).

    Methods missing on some benchmark are dropped (the Friedman test needs every method on every benchmark).
    """
    d = done(df)
    d = d[~d["method"].isin(reference_methods() | set(ablation_methods()))]
    table = d.pivot_table(index="benchmark", columns="label", values=metric, aggfunc="mean")
    table = table.dropna(axis=1, how="any")
    order = sorted(table.columns, key=lambda lab: (method_sort_key(d.loc[d["label"] == lab, "method"].iloc[0]), lab))
    return table[order]


def friedman_nemenyi(table: pd.DataFrame) -> dict | None:
    """Friedman test, average ranks (1 = best) and Nemenyi p-values of a benchmark x method table.

    Returns:
        ``{"ranks", "pvalues", "statistic", "p", "n_benchmarks"}``, or None below
        :data:`MIN_CD_BENCHMARKS` x :data:`MIN_CD_METHODS`.
    """
    import scikit_posthocs as sp

    if table.shape[0] < MIN_CD_BENCHMARKS or table.shape[1] < MIN_CD_METHODS:
        return None
    ranks = table.rank(axis=1, ascending=False).mean(axis=0)
    stat, p = st.friedmanchisquare(*[table[c].to_numpy() for c in table.columns])
    pvalues = sp.posthoc_nemenyi_friedman(table.to_numpy())
    pvalues.index = pvalues.columns = list(table.columns)
    return {"ranks": ranks, "pvalues": pvalues, "statistic": float(stat), "p": float(p), "n_benchmarks": len(table)}
