"""Figures from the records frame (and two generic plots of quantities computed elsewhere).

Paper figures (docs/sdlora.md section 9): accuracy after each task with standard-error bands (Fig. 2b/c), SD-LoRA's
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

from analysis.records import (
    ABLATIONS,
    JOINT,
    PREFERRED_ORDER,
    benchmark_order,
    done,
    method_sort_key,
    ordered_labels,
    pooled_long,
)

DPI = 150
PNG_METADATA = {"Software": None}
PDF_METADATA = {"Software": None, "CreationDate": None}
# One colour per known method in every figure: tab10/tab20 hues keyed by the preferred order, joint in black.
_FIXED = dict(
    zip(
        (*PREFERRED_ORDER, *ABLATIONS),
        (
            "#7f7f7f",
            "#1f77b4",
            "#17becf",
            "#9467bd",
            "#8c564b",
            "#2ca02c",
            "#bcbd22",
            "#e377c2",
            "#d62728",
            "#ff7f0e",
            "#b5651d",
            "#aec7e8",
            "#98df8a",
            "#c5b0d5",
        ),
    )
)
_FIXED[JOINT] = "#000000"
_RC = {"font.size": 9, "axes.titlesize": 9, "legend.fontsize": 7, "svg.hashsalt": "sdlora"}


def method_colors(methods: Sequence[str]) -> dict[str, str]:
    """Colour of each method (or row label), the same in every figure and every run.

    Known methods take a fixed colour keyed by the preferred order; others take a colour from ``tab20b`` chosen by
    an MD5 of the name (Python's ``hash`` is salted per process, so it would change colours between runs).

    Args:
        methods: Method names or row labels.

    Returns:
        Mapping name -> hex colour.
    """
    fallback = [matplotlib.colors.to_hex(c) for c in matplotlib.colormaps["tab20b"].colors]
    out = {}
    for name in methods:
        if name in _FIXED:
            out[name] = _FIXED[name]
        else:
            out[name] = fallback[int(hashlib.md5(name.encode()).hexdigest(), 16) % len(fallback)]
    return out


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


def _mean_se(frame: pd.DataFrame, by: str, value: str) -> pd.DataFrame:
    """Mean and standard error (std ddof=1 / sqrt(n); 0 for one seed, i.e. no band) of ``value`` per ``by``."""
    g = frame.groupby(by, sort=True)[value]
    out = pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=1), "n": g.count()})
    out["se"] = (out["std"] / np.sqrt(out["n"])).fillna(0.0)
    return out


def accuracy_curves(df: pd.DataFrame, out_dir: Path | str, name: str = "accuracy") -> list[Path] | None:
    """Pooled accuracy after each task, one panel per benchmark, mean over seeds with standard-error bands.

    Args:
        df: Frame from :func:`analysis.records.load_records`.
        out_dir: Folder of the figure files.
        name: File stem.

    Returns:
        ``[png, pdf]``, or None when no done record has ``pooled_acc``.
    """
    long = pooled_long(df)
    if long.empty:
        return None
    benches = [b for b in benchmark_order(done(df)) if b in set(long["benchmark"])]
    colors = method_colors(ordered_labels(long))

    def draw():
        fig, axes = _new_figure(len(benches))
        for ax, bench in zip(axes, benches):
            sub = long[long["benchmark"] == bench]
            for lab in ordered_labels(sub):
                stats = _mean_se(sub[sub["label"] == lab], "task", "pooled_acc")
                x, m, se = stats.index.to_numpy(), stats["mean"].to_numpy(), stats["se"].to_numpy()
                ax.plot(x, m, marker="o", markersize=3, color=colors[lab], label=lab)
                ax.fill_between(x, m - se, m + se, color=colors[lab], alpha=0.2, linewidth=0)
            ax.set(title=bench, xlabel="task", ylabel="pooled accuracy (%)")
            ax.xaxis.get_major_locator().set_params(integer=True)
        # One legend for all panels: a method keeps its colour everywhere, so it needs naming once.
        handles = {}
        for ax in axes:
            for handle, lab in zip(*ax.get_legend_handles_labels()):
                handles.setdefault(lab, handle)
        order = [lab for lab in ordered_labels(long) if lab in handles]
        fig.legend([handles[lab] for lab in order], order, loc="outside right upper")
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


def magnitude_plot(df: pd.DataFrame, out_dir: Path | str, name: str = "magnitudes") -> list[Path] | None:
    """SD-LoRA's learned magnitudes alpha_k after each task (``mechanism.magnitudes``), mean over seeds.

    One panel per method label x benchmark that has magnitudes; one line per alpha_k, x = task after which it
    was read.

    Returns:
        ``[png, pdf]``, or None when no done record has magnitudes.
    """
    panels = [(lab, bench, _magnitude_frame(s)) for lab, bench, s in _mechanism_panels(df, "magnitudes")]
    panels = [p for p in panels if not p[2].empty]
    if not panels:
        return None

    def draw():
        fig, axes = _new_figure(len(panels))
        for ax, (lab, bench, frame) in zip(axes, panels):
            ks = sorted(frame["k"].unique())
            cmap = matplotlib.colormaps["viridis"]
            for k in ks:
                stats = _mean_se(frame[frame["k"] == k], "task", "alpha")
                color = cmap(0.0 if len(ks) == 1 else (k - 1) / (len(ks) - 1))
                ax.plot(stats.index, stats["mean"], marker="o", markersize=3, color=color, label=rf"$\alpha_{{{k}}}$")
            ax.set(title=f"{lab}, {bench}", xlabel="task", ylabel=r"magnitude $\alpha_k$")
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), ncols=max(1, math.ceil(len(ks) / 10)))
        return save_figure(fig, out_dir, name)

    return _styled(draw)


def _residual_frame(series: list) -> pd.DataFrame:
    rows = [
        (i, t + 1, float(pair[0]), _scalar(pair[1]))
        for i, per_task in enumerate(series)
        for t, trace in enumerate(per_task)
        for pair in trace or []
    ]
    return pd.DataFrame(rows, columns=["seed", "task", "iteration", "residual"])


def residual_plot(df: pd.DataFrame, out_dir: Path | str, name: str = "residuals") -> list[Path] | None:
    """Least-squares residual of each new direction on the earlier ones vs training iteration (paper Fig. 3a).

    Reads ``mechanism.residual_trace`` (per task, ``[iteration, residual]`` pairs; empty for task 1); one panel per
    method label x benchmark, one line per task, mean over seeds at each iteration.

    Returns:
        ``[png, pdf]``, or None when no done record has a non-empty trace.
    """
    panels = [(lab, bench, _residual_frame(s)) for lab, bench, s in _mechanism_panels(df, "residual_trace")]
    panels = [p for p in panels if not p[2].empty]
    if not panels:
        return None

    def draw():
        fig, axes = _new_figure(len(panels))
        for ax, (lab, bench, frame) in zip(axes, panels):
            tasks = sorted(frame["task"].unique())
            cmap = matplotlib.colormaps["viridis"]
            for i, task in enumerate(tasks):
                stats = _mean_se(frame[frame["task"] == task], "iteration", "residual")
                color = cmap(0.0 if len(tasks) == 1 else i / (len(tasks) - 1))
                ax.plot(stats.index, stats["mean"], color=color, label=f"task {task}")
            ax.set(title=f"{lab}, {bench}", xlabel="iteration", ylabel="residual")
            ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), ncols=max(1, math.ceil(len(tasks) / 10)))
        return save_figure(fig, out_dir, name)

    return _styled(draw)


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
