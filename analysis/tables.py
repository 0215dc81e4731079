"""LaTeX tables from the records frame (pandas ``Styler.to_latex`` with booktabs rules).

Every cell is ``mean (se)`` over seeds with se = std(ddof=1) / sqrt(n) (se left out when n = 1), two decimals; the
best mean of a column is bold (ties at the printed precision are all bold); the upper bound ``joint`` sits below a
midrule and is never ranked; a cell without done records is ``--``, never a number from elsewhere. Same records ->
same bytes: rows, columns and numbers are all in a fixed order and precision.

Layouts: :func:`main_table` (every method x benchmark), :func:`paper_table` (the paper's Tables 2-6) and
:func:`reference_table` (ours beside the paper's numbers). Only ``booktabs`` is needed to compile them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analysis.records import (
    ablation_methods,
    benchmark_order,
    done,
    mean_se,
    ordered_labels,
    paper_names,
    reference_methods,
)

DECIMALS = 2
MISSING = "--"
_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


@dataclass(frozen=True)
class Stat:
    """Mean, standard error and number of seeds of one cell."""

    mean: float
    se: float
    n: int

    @classmethod
    def of(cls, values) -> Stat:
        return cls(*mean_se(values))

    @property
    def rounded(self) -> float:
        """The mean at printed precision: ranking on it makes bold agree with what the reader sees."""
        return round(self.mean, DECIMALS) if self.n else math.nan


def latex_escape(text: str) -> str:
    """Escape LaTeX special characters (method names hold underscores)."""
    return "".join(_LATEX_SPECIALS.get(ch, ch) for ch in str(text))


def format_stat(stat: Stat, bold: bool = False, show_se: bool = True) -> str:
    """``mean (se)`` with fixed decimals; ``mean`` alone when n = 1 or ``show_se`` is False; ``--`` when n = 0."""
    if stat.n == 0 or math.isnan(stat.mean):
        return MISSING
    text = f"{stat.mean:.{DECIMALS}f}"
    if show_se and stat.n > 1 and not math.isnan(stat.se):
        text += f" ({stat.se:.{DECIMALS}f})"
    return rf"\textbf{{{text}}}" if bold else text


def best_rows(stats: dict[str, Stat], ranked: list[str], higher: bool = True) -> set[str]:
    """Labels whose rounded mean is the best among ``ranked`` (all ties); empty unless two values differ.

    A single value, or a column where every value ties, has nothing to beat: bolding it would claim a comparison
    that was not made.
    """
    values = {lab: stats[lab].rounded for lab in ranked if lab in stats and stats[lab].n}
    if len(set(values.values())) < 2:
        return set()
    target = max(values.values()) if higher else min(values.values())
    return {lab for lab, v in values.items() if v == target}


def seeds_text(counts) -> str:
    """Seed count of a row: ``3``, or ``1--3`` when cells differ, ``--`` when the row has no data."""
    counts = sorted({int(c) for c in counts if c})
    if not counts:
        return MISSING
    return str(counts[0]) if counts[0] == counts[-1] else f"{counts[0]}--{counts[-1]}"


def _joint_labels(df: pd.DataFrame) -> set[str]:
    return set(df.loc[df["method"].isin(reference_methods()), "label"])


def _add_rules(latex: str, columns: pd.Index, n_reference: int, first_col: int) -> str:
    """Add ``\\cmidrule`` under grouped headers and a ``\\midrule`` above the reference (``joint``) rows.

    Styler has no per-row rules, so they are inserted into its output; every row is one line, so positions are exact.
    """
    lines = latex.split("\n")
    top = lines.index(r"\toprule")
    if isinstance(columns, pd.MultiIndex):
        spans, start = [], first_col
        level0 = list(columns.get_level_values(0))
        i = 0
        while i < len(level0):
            width = 1
            while i + width < len(level0) and level0[i + width] == level0[i]:
                width += 1
            if width > 1:
                spans.append(rf"\cmidrule(lr){{{start + i}-{start + i + width - 1}}}")
            i += width
        if spans:
            lines.insert(top + 2, " ".join(spans))
    if n_reference:
        bottom = lines.index(r"\bottomrule")
        lines.insert(bottom - n_reference, r"\midrule")
    return "\n".join(lines)


def render(
    cells: pd.DataFrame,
    caption: str,
    label: str,
    n_reference: int = 0,
    show_index: bool = True,
    n_text_cols: int = 0,
    align: str = "r",
    size: str = "small",
    colsep: str = "4pt",
) -> str:
    """Render a frame of LaTeX cell strings with booktabs rules.

    Args:
        cells: Frame of already formatted (and escaped) strings; the index holds row labels.
        caption: LaTeX caption text.
        label: LaTeX ``\\label`` key.
        n_reference: Number of final rows (reference rows such as ``joint``) to set off by a midrule.
        show_index: Whether the index is printed as the first column.
        n_text_cols: Leading columns of ``cells`` that hold text (left-aligned).
        align: Alignment of the other columns (``r`` for numbers, ``c`` for ``Acc / AAA`` pairs).
        size: LaTeX font size command (without backslash) set inside the float.
        colsep: ``\\tabcolsep`` inside the float.

    Returns:
        The LaTeX fragment (a ``table`` float), ending with a newline.
    """
    styler = cells.style.hide(names=True, axis="index")
    if not show_index:
        styler = styler.hide(axis="index")
    latex = styler.to_latex(
        hrules=True,
        multicol_align="c",
        caption=caption,
        label=label,
        position_float="centering",
        column_format="l" * (int(show_index) + n_text_cols) + align * (cells.shape[1] - n_text_cols),
    )
    latex = _add_rules(latex, cells.columns, n_reference, first_col=2 if show_index else 1)
    # Smaller type and column gaps (plain LaTeX, scoped to the float) so a two-benchmark table fits a text width.
    latex = latex.replace("\\centering\n", f"\\centering\n\\{size}\n\\setlength{{\\tabcolsep}}{{{colsep}}}\n", 1)
    return latex if latex.endswith("\n") else latex + "\n"


def main_table(df: pd.DataFrame) -> str:
    """Every method x benchmark: Acc and AAA as ``mean (se)`` over seeds.

    Args:
        df: Frame from :func:`analysis.records.load_records` (failed rows are ignored).

    Returns:
        LaTeX ``table`` fragment; rows in preferred method order with ``joint`` below a midrule, a ``Seeds`` column.
    """
    d = done(df)
    labels, benches = ordered_labels(d), benchmark_order(d)
    joint = _joint_labels(d)
    ranked = [lab for lab in labels if lab not in joint]
    cols, data = [], {lab: [] for lab in labels}
    counts = {lab: [] for lab in labels}
    for bench in benches:
        sub = d[d["benchmark"] == bench]
        for metric, header in (("acc", "Acc"), ("aaa", "AAA")):
            stats = {lab: Stat.of(g[metric]) for lab, g in sub.groupby("label")}
            best = best_rows(stats, ranked)
            cols.append((latex_escape(bench), header))
            for lab in labels:
                stat = stats.get(lab, Stat(math.nan, math.nan, 0))
                data[lab].append(format_stat(stat, bold=lab in best))
                counts[lab].append(stat.n)
    cols.append(("Seeds", ""))
    rows = [data[lab] + [seeds_text(counts[lab])] for lab in labels]
    cells = pd.DataFrame(rows, index=[latex_escape(lab) for lab in labels], columns=pd.MultiIndex.from_tuples(cols))
    caption = (
        "Final accuracy (Acc) and average anytime accuracy (AAA), \\%, mean (standard error) over seeds "
        "(se = std/$\\sqrt{n}$; omitted for one seed). Best per column in bold; joint training is an upper "
        "bound, not ranked. -- = no finished run."
    )
    return render(cells, caption, "tab:main", n_reference=len([lab for lab in labels if lab in joint]))


def _read_reference(reference_csv: Path | str) -> pd.DataFrame:
    ref = pd.read_csv(reference_csv, comment="#")
    need = {"table", "benchmark", "n_tasks", "method", "acc", "acc_se", "aaa", "aaa_se"}
    if not need <= set(ref.columns):
        raise ValueError(f"{reference_csv}: expected columns {sorted(need)}, found {sorted(ref.columns)}")
    return ref


def _diff_cells(paper: float, paper_se: float, ours: Stat) -> list[str]:
    """Paper, ours, signed difference and whether |diff| <= paper se + 1 point (at printed precision)."""
    paper_txt = MISSING if math.isnan(paper) else f"{paper:.{DECIMALS}f}"
    if math.isnan(paper_se) or math.isnan(paper):
        paper_cell = paper_txt
    else:
        paper_cell = f"{paper_txt} ({paper_se:.{DECIMALS}f})"
    if ours.n == 0 or math.isnan(paper):
        return [paper_cell, format_stat(ours), MISSING, MISSING]
    diff = round(ours.rounded - paper, DECIMALS)
    within = MISSING if math.isnan(paper_se) else ("yes" if abs(diff) <= round(paper_se + 1.0, DECIMALS) else "no")
    return [paper_cell, format_stat(ours), f"{diff:+.{DECIMALS}f}", within]


def reference_table(df: pd.DataFrame, reference_csv: Path | str) -> str | None:
    """Ours beside the paper's numbers for every paper cell that has at least one finished run of ours.

    A paper row (table, benchmark, n_tasks, method) matches done records with that ``benchmark_name``,
    ``n_tasks`` and method label (the paper's names map to ours via each method's ``MethodInfo.paper_key``). Each
    match gives two lines, Acc then AAA (a long layout: side by side they would not fit a page).

    Args:
        df: Frame from :func:`analysis.records.load_records`.
        reference_csv: CSV with columns table,benchmark,n_tasks,method,acc,acc_se,aaa,aaa_se (``#`` comments).

    Returns:
        LaTeX fragment, or None when no paper row matches.
    """
    ref, d, ours = _read_reference(reference_csv), done(df), paper_names()
    rows = []
    for r in ref.itertuples(index=False):
        method = ours.get(r.method, r.method)
        sub = d[(d["benchmark_name"] == r.benchmark) & (d["n_tasks"] == int(r.n_tasks)) & (d["method"] == method)]
        for lab in ordered_labels(sub):
            g = sub[sub["label"] == lab]
            acc, aaa = Stat.of(g["acc"]), Stat.of(g["aaa"])
            head = [f"T{int(r.table)} {latex_escape(r.benchmark)} N={int(r.n_tasks)}", latex_escape(lab)]
            rows.append(head + ["Acc"] + _diff_cells(float(r.acc), float(r.acc_se), acc) + [seeds_text([acc.n])])
            rows.append(["", "", "AAA"] + _diff_cells(float(r.aaa), float(r.aaa_se), aaa) + [seeds_text([aaa.n])])
    if not rows:
        return None
    cols = ["Paper table, setting", "Method", "Metric", "Paper", "Ours", r"$\Delta$", "Within", "Seeds"]
    cells = pd.DataFrame(rows, columns=cols)
    caption = (
        "Ours beside the paper (\\%), mean (standard error) over seeds; $\\Delta$ = ours $-$ paper; Within = "
        "$|\\Delta| \\le$ paper se + 1 point. -- = not reported or not run."
    )
    return render(cells, caption, "tab:reference", show_index=False, n_text_cols=3, size="footnotesize", colsep="3pt")


@dataclass(frozen=True)
class PaperColumn:
    """One column of a paper table: the runs with this registry benchmark name and number of tasks."""

    header: str
    benchmark_name: str
    n_tasks: int


@dataclass(frozen=True)
class PaperLayout:
    """A paper table: its columns and, for fixed layouts (Table 4), its rows in the paper's order."""

    caption: str
    columns: tuple[PaperColumn, ...]
    rows: tuple[str, ...] = ()
    # Methods of which at least one must have a run for the table to exist (Table 4 without ablations is empty).
    requires: tuple[str, ...] = ()


_CELL = "Each cell is Acc / AAA (\\%), mean (standard error) over seeds; best per column in bold; -- = no finished run."
PAPER_TABLES = {
    2: PaperLayout(
        "ImageNet-R (paper Table 2). " + _CELL,
        tuple(PaperColumn(f"N={n}", "imagenet_r", n) for n in (5, 10, 20)),
    ),
    3: PaperLayout(
        "ImageNet-A and DomainNet (paper Table 3). " + _CELL,
        (PaperColumn("ImageNet-A (N=10)", "imagenet_a", 10), PaperColumn("DomainNet (N=5)", "domainnet", 5)),
    ),
    4: PaperLayout(
        "Ablation on ImageNet-R (paper Table 4): sd\\_lora\\_fixed\\_first = $W_0 + \\alpha \\bar{A}_1\\bar{B}_1$ "
        "(first direction fixed), sd\\_lora\\_single = $W_0 + \\alpha \\bar{A}\\bar{B}$ (one decoupled LoRA), "
        "sd\\_lora\\_no\\_rescale = old directions added with fixed weight. " + _CELL,
        tuple(PaperColumn(f"N={n}", "imagenet_r", n) for n in (5, 10)),
        rows=(*ablation_methods(), "sd_lora"),
        requires=ablation_methods(),
    ),
    6: PaperLayout(
        "CIFAR-100 and CUB-200 (paper Table 6). " + _CELL,
        (PaperColumn("CIFAR-100 (N=10)", "cifar100", 10), PaperColumn("CUB-200 (N=10)", "cub200", 10)),
    ),
}
EFFICIENCY_TABLE = 5
# Table 5 columns: header, record `efficiency` key, divisor (the paper gives parameters and features in millions).
EFFICIENCY_COLUMNS = (
    ("GFLOPs", "gflops", 1.0),
    ("Learnable (M)", "learnable_params", 1e6),
    ("Stored features (M)", "stored_features", 1e6),
)
PAPER_TABLE_IDS = tuple(sorted([*PAPER_TABLES, EFFICIENCY_TABLE]))


def _layout_labels(d: pd.DataFrame, layout: PaperLayout) -> list[str]:
    """Row labels: the fixed rows (absent ones kept, shown as --) or every non-ablation method with data."""
    if not layout.rows:
        return ordered_labels(d[~d["method"].isin(ablation_methods())])
    labels = []
    for method in layout.rows:
        found = sorted(set(d.loc[d["method"] == method, "label"]))
        labels.extend(found or [method])
    return labels


def _acc_aaa_table(df: pd.DataFrame, table_id: int, layout: PaperLayout) -> str | None:
    d = done(df)
    subs = [d[(d["benchmark_name"] == c.benchmark_name) & (d["n_tasks"] == c.n_tasks)] for c in layout.columns]
    if all(s.empty for s in subs):
        return None
    if layout.requires and not any(s["method"].isin(layout.requires).any() for s in subs):
        return None
    labels = _layout_labels(pd.concat(subs), layout)
    joint = _joint_labels(d) & set(labels)
    ranked = [lab for lab in labels if lab not in joint]
    data, counts = {lab: [] for lab in labels}, {lab: [] for lab in labels}
    for sub in subs:
        acc = {lab: Stat.of(g["acc"]) for lab, g in sub.groupby("label")}
        aaa = {lab: Stat.of(g["aaa"]) for lab, g in sub.groupby("label")}
        best_acc, best_aaa = best_rows(acc, ranked), best_rows(aaa, ranked)
        for lab in labels:
            a, b = acc.get(lab, Stat(math.nan, math.nan, 0)), aaa.get(lab, Stat(math.nan, math.nan, 0))
            cell = f"{format_stat(a, lab in best_acc)} / {format_stat(b, lab in best_aaa)}"
            data[lab].append(MISSING if a.n == 0 and b.n == 0 else cell)
            counts[lab] += [a.n, b.n]
    headers = [c.header for c in layout.columns] + ["Seeds"]
    rows = [data[lab] + [seeds_text(counts[lab])] for lab in labels]
    cells = pd.DataFrame(rows, index=[latex_escape(lab) for lab in labels], columns=headers)
    return render(cells, layout.caption, f"tab:paper{table_id}", n_reference=len(joint), align="c")


def _efficiency_table(df: pd.DataFrame) -> str | None:
    d = done(df)
    d = d[(d["benchmark_name"] == "imagenet_r") & (d["n_tasks"] == 20) & ~d["method"].isin(ablation_methods())]
    if d.empty:
        return None
    labels = ordered_labels(d)
    joint = _joint_labels(d)
    ranked = [lab for lab in labels if lab not in joint]
    data, counts = {lab: [] for lab in labels}, {lab: [] for lab in labels}
    for _, key, scale in EFFICIENCY_COLUMNS:
        stats = {}
        for lab, g in d.groupby("label"):
            values = [_efficiency_value(rec, key) / scale for rec in g["record"]]
            stats[lab] = Stat.of(values)
        best = best_rows(stats, ranked, higher=False)
        for lab in labels:
            stat = stats[lab]
            # These are properties of the configuration, identical across seeds; an se of 0.00 would be noise.
            show_se = stat.n > 1 and not math.isnan(stat.se) and stat.se > 0
            data[lab].append(format_stat(stat, lab in best, show_se=show_se))
            counts[lab].append(stat.n)
    if all(v == MISSING for row in data.values() for v in row):
        return None
    headers = [h for h, _, _ in EFFICIENCY_COLUMNS] + ["Seeds"]
    rows = [data[lab] + [seeds_text(counts[lab])] for lab in labels]
    cells = pd.DataFrame(rows, index=[latex_escape(lab) for lab in labels], columns=headers)
    caption = (
        "Efficiency on ImageNet-R, N=20 (paper Table 5): inference GFLOPs per image, learnable parameters in the "
        "last task (millions, head included) and stored features (millions), mean over seeds; lowest in bold."
    )
    return render(cells, caption, f"tab:paper{EFFICIENCY_TABLE}", n_reference=len(joint & set(labels)))


def _efficiency_value(rec: dict, key: str) -> float:
    value = (rec.get("efficiency") or {}).get(key)
    if value is None or isinstance(value, bool):
        return math.nan
    return float(value)


def paper_table(df: pd.DataFrame, table_id: int) -> str | None:
    """One of the paper's table layouts filled with our runs.

    Args:
        df: Frame from :func:`analysis.records.load_records`.
        table_id: 2 (ImageNet-R N=5/10/20), 3 (ImageNet-A N=10, DomainNet N=5), 4 (ablations on ImageNet-R
            N=5/10), 5 (efficiency on ImageNet-R N=20) or 6 (CIFAR-100 N=10, CUB-200 N=10).

    Returns:
        LaTeX fragment, or None when no cell of the table has a finished run.

    Raises:
        ValueError: For an unknown ``table_id``.
    """
    if table_id == EFFICIENCY_TABLE:
        return _efficiency_table(df)
    if table_id not in PAPER_TABLES:
        raise ValueError(f"unknown paper table {table_id!r}; valid ids are {list(PAPER_TABLE_IDS)}")
    return _acc_aaa_table(df, table_id, PAPER_TABLES[table_id])
