"""Figures from the records frame (and two generic plots of quantities computed elsewhere).

Paper figures (SD-LoRA paper, Figs. 2-4, 6, 7): accuracy after each task with standard-error bands (Fig. 2b/c), SD-LoRA's
learned magnitudes (Fig. 3b/c, Fig. 6), the residual of the new direction on the old ones (Fig. 3a), 1-D
interpolation between consecutive solutions (Fig. 4) and the weight-proximity heatmap (Fig. 2a, Fig. 7).

Each figure is saved as PNG and PDF with fixed dpi and without date or software metadata, so the same input gives the
same bytes. Figures are built with ``matplotlib.figure.Figure`` (no pyplot): nothing global is switched, PNGs go
through the Agg renderer, and no figure manager keeps figures alive. A figure without data is skipped (None).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from analysis.records import (
    benchmark_order,
    done,
    method_sort_key,
    ordered_labels,
    pooled_long,
    reference_methods,
)
from methods import METHODS

DPI = 150
PNG_METADATA = {"Software": None}
PDF_METADATA = {"Software": None, "CreationDate": None}
_RC = {"font.size": 9, "axes.titlesize": 9, "legend.fontsize": 7, "svg.hashsalt": "sdlora"}


def _declared_colors() -> dict[str, str]:
    """Colours the registered methods declare (``MethodInfo.color``)."""
    return {n: METHODS.get(n).info.color for n in METHODS.names() if n in METHODS and METHODS.get(n).info.color}


def method_colors(methods: Sequence[str]) -> dict[str, str]:
    """Colour of each method (or row label), the same in every figure and every run.

    A registered method takes the colour it declares (``MethodInfo.color``); any other name takes a colour of
    ``tab20b`` without the declared ones, chosen by an MD5 of the name (Python's ``hash`` is salted per process, so
    it would change colours between runs): never one a declared method uses, and the same in every figure.

    Args:
        methods: Method names or row labels.

    Returns:
        Mapping name -> hex colour.
    """
    declared = _declared_colors()
    used = set(declared.values())
    palette = [c for c in (matplotlib.colors.to_hex(c) for c in matplotlib.colormaps["tab20b"].colors) if c not in used]
    return {name: declared.get(name) or palette[int(hashlib.md5(name.encode()).hexdigest(), 16) % len(palette)]
            for name in methods}


def save_figure(fig: Figure, out_dir: Path | str, name: str) -> list[Path]:
    """Save ``fig`` as ``<out_dir>/<name>.png`` and ``.pdf`` with reproducible bytes; return both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    png, pdf = out / f"{name}.png", out / f"{name}.pdf"
    fig.savefig(png, dpi=DPI, metadata=PNG_METADATA, bbox_inches="tight")
    fig.savefig(pdf, dpi=DPI, metadata=PDF_METADATA, bbox_inches="tight")
    return [png, pdf]


def _new_figure(n_panels: int, width: float = 3.6, height: float = 2.8) -> tuple[Figure, list]:
    """A figure with ``n_panels`` axes in one row; call inside :func:`_styled` so the style applies."""
    fig = Figure(figsize=(width * n_panels, height), layout="constrained")
    return fig, [fig.add_subplot(1, n_panels, i + 1) for i in range(n_panels)]


def _styled(draw):
    """Run ``draw`` under the figures' seaborn style and font sizes (scoped: no global rcParams change)."""
    with sns.axes_style("whitegrid"), matplotlib.rc_context(_RC):
        return draw()


def accuracy_curves(
    df: pd.DataFrame, out_dir: Path | str, name: str = "accuracy", stat: str = "se"
) -> list[Path] | None:
    """Pooled accuracy after each task, one panel per benchmark, mean over seeds with a +-1 ``stat`` band.

    The band is seaborn's ``errorbar=(stat, 1)`` (``se`` = ``Series.sem()``, std ddof=1 / sqrt(n); ``sd`` = std
    ddof=1); one seed draws no band (the rule of :func:`analysis.records.aggregate`).

    Args:
        df: Frame from :func:`analysis.records.load_records`.
        out_dir: Folder of the figure files.
        name: File stem.
        stat: ``se`` (the paper's figures) or ``sd``.

    Returns:
        ``[png, pdf]``, or None when no done record has ``pooled_acc``.
    """
    long = pooled_long(df)
    if long.empty:
        return None
    benches = [b for b in benchmark_order(done(df)) if b in set(long["benchmark"])]
    order = ordered_labels(long)
    colors = method_colors(order)
    dashed = set(long.loc[long["method"].isin(reference_methods()), "label"])  # upper bounds, not competitors

    def draw():
        fig, axes = _new_figure(len(benches))
        for ax, bench in zip(axes, benches):
            sub = long[long["benchmark"] == bench]
            sns.lineplot(data=sub, x="task", y="pooled_acc", hue="label", hue_order=ordered_labels(sub),
                         style="label", style_order=ordered_labels(sub),
                         dashes={lab: (4, 2) if lab in dashed else "" for lab in ordered_labels(sub)},
                         palette=colors, errorbar=(stat, 1), marker="o", markersize=3, markeredgewidth=0,
                         err_kws={"alpha": 0.2, "linewidth": 0}, legend=False, ax=ax)
            ax.set(title=f"{bench} (band: $\\pm$1 {stat})", xlabel="task", ylabel="pooled accuracy (%)")
            ax.xaxis.get_major_locator().set_params(integer=True)
        # One legend for all panels: a method keeps its colour everywhere, so it needs naming once.
        handles = [Line2D([], [], color=colors[lab], marker="o", markersize=3) for lab in order]
        fig.legend(handles, order, loc="outside right upper")
        return save_figure(fig, out_dir, name)

    return _styled(draw)


def _scalar(value) -> float:
    """A magnitude as one number; a nested list (e.g. one value per layer) is averaged."""
    if isinstance(value, (list, tuple)):
        flat = [_scalar(v) for v in value]
        flat = [v for v in flat if not math.isnan(v)]
        return float(np.mean(flat)) if flat else math.nan
    return math.nan if value is None else float(value)


def _mechanism_panels(df: pd.DataFrame, key: str) -> list[tuple[str, str, list]]:
    """``(label, benchmark, [series per seed])`` for done records whose ``mechanism[key]`` is non-empty."""
    d = done(df)
    panels = []
    for bench in benchmark_order(d):
        sub = d[d["benchmark"] == bench]
        for lab in ordered_labels(sub):
            series = [(r.get("mechanism") or {}).get(key) for r in sub.loc[sub["label"] == lab, "record"]]
            series = [s for s in series if s]
            if series:
                panels.append((lab, bench, series))
    return panels


def _magnitude_frame(series: list) -> pd.DataFrame:
    """Long frame (seed index, task, k, alpha) from per-seed lists of magnitudes after each task."""
    rows = [
        (i, t + 1, k + 1, _scalar(alpha))
        for i, per_task in enumerate(series)
        for t, alphas in enumerate(per_task)
        for k, alpha in enumerate(alphas or [])
    ]
    return pd.DataFrame(rows, columns=["seed", "task", "k", "alpha"])


def _residual_frame(series: list) -> pd.DataFrame:
    rows = [
        (i, t + 1, float(pair[0]), _scalar(pair[1]))
        for i, per_task in enumerate(series)
        for t, trace in enumerate(per_task)
        for pair in trace or []
    ]
    return pd.DataFrame(rows, columns=["seed", "task", "iteration", "residual"])


def _series_panels(panels: list, out_dir, name: str, x: str, y: str, hue: str, legend: str, ylabel: str,
                   marker: str | None) -> list[Path]:
    """One panel per ``(label, benchmark, frame)``: the mean of ``y`` over seeds against ``x``, one line per ``hue``.

    Lines run from dark to light (viridis) in ``hue`` order; ``legend`` formats a hue value for the legend.
    """

    def draw():
        fig, axes = _new_figure(len(panels))
        cmap = matplotlib.colormaps["viridis"]
        for ax, (lab, bench, frame) in zip(axes, panels):
            values = sorted(frame[hue].unique())
            names = [legend.format(v) for v in values]
            palette = {n: cmap(0.0 if len(values) == 1 else i / (len(values) - 1)) for i, n in enumerate(names)}
            data = frame.assign(_series=frame[hue].map(dict(zip(values, names))))
            sns.lineplot(data=data, x=x, y=y, hue="_series", hue_order=names, palette=palette, errorbar=None,
                         marker=marker, markersize=3, markeredgewidth=0, ax=ax)
            ax.set(title=f"{lab}, {bench}", xlabel=x, ylabel=ylabel)
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), ncols=max(1, math.ceil(len(values) / 10)))
        return save_figure(fig, out_dir, name)

    return _styled(draw)


def _mechanism_figure(df, key: str, to_frame, out_dir, name: str, **panel_args) -> list[Path] | None:
    """Draw ``mechanism[key]`` of every label x benchmark as :func:`_series_panels`; None without data."""
    panels = [(lab, bench, to_frame(s)) for lab, bench, s in _mechanism_panels(df, key)]
    panels = [p for p in panels if not p[2].empty]
    if not panels:
        return None
    return _series_panels(panels, out_dir, name, **panel_args)


def magnitude_plot(df: pd.DataFrame, out_dir: Path | str, name: str = "magnitudes") -> list[Path] | None:
    """SD-LoRA's learned magnitudes alpha_k after each task (``mechanism.magnitudes``), mean over seeds.

    One panel per method label x benchmark that has magnitudes; one line per alpha_k, x = task after which it
    was read.

    Returns:
        ``[png, pdf]``, or None when no done record has magnitudes.
    """
    return _mechanism_figure(df, "magnitudes", _magnitude_frame, out_dir, name, x="task", y="alpha", hue="k",
                             legend="$\\alpha_{{{}}}$", ylabel=r"magnitude $\alpha_k$", marker="o")


def residual_plot(df: pd.DataFrame, out_dir: Path | str, name: str = "residuals") -> list[Path] | None:
    """Least-squares residual of each new direction on the earlier ones vs training iteration (paper Fig. 3a).

    Reads ``mechanism.residual_trace`` (per task, ``[iteration, residual]`` pairs; empty for task 1); one panel per
    method label x benchmark, one line per task, mean over seeds at each iteration.

    Returns:
        ``[png, pdf]``, or None when no done record has a non-empty trace.
    """
    return _mechanism_figure(df, "residual_trace", _residual_frame, out_dir, name, x="iteration", y="residual",
                             hue="task", legend="task {}", ylabel="residual", marker=None)


def interpolation_plot(
    data: Mapping[str, Mapping[str, Sequence[float]]], out_dir: Path | str, name: str = "interpolation"
) -> list[Path] | None:
    """Accuracy on T1 and T2 along W(lambda) = (1 - lambda) W1 + lambda W2 (paper Fig. 4), one panel per method.

    Args:
        data: ``{method: {"lambda": [...], "t1": [...], "t2": [...]}}`` (accuracies in %), e.g. vanilla LoRA and
            SD-LoRA; computed elsewhere.
        out_dir: Folder of the figure files.
        name: File stem.

    Returns:
        ``[png, pdf]``, or None when ``data`` is empty.

    Raises:
        ValueError: When a method lacks a key or its series differ in length.
    """
    methods = sorted((m for m in data if len(data[m].get("lambda", []))), key=lambda m: (method_sort_key(m), m))
    if not methods:
        return None
    for m in methods:
        missing = {"lambda", "t1", "t2"} - set(data[m])
        lengths = {len(data[m][k]) for k in ("lambda", "t1", "t2") if k in data[m]}
        if missing or len(lengths) != 1:
            raise ValueError(f"interpolation data of {m!r}: need equal-length 'lambda', 't1', 't2' series")

    def draw():
        fig, axes = _new_figure(len(methods))
        for ax, m in zip(axes, methods):
            lam = np.asarray(data[m]["lambda"], dtype=float)
            ax.plot(lam, np.asarray(data[m]["t1"], dtype=float), marker="o", markersize=3, label="accuracy on T1")
            ax.plot(lam, np.asarray(data[m]["t2"], dtype=float), marker="s", markersize=3, label="accuracy on T2")
            ax.set(
                title=rf"{m}: $W(\lambda) = (1-\lambda) W_1 + \lambda W_2$", xlabel=r"$\lambda$", ylabel="accuracy (%)"
            )
            ax.legend(loc="best")
        return save_figure(fig, out_dir, name)

    return _styled(draw)


def proximity_heatmap(matrix, labels: Sequence[str], out_dir: Path | str, name: str = "proximity") -> list[Path] | None:
    """Heatmap of relative distances between task optima (paper Fig. 2a, Fig. 7).

    The paper gives no formula; the title states the one assumed here: ``||W_i - W_j||_F / ||W_i - W_0||_F``
    (row i, column j), computed elsewhere.

    Args:
        matrix: Square array of relative distances.
        labels: Tick label of each row/column (e.g. ``T1`` ... ``T5``).
        out_dir: Folder of the figure files.
        name: File stem.

    Returns:
        ``[png, pdf]``, or None when the matrix is empty.

    Raises:
        ValueError: When the matrix is not square or the labels do not match its size.
    """
    mat = np.asarray(matrix, dtype=float)
    if mat.size == 0:
        return None
    if mat.ndim != 2 or mat.shape[0] != mat.shape[1] or len(labels) != mat.shape[0]:
        raise ValueError(f"proximity matrix must be square with one label per row; got {mat.shape}, {len(labels)}")

    def draw():
        size = 1.0 + 0.6 * mat.shape[0]
        fig, (ax,) = _new_figure(1, width=size + 1.5, height=size + 0.6)
        sns.heatmap(
            mat,
            ax=ax,
            annot=True,
            fmt=".2f",
            cmap="viridis",
            square=True,
            xticklabels=list(labels),
            yticklabels=list(labels),
            cbar_kws={"shrink": 0.8},
        )
        ax.set_title(
            r"relative distance $\|W_i - W_j\|_F \,/\, \|W_i - W_0\|_F$" + "\n(assumed formula; row i, column j)"
        )
        ax.set(xlabel="j", ylabel="i")
        return save_figure(fig, out_dir, name)

    return _styled(draw)


class _CdLabel(int):
    """A method label that hashes (and compares) as its position but prints as its name."""

    def __new__(cls, position: int, name: str):
        obj = super().__new__(cls, position)
        obj.name = name
        return obj

    def __str__(self) -> str:
        return self.name

    def __format__(self, spec: str) -> str:
        return format(self.name, spec)


def critical_difference_plot(
    result: dict, out_dir: Path | str, name: str = "critical_difference", metric: str = "acc"
) -> list[Path] | None:
    """Critical-difference diagram (Demsar 2006) of :func:`analysis.stats.friedman_nemenyi`'s result.

    Average ranks on the axis (1 = best); methods joined by a bar are not told apart by the Nemenyi test at
    alpha 0.05. Drawn by ``scikit_posthocs.critical_difference_diagram``.

    Returns:
        ``[png, pdf]``, or None when ``result`` is None (too few benchmarks or methods).
    """
    import scikit_posthocs as sp

    if result is None:
        return None
    # scikit-posthocs finds the crossbars with sets of labels: string labels hash differently in every process
    # (PYTHONHASHSEED), which reorders the bars' stacking and drawing. Labels that hash as their position keep
    # the figure byte-identical from run to run.
    names = list(result["ranks"].index)
    keys = pd.Index([_CdLabel(i, name) for i, name in enumerate(names)], dtype=object)
    ranks = pd.Series(result["ranks"].to_numpy(), index=keys)
    pvalues = pd.DataFrame(result["pvalues"].loc[names, names].to_numpy(), index=keys, columns=keys)
    by_name = method_colors(names)
    colors = {key: by_name[name] for key, name in zip(keys, names)}

    def draw():
        fig, (ax,) = _new_figure(1, width=7.0, height=0.9 + 0.22 * len(ranks))
        ax.grid(False)  # the style's grid would read as more crossbars
        sp.critical_difference_diagram(ranks, pvalues, ax=ax, color_palette=colors,
                                       label_fmt_left="{label} ({rank:.2f})", label_fmt_right="({rank:.2f}) {label}")
        ax.set_title(
            f"average rank by {metric} over {result['n_benchmarks']} benchmarks (1 = best); Friedman "
            f"p = {result['p']:.3g}; bars join methods Nemenyi cannot tell apart (alpha 0.05)",
            fontsize=7, pad=22,
        )
        return save_figure(fig, out_dir, name)

    return _styled(draw)


def accuracy_matrix_plot(record: dict, out_dir: Path | str, name: str) -> list[Path] | None:
    """Heatmap of one run's accuracy matrix: row = after training task i, column = accuracy on task j (%)."""
    rows = record.get("acc_matrix") or []
    if not rows:
        return None
    n = max(len(r) for r in rows)
    mat = np.full((len(rows), n), np.nan)
    for i, row in enumerate(rows):
        mat[i, : len(row)] = [math.nan if v is None else float(v) for v in row]

    def draw():
        size = 1.0 + 0.35 * n
        fig, (ax,) = _new_figure(1, width=size + 1.2, height=size)
        ticks = [f"T{t + 1}" for t in range(n)]
        sns.heatmap(mat, ax=ax, annot=n <= 12, fmt=".0f", cmap="viridis", vmin=0, vmax=100, square=True,
                    xticklabels=ticks, yticklabels=ticks[: len(rows)], cbar_kws={"shrink": 0.8})
        ax.grid(False)
        ax.set(title=f"{record.get('job_id', '')}: accuracy (%)", xlabel="evaluated on task",
               ylabel="after training task")
        return save_figure(fig, out_dir, name)

    return _styled(draw)
